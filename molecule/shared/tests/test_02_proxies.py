"""Proxies: every instance has a running sidecar, registered as a connect-proxy, listening on its port."""

import pytest

from conftest import SCHEDULER, systemd_only


@pytest.fixture(scope="module")
def agent_services(host):
    import json

    return json.loads(host.check_output("curl -sf http://127.0.0.1:8500/v1/agent/services"))


def test_a_sidecar_process_per_instance(host, instances):
    procs = host.check_output("ps -eo args")
    for _service, iid in instances:
        assert f"-sidecar-for {iid} " in procs, f"no sidecar process for {iid}"
        if SCHEDULER == "systemd":
            assert host.service(f"mesh-sidecar-{iid}").is_running


def test_each_sidecar_is_registered_as_connect_proxy_for_its_instance(agent_services, instances):
    for service, iid in instances:
        proxy = agent_services.get(f"{iid}-sidecar-proxy")
        assert proxy is not None, f"{iid}-sidecar-proxy not registered"
        assert proxy["Kind"] == "connect-proxy"
        assert proxy["Proxy"]["DestinationServiceName"] == service
        assert proxy["Proxy"]["DestinationServiceID"] == iid


def test_each_sidecar_listens_on_its_registered_port(host, agent_services, instances):
    for _service, iid in instances:
        port = agent_services[f"{iid}-sidecar-proxy"]["Port"]
        assert host.socket(f"tcp://0.0.0.0:{port}").is_listening or host.socket(f"tcp://:::{port}").is_listening, iid


@systemd_only
def test_frontend_upstream_listeners_on_loopback(host, catalog):
    for svc in catalog:
        for up in svc.get("upstreams") or []:
            assert host.socket(f"tcp://127.0.0.1:{up['local_port']}").is_listening, up


@systemd_only
def test_a_killed_sidecar_is_restarted_by_systemd(host, instances):
    _service, iid = instances[0]
    unit = f"mesh-sidecar-{iid}"
    before = host.check_output(f"systemctl show -p MainPID --value {unit}")
    host.check_output(f"kill -9 {before}")
    for _ in range(20):
        after = host.check_output(f"systemctl show -p MainPID --value {unit}")
        if after not in ("0", before) and host.service(unit).is_running:
            break
        host.run("sleep 0.5")
    assert after not in ("0", before)
    assert host.service(unit).is_running

"""Proxies: every instance has a running sidecar, registered as a connect-proxy, listening on the node's address."""

import pytest

from conftest import SCHEDULER, systemd_only


@pytest.fixture
def agent_services(mesh):
    return mesh.consul("/v1/agent/services")


def test_a_sidecar_process_per_instance(host, instances):
    procs = host.check_output("ps -eo args")
    for inst in instances:
        assert f"-sidecar-for {inst['id']} " in procs, f"no sidecar process for {inst['id']}"
        if SCHEDULER == "systemd":
            assert host.service(inst["units"]["sidecar"]).is_running


def test_each_sidecar_is_registered_as_connect_proxy_for_its_instance(agent_services, instances):
    for inst in instances:
        proxy = agent_services.get(f"{inst['id']}-sidecar-proxy")
        assert proxy is not None, f"{inst['id']}-sidecar-proxy not registered"
        assert proxy["Kind"] == "connect-proxy"
        assert proxy["Proxy"]["DestinationServiceName"] == inst["service"]
        assert proxy["Proxy"]["DestinationServiceID"] == inst["id"]


def test_each_sidecar_listens_on_the_node_address_at_its_registered_port(host, agent_services, instances):
    for inst in instances:
        proxy = agent_services[f"{inst['id']}-sidecar-proxy"]
        assert proxy["Address"] == inst["node_address"], inst["id"]
        assert host.socket(f"tcp://{inst['node_address']}:{proxy['Port']}").is_listening, inst["id"]


@systemd_only
def test_upstream_listeners_on_each_instances_loopback_address(host, instances):
    for inst in instances:
        for up in inst["upstreams"]:
            assert host.socket(f"tcp://{inst['upstream_address']}:{up['local_port']}").is_listening, (inst["id"], up)


@systemd_only
def test_a_killed_sidecar_is_restarted_by_systemd(host, mesh, instances):
    """Then Consul passes it again: the next tests find the mesh as this one found it."""
    unit = instances[0]["units"]["sidecar"]
    before = host.check_output(f"systemctl show -p MainPID --value {unit}")
    host.check_output(f"kill -9 {before}")
    for _ in range(20):
        after = host.check_output(f"systemctl show -p MainPID --value {unit}")
        if after not in ("0", before) and host.service(unit).is_running:
            break
        host.run("sleep 0.5")
    assert after not in ("0", before)
    assert host.service(unit).is_running
    sidecar = f"{instances[0]['id']}-sidecar-proxy"
    for _ in range(60):
        if sidecar in [e["Service"]["ID"] for e in mesh.consul(f"/v1/health/service/{instances[0]['service']}-sidecar-proxy?passing=1")]:
            break
        host.run("sleep 0.5")
    else:
        raise AssertionError(f"{sidecar} did not pass again within 30 s of its restart")

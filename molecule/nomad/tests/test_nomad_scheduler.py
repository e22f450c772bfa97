"""The nomad scheduler: the agent, one job per service, healthy allocations, restarts, stop/start.

Runs in the Molecule scenario `nomad` only (scripts/molecule-nomad), next to the
shared tests (molecule/shared/tests, whose conftest gives the lab model). Calls go
to the node's loopback from inside it.
"""

import json
import time

import pytest

from conftest import instances_of, run_playbook
from meshlab import secrets
from testkit.lab import secrets_dir

NOMAD = "http://127.0.0.1:4646"
# Both APIs have ACLs: the lab's Consul and Nomad management tokens (each API ignores the other's header).
HEADERS = {}


@pytest.fixture(scope="module", autouse=True)
def tokens(inventory):
    HEADERS["X-Consul-Token"] = secrets.read(secrets_dir(inventory), "consul/management")
    HEADERS["X-Nomad-Token"] = secrets.read(secrets_dir(inventory), "nomad/management")


@pytest.fixture(scope="module")
def services(model):
    return model["services"]


@pytest.fixture(scope="module")
def consul(model):
    return model["settings"]["consul_http_addr"]


def _get(host, url):
    headers = " ".join(f"-H '{k}: {v}'" for k, v in HEADERS.items())
    out = host.check_output(f"curl -sf {headers} {url}")
    return json.loads(out) if out else None


def _running(host, job):
    allocs = _get(host, f"{NOMAD}/v1/job/{job}/allocations")
    return [a for a in allocs if a["DesiredStatus"] == "run" and a["ClientStatus"] == "running"]


def _passing_ids(host, consul, service):
    return sorted(e["Service"]["ID"] for e in _get(host, f"{consul}/v1/health/service/{service}?passing=1"))


def test_nomad_agent_runs_as_a_server_and_client(host):
    assert host.service("nomad").is_running and host.service("nomad").is_enabled
    assert _get(host, f"{NOMAD}/v1/status/leader").endswith(":4647")
    [node] = _get(host, f"{NOMAD}/v1/nodes")
    assert node["Status"] == "ready"
    assert node["Drivers"]["raw_exec"]["Healthy"]


def test_nomad_ui_is_served(host):
    assert host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {NOMAD}/ui/") == "200"


def test_nomad_config_passes_validation(host):
    assert host.run("nomad config validate /etc/nomad.d").rc == 0
    assert host.file("/etc/nomad.d/nomad.hcl").mode == 0o640  # it holds Nomad's Consul token


def test_the_systemd_scheduler_left_nothing_behind(host):
    assert host.run("ls /etc/systemd/system/mesh-app-*.service /etc/systemd/system/mesh-sidecar-*.service").rc != 0
    assert host.run("ls /etc/consul.d/services/*.json").rc != 0


def test_one_job_per_service_with_all_allocations_running(host, services):
    jobs = {j["ID"]: j for j in _get(host, f"{NOMAD}/v1/jobs")}
    for svc in services:
        assert jobs[svc["name"]]["Status"] == "running", svc["name"]
        assert len(_running(host, svc["name"])) == svc["instances"], svc["name"]


def test_each_registration_belongs_to_a_running_allocation(host, services, consul):
    for svc in services:
        alloc_ids = {a["ID"] for a in _running(host, svc["name"])}
        entries = _get(host, f"{consul}/v1/health/service/{svc['name']}?passing=1")
        assert {e["Service"]["Meta"]["nomad_alloc_id"] for e in entries} == alloc_ids


def test_rendered_jobs_validate_and_plan_no_change(host, services):
    for svc in services:
        path = f"/etc/mesh/nomad-jobs/{svc['name']}.nomad.hcl"
        assert host.run(f"NOMAD_TOKEN={HEADERS['X-Nomad-Token']} nomad job validate {path}").rc == 0
        plan = host.run(f"NOMAD_TOKEN={HEADERS['X-Nomad-Token']} nomad job plan {path}")
        assert plan.rc == 0, plan.stdout  # exit code 0: no allocations would be created or destroyed


def test_a_killed_app_is_restarted_by_nomad_and_rejoins(host, model, consul):
    [alloc] = [a for a in _running(host, "add-svc") if a["Name"].endswith("[0]")]
    assert host.run(f"NOMAD_TOKEN={HEADERS['X-Nomad-Token']} nomad alloc signal -s SIGKILL {alloc['ID']} app").rc == 0
    want = sorted(i["id"] for i in instances_of(model, "add-svc"))
    deadline = time.time() + 60
    while True:
        state = _get(host, f"{NOMAD}/v1/allocation/{alloc['ID']}")["TaskStates"]["app"]
        if state["Restarts"] >= 1 and state["State"] == "running" and _passing_ids(host, consul, "add-svc") == want:
            break
        assert time.time() < deadline, f"the killed add-svc app did not come back: {state}"
        time.sleep(1)


@pytest.fixture
def agent_services(host, consul):
    return _get(host, f"{consul}/v1/agent/services")


def _srv_ports(host, model, name):
    out = host.check_output(f"dig +short @127.0.0.1 -p {model['settings']['consul_ports']['dns']} {name} SRV")
    return sorted(int(line.split()[2]) for line in out.splitlines() if line.strip())


# The shared tests read the model's static ports (systemd scheduler); these are their
# nomad-scheduler twins, reading the ports Nomad assigned from Consul's registrations.
def test_ports_are_the_dynamic_ones_nomad_assigned(host, services, agent_services):
    for svc in services:
        for alloc in _running(host, svc["name"]):
            index = int(alloc["Name"].rsplit("[", 1)[1].rstrip("]"))
            iid = f"{svc['name']}-{index + 1}"
            ports = {p["Label"]: p["Value"] for p in alloc["AllocatedResources"]["Shared"]["Ports"]}
            assert agent_services[iid]["Port"] == ports["http"], iid
            assert agent_services[f"{iid}-sidecar-proxy"]["Port"] == ports["sidecar"], iid


def test_sidecars_and_upstream_listeners_listen_on_registered_ports(host, services, agent_services):
    for svc in services:
        for i in range(svc["instances"]):
            proxy = agent_services[f"{svc['name']}-{i + 1}-sidecar-proxy"]
            assert host.socket(f"tcp://{proxy['Address']}:{proxy['Port']}").is_listening
            for up in proxy["Proxy"].get("Upstreams") or []:
                assert host.socket(f"tcp://{up['LocalBindAddress']}:{up['LocalBindPort']}").is_listening, up


def test_dns_srv_returns_the_registered_ports(host, model, agent_services):
    ids = [i["id"] for i in instances_of(model, "add-svc")]
    assert _srv_ports(host, model, "add-svc.service.consul") == sorted(agent_services[i]["Port"] for i in ids)
    assert _srv_ports(host, model, "add-svc.connect.consul") == sorted(agent_services[f"{i}-sidecar-proxy"]["Port"] for i in ids)


def test_sidecar_port_demands_mesh_mtls(host, agent_services):
    proxy = agent_services["add-svc-1-sidecar-proxy"]
    assert host.run(f"curl -s -m 3 http://{proxy['Address']}:{proxy['Port']}/health").rc != 0
    assert host.run(f"curl -sk -m 3 https://{proxy['Address']}:{proxy['Port']}/health").rc != 0


def test_app_ports_stay_on_loopback(host, services, agent_services, model):
    node_ip = model["nodes"][next(iter(model["nodes"]))]["address"]
    for svc in services:
        if svc["bind"] != "127.0.0.1":
            continue
        for i in range(svc["instances"]):
            port = agent_services[f"{svc['name']}-{i + 1}"]["Port"]
            assert host.run(f"curl -s -m 2 http://{node_ip}:{port}/health").rc != 0, f"{svc['name']}-{i + 1}"


def test_a_stopped_allocation_leaves_the_pool_and_its_replacement_rejoins(host, mesh, model, consul):
    """Failover on Nomad: the poststop task deregisters the instance at once; Nomad replaces it."""
    [alloc] = [a for a in _running(host, "add-svc") if a["Name"].endswith("[0]")]
    assert host.run(f"NOMAD_TOKEN={HEADERS['X-Nomad-Token']} nomad alloc stop -detach {alloc['ID']}").rc == 0
    deadline = time.time() + 30
    while any(e["Service"]["Meta"].get("nomad_alloc_id") == alloc["ID"]
              for e in _get(host, f"{consul}/v1/health/service/add-svc")):
        assert time.time() < deadline, "the stopped allocation's instance is still registered"
        time.sleep(0.5)
    front = next(s for s in model["services"] if s["name"] == "frontend")
    results = mesh.compute_many(30, url=f"http://127.0.0.1:{front['port']}/api/v1/compute")
    assert all(status == 200 for status, _ in results), results
    want = sorted(i["id"] for i in instances_of(model, "add-svc"))
    deadline = time.time() + 90
    while True:
        entries = _get(host, f"{consul}/v1/health/service/add-svc?passing=1")
        ids = {e["Service"]["ID"]: e["Service"]["Meta"]["nomad_alloc_id"] for e in entries}
        if sorted(ids) == want and alloc["ID"] not in ids.values():
            break
        assert time.time() < deadline, f"no replacement for the stopped allocation passes its check: {ids}"
        time.sleep(1)


def test_zz_stop_workloads_stops_everything_and_start_workloads_brings_it_back(host, services, inventory, consul):
    """`make stop-workloads` then `make start-workloads` on the nomad scheduler (last: it redeploys)."""
    rc, out = run_playbook(inventory, "playbooks/workloads.yml", "mesh_workloads_state=absent")
    assert rc == 0, out[-3000:]
    remaining = {j["ID"] for j in _get(host, f"{NOMAD}/v1/jobs")}
    assert not remaining & {s["name"] for s in services}
    for svc in services:
        assert _get(host, f"{consul}/v1/health/service/{svc['name']}") == []

    rc, out = run_playbook(inventory, "playbooks/workloads.yml")
    assert rc == 0, out[-3000:]
    for svc in services:
        assert len(_passing_ids(host, consul, svc["name"])) == svc["instances"]
        assert len(_running(host, svc["name"])) == svc["instances"]

"""The catalog drives the node, in one round trip of three workloads.yml runs (each run is the costly part):

1. one changed catalog: add-svc scaled 2 -> 1, a new service added (README, "Add a service": double-svc, a
   Python service with one upstream, nothing else changed) and one more frontend canary instance;
2. stop-workloads: every workload leaves;
3. start-workloads with the inventory's catalog: everything is back, the new service and instances gone.

Every step is judged by the node's state (units, processes, files, Consul, the edge's servers, Prometheus'
targets), never by the playbook's words. The tests run in order on the module's state; if one fails, the
inventory's catalog is still put back at the end.
"""

import copy
import json

import pytest
import yaml

from conftest import (edge_matches_consul, edge_pids, edge_servers, instances_of, run_playbook, scrape_health,
                      systemd_only, wait_until)
from testkit.lab import rebuilt_model

pytestmark = systemd_only

UNITS = "ls /etc/systemd/system/ | grep -E '^mesh-(app|sidecar)-' | sort || true"

# Exactly the README's catalog entry ("Add a service").
DOUBLE = {
    "name": "double-svc",
    "app": "double",
    "language": "python",
    "args": ["-m", "double_svc"],
    "instances": 1,
    "port": 9031,
    "sidecar_port": 21031,
    "health_path": "/health",
    "upstreams": [{"service": "add-svc", "local_port": 9193, "env": "ADD_SVC_URL"}],
}


def _units_of(instances):
    return sorted(u for i in instances for u in i["units"].values())


def _intentions(mesh):
    return sorted((i["SourceName"], i["DestinationName"], i["Action"]) for i in mesh.consul("/v1/connect/intentions"))


def _changed_catalog(catalog):
    """add-svc down to 1 instance, one more instance of the frontend's last version (so no instance changes
    version), double-svc added."""
    changed = []
    for svc in copy.deepcopy(catalog):
        if svc["name"] == "add-svc":
            svc["instances"] = 1
        if svc["name"] == "frontend":
            last = svc["versions"][-1]
            last["instances"] += 1
            svc["instances"] += 1
        changed.append(svc)
    return changed + [copy.deepcopy(DOUBLE)]


@pytest.fixture(scope="module")
def change(host, model, inventory, tmp_path_factory, edge, prom):
    """Run workloads.yml with the changed catalog; put the inventory's catalog back after the module."""
    extra = tmp_path_factory.mktemp("catalog") / "catalog.yml"
    catalog = _changed_catalog(model["catalog"])
    extra.write_text(yaml.safe_dump({"mesh_catalog": catalog}))
    changed = rebuilt_model(model, catalog)
    state = {
        "model": changed,
        "edge_pids": edge_pids(host),
        "prometheus_yml": host.check_output("sha256sum /etc/prometheus/prometheus.yml"),
        "new_frontend": ("mesh", f"frontend-{len(instances_of(model, 'frontend')) + 1}"),
        "restored": False,
    }
    state["rc"], state["out"] = run_playbook(inventory, "playbooks/workloads.yml", f"@{extra}")
    yield state
    if not state["restored"]:
        rc, out = run_playbook(inventory, "playbooks/workloads.yml")
        assert rc == 0, out[-3000:]


def test_scaling_down_removes_the_instance(host, mesh, model, change, seed):
    assert change["rc"] == 0, change["out"][-3000:]
    [kept] = instances_of(change["model"], "add-svc")
    [gone] = [i for i in instances_of(model, "add-svc") if i["id"] != kept["id"]]
    assert host.check_output(UNITS).split() == _units_of(change["model"]["instances"])
    assert not host.file(f"/etc/consul.d/services/{gone['id']}.json").exists
    assert mesh.instance_ids("add-svc", passing=False) == [kept["id"]] == mesh.instance_ids("add-svc")
    assert host.check_output(f"ps -eo args | grep -c '[s]idecar-for {gone['id']} ' || true") == "0"
    [(status, body)] = mesh.compute_many(1)
    assert (status, body["result"]) == (200, seed["result"])


def test_a_new_service_is_installed_registered_allowed_and_meshed(host, mesh, change):
    [double] = instances_of(change["model"], "double-svc")
    # Installed: its code (no tests) and its venv.
    assert host.file(f"{double['workdir']}/double_svc/__main__.py").is_file
    assert not host.file(f"{double['workdir']}/tests").exists
    assert host.file(double["argv"][0]).is_file
    # Registered and passing, its sidecar too.
    passing = mesh.consul("/v1/health/service/double-svc?passing=1")
    assert [e["Service"]["ID"] for e in passing] == [double["id"]]
    assert host.service(double["units"]["sidecar"]).is_running
    # Allowed: the catalog's edge is an intention, and the default stays deny.
    assert ("double-svc", "add-svc", "allow") in _intentions(mesh)
    assert ("*", "*", "deny") in _intentions(mesh)
    # Meshed: its call to add-svc goes through its sidecar (mTLS) to an add-svc instance.
    answer = json.loads(host.check_output(f"curl -sf 'http://127.0.0.1:{double['port']}/api/v1/double?x=21'"))
    print(f"double-svc answered {answer}")
    assert answer["result"] == 42
    assert answer["via"] in {i["id"] for i in instances_of(change["model"], "add-svc")}


def test_a_new_frontend_instance_is_served_without_an_edge_reload_and_scraped(host, edge, mesh, change, prom):
    """The new canary instance's sidecar appears in the edge's backend from DNS while HAProxy's processes stay
    the same (no reload); Prometheus (README "See it") scrapes it with its prometheus.yml unchanged."""
    want = len(instances_of(change["model"], "frontend"))
    grown = wait_until(lambda: len(edge_servers(edge)) == want and edge_matches_consul(edge, mesh),
                       30, "the edge serves the new frontend instance")
    print(f"after adding an instance: {edge_servers(edge)}; haproxy {change['edge_pids']} -> {edge_pids(host)}")
    assert grown, f"the new instance is not in the edge: {edge_servers(edge)}"
    assert edge_pids(host) == change["edge_pids"], "the edge was reloaded or restarted"
    new = change["new_frontend"]
    scraped = wait_until(lambda: scrape_health(prom).get(new) == "up", 30, f"Prometheus scrapes {new[1]}")
    unchanged = host.check_output("sha256sum /etc/prometheus/prometheus.yml") == change["prometheus_yml"]
    print(f"Prometheus: {new[1]} scraped and up: {scraped}; prometheus.yml unchanged: {unchanged}")
    assert scraped and unchanged


def test_stop_workloads_removes_every_workload(host, mesh, inventory, change):
    rc, out = run_playbook(inventory, "playbooks/workloads.yml", "mesh_workloads_state=absent")
    assert rc == 0, out[-3000:]
    assert host.check_output(UNITS) == ""
    assert host.check_output("ps -eo args | grep -c '[c]onnect proxy' || true") == "0"
    assert sorted(mesh.consul("/v1/catalog/services")) == ["consul"]


def test_start_workloads_brings_the_catalog_back(host, mesh, model, inventory, change, edge, prom, seed):
    rc, out = run_playbook(inventory, "playbooks/workloads.yml")
    change["restored"] = rc == 0
    assert rc == 0, out[-3000:]
    assert host.check_output(UNITS).split() == _units_of(model["instances"])
    for svc in model["services"]:
        assert mesh.instance_ids(svc["name"]) == sorted(i["id"] for i in instances_of(model, svc["name"]))
    [(status, body)] = mesh.compute_many(1)
    assert (status, body["result"]) == (200, seed["result"]), body
    # The added service and its intention are gone, the edge and Prometheus follow.
    [double] = instances_of(change["model"], "double-svc")
    assert mesh.consul("/v1/health/service/double-svc") == []
    assert not host.file(f"/etc/systemd/system/{double['units']['app']}").exists
    assert ("double-svc", "add-svc", "allow") not in _intentions(mesh)
    assert wait_until(lambda: edge_matches_consul(edge, mesh), 30, "the edge matches Consul")
    assert len(edge_servers(edge)) == len(instances_of(model, "frontend"))
    assert wait_until(lambda: change["new_frontend"] not in scrape_health(prom), 30, "Prometheus drops the instance"), \
        "Prometheus still scrapes the removed instance"

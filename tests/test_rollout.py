"""Shipping changes (meshlab/rollout.py, meshlab/model.py, meshlab/catalog.py): dynamic ports, mesh_scale, the
drain time and the rolling update's batches, on the inventory's catalog as Ansible resolves it."""

import copy

import pytest

from meshlab import catalog as lab_catalog, model as lab_model, rollout
from meshlab.model import ports_in_use

NODES = [{"name": f"mesh-{n}", "address": f"10.0.0.{10 + n}"} for n in (1, 2, 3)]


def by_name(cat, name):
    return next(s for s in cat if s["name"] == name)


def _ports(model, service=None):
    return {i["id"]: (i["port"], i["sidecar_port"], i["admin_port"]) for i in model["instances"]
            if service is None or i["service"] == service}


def test_the_catalogs_add_svc_has_dynamic_ports_from_the_range(model, catalog):
    assert "port" not in by_name(catalog, "add-svc") and "sidecar_port" not in by_name(catalog, "add-svc")
    low, high = model["settings"]["dynamic_ports"]
    for iid, ports in _ports(model, "add-svc").items():
        assert all(low <= p < high for p in ports), (iid, ports)
    inst = next(i for i in model["instances"] if i["id"] == "add-svc-1")
    assert inst["env"]["APP_PORT"] == str(inst["port"]) and inst["env"]["APP_ADMIN_PORT"] == str(inst["admin_port"])
    assert inst["registration"]["service"]["port"] == inst["port"]
    sidecar = inst["registration"]["service"]["connect"]["sidecar_service"]
    assert sidecar["port"] == inst["sidecar_port"]


def test_dynamic_ports_are_stable_across_builds_and_scaling(catalog, settings):
    first = lab_model.build(catalog, NODES, settings)
    again = lab_model.build(copy.deepcopy(catalog), NODES, settings)
    assert _ports(first) == _ports(again)
    # Scaling add-svc up keeps every existing instance's ports (the new ones hash elsewhere).
    bigger = lab_model.build(lab_catalog.scaled(catalog, {"add-svc": 12}), NODES, settings)
    assert {k: v for k, v in _ports(bigger).items() if k in _ports(first)} == _ports(first)


@pytest.mark.parametrize("count", [12, 60])
def test_twelve_and_more_instances_on_one_node_collide_with_nothing(catalog, settings, count):
    one = [NODES[0]]
    built = lab_model.build(lab_catalog.scaled(catalog, {"add-svc": count}), one, settings)
    taken = [p for ports in _ports(built).values() for p in ports]
    assert len(taken) == len(set(taken)), "two instances share a port"
    reserved = {int(p) for p in settings["consul_ports"].values()} | {
        settings["edge_port"], settings["edge_stats_port"], settings["metrics_port"], settings["node_exporter_port"],
        settings["tracing_port"], settings["tracing_sidecar_port"], settings["tracing_local_port"]}
    reserved |= {up["local_port"] for s in catalog for up in s.get("upstreams") or []}
    assert not reserved & set(taken)
    assert lab_catalog.errors(lab_catalog.scaled(catalog, {"add-svc": count}), "systemd", settings["consul_ports"]) == []
    assert set(taken) <= ports_in_use(built)


def test_the_dynamic_range_can_run_out(catalog, settings):
    with pytest.raises(lab_model.ModelError, match="no free port left in the dynamic range"):
        lab_model.build(lab_catalog.scaled(catalog, {"add-svc": 5}), [NODES[0]], {**settings, "dynamic_ports": [30000, 30010]})


def test_static_ports_are_still_planned(model):
    ports = _ports(model, "sub-svc")
    assert ports == {"sub-svc-1": (9011, 21011, 19011), "sub-svc-2": (9012, 21012, 19012)}


def test_scale_overrides_the_catalogs_count(catalog):
    scaled = lab_catalog.scaled(catalog, {"add-svc": 4})
    assert by_name(scaled, "add-svc")["instances"] == 4 and by_name(catalog, "add-svc")["instances"] == 2
    assert lab_catalog.scaled(catalog, {}) is catalog


@pytest.mark.parametrize("scale, message", [
    ({"mul-svc": 2}, "'mul-svc' is no service of mesh_catalog"),
    ({"add-svc": 0}, "add-svc 0 must be a whole number from 1 to 254"),
    ({"add-svc": "3"}, "add-svc '3' must be a whole number"),
    ({"frontend": 4}, "frontend has versions (a canary split): change their instances in mesh_catalog"),
    (["add-svc"], "mesh_scale must be a mapping"),
])
def test_bad_scales_are_named(catalog, scale, message):
    [problem] = lab_catalog.errors(catalog, "systemd", {}, scale=scale)
    assert message in problem
    assert lab_catalog.scaled(catalog, scale) is catalog


def test_max_parallel_is_checked(catalog):
    cat = copy.deepcopy(catalog)
    by_name(cat, "sub-svc")["max_parallel"] = 0
    [problem] = lab_catalog.errors(cat, "systemd", {})
    assert "max_parallel 0 must be a whole number of at least 1" in problem


def test_the_drain_follows_the_edges_dns_refresh_and_the_callers_connections_unless_set(catalog, settings):
    assert lab_model.build(catalog, NODES, {**settings, "drain_s": None})["rollout"]["drain_s"] == \
        lab_model.EDGE_DNS_RESOLVE_S + lab_model.EDGE_DNS_HOLD_OBSOLETE_S + 1 == 4
    longer = copy.deepcopy(catalog)
    by_name(longer, "frontend")["env"] = {"UPSTREAM_SOCKET_MAX_AGE_MS": "9000"}
    assert lab_model.build(longer, NODES, {**settings, "drain_s": None})["rollout"]["drain_s"] == 10
    assert lab_model.build(catalog, NODES, {**settings, "drain_s": ""})["rollout"]["drain_s"] == 4
    assert lab_model.build(catalog, NODES, {**settings, "drain_s": "0"})["rollout"]["drain_s"] == 0
    assert lab_model.build(catalog, NODES, {**settings, "drain_s": 7})["rollout"]["drain_s"] == 7


def test_batches_go_tier_by_tier_max_parallel_of_each_service_at_a_time(catalog, settings):
    """add-svc and sub-svc call no service: they roll side by side, one instance of each per batch; the frontend
    calls both: its batches (max_parallel 2 here) come after theirs."""
    cat = copy.deepcopy(catalog)
    by_name(cat, "frontend")["max_parallel"] = 2
    built = lab_model.build(cat, NODES, settings)
    changed = [u for i in built["instances"] for u in i["units"].values()]
    plan = rollout.batches(built, changed + ["mesh.target", "mesh-app-gone-1.service"])
    assert [[b["id"] for b in batch] for batch in plan] == [
        ["add-svc-1", "sub-svc-1"], ["add-svc-2", "sub-svc-2"], ["frontend-1", "frontend-2"], ["frontend-3"]]
    first = plan[0][0]
    inst = next(i for i in built["instances"] if i["id"] == "add-svc-1")
    assert first == {"id": "add-svc-1", "service": "add-svc", "node": inst["node"],
                     "units": ["mesh-app-add-svc-1.service", "mesh-sidecar-add-svc-1.service"], "port": inst["port"],
                     "health_path": "/health", "token_file": inst["token_file"]}


def test_a_caller_never_rolls_before_or_beside_its_upstreams(catalog, settings):
    """A service calling add-svc (docs/catalog.md's double-svc, before the frontend in the catalog) shares the
    frontend's tier; every service's batches start after the last batch of each service it calls."""
    double = {"name": "double-svc", "app": "double", "language": "python", "args": ["-m", "double_svc"],
              "instances": 2, "health_path": "/health",
              "upstreams": [{"service": "add-svc", "local_port": 9193, "env": "ADD_SVC_URL"}]}
    cat = copy.deepcopy(catalog)
    cat.insert(0, double)
    built = lab_model.build(cat, NODES, settings)
    assert [[s["name"] for s in tier] for tier in rollout.tiers(built["services"])] == [
        ["add-svc", "sub-svc"], ["double-svc", "frontend"]]
    plan = rollout.batches(built, [u for i in built["instances"] for u in i["units"].values()])
    assert [[b["id"] for b in batch] for batch in plan] == [
        ["add-svc-1", "sub-svc-1"], ["add-svc-2", "sub-svc-2"], ["double-svc-1", "frontend-1"],
        ["double-svc-2", "frontend-2"], ["frontend-3"]]
    rolled = {s["name"]: [n for n, batch in enumerate(plan) if any(b["service"] == s["name"] for b in batch)]
              for s in built["services"]}
    for svc in built["services"]:
        for up in svc["upstreams"]:
            assert min(rolled[svc["name"]]) > max(rolled[up["service"]]), (svc["name"], up["service"])


def test_only_changed_units_restart(model):
    plan = rollout.batches(model, ["mesh-sidecar-sub-svc-2.service"])
    assert [[(b["id"], b["units"]) for b in batch] for batch in plan] == [[("sub-svc-2", ["mesh-sidecar-sub-svc-2.service"])]]
    assert rollout.batches(model, []) == []

"""The edge's plan and HAProxy config (meshlab/edge.py) for the lab's catalog: discovery names, split, routing,
rate limit, checks; and every bad setting refused with what to change (preflight shows these messages)."""

import collections
import random
import re

import pytest

from meshlab import edge
from meshlab import model as lab_model


@pytest.fixture(scope="module")
def plan(model):
    return edge.plan(model)


def test_the_edge_serves_the_exposed_frontend_by_version(plan, model):
    assert plan["service"] == "frontend" and plan["canary"] == "v2"
    assert [(b["name"], b["weight"], b["range"]) for b in plan["backends"]] == [
        ("frontend_v1", 90, [0, 89]), ("frontend_v2", 10, [90, 99])]
    # Discovery by tag among the sidecars (the passing instances' public mTLS ports).
    assert [b["srv"] for b in plan["backends"]] == ["_frontend-sidecar-proxy._v1.service.consul",
                                                    "_frontend-sidecar-proxy._v2.service.consul"]
    tags = {i["id"]: i["registration"]["service"]["connect"]["sidecar_service"]["tags"]
            for i in lab_model.instances_of(model, "frontend")}
    assert tags == {"frontend-1": ["v1"], "frontend-2": ["v1"], "frontend-3": ["v2"]}


def test_the_edge_runs_on_the_first_workload_node_with_its_own_token(model):
    assert model["edge"]["nodes"] == ["mesh-1"]
    from meshlab import acl
    [token] = [t for t in acl.workload_tokens(model) if t["name"] == "edge"]
    assert token["nodes"] == ["mesh-1"] and token["service_identities"] == [{"service_name": "edge"}]
    assert {"source": "edge", "destination": "frontend", "action": "allow"} in model["intentions"]


def test_the_config_routes_splits_limits_and_checks(plan):
    cfg = edge.config(plan)
    assert "bind :8080" in cfg and "bind :8404" in cfg
    assert "accepted_payload_size 8192" in cfg  # else Consul answers with 3 records, silently
    assert re.search(r"use_backend frontend_v2 if \{ req.hdr\(X-Canary\) -m str always \}", cfg)
    first_rule = cfg.index("use_backend frontend_v2 if { req.hdr")
    assert first_rule < cfg.index("var(txn.split) -m int 0:89")  # the header wins over the draw
    assert "use_backend frontend_v1 if { var(txn.split) -m int 0:89 } { nbsrv(frontend_v1) gt 0 }" in cfg
    assert "server-template v1- 8 _frontend-sidecar-proxy._v1.service.consul" in cfg
    assert "ssl crt /etc/haproxy/mesh/edge.pem ca-file /etc/haproxy/mesh/connect-ca.pem verify required" in cfg
    assert "observe layer7 error-limit 5 on-error mark-down" in cfg
    assert "http-check send meth GET uri /health" in cfg
    assert "if { path_beg /metrics }" in cfg  # the services' metrics are not public
    assert f"monitor-uri {edge.READY_PATH}" in cfg  # Consul's check of the edge
    assert "http-request return status 429" in cfg and "Retry-After 1" in cfg
    # The limit counts the requests let through: the check comes before the count.
    assert cfg.index("sc_gpc0_rate(0) ge 50") < cfg.index("http-request sc-inc-gpc0(0)")


def _draw(plan, n=100_000, seed=1):
    """The share each backend gets from HAProxy's rules for one rand(100) per request (all servers up)."""
    rng = random.Random(seed)
    counts = collections.Counter()
    for _ in range(n):
        pick = rng.randrange(100)
        counts[next(b["name"] for b in plan["backends"] if b["range"] and b["range"][0] <= pick <= b["range"][1])] += 1
    return {k: v / n for k, v in counts.items()}


@pytest.mark.parametrize("options, want", [
    ({}, {"v1": 90, "v2": 10}),
    ({"canary_weight": 100}, {"v1": 0, "v2": 100}),
    ({"canary_weight": "25"}, {"v1": 75, "v2": 25}),
    ({"weights": {"frontend": {"v1": 50, "v2": 50}}}, {"v1": 50, "v2": 50}),
])
def test_weights_from_the_catalog_or_the_overrides(model, options, want):
    plan = edge.plan(model, options)
    assert edge.split(plan) == want
    shares = _draw(plan)
    for version, weight in want.items():
        assert abs(shares.get(f"frontend_{version}", 0) - weight / 100) < 0.01


@pytest.mark.parametrize("options, words", [
    ({"weights": {"frontend": {"v1": "ninety", "v2": 10}}}, "whole numbers"),
    ({"weights": {"frontend": {"v1": 80, "v2": 10}}}, "add up to 90"),
    ({"weights": {"frontend": {"v3": 100}}}, "names version(s) v3"),
    ({"weights": {"nosuch": {"v1": 100}}}, "names nosuch, which the edge does not serve"),
    ({"weights": ["v1"]}, "must map an exposed service"),
    ({"canary_weight": 101}, "whole number from 0 to 100"),
    ({"canary_weight": "half"}, "whole number from 0 to 100"),
    ({"rate_limit": 0}, "rate_limit 0"),
])
def test_bad_settings_are_refused_with_what_to_change(model, options, words):
    with pytest.raises(edge.EdgeError) as err:
        edge.plan(model, options)
    assert words in str(err.value)
    assert edge.problems(model, options) == [str(err.value)]


@pytest.mark.parametrize("change, words", [
    ({"edge_port": 8081}, "taken by catalog instances"),
    ({"edge_port": 8404}, "both 8404"),
    ({"edge_port": 70000}, "mesh_edge_port 70000 is not a TCP port"),
])
def test_bad_ports_are_refused_with_what_to_change(catalog, settings, change, words):
    """The edge's ports are the model's (mesh_edge_port, mesh_edge_stats_port), checked when the edge is planned."""
    built = lab_model.build(catalog, [{"name": "mesh-1", "address": "10.0.0.11"}], {**settings, **change})
    assert words in edge.problems(built)[0]


def test_two_exposed_services_are_refused(catalog, settings):
    cat = [dict(s, expose=True) if s["name"] == "add-svc" else s for s in catalog]
    built = lab_model.build(cat, [{"name": "mesh-1", "address": "10.0.0.11"}], settings)
    assert "the edge serves one" in edge.problems(built)[0]


def test_an_unversioned_service_gets_one_backend_and_nothing_exposed_gets_404(catalog, settings):
    cat = [{k: v for k, v in s.items() if k != "versions"} for s in catalog]
    built = lab_model.build(cat, [{"name": "mesh-1", "address": "10.0.0.11"}], settings)
    plan = edge.plan(built)
    assert [(b["name"], b["srv"]) for b in plan["backends"]] == [("frontend", "_frontend-sidecar-proxy._tcp.service.consul")]
    assert "rand(100)" not in edge.config(plan) and plan["canary"] is None
    with pytest.raises(edge.EdgeError):
        edge.plan(built, {"canary_weight": 10})
    hidden = lab_model.build([dict(s, expose=False) for s in catalog], [{"name": "mesh-1", "address": "10.0.0.11"}], settings)
    assert "status 404" in edge.config(edge.plan(hidden))


def test_the_config_sheds_excess_at_the_door_and_refuses_big_bodies(plan, model):
    """Admission control (issue 24): a request limit per frontend server, a bounded queue whose overflow gets the
    edge's own JSON 503 with Retry-After, and a 413 from the body's length before the body travels."""
    cfg = edge.config(plan)
    assert "timeout queue 500ms" in cfg
    assert cfg.count("maxconn 3 check inter") == len(plan["backends"])
    assert cfg.count("http-error status 503 content-type application/json") == len(plan["backends"])
    assert "hdr Retry-After 1 hdr X-Edge-Shed queue" in cfg
    # The drawn backend is named on every answer, the edge's own 503s too (http-response rules skip those).
    assert "http-after-response set-header X-Edge-Backend %b" in cfg and "http-response set-header X-Edge" not in cfg
    assert re.search(r"http-request return status 413 content-type application/json string '\{[^']*16384[^']*\}' "
                     r"if \{ req.hdr_val\(content-length\) gt 16384 \}", cfg)
    # Settings from the inventory, as Ansible hands them over (text), and refusals naming the option.
    tuned = edge.config(edge.plan(model, {"server_maxconn": "5", "queue_timeout_ms": "250", "max_body_bytes": "1024"}))
    assert "maxconn 5 check" in tuned and "timeout queue 250ms" in tuned and "gt 1024 }" in tuned
    for key in ("server_maxconn", "queue_timeout_ms", "max_body_bytes"):
        with pytest.raises(edge.EdgeError, match=key):
            edge.plan(model, {key: 0})


def test_the_edge_body_limit_is_the_frontends_own():
    """mesh_edge_max_body_bytes (and edge.py's default) is the frontend's MAX_BODY_BYTES: a smaller one would
    refuse what the service accepts, a larger one lets the service's reset reach the client."""
    import os
    import yaml

    from testkit.lab import ROOT

    with open(os.path.join(ROOT, "apps", "frontend", "src", "app.js"), encoding="utf-8") as fh:
        [expr] = re.findall(r"const MAX_BODY_BYTES = ([0-9 *]+);", fh.read())
    frontend_limit = eval(expr, {"__builtins__": {}})  # noqa: S307 - "16 * 1024", digits and * only
    with open(os.path.join(ROOT, "inventory", "lab", "group_vars", "all", "edge.yml"), encoding="utf-8") as fh:
        inventory_limit = yaml.safe_load(fh)["mesh_edge_max_body_bytes"]
    assert frontend_limit == inventory_limit == edge.DEFAULTS["max_body_bytes"]

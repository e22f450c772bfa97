"""See the mesh (README "See it"): Prometheus finds every part of the lab in Consul and scrapes it, a stopped
instance goes down and comes back, the counters rise by exactly what was done, and the dashboard and the Consul
UI render in a real browser (Debian's Chromium, headless). That a new instance is scraped without a config
change is checked in test_14's catalog round trip (one more frontend instance), which saves two playbook runs.

Prometheus runs on the node and is asked from the controller at the node's address; the load goes to the
node's edge. Screenshots go to $MESH_ARTIFACTS (default .artifacts/ in the repository).
"""

import os
import time

import pytest

from conftest import instances_of, systemd_only
from meshlab import SEED_EXPRESSION, metrics
from testkit.observe import browser, consul_services, dashboard, screenshot
from testkit.lab import ROOT, BoundedLoad, load_summary

ARTIFACTS = os.environ.get("MESH_ARTIFACTS", os.path.join(ROOT, ".artifacts"))
UP_WITHIN_S = 90

# The nomad scheduler's jobs carry no sidecar metadata (metrics_path), so Prometheus finds no app there.
pytestmark = systemd_only


@pytest.fixture(scope="module")
def plan(model):
    return metrics.plan(model, {})


def _wait_for(prom, want, timeout):
    """Poll the targets until want(targets) is true; returns (targets, seconds waited)."""
    started = time.monotonic()
    while True:
        targets = prom.targets()
        if want(targets):
            return targets, time.monotonic() - started
        if time.monotonic() - started > timeout:
            return targets, None
        time.sleep(1)


def _health(targets):
    return {(t["job"], t["instance"]): t["health"] for t in targets}


def test_prometheus_scrapes_every_part_it_finds_in_consul(prom, plan):
    expected = metrics.expected_targets(plan)
    targets, waited = _wait_for(prom, lambda ts: all(_health(ts).get(e) == "up" for e in expected), UP_WITHIN_S)
    for t in sorted(targets, key=lambda t: (t["job"], t["instance"])):
        print(f"  {t['job']:<10} {t['instance']:<12} {t['health']:<5} {t['url']} {t['error']}")
    health = _health(targets)
    assert waited is not None, f"not up within {UP_WITHIN_S} s: {[e for e in expected if health.get(e) != 'up']}"
    print(f"all {len(expected)} expected targets up after {waited:.1f} s")
    # Nothing else: Prometheus scrapes what the model says is there.
    assert sorted(health) == expected
    # Every app series says which instance it counts (the apps' own label) and where it was scraped.
    by_instance = prom.query("count by (instance, instance_id, service) (http_requests_total{job='mesh'})")
    pairs = {(dict(k)["instance"], dict(k)["instance_id"]) for k in by_instance}
    assert pairs == {(i, i) for job, i in expected if job == "mesh"}


def test_the_mesh_job_scrapes_through_the_sidecars_with_mtls(prom, plan, model):
    mesh = {t["instance"]: t for t in prom.targets() if t["job"] == "mesh"}
    for inst in model["instances"]:
        if inst["id"] in plan["instances"]:
            assert mesh[inst["id"]]["url"] == f"https://{inst['node_address']}:{inst['sidecar_port']}/metrics"
    # The app's own port is on the node's loopback: nobody but its sidecar reaches it.
    assert all(str(i["port"]) not in t["url"] for t in mesh.values() for i in model["instances"])


def test_a_stopped_instance_goes_down_then_comes_back(host, prom, model):
    victim = instances_of(model, "add-svc")[-1]
    unit = victim["units"]["app"]
    key = ("mesh", victim["id"])
    host.run(f"systemctl stop {unit}")
    try:
        targets, down_after = _wait_for(prom, lambda ts: _health(ts).get(key, "down") == "down", 30)
        print(f"{victim['id']} stopped: its target {_health(targets).get(key, 'gone')} after {down_after} s")
        assert down_after is not None
    finally:
        host.run(f"systemctl start {unit}")
    targets, up_after = _wait_for(prom, lambda ts: _health(ts).get(key) == "up", 30)
    print(f"{victim['id']} started: up again after {up_after} s")
    assert up_after is not None


def test_the_counters_rise_by_exactly_what_was_done(host, mesh, prom, model, seed):
    """N computes through the edge: the frontends counted N, their upstream calls 16 N (8 to each service), and the
    add-svc and sub-svc instances 8 N each; a metric that lies fails this."""
    computes = 25
    queries = {
        "frontend computes": "sum(http_requests_total{job='mesh',service='frontend',route='/api/v1/compute',status='200'})",
        "frontend calls to add-svc": "sum(upstream_calls_total{job='mesh',upstream='add-svc',outcome='ok'})",
        "frontend calls to sub-svc": "sum(upstream_calls_total{job='mesh',upstream='sub-svc',outcome='ok'})",
        "add-svc answers": "sum(http_requests_total{job='mesh',service='add-svc',route='/api/v1/execute',status='200'})",
        "sub-svc answers": "sum(http_requests_total{job='mesh',service='sub-svc',route='/api/v1/execute',status='200'})",
    }
    want = {"frontend computes": computes, "frontend calls to add-svc": 8 * computes,
            "frontend calls to sub-svc": 8 * computes, "add-svc answers": 8 * computes, "sub-svc answers": 8 * computes}
    prom.wait_for_scrapes_after(time.time(), ["mesh"])
    before = {name: prom.value(q) for name, q in queries.items()}
    edge = f"http://127.0.0.1:{model['edge']['port']}/api/v1/compute"
    answers = mesh.compute_many(computes, url=edge)
    assert [(s, b.get("result")) for s, b in answers] == [(200, seed["result"])] * computes
    prom.wait_for_scrapes_after(time.time(), ["mesh"])
    after = {name: prom.value(q) for name, q in queries.items()}
    rose = {name: after[name] - before[name] for name in queries}
    print(f"{computes} computes through the edge; the counters rose by {rose}")
    assert rose == want


def _shot(page, name):
    path = screenshot(page, os.path.join(ARTIFACTS, name))
    print(f"screenshot: {path}")
    return path


def test_the_dashboard_draws_every_panel_under_load(model, prom, plan):
    """Headless Chromium opens /consoles/mesh.html during a bounded load through the edge: every panel draws at least
    one series (none shows 'No timeseries returned'), one line per instance of each service."""
    from playwright.sync_api import sync_playwright

    edge_node = model["edge"]["nodes"][0]
    url = f"http://{model['nodes'][edge_node]['address']}:{model['edge']['port']}/api/v1/compute"
    load = BoundedLoad(url, {"expression": SEED_EXPRESSION}, rate=10, seconds=45).start()
    try:
        time.sleep(20)  # two rate windows of samples at 5 s scrapes
        with sync_playwright() as pw:
            chromium = browser(pw)
            page = chromium.new_page(viewport={"width": 1400, "height": 900})
            panels = dashboard(page, prom.url, window_s=120)
            _shot(page, "dashboard.png")
            chromium.close()
    finally:
        records = load.stop().join()
    print(f"load during the shot: {load_summary(records)}")
    for p in panels:
        print(f"  {p['panel']:<22} {len(p['series'])} series {p['error']} {sorted(p['series'])[:6]}")
    services = [s for s in plan["services"]]
    assert {f"{s}-{kind}" for s in services for kind in ("rate", "errors", "latency")} <= {p["panel"] for p in panels}
    assert [p["panel"] for p in panels if not p["series"] or p["error"]] == []
    by_panel = {p["panel"]: set(p["series"]) for p in panels}
    for svc in services:
        assert by_panel[f"{svc}-rate"] == {i["id"] for i in instances_of(model, svc)}
    assert {i["id"] for s in ("add-svc", "sub-svc") for i in instances_of(model, s)} <= by_panel["calls-by-instance"]


def test_the_consul_ui_lists_the_services(model):
    """Headless Chromium opens the Consul UI (HTTPS, no token: the anonymous token may read services): the services
    page lists the catalog's services and the lab's own."""
    from playwright.sync_api import sync_playwright

    server = model["metrics"]["servers"][0]
    url = f"https://{model['nodes'][server]['address']}:{model['settings']['consul_ports']['https']}"
    names = [s["name"] for s in model["services"]] + ["edge", "node-exporter", "prometheus"]
    with sync_playwright() as pw:
        chromium = browser(pw)
        # The lab's CA is not the browser's: the TLS of this port is tested with the CA elsewhere (test_12).
        page = chromium.new_page(viewport={"width": 1400, "height": 900}, ignore_https_errors=True)
        listed = consul_services(page, url, names)
        _shot(page, "consul-ui-services.png")
        chromium.close()
    print(f"the Consul UI lists {listed}")
    assert set(names) <= set(listed)

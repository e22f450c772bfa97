"""Follow one request through the mesh: the apps' OpenTelemetry spans, carried by W3C traceparent headers through
the sidecars (Consul's built-in proxy is L4: it passes them untouched), sent to Zipkin through the mesh, read back
from Zipkin's API and UI.

A compute of the seed is one trace: the frontend's `compute` span (the root), one client span per upstream attempt,
and one server span per attempt that reached add-svc or sub-svc, each the child of the attempt that reached it.
Controls: an unsampled traceparent stores no trace (the same request with the sampled flag does); Zipkin stopped
drops spans, never requests. Screenshots go to $MESH_ARTIFACTS (default .artifacts/ in the repository).
"""

import json
import os
import secrets as pysecrets
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from conftest import instances_of, systemd_only, wait_until
from testkit.lab import NodeLoad, load_summary
from testkit.observe import (Zipkin, browser, sampled_traceparent, screenshot, span_failed, span_instance, trace_tree,
                             zipkin_trace_page)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ARTIFACTS = os.environ.get("MESH_ARTIFACTS", os.path.join(ROOT, ".artifacts"))
ARITH = ("add-svc", "sub-svc")

pytestmark = systemd_only


@pytest.fixture(scope="module")
def zipkin(model):
    tracing = model["tracing"]
    assert tracing, "the lab runs without tracing: playbooks/facts.yml printed why (the Zipkin jar was not found?)"
    return Zipkin(f"http://{model['nodes'][tracing['node']]['address']}:{tracing['port']}")


def _compute(edge, seed, headers=None):
    """One compute of the seed through the edge, from the controller: (status, headers, body). Without `headers` it
    asks for a trace (a sampled traceparent, as `make trace` does): the lab samples 10 % of the other requests."""
    if headers is None:
        headers = sampled_traceparent()[1]
    req = urllib.request.Request(f"{edge['url']}/api/v1/compute", data=json.dumps({"expression": seed["expression"]}).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.load(exc)


def _service(span):
    return (span.get("localEndpoint") or {}).get("serviceName")


def _shape(spans):
    """(roots, attempts, servers) of a compute's trace: the frontend's root span(s), its client spans (one per
    attempt), the arith services' server spans."""
    roots = [s for s in spans if _service(s) == "frontend" and s.get("kind") == "SERVER"]
    attempts = [s for s in spans if _service(s) == "frontend" and s.get("kind") == "CLIENT"]
    servers = [s for s in spans if _service(s) in ARITH and s.get("kind") == "SERVER"]
    return roots, attempts, servers


def _print(spans):
    for line in trace_tree(spans):
        print("  " + line)


def test_one_compute_is_one_trace_through_every_instance_it_called(edge, zipkin, seed):
    trace_id, traceparent = sampled_traceparent()
    status, headers, body = _compute(edge, seed, traceparent)
    assert (status, body.get("result")) == (200, seed["result"]), body
    # The frontend continues the caller's trace and says so.
    assert headers.get("X-Trace-Id") == body.get("trace_id") == trace_id
    calls = body["calls"]
    spans = zipkin.wait_trace(trace_id, spans=1 + 2 * len(calls))
    print(f"trace {trace_id}: {len(spans)} spans for {len(calls)} calls")
    _print(spans)
    roots, attempts, servers = _shape(spans)
    by_id = {s["id"]: s for s in spans}
    retried = sum(c["attempts"] - 1 for c in calls)
    assert {s["traceId"] for s in spans} == {trace_id}
    # Exactly: the root, one client span per attempt (one per call when none was retried), one server span each.
    assert len(roots) == 1 and roots[0].get("parentId") == traceparent["traceparent"].split("-")[2], roots
    assert len(spans) == 1 + len(attempts) + len(servers)
    assert len(attempts) == len(calls) + retried == len(servers)
    assert all(a["parentId"] == roots[0]["id"] for a in attempts)
    # Each server span is the child of the client span (the attempt) that reached it, and names the same instance.
    parents = [by_id.get(s.get("parentId")) for s in servers]
    assert all(p in attempts for p in parents)
    assert len({p["id"] for p in parents}) == len(servers)
    assert [span_instance(s) for s in servers] == [(p.get("tags") or {}).get("mesh.instance") for p in parents]
    # The instances the spans name are the ones the response's `calls` lists (every answered attempt: the last).
    assert Counter(span_instance(s) for s in servers if not span_failed(s)) == Counter(c["instance"] for c in calls)
    assert span_instance(roots[0]) == headers.get("X-Instance-Id")


def test_a_retried_call_shows_each_attempt(host, model, edge, zipkin, seed):
    """One sub-svc instance answers half its calls with HTTP 500 (its fault switch): the retried calls are several
    attempt spans under the root, the failed ones in error, and the trace still ends with the seed's result."""
    bad = instances_of(model, "sub-svc")[0]
    host.check_output("curl -sf -X PUT -H 'Content-Type: application/json' --data-binary %s http://127.0.0.1:%s/admin/faults",
                      json.dumps({"error_rate": 0.5}), str(bad["admin_port"]))
    try:
        found = None
        for _ in range(10):  # a compute calls sub-svc 8 times, half of them on the bad instance: retries are likely
            status, headers, body = _compute(edge, seed)
            assert (status, body.get("result")) == (200, seed["result"]), body
            if any(c["attempts"] > 1 for c in body["calls"]):
                found = headers["X-Trace-Id"], body
                break
        assert found, "10 computes with one sub-svc instance failing half its calls needed no retry"
    finally:
        host.check_output("curl -sf -X DELETE http://127.0.0.1:%s/admin/faults", str(bad["admin_port"]))
    trace_id, body = found
    calls = body["calls"]
    spans = zipkin.wait_trace(trace_id, spans=1 + 2 * sum(c["attempts"] for c in calls))
    print(f"trace {trace_id}: {len(spans)} spans; attempts per call {[c['attempts'] for c in calls]}")
    _print(spans)
    roots, attempts, servers = _shape(spans)
    assert len(attempts) == sum(c["attempts"] for c in calls)
    tags = [a.get("tags") or {} for a in attempts]
    retries = [a for a, t in zip(attempts, tags) if int(t.get("mesh.attempt", 1)) > 1]
    failed = [a for a in attempts if span_failed(a)]
    assert len(retries) == sum(c["attempts"] - 1 for c in calls) > 0
    # Every failed attempt was the bad instance's HTTP 500, and its own server span says so too.
    assert failed and {(a.get("tags") or {}).get("mesh.instance") for a in failed} == {bad["id"]}
    by_parent = {s.get("parentId"): s for s in servers}
    assert all(span_failed(by_parent[a["id"]]) for a in failed)
    assert len(failed) == len(retries)  # each retry follows one failure (attempt timeouts would show here too)


def test_an_unsampled_request_stores_no_trace(edge, zipkin, seed):
    """The sampling decision travels with the request: a traceparent whose sampled flag is off stores nothing, in
    the frontend and in every instance it calls; the same request with the flag on stores the whole trace."""
    ids = {}
    for flag in ("00", "01"):
        trace_id = pysecrets.token_hex(16)
        status, headers, body = _compute(edge, seed, {"traceparent": f"00-{trace_id}-{pysecrets.token_hex(8)}-{flag}"})
        assert (status, body.get("result"), headers.get("X-Trace-Id")) == (200, seed["result"], trace_id)
        ids[flag] = trace_id
    sampled = zipkin.wait_trace(ids["01"], spans=33)
    unsampled = zipkin.trace(ids["00"])  # its spans would have been sent in the same batches as the sampled ones
    print(f"sampled flag on: {len(sampled)} spans; off: {len(unsampled)} spans")
    assert len(sampled) >= 33 and unsampled == []


def _dropped(host, model):
    """{instance: tracing_spans_dropped_total} of every instance, read from its app's /metrics on the node."""
    found = {}
    for inst in model["instances"]:
        text = host.check_output("curl -sf http://127.0.0.1:%s/metrics", str(inst["port"]))
        found[inst["id"]] = sum(float(line.split()[-1]) for line in text.splitlines()
                                if line.startswith("tracing_spans_dropped_total"))
    return found


def test_zipkin_stopped_costs_spans_not_requests(host, model, edge, zipkin, seed):
    """Under 10 computes/s through the edge: Zipkin stopped for the second half; every compute answers the seed's
    result, the latency stays within a bound of the first half's, the spans the apps could not send are counted in
    their metrics; Zipkin started again, new traces arrive."""
    node = model["edge"]["nodes"][0]
    url = f"http://127.0.0.1:{model['edge']['port']}/api/v1/compute"
    before = _dropped(host, model)
    load = NodeLoad(node, url, {"expression": seed["expression"]}, rate=10, seconds=16).start()
    try:
        wait_until(lambda: load.elapsed() >= 6, 10, "6 s of load with Zipkin up")
        host.check_output("systemctl stop zipkin.service")
        stopped_at = load.elapsed()
        records = load.join()
    finally:
        host.check_output("systemctl start zipkin.service")
        restarted = time.monotonic()
    up = [r for r in records if r["t"] < stopped_at]
    down = [r for r in records if r["t"] >= stopped_at + 1]
    summary = {"up": load_summary(up), "down": load_summary(down)}
    print(f"Zipkin up: {summary['up']}")
    print(f"Zipkin stopped at {stopped_at:.1f} s: {summary['down']}")
    ok = [r for r in records if r["status"] == 200 and (r["body"] or {}).get("result") == seed["result"]]
    assert len(ok) == len(records) >= 150
    p99 = {name: part["p99_ms"] for name, part in summary.items()}
    print(f"p99: Zipkin up {p99['up']} ms, stopped {p99['down']} ms")
    # The export is asynchronous: a stopped Zipkin adds no wait to a request (bound: the larger of 2x and +50 ms).
    assert p99["down"] <= max(2 * p99["up"], p99["up"] + 50)
    assert wait_until(lambda: sum(_dropped(host, model).values()) > sum(before.values()), 15,
                      "the apps count the spans they could not send")
    after = _dropped(host, model)
    rose = {iid: after[iid] - before[iid] for iid in after if after[iid] > before[iid]}
    print(f"spans dropped while Zipkin was stopped, per instance: {rose}")
    # Every service that served the load dropped spans: the frontend and both arith services.
    assert {iid.rsplit("-", 1)[0] for iid in rose} == {"frontend", *ARITH}
    # Back: Zipkin answers, Consul's check passes again and the sidecars route to it; then a new compute's trace is whole.
    found = {}

    def whole_trace():
        status, headers, body = _compute(edge, seed)
        try:
            spans = zipkin.wait_trace(headers["X-Trace-Id"], spans=33, timeout=4)
        except urllib.error.URLError:  # Zipkin still starting
            return False
        found.update(status=status, spans=len(spans), want=1 + 2 * sum(c["attempts"] for c in body["calls"]))
        return status == 200 and found["spans"] == found["want"]

    assert wait_until(whole_trace, 120, "a new compute's trace is whole in Zipkin again"), found
    print(f"Zipkin started again: the first whole trace ({found['spans']} spans) {time.monotonic() - restarted:.1f} s later")


def test_the_dashboard_links_to_zipkin(model, prom, zipkin):
    """The mesh console (Prometheus renders it on the server) links to Zipkin's UI at the address Consul gives it."""
    with urllib.request.urlopen(f"{prom.url}/consoles/mesh.html", timeout=10) as resp:
        page = resp.read().decode()
    link = page.split('id="mesh-zipkin" href="', 1)[1].split('"', 1)[0] if 'id="mesh-zipkin"' in page else None
    print(f"the dashboard links to {link}")
    assert link == zipkin.ui_url()
    with urllib.request.urlopen(link, timeout=10) as resp:
        assert resp.status == 200


def test_zipkin_ui_shows_a_compute(edge, zipkin, seed):
    """Headless Chromium opens a compute's trace in Zipkin's UI: the page lists the trace's services and spans."""
    from playwright.sync_api import sync_playwright

    _, headers, body = _compute(edge, seed)
    trace_id = headers["X-Trace-Id"]
    spans = zipkin.wait_trace(trace_id, spans=33)
    with sync_playwright() as pw:
        chromium = browser(pw)
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        text = zipkin_trace_page(page, zipkin, trace_id, ("frontend", *ARITH, "compute"))
        path = screenshot(page, os.path.join(ARTIFACTS, "zipkin-trace.png"))
        chromium.close()
    print(f"screenshot: {path}; {len(spans)} spans")
    assert all(name in text for name in ("frontend", *ARITH)) and "compute" in text, text[:2000]

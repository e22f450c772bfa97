"""The edge (HAProxy, meshlab/edge.py): the one way in, discovery through Consul DNS, rate limit, weighted split,
header routing, retries and outlier detection, settings refused before anything changes.

Requests come from the controller to the edge's port on the node's address (as a user's browser or curl
would), except where a test needs the node's loopback (the frontends' own ports, their admin endpoints).
"""

import json
import socket
import time
import urllib.request
from collections import Counter

import pytest

from conftest import (binomial_bounds, edge_matches_consul, edge_pids, edge_servers, edge_stats, instances_of,
                      passing_sidecars, run_playbook, systemd_only, wait_until)
from testkit.lab import BoundedLoad, load_summary

pytestmark = systemd_only


def _versions(records):
    return Counter(r["headers"].get("x-version") for r in records if r["status"] == 200)


def test_the_edge_answers_the_seed_and_is_the_only_way_in(host, model, edge, seed):
    """9 through the edge; every frontend's own port is closed to other hosts but answers on the node's loopback
    (the instance lives: it is the edge that lets users in)."""
    req = urllib.request.Request(f"{edge['url']}/api/v1/compute", data=json.dumps({"expression": seed["expression"]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body, version = json.load(resp), resp.headers["X-Version"]
    print(f"through the edge: {body['result']} from {body['version']} ({len(body['calls'])} upstream calls)")
    assert body["result"] == seed["result"] and version in ("v1", "v2")
    for fe in instances_of(model, "frontend"):
        with socket.socket() as sock:
            sock.settimeout(3)
            refused = sock.connect_ex((fe["node_address"], fe["port"]))
        assert refused != 0, f"{fe['id']} answers on {fe['node_address']}:{fe['port']}: it must listen on loopback only"
        assert host.run(f"curl -sf -o /dev/null http://127.0.0.1:{fe['port']}/health").rc == 0, f"{fe['id']} is not alive"
    with socket.socket() as sock:
        sock.settimeout(3)
        assert sock.connect_ex((edge["address"], model["edge"]["port"])) == 0  # control: the edge's port is open


def test_the_edge_serves_exactly_the_passing_frontend_instances(edge, mesh, model):
    """The edge's servers (its stats) are the passing frontend sidecars in Consul, each in its version's backend."""
    found = wait_until(lambda: edge_matches_consul(edge, mesh), 30, "the edge matches Consul")
    print(f"edge servers UP: {edge_servers(edge)}; passing in Consul: {passing_sidecars(mesh)}")
    assert found, "the edge's servers differ from the passing frontend sidecars"
    assert len(found[0]) == len(instances_of(model, "frontend"))
    # The same count in its Prometheus exporter, per version.
    with urllib.request.urlopen(f"{edge['stats']}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    active = {b: sum(1 for a, v in found[1].items() if f"frontend_{v}" == b) for b in ("frontend_v1", "frontend_v2")}
    for backend, count in active.items():
        assert f'haproxy_backend_active_servers{{proxy="{backend}"}} {count}' in metrics, (backend, count)


def test_rate_limit_answers_429_with_json_and_retry_after(edge, model):
    """Below the limit every answer is 200; a burst at four times the limit gets 429s with a JSON body and
    Retry-After, and about the limit's worth of 200s per second (the limit counts what it lets through)."""
    limit = 50  # group_vars mesh_edge_rate_limit per mesh_edge_rate_period_s (1 s)
    time.sleep(2)  # the earlier tests' requests leave the stick table's window
    below = BoundedLoad(f"{edge['url']}/health", None, rate=20, seconds=3).start().join()
    time.sleep(2)
    burst_s = 2
    above = BoundedLoad(f"{edge['url']}/health", None, rate=200, seconds=burst_s, timeout=3).start().join()
    statuses = Counter(r["status"] for r in above)
    limited = [r for r in above if r["status"] == 429]
    print(f"below (20/s for 3 s): {dict(Counter(r['status'] for r in below))}; above (200/s for {burst_s} s): "
          f"{dict(statuses)}; a 429: {limited[0]['body'] if limited else None}, Retry-After "
          f"{limited[0]['headers'].get('retry-after') if limited else None}")
    assert [r["status"] for r in below] == [200] * 60
    assert set(statuses) <= {200, 429} and statuses[429] > 0
    assert limit * (burst_s - 1) <= statuses[200] <= limit * (burst_s + 1)
    assert all(r["body"]["limit"] == limit and r["headers"].get("retry-after") == "1" for r in limited)
    time.sleep(2)


def test_the_split_follows_the_weights_and_the_header_pins_the_canary(edge, model):
    """400 requests at the catalog's 90/10: v2's share within the binomial spread; with X-Canary: always every
    request goes to v2."""
    weights = {v["name"]: v["weight"] for v in next(s for s in model["catalog"] if s["name"] == "frontend")["versions"]}
    records = BoundedLoad(f"{edge['url']}/health", None, rate=40, seconds=10).start().join()
    versions = _versions(records)
    low, high = binomial_bounds(len(records), weights["v2"] / 100)
    print(f"weights {weights}: {dict(versions)} of {len(records)} (statuses {dict(Counter(r['status'] for r in records))}); "
          f"v2 expected within [{low}, {high}] (4.5 sigma)")
    assert all(r["status"] == 200 for r in records)
    assert low <= versions["v2"] <= high and versions["v1"] + versions["v2"] == len(records)

    pinned = BoundedLoad(f"{edge['url']}/health", None, rate=20, seconds=2, headers={"X-Canary": "always"}).start().join()
    print(f"X-Canary: always: {dict(_versions(pinned))}")
    assert _versions(pinned) == {"v2": 40}


def _server_row(edge, inst):
    """The stats row of the edge's server for `inst` (None: no server has its address, DNS dropped it)."""
    addr = f"{inst['node_address']}:{inst['sidecar_port']}"
    return next((r for r in edge_stats(edge) if r.get("addr") == addr and r["pxname"].startswith("frontend")), None)


def _status(edge, inst):
    row = _server_row(edge, inst)
    return row["status"] if row else "GONE"


def test_a_stopped_frontend_costs_no_request_and_is_marked_down_then_up(host, edge, mesh, model):
    """Stop frontend-1 under 20/s through the edge for 16 s: zero failed (retries, redispatch); the edge marks
    it down while it is stopped and up again after it restarts."""
    victim = instances_of(model, "frontend")[0]
    unit = victim["units"]["app"]
    load = BoundedLoad(f"{edge['url']}/api/v1/compute", {"expression": "1+2"}, rate=20, seconds=16).start()
    seen = []
    try:
        while load.elapsed() < 3:
            time.sleep(0.1)
        host.check_output(f"systemctl stop {unit}")
        stopped_at = load.elapsed()
        while load.elapsed() < 11:
            seen.append(_status(edge, victim))
            time.sleep(0.5)
    finally:
        host.check_output(f"systemctl start {unit}")
    records = load.join()
    back = wait_until(lambda: _status(edge, victim).startswith("UP"), 30, f"{victim['id']} up again")
    summary = load_summary(records)
    served = Counter(r["headers"].get("x-instance-id") for r in records if r["t"] > stopped_at + 1 and r["t"] < 11)
    print(f"{victim['id']} stopped at {stopped_at:.1f} s, started at 11 s: {summary}; its server's states "
          f"{sorted(set(seen))}; answered by {dict(served)}; back up: {bool(back)}")
    assert summary["failed"] == 0 and summary["requests"] == 320
    assert any(s.startswith(("DOWN", "MAINT", "GONE")) for s in seen), "the edge never took it out"
    assert victim["id"] not in served
    assert back


def test_an_erroring_frontend_is_ejected_by_outlier_detection(host, edge, model):
    """frontend-2 answers every compute with 500 (fault switch; its health check still passes): the edge marks it
    down after `error-limit` (5) errors in a row; its checks bring it back, and the next 5 errors take it out
    again. The edge does not retry an instance's own 500s (a retried answer is never observed), so users see
    them: counted, and bounded by 5 per time it was taken out (plus the 5 that may end the load), against the
    about 45 % of requests it would answer without outlier detection."""
    bad = instances_of(model, "frontend")[1]
    before = _server_row(edge, bad)
    host.check_output("curl -sf -X PUT -H 'Content-Type: application/json' --data-binary %s http://127.0.0.1:%s/admin/faults",
                      json.dumps({"error_rate": 1}), str(bad["admin_port"]))
    states = []
    try:
        load = BoundedLoad(f"{edge['url']}/api/v1/compute", {"expression": "1+2"}, rate=20, seconds=12).start()
        while load.elapsed() < 12:
            states.append(_status(edge, bad))  # an UP spell lasts ~0.5 s (5 errors at ~9/s): poll faster than that
            time.sleep(0.1)
        records = load.join()
    finally:
        host.check_output("curl -sf -X DELETE http://127.0.0.1:%s/admin/faults", str(bad["admin_port"]))
    after = _server_row(edge, bad)
    errors_5xx = int(after["hrsp_5xx"] or 0) - int(before["hrsp_5xx"] or 0)
    outs = sum(1 for a, b in zip(states, states[1:]) if a.startswith("UP") and not b.startswith("UP"))
    summary = load_summary(records)
    print(f"{bad['id']} erroring: users {summary} {dict(Counter(r['status'] for r in records))}; its 5xx answers to the "
          f"edge {errors_5xx}; taken out {outs} times (states seen {dict(Counter(st.split()[0] for st in states))})")
    users_5xx = sum(1 for r in records if r["status"] >= 500)
    assert summary["requests"] == 240 and users_5xx == summary["failed"] == errors_5xx
    assert outs >= 1, "outlier detection never took the erroring instance out"
    assert 0 < users_5xx <= 5 * (outs + 1), "more errors reached users than the error limit allows"
    assert wait_until(lambda: _status(edge, bad).startswith("UP"), 30, f"{bad['id']} up again")


@pytest.mark.parametrize("bad", [
    {"mesh_edge_weights": {"frontend": {"v1": "ninety", "v2": 10}}},
    {"mesh_edge_weights": {"nosuch": {"v1": 100}}},
], ids=["weights-not-numbers", "unknown-service"])
def test_bad_edge_settings_change_nothing(host, inventory, bad):
    """The edge's playbook stops in preflight with the reason; HAProxy's config and processes are untouched."""
    config, pids = host.check_output("sha256sum /etc/haproxy/haproxy.cfg"), edge_pids(host)
    rc, out = run_playbook(inventory, "playbooks/edge.yml", json.dumps(bad))
    reason = out[out.find("The edge cannot be configured"):][:300]
    print(f"{json.dumps(bad)}: rc {rc}: {reason}")
    assert rc != 0
    assert (host.check_output("sha256sum /etc/haproxy/haproxy.cfg"), edge_pids(host)) == (config, pids)

"""Overload without collapse (issue 24; docs/edge.md, "Overload"): the edge sheds the excess at the door.

The load runs on the node against the edge's port on loopback, which the rate limit exempts (like
`make overload`): what stops the excess is the edge's admission control, a limit of requests at a time per
frontend server and a bounded queue. Every request's outcome is recorded; the figures are printed.
"""

import json
import urllib.error
import urllib.request

import pytest

from conftest import run_playbook, systemd_only
from testkit.load import NodeLoad, overload_summary, overload_table

pytestmark = systemd_only

STEP_S = 8
# p99 of the admitted requests at most the queue's timeout plus this (a request admitted late waited in the queue
# for up to the timeout, then was served like any other).
P99_MARGIN_MS = 1000


@pytest.fixture(scope="module")
def loopback_edge(model):
    [node] = model["edge"]["nodes"]
    return node, f"http://127.0.0.1:{model['edge']['port']}/api/v1/compute"


def _step(loopback_edge, seed, rate, seconds=STEP_S):
    node, url = loopback_edge
    records = NodeLoad(node, url, {"expression": seed["expression"]}, rate, seconds, timeout=10).start().join()
    ok = lambda r: r["status"] == 200 and (r["body"] or {}).get("result") == seed["result"]  # noqa: E731
    return overload_summary(rate, seconds, records, ok)


def _capacity(loopback_edge, seed, concurrency, seconds=5):
    """Computes per second the mesh serves through the edge with `concurrency` clients back to back."""
    node, url = loopback_edge
    records = NodeLoad(node, url, {"expression": seed["expression"]}, concurrency, seconds, timeout=10,
                       closed=True).start().join()
    return round(sum(1 for r in records if r["status"] == 200) / seconds, 1)


def test_a_step_load_past_capacity_is_shed_at_the_edge_and_what_is_admitted_succeeds(loopback_edge, model, seed):
    opts = {"maxconn": 3, "queue_ms": 1000}  # group_vars edge.yml: mesh_edge_server_maxconn, mesh_edge_queue_timeout_ms
    frontends = sum(1 for i in model["instances"] if i["service"] == "frontend")
    capacity = _capacity(loopback_edge, seed, opts["maxconn"] * frontends)
    rates = [max(5, int(capacity * f)) for f in (0.5, 1.5, 3)]
    steps = [_step(loopback_edge, seed, rate) for rate in rates]
    print(f"capacity (closed loop, {opts['maxconn'] * frontends} clients): {capacity}/s; steps:")
    print("\n".join(overload_table(steps)))
    admitted = sum(s["admitted"] for s in steps)
    failed = sum(s["failed_inside"] for s in steps)
    top = steps[-1]
    assert failed <= admitted * 0.001, f"{failed} of {admitted} admitted requests failed: {steps}"
    assert steps[0]["shed"] == 0, steps[0]  # below capacity nothing is shed
    assert top["shed"] > 0 and top["shed_retry_after"] == ["1"], top
    assert top["goodput"] >= 0.7 * capacity, f"goodput {top['goodput']}/s at {top['rate']}/s offered, capacity {capacity}/s"
    assert top["p99_ms"] <= opts["queue_ms"] + P99_MARGIN_MS, top


def test_without_the_concurrency_limit_the_same_overload_fails_inside(loopback_edge, inventory, seed):
    """The control: the edge with a limit no load reaches lets everything in; the mesh then fails requests (its
    calls run out of time) instead of the edge shedding them."""
    try:
        rc, out = run_playbook(inventory, "playbooks/edge.yml", "mesh_edge_server_maxconn=10000")
        assert rc == 0, out[-3000:]
        capacity = _capacity(loopback_edge, seed, 9)
        step = _step(loopback_edge, seed, max(30, int(capacity * 3)))
        print(f"no concurrency limit, capacity {capacity}/s: {step}")
        assert step["shed"] == 0
        assert step["failed_inside"] > 0 or step["p99_ms"] > 1000 + P99_MARGIN_MS, step
    finally:
        rc, out = run_playbook(inventory, "playbooks/edge.yml")
    assert rc == 0, out[-3000:]


def _post(url, body):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_a_body_over_the_limit_gets_the_edges_413_and_one_at_the_limit_is_served(edge, seed):
    limit = 16384  # group_vars edge.yml mesh_edge_max_body_bytes: the frontend's MAX_BODY_BYTES
    url = f"{edge['url']}/api/v1/compute"
    head = json.dumps({"expression": seed["expression"], "pad": ""})
    at_limit = head[:-2] + " " * (limit - len(head)) + '"}'
    assert len(at_limit) == limit
    status, body = _post(url, at_limit.encode())
    print(f"{limit} bytes: {status} {body.get('result')}")
    assert (status, body.get("result")) == (200, seed["result"])
    status, body = _post(url, b'{"expression": "1+1", "pad": "' + b" " * (2 * 1024 * 1024) + b'"}')
    print(f"2 MB: {status} {body}")
    assert status == 413 and body["limit"] == limit

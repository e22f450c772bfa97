"""Overload without collapse (issue 24; docs/edge.md, "Overload"): the edge sheds the excess at the door.

The load runs on the node against the edge's port on loopback, which the rate limit exempts (like
`make overload`): what stops the excess is the edge's admission control, a limit of requests at a time per
frontend server and a bounded queue. Every request's outcome is recorded; the figures are printed.
"""

import json
import os
import subprocess

import pytest
import yaml

from conftest import edge_matches_consul, edge_servers, edge_stats, systemd_only, wait_until
from testkit.lab import ROOT
from testkit.load import NodeLoad, overload_summary, overload_table

pytestmark = systemd_only

# The scenario's edge settings (its group_vars are the lab's): mesh_edge_server_maxconn, mesh_edge_queue_timeout_ms,
# mesh_edge_max_body_bytes.
with open(os.path.join(ROOT, "inventory", "lab", "group_vars", "all", "edge.yml"), encoding="utf-8") as _fh:
    EDGE = yaml.safe_load(_fh)
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
    opts = {"maxconn": EDGE["mesh_edge_server_maxconn"], "queue_ms": EDGE["mesh_edge_queue_timeout_ms"]}
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


def _set_maxconn(host, edge, value):
    """Every frontend server's maxconn in the running HAProxy, through its admin socket (no reload)."""
    servers = [f"{r['pxname']}/{r['svname']}" for r in edge_stats(edge)
               if r["pxname"].startswith("frontend") and r["svname"] not in ("FRONTEND", "BACKEND")]
    script = ("import socket,sys\n"
              "for server in sys.argv[2:]:\n"
              "    s = socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock')\n"
              "    s.sendall(f'set maxconn server {server} {sys.argv[1]}\\n'.encode()); s.recv(4096); s.close()\n")
    host.check_output("python3 -c %s %s " + " ".join(["%s"] * len(servers)), script, str(value), *servers)
    return servers


def test_without_the_concurrency_limit_the_same_overload_collapses(host, edge, mesh, loopback_edge, seed):
    """The control: the same HAProxy with its servers' limit lifted (at runtime, through its admin socket) lets
    everything in. The same overload then collapses the mesh: the frontends drown (their sidecars run out of file
    descriptors, 1024 by default), their checks fail, the edge has no server left, and goodput falls far below
    what the limited edge kept. The cluster is restored afterwards: the frontends' sidecars restarted."""
    rate = max(30, int(_capacity(loopback_edge, seed, 9) * 3))
    limited = _step(loopback_edge, seed, rate)
    try:
        servers = _set_maxconn(host, edge, 10000)
        unlimited = _step(loopback_edge, seed, rate)
    finally:
        _set_maxconn(host, edge, EDGE["mesh_edge_server_maxconn"])
        died = host.run("journalctl --no-pager -u 'mesh-sidecar-frontend-*' --since '-2min' "
                        "| grep -c 'listener stopped' || true").stdout.strip()
        host.check_output("systemctl restart 'mesh-sidecar-frontend-*'")
        frontends = sum(1 for i in mesh.model["instances"] if i["service"] == "frontend")
        back = wait_until(lambda: edge_matches_consul(edge, mesh) and len(edge_servers(edge)) == frontends,
                          60, "the edge serves every frontend again")
    print(f"{rate}/s for {STEP_S} s: with the limit: {limited}")
    print(f"without it ({len(servers)} server slots lifted): {unlimited}; sidecar listeners that died: {died}")
    assert back, "the frontends did not come back after the control"
    assert unlimited["goodput"] < 0.5 * limited["goodput"] or unlimited["failed_inside"] > 0.01 * unlimited["offered"], \
        (limited, unlimited)


def _curl_post(url, body, tmp_path):
    """POST with curl, as a user would (curl reads an early answer while it still sends): (status, JSON or None)."""
    path = tmp_path / "body.json"
    path.write_bytes(body)
    run = subprocess.run(["curl", "-s", "-m", "20", "-o", "-", "-w", "\n%{http_code}", "-H", "Content-Type: application/json",
                          "--data-binary", f"@{path}", url], capture_output=True, text=True, check=False)
    text, _, code = run.stdout.rpartition("\n")
    try:
        return int(code or 0), json.loads(text)
    except ValueError:
        return int(code or 0), None


def test_a_body_over_the_limit_gets_the_edges_413_and_one_at_the_limit_is_served(edge, seed, tmp_path):
    limit = EDGE["mesh_edge_max_body_bytes"]  # the frontend's MAX_BODY_BYTES
    url = f"{edge['url']}/api/v1/compute"
    head = json.dumps({"expression": seed["expression"], "pad": ""})
    at_limit = head[:-2] + " " * (limit - len(head)) + '"}'
    assert len(at_limit) == limit
    status, body = _curl_post(url, at_limit.encode(), tmp_path)
    print(f"{limit} bytes: {status} {body}")
    assert (status, (body or {}).get("result")) == (200, seed["result"])
    status, body = _curl_post(url, b'{"expression": "1+1", "pad": "' + b" " * (2 * 1024 * 1024) + b'"}', tmp_path)
    print(f"2 MB: {status} {body}")
    assert status == 413 and body["limit"] == limit

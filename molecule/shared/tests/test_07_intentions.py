"""Intentions and isolation: only declared edges pass the mesh; app ports stay on loopback."""

import ipaddress
import socket

import pytest

from conftest import systemd_only

PROBE = """
consul connect proxy -service {source} -upstream add-svc:{port} >/tmp/probe-{source}.log 2>&1 &
pid=$!
for _ in $(seq 50); do ss -ltn | grep -q ':{port} ' && break; sleep 0.1; done
curl -s -m 5 'http://127.0.0.1:{port}/api/v1/execute?l=1&r=2'
echo " rc=$?"
kill $pid
"""


def _probe(host, source, port):
    return host.run("bash -c %s", PROBE.format(source=source, port=port)).stdout


def test_intentions_are_default_deny_plus_catalog_edges(mesh, catalog):
    got = sorted((i["SourceName"], i["DestinationName"], i["Action"]) for i in mesh.consul("/v1/connect/intentions"))
    want = sorted({("*", "*", "deny")} | {(s["name"], u["service"], "allow") for s in catalog for u in s.get("upstreams") or []})
    assert got == want


def test_allowed_source_reaches_add_svc(host):
    """Control: the same probe as the frontend identity succeeds, so a failure below is the intention's doing."""
    out = _probe(host, "frontend", 19192)
    assert '"result":3' in out.replace(" ", ""), out


def test_undeclared_source_cannot_reach_add_svc(host):
    out = _probe(host, "intruder", 19191)
    assert '"result"' not in out, out
    assert not out.strip().endswith("rc=0"), out


@pytest.fixture(scope="module")
def node_ip(host):
    for addr in host.interface("eth0").addresses:
        if ipaddress.ip_address(addr).version == 4:
            return addr
    pytest.fail("the node has no IPv4 address on eth0")


def _connects(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=3):
            return True
    except OSError:
        return False


@systemd_only
def test_app_ports_are_not_reachable_from_outside_the_node(node_ip, catalog):
    for svc in catalog:
        if svc.get("bind", "127.0.0.1") != "127.0.0.1":
            continue  # the edge service (frontend) is public by design
        for i in range(svc["instances"]):
            assert not _connects(node_ip, svc["port"] + i), f"{svc['name']} app port {svc['port'] + i} is reachable"


@systemd_only
def test_sidecar_and_edge_ports_are_reachable_from_outside(node_ip, catalog):
    """Control for the test above: the node is reachable, only app ports are closed."""
    add = next(s for s in catalog if s["name"] == "add-svc")
    front = next(s for s in catalog if s["name"] == "frontend")
    assert _connects(node_ip, add["sidecar_port"])
    assert _connects(node_ip, front["port"])

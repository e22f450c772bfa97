"""Intentions and isolation: only declared edges pass the mesh; app ports stay on loopback."""

import socket

import pytest

from conftest import instances_of, systemd_only

# A throw-away proxy with a chosen identity and one upstream, on a local port of the probe's own.
PROBE = """
export CONSUL_HTTP_TOKEN={token}
consul connect proxy -http-addr={api} -service {source} -upstream add-svc:{port} >/tmp/probe-{source}.log 2>&1 &
pid=$!
for _ in $(seq 50); do ss -ltn | grep -q ':{port} ' && break; sleep 0.1; done
curl -s -m 5 'http://127.0.0.1:{port}/api/v1/execute?l=1&r=2'
echo " rc=$?"
kill $pid
"""


def _probe(host, model, source, port, token):
    """A proxy with this identity (its leaf certificate asked for with the management token)."""
    return host.run("bash -c %s", PROBE.format(api=model["settings"]["consul_http_addr"], source=source, port=port,
                                               token=token)).stdout


def test_intentions_are_default_deny_plus_the_models_edges(mesh, model):
    got = sorted((i["SourceName"], i["DestinationName"], i["Action"]) for i in mesh.consul("/v1/connect/intentions"))
    want = sorted({("*", "*", "deny")} | {(i["source"], i["destination"], i["action"]) for i in model["intentions"]})
    assert got == want


def test_allowed_source_reaches_add_svc(host, model, management_token):
    """Control: the same probe as the frontend identity succeeds, so a failure below is the intention's doing."""
    out = _probe(host, model, "frontend", 19192, management_token)
    assert '"result":3' in out.replace(" ", ""), out


def test_undeclared_source_cannot_reach_add_svc(host, model, management_token):
    out = _probe(host, model, "intruder", 19191, management_token)
    assert '"result"' not in out, out
    assert not out.strip().endswith("rc=0"), out


def _connects(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=3):
            return True
    except OSError:
        return False


@systemd_only
def test_app_ports_are_not_reachable_from_outside_the_node(model):
    for inst in model["instances"]:
        if inst["bind"] == "127.0.0.1":
            assert not _connects(inst["node_address"], inst["port"]), f"{inst['id']} app port {inst['port']} is reachable"


@systemd_only
@pytest.mark.parametrize("service", ["add-svc", "frontend"])
def test_sidecar_and_public_ports_are_reachable_from_outside(model, service):
    """Control for the test above: the node is reachable, only loopback app ports are closed."""
    for inst in instances_of(model, service):
        assert _connects(inst["node_address"], inst["sidecar_port"]), inst["id"]
        if inst["bind"] != "127.0.0.1":
            assert _connects(inst["address"], inst["port"]), inst["id"]

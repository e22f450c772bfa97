"""End to end: the frontend computes through Connect sidecars (mTLS) to add-svc and sub-svc."""

import json

import pytest

from conftest import instances_of, systemd_only
from testkit.lab import TLS_PROBE


def test_seed_expression_through_the_mesh(mesh, seed):
    [(status, body)] = mesh.compute_many(1)
    assert status == 200, body
    assert body["result"] == seed["result"]
    assert [c["op"] for c in body["calls"]] == seed["ops"]
    assert {c["instance"].rsplit("-", 1)[0] for c in body["calls"]} == {"add-svc", "sub-svc"}


def _app_log_lines(host, model):
    """Access-log lines the arith instances wrote so far (one JSON line per request they logged)."""
    units = " ".join(f"-u {i['units']['app']}" for i in model["instances"] if i["app"] == "arith")
    out = host.run(f"journalctl --no-pager -o cat {units}").stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"path":"/api/v1/execute"' in line]


# 2 calls: add(999999999999999, 999999999999999) answers 200, then add(1999999999999998, 1) answers 400 (an
# operand above 10**15): the frontend answers 422, and the instance logs the 400 whatever its access-log mode.
OUT_OF_RANGE = "999999999999999+999999999999999+1"


@systemd_only
def test_bad_expression_gets_400_and_no_upstream_call(host, mesh, model):
    """The 400 is the frontend's own: no add/sub instance logs a request for it.

    Control: right after it, an expression whose second call the app refuses (400) shows up in the apps' logs,
    exactly that one line in the lab's default mode (errors); in mode `all` both calls.
    """
    [mode] = {i["env"].get("ACCESS_LOG", "all") for i in model["instances"] if i["app"] == "arith"}
    before = len(_app_log_lines(host, model))
    [(status, body)] = mesh.compute_many(1, expression="1++2")
    assert status == 400 and body["position"] == 2, body
    [(status, body)] = mesh.compute_many(1, expression=OUT_OF_RANGE)
    assert status == 422, body
    expected = {"all": [200, 400], "errors": [400]}[mode]
    for _ in range(20):  # journald may take a moment to store the control's lines
        new = _app_log_lines(host, model)[before:]
        if len(new) >= len(expected):
            break
        host.run("sleep 0.25")
    print(f"access log {mode}: app log lines after the bad and the control expression: {[r['status'] for r in new]}")
    assert sorted(r["status"] for r in new) == expected


@systemd_only
def test_sidecar_demands_a_client_certificate_from_the_mesh_ca(host, model, management_token):
    """A live sidecar refuses, at the TLS layer, a client with no certificate and one from a foreign CA.

    Control: the same client with a certificate the mesh CA issued (as `frontend`, which may call add-svc)
    completes the handshake, verifies the sidecar's own certificate against the mesh CA, and gets HTTP 200.
    """
    add = instances_of(model, "add-svc")[0]
    run = host.run("python3 -c %s %s %s %s %s", TLS_PROBE, add["node_address"], str(add["sidecar_port"]),
                   model["settings"]["consul_http_addr"], management_token)
    assert run.rc == 0, run.stderr
    result = json.loads(run.stdout)
    print(json.dumps(result, indent=1))
    assert result["mesh_cert"]["tls"] is True and " 200 " in result["mesh_cert"]["http"] + " ", result
    for case in ("no_cert", "foreign_ca"):
        assert result[case]["tcp"] is True, (case, result[case])  # the port is open: a live sidecar answers
        assert result[case]["tls"] is False, (case, result[case])  # and the TLS layer refuses the client


@pytest.mark.parametrize("path", ["/health", "/api/v1/execute?l=1&r=2"])
@systemd_only
def test_sidecar_refuses_plain_http(host, model, path):
    """Plain HTTP to a sidecar gets no HTTP answer (control: the mesh certificate above gets one)."""
    add = instances_of(model, "add-svc")[0]
    out = host.run(f"curl -s -m 3 -o /dev/null -w '%{{http_code}}' 'http://{add['node_address']}:{add['sidecar_port']}{path}'")
    assert out.stdout.strip() in ("", "000"), out.stdout

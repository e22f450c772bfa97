"""End to end: the frontend computes through Connect sidecars (mTLS) to add-svc and sub-svc."""

from conftest import SEED_EXPRESSION, systemd_only


def test_seed_expression_is_9_through_the_mesh(mesh):
    [(status, body)] = mesh.compute_many(1)
    assert status == 200, body
    assert body["result"] == 9
    assert [c["op"] for c in body["calls"]] == [c for c in SEED_EXPRESSION if c in "+-"]
    assert {c["instance"].rsplit("-", 1)[0] for c in body["calls"]} == {"add-svc", "sub-svc"}


def test_bad_expression_gets_400_and_no_upstream_call(mesh):
    [(status, body)] = mesh.compute_many(1, expression="1++2")
    assert status == 400
    assert "position" in body


@systemd_only
def test_upstream_traffic_is_mtls(host, catalog):
    """The sidecar's public port speaks TLS and demands a client certificate from the mesh CA."""
    add = next(s for s in catalog if s["name"] == "add-svc")
    plain = host.run(f"curl -s -m 3 http://127.0.0.1:{add['sidecar_port']}/health")
    assert plain.rc != 0  # plain HTTP is refused
    tls = host.run(f"curl -sk -m 3 https://127.0.0.1:{add['sidecar_port']}/health")
    assert tls.rc != 0  # TLS without a mesh client certificate is refused too

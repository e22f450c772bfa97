"""Failure tolerance: a dead app instance leaves the pool; when it comes back it rejoins."""

import time

import pytest

from conftest import systemd_only

APP = "mesh-app-add-svc-1"
# mesh_check_interval (2s) + 5 s, as the issue states the bound.
SETTLE_SECONDS = 2 + 5


@pytest.fixture
def stopped_instance(host, mesh):
    host.check_output(f"systemctl stop {APP}")
    try:
        yield
    finally:
        host.run(f"systemctl start {APP}")


def _passing_ids(mesh):
    return sorted(e["Service"]["ID"] for e in mesh.consul("/v1/health/service/add-svc?passing=1"))


@systemd_only
def test_dead_instance_leaves_the_pool_and_rejoins(host, mesh, stopped_instance):
    assert not host.service(APP).is_running
    assert host.service("mesh-sidecar-add-svc-1").is_running  # only the app died, not its proxy
    time.sleep(SETTLE_SECONDS)
    assert _passing_ids(mesh) == ["add-svc-2"]

    results = mesh.compute_many(100)
    failures = [r for r in results if r[0] != 200]
    assert not failures, f"{len(failures)} of 100 failed, e.g. {failures[:3]}"
    assert all(r[1]["result"] == 9 for r in results)
    answered = {c["instance"] for _, body in results for c in body["calls"] if c["op"] == "+"}
    assert answered == {"add-svc-2"}

    host.check_output(f"systemctl start {APP}")
    deadline = time.time() + 30
    while _passing_ids(mesh) != ["add-svc-1", "add-svc-2"]:
        assert time.time() < deadline, "add-svc-1 did not pass its health check again within 30 s"
        time.sleep(1)
    rejoined = mesh.compute_many(30)
    assert all(status == 200 for status, _ in rejoined)
    assert "add-svc-1" in {c["instance"] for _, body in rejoined for c in body["calls"]}

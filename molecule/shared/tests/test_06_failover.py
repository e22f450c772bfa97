"""Failure tolerance: a dead app instance leaves the pool; when it comes back it rejoins."""

import time

import pytest

from conftest import instance, instances_of, systemd_only, wait_until


@pytest.fixture
def victim(model):
    return instances_of(model, "add-svc")[0]


@pytest.fixture
def stopped_instance(host, victim):
    host.check_output(f"systemctl stop {victim['units']['app']}")
    try:
        yield victim
    finally:
        host.run(f"systemctl start {victim['units']['app']}")


def _seconds(text):
    return float(text.rstrip("s"))


@systemd_only
def test_dead_instance_leaves_the_pool_and_rejoins(host, mesh, model, stopped_instance, seed):
    victim = stopped_instance
    others = sorted(i["id"] for i in instances_of(model, "add-svc") if i["id"] != victim["id"])
    assert not host.service(victim["units"]["app"]).is_running
    assert host.service(victim["units"]["sidecar"]).is_running  # only the app died, not its proxy
    # The check interval + timeout, plus margin: the bound the README states.
    settle = _seconds(model["settings"]["check_interval"]) + _seconds(model["settings"]["check_timeout"]) + 4
    time.sleep(settle)
    assert mesh.instance_ids("add-svc") == others

    results = mesh.compute_many(100)
    failures = [r for r in results if r[0] != 200]
    print(f"{settle:.0f} s after stopping {victim['id']}: {100 - len(failures)}/100 computes succeeded")
    assert not failures, f"{len(failures)} of 100 failed, e.g. {failures[:3]}"
    assert all(r[1]["result"] == seed["result"] for r in results)
    answered = {c["instance"] for _, body in results for c in body["calls"] if c["op"] == "+"}
    assert answered == set(others)

    host.check_output(f"systemctl start {victim['units']['app']}")
    everyone = sorted(i["id"] for i in instances_of(model, "add-svc"))
    assert wait_until(lambda: mesh.instance_ids("add-svc") == everyone, 30, f"{victim['id']} passes again"), \
        f"{victim['id']} did not pass its health check again within 30 s"
    rejoined = mesh.compute_many(30)
    assert all(status == 200 for status, _ in rejoined)
    assert victim["id"] in {c["instance"] for _, body in rejoined for c in body["calls"]}
    assert instance(model, victim["id"])["node"] == victim["node"]

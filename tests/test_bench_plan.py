"""The benchmark's plan (meshlab/bench.py): everything bench.yml and the driver use, from the model."""

import pytest

from meshlab import SEED_EXPRESSION, SEED_RESULT, bench


def test_plan_on_one_node(one_node):
    plan = bench.plan(one_node, {"duration": 9})
    front = next(i for i in one_node["instances"] if i["id"] == "frontend-1")
    assert plan["node"] == "mesh-1"
    drv = plan["driver"]
    assert (drv["expression"], drv["expected_result"]) == (SEED_EXPRESSION, SEED_RESULT)
    assert drv["paths"]["mesh"] == f"http://127.0.0.1:{front['port']}/api/v1/compute"
    assert drv["hop"]["duration"] == 3
    # The direct path: same argv as the frontend, upstreams straight at the first local instance's app port.
    argv = plan["direct"]["argv"]
    assert argv[:3] == ["systemd-run", "--unit", plan["direct"]["unit"]]
    assert argv[-len(front["argv"]):] == front["argv"]
    add = next(i for i in one_node["instances"] if i["id"] == "add-svc-1")
    assert f"--setenv=ADD_SVC_URL=http://127.0.0.1:{add['port']}" in argv and "--setenv=SUB_SVC_URL=http://127.0.0.1:9011" in argv
    assert drv["hop"]["paths"] == {"direct": f"http://127.0.0.1:{add['port']}/api/v1/execute?l=1&r=2",
                                   "mesh": f"http://{front['upstream_address']}:9191/api/v1/execute?l=1&r=2"}
    units = {c["unit"] for c in drv["components"]}
    assert {u for i in one_node["instances"] for u in i["units"].values()} <= units
    # Three compute paths with tracing (mesh, direct, mesh-unsampled), two for the one-hop benchmark.
    assert plan["expected_seconds"] == (9 * 3 + 3 * 2) * 3 + 3 * 3 + 10
    assert drv["paths"]["mesh-unsampled"] == drv["paths"]["mesh"]
    assert drv["path_headers"] == {"mesh-unsampled": {"traceparent": "00-" + "b" * 32 + "-" + "c" * 16 + "-00"}}


def test_plan_refuses_a_cluster_whose_frontend_node_lacks_an_upstream(model):
    problems = bench.problems(model, {})
    assert any("runs no sub-svc instance" in p for p in problems), problems
    with pytest.raises(ValueError):
        bench.plan(model, {})


@pytest.mark.parametrize("options, message", [
    ({"duration": 0}, "mesh_bench_duration must be a whole number"),
    ({"threads": 6, "connections": 5}, "mesh_bench_connections must be at least mesh_bench_threads"),
    ({"hop_service": "frontend"}, "must be an upstream of frontend"),
    ({"direct_port": 9011}, "is a catalog port"),
])
def test_bad_options_are_named(one_node, options, message):
    assert any(message in p for p in bench.problems(one_node, options))

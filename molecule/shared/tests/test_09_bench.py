"""Benchmark harness, short form: `playbooks/bench.yml` runs, measures both paths and writes its results.

This proves the harness works (non-zero throughput, zero errors, every file
written, every component sampled), not the speed: docs/bench.md has the figures.
The node is left as it was found: the direct path's transient unit is stopped.
"""

import json
import time

import pytest

from conftest import run_playbook, systemd_only
from meshlab import bench

# The bench's direct path calls the catalog's static app ports (systemd scheduler).
pytestmark = systemd_only


@pytest.fixture(scope="module")
def plan(model):
    return bench.plan(model, {"duration": 2, "rounds": 1, "warmup": 1})


@pytest.fixture(scope="module")
def run(host, inventory, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    started = time.monotonic()
    result = run_playbook(inventory, "playbooks/bench.yml", "mesh_bench_duration=2", "mesh_bench_rounds=1",
                          "mesh_bench_warmup=1", f"mesh_bench_output={out}")
    print(f"bench.yml took {time.monotonic() - started:.0f} s")
    return result, out


def test_the_playbook_succeeds(run):
    (rc, output), _ = run
    assert rc == 0, output[-4000:]


def test_results_json_markdown_and_chart_are_written(run):
    _, out = run
    for name in ("latest.json", "latest.md", "latest.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mesh / direct" in (out / "latest.md").read_text()


def test_the_run_is_valid_with_throughput_on_both_paths_and_no_errors(run):
    _, out = run
    doc = json.loads((out / "latest.json").read_text())
    assert doc["valid"] is True, doc["problems"]
    assert doc["problems"] == []
    for bench_name in ("compute", "hop"):
        for path in ("mesh", "direct"):
            s = doc["summary"][bench_name][path]
            print(f"{bench_name} {path}: {s['rps']} req/s, p99 {s['latency_ms']['p99']} ms")
            assert s["rps"] > 0, (bench_name, path, s)
            assert s["requests"] > 0
            assert s["socket_errors"] == 0 and s["non_2xx"] == 0 and s["wrong_body"] == 0, (bench_name, path, s)
            assert s["latency_ms"]["p99"] > 0
    assert doc["summary"]["compute"]["ratio"]["rps"] > 0


def test_every_planned_component_was_sampled(run, plan):
    _, out = run
    doc = json.loads((out / "latest.json").read_text())
    names = {c["name"] for c in doc["summary"]["components"]}
    expected = {c["name"] for c in plan["driver"]["components"]}
    assert expected <= names, expected - names
    for row in doc["summary"]["components"]:
        for path in ("mesh", "direct"):
            assert row[path]["rss_mb_peak"] > 0, (row["name"], path, row)


def test_the_direct_path_is_stopped_afterwards(host, run, plan):
    state = host.run(f"systemctl show -p LoadState -p ActiveState {plan['direct']['unit']}").stdout
    assert "ActiveState=active" not in state, state
    assert not host.socket(f"tcp://127.0.0.1:{plan['direct']['port']}").is_listening

"""End-to-end: the real ``python -m arith_svc`` (granian) on a loopback port."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

PROJECT_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(url: str, process: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early with {process.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not healthy after {timeout}s")


@pytest.fixture
def sub_server():
    port = free_port()
    env = {**os.environ, "APP_BIND": "127.0.0.1", "APP_PORT": str(port), "INSTANCE_ID": "sub-e2e"}
    process = subprocess.Popen(
        [sys.executable, "-m", "arith_svc", "--op", "sub", "--workers", "1"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_health(f"http://127.0.0.1:{port}/health", process)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def test_real_server_serves_logs_and_stops_on_sigterm(sub_server):
    process, base_url = sub_server
    with requests.Session() as session:  # keep-alive: both calls on one connection
        response = session.get(f"{base_url}/api/v1/execute", params={"l": "10", "r": "3"}, timeout=5)
        bad = session.get(f"{base_url}/api/v1/execute", params={"l": "x", "r": "3"}, timeout=5)
    assert response.status_code == 200
    assert response.json() == {"result": 7, "instance": "sub-e2e"}
    assert response.headers["X-Instance-Id"] == "sub-e2e"
    assert response.headers.get("Connection", "keep-alive").lower() == "keep-alive"
    assert bad.status_code == 400 and "'l'" in bad.json()["error"]

    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr

    records = [json.loads(line) for line in stdout.splitlines()]
    execute_records = [r for r in records if r["path"] == "/api/v1/execute"]
    assert [r["status"] for r in execute_records] == [200, 400]
    assert all(r["instance"] == "sub-e2e" and r["method"] == "GET" for r in records)


def test_two_workers_count_requests_together(tmp_path):
    """Several granian workers: each counts in its own file (multi-process mode), /metrics adds them up."""
    port = free_port()
    env = {**os.environ, "APP_BIND": "127.0.0.1", "APP_PORT": str(port), "INSTANCE_ID": "add-mp",
           "TMPDIR": str(tmp_path), "ACCESS_LOG": "off"}
    process = subprocess.Popen([sys.executable, "-m", "arith_svc", "--op", "add", "--workers", "2"],
                               cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_health(f"{base}/health", process)
        before = _execute_count(base)
        for i in range(60):  # a new connection each: the kernel deals them to both workers
            assert requests.get(f"{base}/api/v1/execute", params={"l": i, "r": 1}, timeout=5).status_code == 200
        [metrics_dir] = tmp_path.glob("arith-metrics-*")
        writers = {f.stem.rsplit("_", 1)[1] for f in metrics_dir.glob("counter_*.db")}
        print(f"counter files of {len(writers)} worker(s): {sorted(writers)}")
        assert len(writers) == 2
        assert _execute_count(base) - before == 60
    finally:
        process.kill()
        process.communicate(timeout=10)


def _execute_count(base):
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{base}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "http_requests_total" and s.labels["route"] == "/api/v1/execute" and s.labels["status"] == "200")

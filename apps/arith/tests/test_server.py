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

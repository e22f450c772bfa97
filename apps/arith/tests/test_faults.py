"""Fault injection: validation, the admin endpoint (admin port only), and each fault on a real granian."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from arith_svc import faults as fi
from arith_svc.app import create_app
from arith_svc.config import parse_settings
from test_server import PROJECT_DIR, free_port, wait_for_health


@pytest.mark.parametrize("data, message", [
    ([], "faults must be a JSON object"),
    ({"latency": 3}, "unknown field(s) latency"),
    ({"latency_ms": -1}, "latency_ms must be an integer from 0 to 60000, got -1"),
    ({"latency_ms": 1.5}, "latency_ms must be an integer"),
    ({"error_rate": 2}, "error_rate must be a number from 0 to 1, got 2"),
    ({"error_rate": "half"}, 'error_rate must be a number from 0 to 1, got "half"'),
    ({"error_rate": 0.7, "abort_rate": 0.5}, "error_rate + abort_rate must not exceed 1"),
])
def test_bad_settings_are_refused_with_what_to_change(data, message):
    with pytest.raises(fi.FaultError) as err:
        fi.validate(data)
    assert message in str(err.value)


def test_draw_applies_rates_and_latency():
    faults = fi.validate({"latency_ms": 100, "latency_jitter_ms": 50, "error_rate": 0.5, "abort_rate": 0.25})
    assert fi.draw(faults, rand=lambda: 0.1) == (0.105, "abort")
    assert fi.draw(faults, rand=lambda: 0.5) == (0.125, "error")
    assert fi.draw(faults, rand=lambda: 0.9) == (0.145, "ok")


def test_bad_environment_stops_the_service():
    with pytest.raises(SystemExit):
        parse_settings(["--op", "add"], {"FAULT_ERROR_RATE": "2"})
    with pytest.raises(SystemExit):
        parse_settings(["--op", "add", "--port", "9001", "--admin-port", "9001"], {})


def test_admin_routes_exist_only_on_the_admin_port():
    client = create_app("add", "add-1", admin_port=19001).test_client()
    admin = "http://localhost:19001"
    assert client.get("/admin/faults").status_code == 404  # the service port has no admin routes
    assert client.get("/api/v1/execute?l=1&r=2", base_url=admin).status_code == 404  # and the admin port no API
    assert client.put("/admin/faults", json={"error_rate": 1}, base_url=admin).get_json()["error_rate"] == 1
    response = client.get("/api/v1/execute?l=1&r=2")
    assert response.status_code == 500 and response.get_json() == {"error": "injected fault: error", "instance": "add-1"}
    assert client.get("/health").status_code == 200  # health is never faulted
    bad = client.put("/admin/faults", json={"error_rate": 3}, base_url=admin)
    assert bad.status_code == 400 and "error_rate must be a number from 0 to 1" in bad.get_json()["error"]
    assert client.delete("/admin/faults", base_url=admin).get_json() == fi.NONE
    assert client.get("/api/v1/execute?l=1&r=2").get_json()["result"] == 3


# How long a fault set through one worker's admin endpoint takes to reach the others (faults.CHECK_EVERY_S + margin).
PROPAGATION_S = fi.CHECK_EVERY_S + 0.05


@pytest.fixture
def server():
    """A real instance with two workers and an admin port, started with a 50 ms latency fault."""
    port, admin = free_port(), free_port()
    env = {**os.environ, "APP_PORT": str(port), "APP_ADMIN_PORT": str(admin), "INSTANCE_ID": "add-faults",
           "FAULT_LATENCY_MS": "50", "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
    process = subprocess.Popen([sys.executable, "-m", "arith_svc", "--op", "add", "--workers", "2", "--threads", "2"],
                               cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_health(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
    finally:
        process.kill()
        process.wait(10)


def test_faults_apply_in_every_worker_and_change_at_run_time(server):
    url, admin = server
    started = time.monotonic()
    for _ in range(6):  # several connections: both workers answer
        assert requests.get(f"{url}/api/v1/execute?l=1&r=2", timeout=5).json()["result"] == 3
    assert (time.monotonic() - started) / 6 >= 0.045  # the start-up latency, in every worker
    assert requests.put(f"{admin}/admin/faults", json={"error_rate": 1}, timeout=5).status_code == 200
    time.sleep(PROPAGATION_S)  # the other worker reads the shared setting at most every 0.1 s
    statuses = {requests.get(f"{url}/api/v1/execute?l=1&r=2", timeout=5).status_code for _ in range(6)}
    assert statuses == {500}
    assert requests.put(f"{admin}/admin/faults", json={"abort_rate": 1}, timeout=5).status_code == 200
    time.sleep(PROPAGATION_S)
    # The connection is closed in the middle of the answer: no complete one arrives.
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        requests.get(f"{url}/api/v1/execute?l=1&r=2", timeout=5)
    assert requests.delete(f"{admin}/admin/faults", timeout=5).json() == fi.NONE
    time.sleep(PROPAGATION_S)
    assert requests.get(f"{url}/api/v1/execute?l=1&r=2", timeout=5).status_code == 200


def test_the_admin_port_listens_on_loopback_only(server):
    _, admin = server
    port = int(admin.rsplit(":", 1)[1])
    others = [a for a in socket.gethostbyname_ex(socket.gethostname())[2] if not a.startswith("127.")]
    for address in others[:1]:
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=2).close()
    assert json.loads(requests.get(f"{admin}/admin/faults", timeout=5).text) == {**fi.NONE, "latency_ms": 50}

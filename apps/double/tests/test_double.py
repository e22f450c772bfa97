"""double-svc against a real add-svc (the arith app on loopback): 21 -> 42, bad input -> 400, no upstream -> 502."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

HERE = pathlib.Path(__file__).resolve().parent.parent
ARITH = HERE.parent / "arith"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port):
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def servers():
    add_port, double_port, dead_port = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "APP_PORT": str(add_port), "INSTANCE_ID": "add-svc-1"}
    add = subprocess.Popen([sys.executable, "-m", "arith_svc", "--op", "add", "--workers", "1", "--threads", "2"],
                           cwd=ARITH, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [add]
    try:
        _wait(add_port)
        for port, upstream in ((double_port, add_port), (dead_port, _free_port())):
            env = {**os.environ, "APP_PORT": str(port), "ADD_SVC_URL": f"http://127.0.0.1:{upstream}",
                   "INSTANCE_ID": f"double-svc-{port}"}
            procs.append(subprocess.Popen([sys.executable, "-m", "double_svc"], cwd=HERE, env=env,
                                          stdout=subprocess.DEVNULL))
            _wait(port)
        yield double_port, dead_port
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_doubles_through_add_svc(servers):
    status, body = _get(servers[0], "/api/v1/double?x=21")
    assert (status, body["result"], body["via"]) == (200, 42, "add-svc-1")


@pytest.mark.parametrize("query", ["", "?x=a", "?x=1&x=2", "?x=1234567890123456"])
def test_bad_input_is_400(servers, query):
    assert _get(servers[0], f"/api/v1/double{query}")[0] == 400


def test_unreachable_upstream_is_502(servers):
    status, body = _get(servers[1], "/api/v1/double?x=1")
    assert (status, body["upstream"]) == (502, "add-svc")


def test_health(servers):
    assert _get(servers[0], "/health")[0] == 200

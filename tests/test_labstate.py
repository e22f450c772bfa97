"""The Vagrant lab's state file: its documented shape (meshlab/labstate.py) and the errors it names."""

import copy
import json
import subprocess
import sys

import pytest

from meshlab import labstate

GOOD = {
    "settings": {"nodes": 3, "servers": 3, "network": "192.168.56", "container_prefix": "hsm-"},
    "profile": "offline",
    "profile_reason": "HashiCorp cannot be reached",
    "provider": "docker",
    "nodes": ["mesh-1", "mesh-2", "mesh-3"],
    "servers": ["mesh-1", "mesh-2", "mesh-3"],
    "ips": ["192.168.56.11", "192.168.56.12", "192.168.56.13"],
    "containers": ["hsm-mesh-1", "hsm-mesh-2", "hsm-mesh-3"],
    "guest_ports": {"consul_ui": 8500, "nomad_ui": 4646, "frontend": 8080, "prometheus": 9090, "zipkin": 9411},
    "host_ports": {"consul_ui": 8500, "nomad_ui": 4646, "frontend": 8080, "prometheus": 9090, "zipkin": 9411},
    "forwarded": {"consul_ui": 8500, "nomad_ui": 4647, "frontend": None, "prometheus": 9090, "zipkin": 9411},
}


def test_the_documented_example_fits():
    assert labstate.problems(GOOD) == []


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(profile="auto"), "profile must be full or offline"),
    (lambda s: s.update(servers=["mesh-1", "mesh-2"]), "servers must be an odd number of the nodes"),
    (lambda s: s.update(ips=["192.168.56.11"]), "ips must hold one address per node"),
    (lambda s: s["ips"].__setitem__(0, "mesh-1"), "is not an IP address"),
    (lambda s: s.update(containers=None), "the docker provider records its container names"),
    (lambda s: s["guest_ports"].pop("frontend"), "guest_ports must map exactly"),
    (lambda s: s.pop("settings"), "settings must hold"),
])
def test_each_difference_is_named(change, message):
    state = copy.deepcopy(GOOD)
    change(state)
    assert any(message in p for p in labstate.problems(state)), labstate.problems(state)


def test_cli_checks_a_file(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(GOOD))
    bad.write_text(json.dumps({**GOOD, "nodes": []}))
    ok = subprocess.run([sys.executable, "-m", "meshlab", "labstate", str(good)], capture_output=True, text=True)
    ko = subprocess.run([sys.executable, "-m", "meshlab", "labstate", str(bad)], capture_output=True, text=True)
    assert ok.returncode == 0 and ko.returncode == 1
    assert "nodes must be a non-empty list" in ko.stderr


def test_guest_ports_come_from_the_code():
    run = subprocess.run([sys.executable, "-m", "meshlab", "ports"], capture_output=True, text=True, check=True)
    assert labstate._ports(json.loads(run.stdout), "ports") == []

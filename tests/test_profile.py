"""The profile: one mapping from profile to scheduler and install method, one probe (meshlab/profile.py)."""

import json
import subprocess
import sys

import pytest

from meshlab import profile


def test_offline_is_what_ci_runs():
    assert profile.resolve("offline") == {
        "profile": "offline", "reason": "mesh_profile=offline forces it", "scheduler": "systemd",
        "consul_install_method": "debian", "consul_version": "1.8.7", "summary": profile.PROFILES["offline"]["summary"]}


def test_full_takes_hashicorps_current_consul_and_nomad():
    got = profile.resolve("full")
    assert (got["scheduler"], got["consul_install_method"], got["consul_version"]) == ("nomad", "hashicorp_apt", "")


@pytest.mark.parametrize("problem, nomad, want", [
    (None, False, "full"),
    ("https://releases.hashicorp.com/: URLError: timed out", False, "offline"),
    ("https://releases.hashicorp.com/: URLError: timed out", True, "full"),  # a full lab stays full
])
def test_auto(problem, nomad, want):
    got = profile.resolve("auto", problem, nomad)
    assert got["profile"] == want
    if want == "offline":
        assert problem in got["reason"]


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="use auto, full or offline"):
        profile.resolve("cloud")


def test_probe_reports_an_unreachable_url():
    """A closed loopback port stands for an unreachable server (no traffic leaves the machine)."""
    problem = profile.probe(["http://127.0.0.1:9/"], timeout=2)
    assert problem and problem.startswith("http://127.0.0.1:9/:")


def test_cli_prints_the_resolved_profile_as_json():
    run = subprocess.run([sys.executable, "-m", "meshlab", "profile", "--requested", "offline"],
                         capture_output=True, text=True, check=True)
    assert json.loads(run.stdout)["scheduler"] == "systemd"

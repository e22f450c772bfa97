"""The consul role's archive method: checked against SHA256SUMS, installed, running; bad input refused."""

import os
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
EPHEMERAL = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")


def test_binary_from_the_archive(host):
    assert host.file("/usr/local/bin/consul").mode == 0o755
    assert host.check_output("/usr/local/bin/consul version").startswith("Consul v1.8.7")
    assert not host.package("consul").is_installed  # not the apt method


def test_agent_runs_with_a_leader(host):
    assert host.service("consul").is_running
    assert host.check_output("curl -sf http://127.0.0.1:8500/v1/status/leader").strip('"').endswith(":8300")


def _run(*extra):
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.skip("runs under Molecule only: needs MOLECULE_INVENTORY_FILE")
    # site.yml: what a user runs; its preflight play checks the consul role's input first.
    args = ["ansible-playbook", "-i", inventory, "playbooks/site.yml"]
    for item in extra:
        args += ["-e", item]
    run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return run.returncode, " ".join((run.stdout + run.stderr).split())


@pytest.fixture
def bad_sums(tmp_path):
    path = tmp_path / "SHA256SUMS"
    path.write_text("0" * 64 + "  consul_1.8.7_linux_amd64.zip\n")
    return str(path)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["consul_install_method=zip"], "consul_install_method must be hashicorp_apt, debian or archive (got 'zip')"),
        (["consul_version=1.8"], "consul_version empty or X.Y.Z (got '1.8')"),
        ([f"consul_archive_path={EPHEMERAL}/missing.zip"], "missing.zip' does not exist on the controller"),
    ],
)
def test_bad_input_is_refused_before_any_change(host, extra, message):
    before = host.check_output("sha256sum /usr/local/bin/consul /etc/consul.d/* /etc/systemd/system/consul.service")
    rc, out = _run(*extra)
    assert rc != 0
    assert message in out, out[-2000:]
    assert host.check_output("sha256sum /usr/local/bin/consul /etc/consul.d/* /etc/systemd/system/consul.service") == before


def test_checksum_mismatch_is_refused(host, bad_sums):
    rc, out = _run(f"consul_archive_sha256sums={bad_sums}")
    assert rc != 0
    assert "does not match its line in" in out, out[-2000:]

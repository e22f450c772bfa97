"""The consul role's archive method: checked against SHA256SUMS, installed, running; bad input refused."""

import os

import pytest

from testkit.lab import resolved_model, run_playbook

EPHEMERAL = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")


def test_binary_from_the_archive(host):
    assert host.file("/usr/local/bin/consul").mode == 0o755
    assert host.check_output("/usr/local/bin/consul version").startswith("Consul v1.8.7")
    assert not host.package("consul").is_installed  # not the apt method


@pytest.fixture(scope="module")
def settings():
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.skip("runs under Molecule only: needs MOLECULE_INVENTORY_FILE")
    return resolved_model(inventory)["settings"]


def test_agent_runs_with_a_leader(host, settings):
    assert host.service("consul").is_running
    leader = host.check_output(f"curl -sf {settings['consul_http_addr']}/v1/status/leader").strip('"')
    assert leader.endswith(f":{settings['consul_ports']['server']}"), leader


def _run(*extra):
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.skip("runs under Molecule only: needs MOLECULE_INVENTORY_FILE")
    # site.yml: what a user runs; its preflight play checks the install settings first.
    return run_playbook(inventory, "playbooks/site.yml", *extra, timeout=300)


@pytest.fixture
def bad_sums(tmp_path):
    path = tmp_path / "SHA256SUMS"
    path.write_text("0" * 64 + "  consul_1.8.7_linux_amd64.zip\n")
    return str(path)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["consul_agent_install_method=zip"], "(got 'zip')"),
        (["consul_agent_version=1.8"], "(got '1.8')"),
        ([f"consul_agent_archive_path={EPHEMERAL}/missing.zip"], "missing.zip' does not exist on the controller"),
    ],
)
def test_bad_input_is_refused_before_any_change(host, extra, message):
    before = host.check_output("sha256sum /usr/local/bin/consul /etc/consul.d/*.hcl /etc/systemd/system/consul.service")
    rc, out = _run(*extra)
    assert rc != 0
    assert message in out, out[-2000:]
    assert host.check_output("sha256sum /usr/local/bin/consul /etc/consul.d/*.hcl /etc/systemd/system/consul.service") == before


def test_checksum_mismatch_is_refused(host, bad_sums):
    rc, out = _run(f"consul_agent_archive_sha256sums={bad_sums}")
    assert rc != 0
    assert "does not match its line in" in out, out[-2000:]

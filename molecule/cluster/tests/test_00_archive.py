"""The consul role's archive method on cluster-3 (host_vars): checked against SHA256SUMS, installed, running
in the same cluster as the two Debian-package servers; bad input refused before any change."""

import os

import pytest

from testkit.lab import run_playbook

EPHEMERAL = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")
NODE = "cluster-3"
CONFIG = "sha256sum /usr/local/bin/consul /etc/consul.d/*.hcl /etc/systemd/system/consul.service"


def test_binary_from_the_archive(cluster):
    host = cluster.hosts[NODE]
    assert host.file("/usr/local/bin/consul").mode == 0o755
    assert host.check_output("/usr/local/bin/consul version").startswith("Consul v1.8.7")
    assert not host.package("consul").is_installed  # not the apt method
    assert cluster.hosts["cluster-1"].package("consul").is_installed  # the others: Debian's package


def test_the_archive_server_is_a_voter_with_a_leader(cluster):
    host = cluster.hosts[NODE]
    assert host.service("consul").is_running
    servers = (cluster.consul(NODE, "/v1/operator/raft/configuration") or {}).get("Servers", [])
    assert any(s["Node"] == NODE and s["Voter"] for s in servers), servers
    assert cluster.leader(NODE).endswith(f":{cluster.model['settings']['consul_ports']['server']}")


def _run(inventory, *extra):
    # site.yml: what a user runs; its preflight play checks the install settings first.
    return run_playbook(inventory, "playbooks/site.yml", *extra, timeout=300, options=["--limit", NODE])


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
def test_bad_input_is_refused_before_any_change(cluster, inventory, extra, message):
    host = cluster.hosts[NODE]
    before = host.check_output(CONFIG)
    rc, out = _run(inventory, *extra)
    assert rc != 0
    assert message in out, out[-2000:]
    assert host.check_output(CONFIG) == before


def test_checksum_mismatch_is_refused(cluster, inventory, bad_sums):
    host = cluster.hosts[NODE]
    before = host.check_output(CONFIG)
    rc, out = _run(inventory, f"consul_agent_archive_sha256sums={bad_sums}")
    assert rc != 0
    assert "does not match its line in" in out, out[-2000:]
    assert host.check_output(CONFIG) == before

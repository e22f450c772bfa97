"""Role nomad without a Nomad binary: its input checks, its agent config (parsed as HCL2), its unit.

`nomad config validate` and the running agent are exercised only by the Molecule
scenario `nomad` (scripts/molecule-nomad), where a Nomad release is available.
"""

import hashlib
import ipaddress
import os
import pathlib
import shutil
import subprocess
import sys

import hcl2
import pytest
import yaml
from hcl2.utils import SerializationOptions

ROOT = pathlib.Path(__file__).resolve().parent.parent
PARSE = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
ANSIBLE_PLAYBOOK = pathlib.Path(sys.executable).parent / "ansible-playbook"


def _playbook(tmp_path, tasks, hostvars=None, extra=()):
    """Run tasks on localhost (no privilege, nothing outside tmp_path is written) with a 1-node lab inventory."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "children": {"consul_servers": {"hosts": {"node-1": None}}, "mesh_nodes": {"hosts": {"node-1": None}}},
        "hosts": {"node-1": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                             **(hostvars or {})}},
    }}))
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Test", "hosts": "node-1", "gather_facts": False, "tasks": tasks}]))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
           "ANSIBLE_FILTER_PLUGINS": str(ROOT / "plugins" / "filter"), "ANSIBLE_NOCOLOR": "1"}
    args = [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook)]
    for item in extra:
        args += ["-e", item]
    run = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return run.returncode, " ".join((run.stdout + run.stderr).split())


def _assert_tasks():
    return [{"name": "Check", "ansible.builtin.import_role": {"name": "nomad", "tasks_from": "assert.yml"}}]


@pytest.fixture
def release(tmp_path):
    """A zip in HashiCorp's layout (content irrelevant: only its checksum is read) and its SHA256SUMS."""
    zip_path = tmp_path / "nomad_1.10.3_linux_amd64.zip"
    zip_path.write_bytes(b"not really a zip")
    sums = tmp_path / "nomad_1.10.3_SHA256SUMS"
    sums.write_text(f"{hashlib.sha256(zip_path.read_bytes()).hexdigest()}  {zip_path.name}\n"
                    f"{'1' * 64}  nomad_1.10.3_linux_arm64.zip\n")
    return zip_path, sums


@pytest.mark.parametrize("extra, message", [
    (["nomad_install_method=zip"], "nomad_install_method must be hashicorp_apt, release or archive (got 'zip')"),
    (["nomad_version=1.10"], "at least 1.10.0 (got '1.10'"),
    (["nomad_version=1.9.7"], "at least 1.10.0 (got '1.9.7'"),
    (["nomad_install_method=release", "nomad_version="], "only the hashicorp_apt method takes an empty version"),
    (["nomad_install_method=archive"], "The archive method needs nomad_version, nomad_archive_path and nomad_archive_sha256sums."),
])
def test_bad_input_is_refused(tmp_path, extra, message):
    rc, out = _playbook(tmp_path, _assert_tasks(), extra=extra)
    assert rc != 0
    assert message in out, out[-2000:]


def test_archive_checked_against_its_sha256sums(tmp_path, release):
    zip_path, sums = release
    ok = ["nomad_install_method=archive", f"nomad_archive_path={zip_path}", f"nomad_archive_sha256sums={sums}"]
    rc, out = _playbook(tmp_path, _assert_tasks(), extra=ok)
    assert rc == 0, out[-2000:]

    sums.write_text(f"{'0' * 64}  {zip_path.name}\n")
    rc, out = _playbook(tmp_path, _assert_tasks(), extra=ok)
    assert rc != 0
    assert f"{zip_path.name}: SHA256 {hashlib.sha256(zip_path.read_bytes()).hexdigest()} does not match its line" in out

    rc, out = _playbook(tmp_path, _assert_tasks(), extra=ok[:1] + [f"nomad_archive_path={tmp_path}/missing.zip", ok[2]])
    assert rc != 0
    assert "missing.zip' does not exist on the controller" in out


def _render(tmp_path, template, hostvars):
    dest = tmp_path / pathlib.Path(template).stem
    tasks = [{"name": "Facts", "ansible.builtin.setup": {"gather_subset": ["min", "network"]}},
             {"name": "Render", "ansible.builtin.template": {
        "src": str(ROOT / "roles" / "nomad" / "templates" / template), "dest": str(dest), "mode": "0644"}}]
    defaults = yaml.safe_load((ROOT / "roles" / "nomad" / "defaults" / "main.yml").read_text())
    role_vars = yaml.safe_load((ROOT / "roles" / "nomad" / "vars" / "main.yml").read_text())
    rc, out = _playbook(tmp_path, tasks, hostvars={**defaults, **role_vars, "_nomad_bin": "/usr/bin/true",
                                                   **hostvars})
    assert rc == 0, out[-3000:]
    return dest.read_text()


def test_agent_config_single_node(tmp_path):
    text = _render(tmp_path, "nomad.hcl.j2", {})
    config = hcl2.loads(text, serialization_options=PARSE)
    assert config["datacenter"] == "lab" and config["data_dir"] == "/opt/nomad/data"
    [advertise] = config["advertise"]
    address = advertise["rpc"]  # the node's default IPv4 (no consul_bind_addr in this inventory)
    assert ipaddress.ip_address(address).version == 4
    assert advertise == {"http": address, "rpc": address, "serf": address}
    [server] = config["server"]
    assert server["enabled"] is True and server["bootstrap_expect"] == 1
    assert server["server_join"] == [{"retry_join": [f"{address}:4648"]}]
    [client] = config["client"]
    assert client["enabled"] is True and client["server_join"] == [{"retry_join": [f"{address}:4647"]}]
    assert config["ui"] == [{"enabled": True}]
    assert config["consul"] == [{"address": "127.0.0.1:8500"}]
    assert config["plugin"] == [{"raw_exec": {"config": [{"enabled": True, "denied_host_uids": "0"}]}}]
    assert config["ports"] == [{"http": 4646, "rpc": 4647, "serf": 4648}]


def test_agent_config_prefers_consul_bind_addr(tmp_path):
    """Multi-homed nodes (Vagrant's private network) advertise the address Consul binds to."""
    config = hcl2.loads(_render(tmp_path, "nomad.hcl.j2", {"consul_bind_addr": "192.168.56.11"}), serialization_options=PARSE)
    assert config["advertise"][0]["rpc"] == "192.168.56.11"
    assert config["server"][0]["server_join"] == [{"retry_join": ["192.168.56.11:4648"]}]


def test_cpu_total_compute_only_when_set(tmp_path):
    assert "cpu_total_compute" not in _render(tmp_path, "nomad.hcl.j2", {})
    config = hcl2.loads(_render(tmp_path, "nomad.hcl.j2", {"nomad_cpu_total_compute": 4000}), serialization_options=PARSE)
    assert config["client"][0]["cpu_total_compute"] == 4000


def test_client_only_node_has_no_server_block_settings(tmp_path):
    config = hcl2.loads(_render(tmp_path, "nomad.hcl.j2", {"nomad_server": False}), serialization_options=PARSE)
    assert config["server"] == [{"enabled": False}]
    assert config["client"][0]["enabled"] is True


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_unit_is_hardened_and_passes_systemd_analyze(tmp_path):
    text = _render(tmp_path, "nomad.service.j2", {})
    for line in ("ExecStart=/usr/bin/true agent -config=/etc/nomad.d", "KillMode=process", "Delegate=yes",
                 "NoNewPrivileges=true", "ProtectSystem=full", "ProtectHome=true", "PrivateTmp=true",
                 "Description=Nomad agent (server and client)"):
        assert line in text.splitlines(), line
    unit = tmp_path / "nomad.service"
    unit.write_text(text)
    run = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr

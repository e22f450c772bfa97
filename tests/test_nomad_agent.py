"""Role nomad_agent without a Nomad binary: its agent config (parsed as HCL2) and its unit.

`nomad config validate` and the running agent are exercised only by the Molecule
scenario `nomad` (scripts/molecule-nomad), where a Nomad release is available.
"""

import pathlib
import shutil
import subprocess

import hcl2
import pytest
import yaml
from hcl2.utils import SerializationOptions

from meshlab import secrets
from testkit.lab import ROOT, run_playbook

PARSE = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
ROLE = pathlib.Path(ROOT) / "roles" / "nomad_agent"


def _render(tmp_path, inventory, template, host="mesh-1", **variables):
    """Render one of the role's templates for `host` of the three-node test inventory (mesh-1: the Consul server)."""
    dest = tmp_path / pathlib.Path(template).stem
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render", "hosts": host, "gather_facts": False,
        "vars": {**defaults, "_nomad_agent_bin": "/usr/bin/true", **variables},
        "tasks": [{"name": "Render", "ansible.builtin.template": {
            "src": str(ROLE / "templates" / template), "dest": str(dest), "mode": "0644"}}],
    }]))
    rc, out = run_playbook(inventory, str(playbook))
    assert rc == 0, out[-3000:]
    return dest.read_text()


def test_agent_config_of_the_server_node(tmp_path, inventory):
    config = hcl2.loads(_render(tmp_path, inventory, "nomad.hcl.j2"), serialization_options=PARSE)
    assert config["datacenter"] == "lab" and config["data_dir"] == "/opt/nomad/data"
    [advertise] = config["advertise"]
    assert advertise == {"http": "10.0.0.11", "rpc": "10.0.0.11", "serf": "10.0.0.11"}  # mesh_node_address
    [server] = config["server"]
    assert server["enabled"] is True and server["bootstrap_expect"] == 1
    assert server["server_join"] == [{"retry_join": ["10.0.0.11:4648"]}]
    [client] = config["client"]
    assert client["enabled"] is True and client["server_join"] == [{"retry_join": ["10.0.0.11:4647"]}]
    assert config["ui"] == [{"enabled": True}]
    [consul] = config["consul"]
    assert consul["address"] == "127.0.0.1:8500"  # from mesh_consul_api_url
    assert consul["token"] == secrets.ensure(f"{inventory}/.secrets", "consul/nomad")  # the lab's, made once
    assert config["acl"] == [{"enabled": True}]
    assert config["plugin"] == [{"raw_exec": {"config": [{"enabled": True, "denied_host_uids": "0"}]}}]
    assert config["ports"] == [{"http": 4646, "rpc": 4647, "serf": 4648}]


def test_a_client_node_joins_the_server(tmp_path, inventory):
    config = hcl2.loads(_render(tmp_path, inventory, "nomad.hcl.j2", host="mesh-2"), serialization_options=PARSE)
    assert config["server"] == [{"enabled": False}]
    assert config["advertise"][0]["rpc"] == "10.0.0.12"
    assert config["client"][0]["server_join"] == [{"retry_join": ["10.0.0.11:4647"]}]


def test_cpu_total_compute_only_when_set(tmp_path, inventory):
    assert "cpu_total_compute" not in _render(tmp_path, inventory, "nomad.hcl.j2")
    text = _render(tmp_path, inventory, "nomad.hcl.j2", nomad_agent_cpu_total_compute=4000)
    assert hcl2.loads(text, serialization_options=PARSE)["client"][0]["cpu_total_compute"] == 4000


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_unit_is_hardened_and_passes_systemd_analyze(tmp_path, inventory):
    text = _render(tmp_path, inventory, "nomad.service.j2")
    for line in ("ExecStart=/usr/bin/true agent -config=/etc/nomad.d", "KillMode=process", "Delegate=yes",
                 "NoNewPrivileges=true", "ProtectSystem=full", "ProtectHome=true", "PrivateTmp=true",
                 "Description=Nomad agent (server and client)"):
        assert line in text.splitlines(), line
    unit = tmp_path / "nomad.service"
    unit.write_text(text)
    run = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr

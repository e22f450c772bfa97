"""README, "Add a service": a new Python service with one upstream, added to the catalog and nothing else,
is installed, registered, allowed by intentions and reaches its upstream through the mesh.
Removing it from the catalog removes its instance, registration and intention again.
"""

import copy
import json

import yaml

from conftest import instances_of, run_playbook, systemd_only
from meshlab.testing import resolved_model

# Exactly the README's catalog entry.
DOUBLE = {
    "name": "double-svc",
    "app": "double",
    "language": "python",
    "args": ["-m", "double_svc"],
    "instances": 1,
    "port": 9031,
    "sidecar_port": 21031,
    "health_path": "/health",
    "upstreams": [{"service": "add-svc", "local_port": 9193, "env": "ADD_SVC_URL"}],
}


def _intentions(mesh):
    return sorted((i["SourceName"], i["DestinationName"], i["Action"]) for i in mesh.consul("/v1/connect/intentions"))


@systemd_only
def test_a_new_service_is_installed_registered_allowed_and_meshed(host, mesh, model, inventory, tmp_path):
    extra = tmp_path / "catalog.yml"
    extra.write_text(yaml.safe_dump({"mesh_catalog": copy.deepcopy(model["catalog"]) + [DOUBLE]}))
    bigger = resolved_model(inventory, f"@{extra}")
    [double] = instances_of(bigger, "double-svc")
    try:
        rc, out = run_playbook(inventory, "playbooks/workloads.yml", f"@{extra}")
        assert rc == 0, out[-3000:]
        # Installed: its code (no tests) and its venv.
        assert host.file(f"{double['workdir']}/double_svc/__main__.py").is_file
        assert not host.file(f"{double['workdir']}/tests").exists
        assert host.file(double["argv"][0]).is_file
        # Registered and passing, its sidecar too.
        passing = mesh.consul("/v1/health/service/double-svc?passing=1")
        assert [e["Service"]["ID"] for e in passing] == [double["id"]]
        assert host.service(double["units"]["sidecar"]).is_running
        # Allowed: the catalog's edge is an intention, and the default stays deny.
        assert ("double-svc", "add-svc", "allow") in _intentions(mesh)
        assert ("*", "*", "deny") in _intentions(mesh)
        # Meshed: its call to add-svc goes through its sidecar (mTLS) to an add-svc instance.
        answer = json.loads(host.check_output(f"curl -sf 'http://127.0.0.1:{double['port']}/api/v1/double?x=21'"))
        print(f"double-svc answered {answer}")
        assert answer["result"] == 42
        assert answer["via"] in {i["id"] for i in instances_of(model, "add-svc")}
    finally:
        rc, out = run_playbook(inventory, "playbooks/workloads.yml")
    assert rc == 0, out[-3000:]
    assert mesh.consul("/v1/health/service/double-svc") == []
    assert not host.file(f"/etc/systemd/system/{double['units']['app']}").exists
    assert ("double-svc", "add-svc", "allow") not in _intentions(mesh)

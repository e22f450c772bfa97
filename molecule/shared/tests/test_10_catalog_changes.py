"""The catalog drives the node: scaling down removes an instance's units and registration,
stop-jobs removes every workload, start-jobs brings the whole catalog back.

One sequence (three jobs.yml runs), since each step starts from the previous one's state.
"""

import json

import yaml

from conftest import run_playbook, systemd_only

UNITS = "ls /etc/systemd/system/ | grep -E '^mesh-(app|sidecar)-' | sort || true"


def _ids(mesh, service):
    return sorted(e["Service"]["ID"] for e in mesh.consul(f"/v1/health/service/{service}"))


@systemd_only
def test_scale_down_then_stop_jobs_then_start_jobs(host, mesh, catalog, inventory, tmp_path):
    smaller = [dict(s, instances=1) if s["name"] == "add-svc" else s for s in catalog]
    extra = tmp_path / "catalog.yml"
    extra.write_text(yaml.safe_dump({"mesh_catalog": smaller}))
    try:
        # 1. add-svc: 2 -> 1 instance.
        rc, out = run_playbook(inventory, "playbooks/jobs.yml", f"@{extra}")
        assert rc == 0, out[-3000:]
        assert "add-svc: 1/1 instances healthy" in out
        units = host.check_output(UNITS)
        assert "add-svc-2" not in units and "mesh-app-add-svc-1.service" in units
        assert not host.file("/etc/consul.d/svc-add-svc-2.json").exists
        assert _ids(mesh, "add-svc") == ["add-svc-1"]
        assert host.check_output("ps -eo args | grep -c '[s]idecar-for add-svc-2 ' || true") == "0"
        [(status, body)] = mesh.compute_many(1)
        assert (status, body["result"]) == (200, 9)

        # 2. stop-jobs: nothing of the workloads is left.
        rc, out = run_playbook(inventory, "playbooks/jobs.yml", "mesh_jobs_state=absent")
        assert rc == 0, out[-3000:]
        assert host.check_output(UNITS) == ""
        assert host.check_output("ps -eo args | grep -c '[c]onnect proxy' || true") == "0"
        assert sorted(mesh.consul("/v1/catalog/services")) == ["consul"]
    finally:
        # 3. start-jobs with the inventory's catalog: everything back, and the node as the other tests expect it.
        rc, out = run_playbook(inventory, "playbooks/jobs.yml")
    assert rc == 0, out[-3000:]
    for svc in catalog:
        assert f"{svc['name']}: {svc['instances']}/{svc['instances']} instances healthy" in out
    assert _ids(mesh, "add-svc") == ["add-svc-1", "add-svc-2"]
    [(status, body)] = mesh.compute_many(1)
    assert (status, body["result"]) == (200, 9), json.dumps(body)

"""The catalog drives the node: scaling down removes an instance's units and registration,
stop-workloads removes every workload, start-workloads brings the whole catalog back.

One sequence (three workloads.yml runs), since each step starts from the previous one's state.
Every step is judged by the node's state (units, processes, Consul), never by the playbook's words.
"""

import yaml

from conftest import instances_of, run_playbook, systemd_only
from meshlab.testing import resolved_model

UNITS = "ls /etc/systemd/system/ | grep -E '^mesh-(app|sidecar)-' | sort || true"


def _units_of(instances):
    return sorted(u for i in instances for u in i["units"].values())


@systemd_only
def test_scale_down_then_stop_then_start(host, mesh, model, inventory, tmp_path, seed):
    smaller = [dict(s, instances=1) if s["name"] == "add-svc" else s for s in model["catalog"]]
    extra = tmp_path / "catalog.yml"
    extra.write_text(yaml.safe_dump({"mesh_catalog": smaller}))
    scaled = resolved_model(inventory, f"@{extra}")
    [kept] = instances_of(scaled, "add-svc")
    [gone] = [i for i in instances_of(model, "add-svc") if i["id"] != kept["id"]]
    try:
        # 1. add-svc: 2 -> 1 instance.
        rc, out = run_playbook(inventory, "playbooks/workloads.yml", f"@{extra}")
        assert rc == 0, out[-3000:]
        assert host.check_output(UNITS).split() == _units_of(scaled["instances"])
        assert not host.file(f"/etc/consul.d/services/{gone['id']}.json").exists
        assert mesh.instance_ids("add-svc", passing=False) == [kept["id"]] == mesh.instance_ids("add-svc")
        assert host.check_output(f"ps -eo args | grep -c '[s]idecar-for {gone['id']} ' || true") == "0"
        [(status, body)] = mesh.compute_many(1)
        assert (status, body["result"]) == (200, seed["result"])

        # 2. stop-workloads: nothing of the workloads is left.
        rc, out = run_playbook(inventory, "playbooks/workloads.yml", "mesh_workloads_state=absent")
        assert rc == 0, out[-3000:]
        assert host.check_output(UNITS) == ""
        assert host.check_output("ps -eo args | grep -c '[c]onnect proxy' || true") == "0"
        assert sorted(mesh.consul("/v1/catalog/services")) == ["consul"]
    finally:
        # 3. start-workloads with the inventory's catalog: everything back, and the node as the other tests expect it.
        rc, out = run_playbook(inventory, "playbooks/workloads.yml")
    assert rc == 0, out[-3000:]
    assert host.check_output(UNITS).split() == _units_of(model["instances"])
    for svc in model["services"]:
        assert mesh.instance_ids(svc["name"]) == sorted(i["id"] for i in instances_of(model, svc["name"]))
    [(status, body)] = mesh.compute_many(1)
    assert (status, body["result"]) == (200, seed["result"]), body

"""Preflight: a broken catalog stops the run with a message that says what to fix, and the node is untouched."""

import copy

import pytest
import yaml

from conftest import SCHEDULER, run_playbook

SNAPSHOT = (
    "sha256sum /etc/consul.d/* /etc/systemd/system/mesh*; "
    "systemctl list-units 'mesh-*' --all --plain --no-legend; "
    "curl -sf http://127.0.0.1:8500/v1/connect/intentions | python3 -c "
    "'import json,sys; print(sorted((i[\"SourceName\"],i[\"DestinationName\"],i[\"Action\"]) for i in json.load(sys.stdin)))'"
)


def _by_name(catalog, name):
    return next(s for s in catalog if s["name"] == name)


def _duplicate(c):
    c.append(copy.deepcopy(_by_name(c, "add-svc")))


def _port_collision(c):
    _by_name(c, "sub-svc")["port"] = _by_name(c, "add-svc")["port"] + 1


def _unknown_upstream(c):
    _by_name(c, "frontend")["upstreams"].append({"service": "mul-svc", "local_port": 9193, "env": "MUL_SVC_URL"})


def _zero_instances(c):
    _by_name(c, "add-svc")["instances"] = 0


def _no_health_path(c):
    del _by_name(c, "sub-svc")["health_path"]


CASES = {
    "duplicate service name": (_duplicate, {}, "service name 'add-svc' is declared 2 times"),
    "port collision": (_port_collision, {}, "is used by add-svc-2 app port and sub-svc-1 app port"),
    "upstream names no service": (_unknown_upstream, {}, "upstream 'mul-svc' names no service"),
    "instance count below 1": (_zero_instances, {}, "instances is 0: it must be an integer of at least 1"),
    "missing health path": (_no_health_path, {}, "service 'sub-svc': missing health_path"),
    "unknown scheduler": (None, {"mesh_scheduler": "kubernetes"}, "mesh_scheduler is 'kubernetes': use one of systemd, nomad"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_catalog_stops_the_run_and_leaves_the_node_untouched(host, catalog, inventory, tmp_path, case):
    mutate, extra, message = CASES[case]
    bad = copy.deepcopy(catalog)
    if mutate:
        mutate(bad)
    extra_vars = tmp_path / "bad.yml"
    extra_vars.write_text(yaml.safe_dump({"mesh_catalog": bad, **extra}))

    before = host.check_output(SNAPSHOT)
    rc, output = run_playbook(inventory, "playbooks/jobs.yml", f"@{extra_vars}")
    assert rc != 0, output[-3000:]
    assert message in output, output[-3000:]
    assert "Validate the service catalog" in output
    assert "Workloads" not in output.split("PLAY RECAP")[0].split("Validate the service catalog")[-1]
    assert host.check_output(SNAPSHOT) == before


@pytest.mark.skipif(SCHEDULER != "systemd", reason="needs a node without Nomad (the systemd scenario)")
def test_nomad_scheduler_without_nomad_says_what_to_do_and_changes_nothing(host, inventory):
    before = host.check_output(SNAPSHOT)
    rc, output = run_playbook(inventory, "playbooks/jobs.yml", "mesh_scheduler=nomad")
    assert rc != 0, output[-3000:]
    assert "Nomad is not installed/running on" in output, output[-3000:]
    assert "run `make provision` with MESH_PROFILE=full (needs HashiCorp's servers) or set mesh_scheduler=systemd" in output
    assert host.check_output(SNAPSHOT) == before

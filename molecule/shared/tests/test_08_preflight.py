"""Preflight: a broken catalog stops the run, naming what to fix, and the node is untouched."""

import copy

import pytest
import yaml

from conftest import SCHEDULER, run_playbook

SNAPSHOT = (
    "sha256sum /etc/consul.d/*.hcl /etc/consul.d/services/* /etc/systemd/system/mesh* 2>/dev/null; "
    "systemctl list-units 'mesh-*' --all --plain --no-legend; "
    "curl -sf -H 'X-Consul-Token: {token}' {api}/v1/connect/intentions | python3 -c "
    "'import json,sys; print(sorted((i[\"SourceName\"],i[\"DestinationName\"],i[\"Action\"]) for i in json.load(sys.stdin)))'"
)


def _by_name(c, name):
    return next(s for s in c if s["name"] == name)


def _duplicate(c):
    c.append(copy.deepcopy(_by_name(c, "add-svc")))


def _port_collision(c):
    _by_name(c, "sub-svc")["port"] = _by_name(c, "frontend")["port"] + 1


def _unknown_upstream(c):
    _by_name(c, "frontend")["upstreams"].append({"service": "mul-svc", "local_port": 9193, "env": "MUL_SVC_URL"})


def _zero_instances(c):
    _by_name(c, "add-svc")["instances"] = 0


def _no_health_path(c):
    del _by_name(c, "sub-svc")["health_path"]


def _pinned_to_unknown_node(c):
    _by_name(c, "sub-svc")["placement"] = {"nodes": ["mesh-9"]}


# Each case: how to break the catalog (or extra vars), and the facts its message must name.
CASES = {
    "duplicate service name": (_duplicate, {}, ["'add-svc'", "2 times"]),
    "port collision": (_port_collision, {}, ["sub-svc-1 app port", "frontend-2 app port"]),
    "upstream names no service": (_unknown_upstream, {}, ["'mul-svc'"]),
    "instance count below 1": (_zero_instances, {}, ["'add-svc'", "instances is 0"]),
    "missing health path": (_no_health_path, {}, ["'sub-svc'", "health_path"]),
    "placement on a node that is no workload node": (_pinned_to_unknown_node, {}, ["'sub-svc'", "mesh-9", "mesh_nodes"]),
    "unknown scheduler": (None, {"mesh_scheduler": "kubernetes"}, ["'kubernetes'", "systemd, nomad"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_catalog_stops_the_run_and_leaves_the_node_untouched(host, model, inventory, management_token, tmp_path, case):
    mutate, extra, facts = CASES[case]
    bad = copy.deepcopy(model["catalog"])
    if mutate:
        mutate(bad)
    extra_vars = tmp_path / "bad.yml"
    extra_vars.write_text(yaml.safe_dump({"mesh_catalog": bad, **extra}))
    snapshot = SNAPSHOT.format(api=model["settings"]["consul_http_addr"], token=management_token)

    before = host.check_output(snapshot)
    rc, output = run_playbook(inventory, "playbooks/workloads.yml", f"@{extra_vars}", raw=True)
    assert rc != 0, output[-3000:]
    # The failure's message (what the user reads) names the culprit, and nothing on the node changed.
    message = " ".join(output.split("fatal:", 1)[-1].split())
    for fact in facts:
        assert fact in message, (fact, message[-2000:])
    assert host.check_output(snapshot) == before


@pytest.mark.skipif(SCHEDULER != "systemd", reason="needs a node without Nomad (the systemd scenario)")
def test_nomad_scheduler_without_nomad_stops_before_any_change(host, model, inventory, management_token):
    snapshot = SNAPSHOT.format(api=model["settings"]["consul_http_addr"], token=management_token)
    before = host.check_output(snapshot)
    rc, output = run_playbook(inventory, "playbooks/workloads.yml", "mesh_scheduler=nomad", raw=True)
    assert rc != 0, output[-3000:]
    # The failure's message says how to get Nomad, and nothing on the node changed.
    assert "MESH_PROFILE=full" in output.split("fatal:", 1)[-1], output[-3000:]
    assert host.check_output(snapshot) == before

"""The service catalog logic (plugins/filter/mesh_catalog.py): validation and expansion."""

import copy
import pathlib
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugins" / "filter"))

import mesh_catalog as mc  # noqa: E402

CONSUL_PORTS = {"http": 8500, "dns": 8600, "grpc": 8502, "serf_lan": 8301, "serf_wan": 8302, "server": 8300}


@pytest.fixture
def catalog():
    data = yaml.safe_load((ROOT / "inventory/lab/group_vars/all/catalog.yml").read_text())
    return copy.deepcopy(data["mesh_catalog"])


def by_name(catalog, name):
    return next(s for s in catalog if s["name"] == name)


def test_default_catalog_is_valid(catalog):
    assert mc.mesh_catalog_errors(catalog, "systemd", CONSUL_PORTS) == []
    assert mc.mesh_catalog_errors(catalog, "nomad", CONSUL_PORTS) == []


def test_default_catalog_shape(catalog):
    assert [(s["name"], s["language"], s["instances"]) for s in catalog] == [
        ("add-svc", "python", 2), ("sub-svc", "python", 2), ("frontend", "node", 1)]


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.append(copy.deepcopy(c[0])), "service name 'add-svc' is declared 2 times"),
    (lambda c: by_name(c, "sub-svc").update(port=9002), "port 9002 is used by add-svc-2 app port and sub-svc-1 app port"),
    (lambda c: by_name(c, "frontend").update(port=8500), "port 8500 is used by consul http port and frontend-1 app port"),
    (lambda c: by_name(c, "frontend")["upstreams"].append({"service": "mul-svc", "local_port": 9193, "env": "MUL_SVC_URL"}),
     "upstream 'mul-svc' names no service"),
    (lambda c: by_name(c, "add-svc").update(instances=0), "instances is 0: it must be an integer of at least 1"),
    (lambda c: by_name(c, "add-svc").update(instances="2"), "instances is '2'"),
    (lambda c: by_name(c, "sub-svc").pop("health_path"), "service 'sub-svc': missing health_path"),
    (lambda c: by_name(c, "sub-svc").update(health_path="health"), "health_path 'health' must start with '/'"),
    (lambda c: by_name(c, "sub-svc").update(language="cobol"), "language 'cobol' is not one of python, node"),
    (lambda c: by_name(c, "sub-svc").update(name="Sub_Svc"), "name must be lowercase"),
    (lambda c: by_name(c, "sub-svc").update(sidecar_port=70000), "sidecar_port 70000 is not a TCP port"),
    (lambda c: by_name(c, "sub-svc").update(command="python -m x"), "command must be a list of strings"),
    (lambda c: by_name(c, "frontend")["upstreams"].append({"service": "frontend", "local_port": 9194, "env": "X"}),
     "a service cannot be its own upstream"),
    (lambda c: by_name(c, "frontend")["upstreams"][0].update(env="add-url"), "each upstream needs service, local_port"),
])
def test_each_problem_is_reported_with_what_to_fix(catalog, mutate, message):
    mutate(catalog)
    errors = mc.mesh_catalog_errors(catalog, "systemd", CONSUL_PORTS)
    assert any(message in e for e in errors), errors


def test_unknown_scheduler(catalog):
    assert mc.mesh_catalog_errors(catalog, "kubernetes") == [
        "mesh_scheduler is 'kubernetes': use one of systemd, nomad"]


@pytest.mark.parametrize("bad", [None, [], {}, "add-svc"])
def test_empty_or_wrong_type_catalog(bad):
    assert mc.mesh_catalog_errors(bad) == ["mesh_catalog must be a non-empty list of services"]


def test_instances_expand_with_consecutive_ports_and_env(catalog):
    inst = {i["id"]: i for i in mc.mesh_instances(catalog)}
    assert sorted(inst) == ["add-svc-1", "add-svc-2", "frontend-1", "sub-svc-1", "sub-svc-2"]
    assert (inst["add-svc-2"]["port"], inst["add-svc-2"]["sidecar_port"]) == (9002, 21002)
    assert inst["add-svc-1"]["env"]["APP_BIND"] == "127.0.0.1"
    assert inst["frontend-1"]["env"]["APP_BIND"] == "0.0.0.0"
    assert inst["frontend-1"]["env"]["ADD_SVC_URL"] == "http://127.0.0.1:9191"
    assert inst["frontend-1"]["env"]["SUB_SVC_URL"] == "http://127.0.0.1:9192"
    assert inst["sub-svc-2"]["env"]["INSTANCE_ID"] == "sub-svc-2"


def test_consul_service_definition(catalog):
    front = next(i for i in mc.mesh_instances(catalog) if i["id"] == "frontend-1")
    svc = mc.mesh_consul_service(front, "2s", "1s")["service"]
    assert svc["id"] == "frontend-1" and svc["name"] == "frontend" and svc["port"] == 8080
    assert svc["check"] == {"id": "frontend-1-health", "name": "frontend HTTP /health",
                            "http": "http://127.0.0.1:8080/health", "interval": "2s", "timeout": "1s"}
    sidecar = svc["connect"]["sidecar_service"]
    assert sidecar["port"] == 21021
    assert sidecar["proxy"]["upstreams"] == [
        {"destination_name": "add-svc", "local_bind_port": 9191},
        {"destination_name": "sub-svc", "local_bind_port": 9192}]


def test_proxy_argv():
    assert mc.mesh_proxy_args("add-svc-1", "/usr/bin/consul", "http://127.0.0.1:8500") == [
        "/usr/bin/consul", "connect", "proxy", "-http-addr=http://127.0.0.1:8500",
        "-sidecar-for", "add-svc-1", "-log-level", "warn"]


def test_intentions_are_the_declared_edges(catalog):
    assert mc.mesh_intention_dicts(catalog) == [
        {"source": "frontend", "destination": "add-svc", "action": "allow"},
        {"source": "frontend", "destination": "sub-svc", "action": "allow"}]

"""Discovery: Consul's catalog, health API and DNS know exactly the instances the lab model declares."""

import pytest

from conftest import instances_of, systemd_only
from testkit.lab import dig_srv


@pytest.fixture(scope="module")
def services(model):
    return [s["name"] for s in model["services"]]


def test_passing_instances_are_the_models(mesh, model, services):
    for service in services:
        passing = mesh.consul(f"/v1/health/service/{service}?passing=1")
        got = sorted(e["Service"]["ID"] for e in passing)
        want = sorted(i["id"] for i in instances_of(model, service))
        print(f"{service}: passing {got}")
        assert got == want


def test_catalog_lists_every_service_and_its_proxy(mesh, services):
    registered = mesh.consul("/v1/catalog/services")
    for name in services:
        assert name in registered
        assert f"{name}-sidecar-proxy" in registered


def _srv(host, model, name):
    return dig_srv(lambda cmd: host.check_output(cmd), model["settings"]["consul_ports"]["dns"], name)


@systemd_only
@pytest.mark.parametrize("service", ["add-svc", "sub-svc", "frontend"])
def test_service_srv_says_where_each_app_really_listens(host, model, service):
    """<svc>.service.consul: the app's own address (127.0.0.1 unless it binds publicly) and port."""
    got = _srv(host, model, f"{service}.service.consul")
    want = sorted((i["address"], i["port"]) for i in instances_of(model, service))
    print(f"{service}.service.consul: {got}")
    assert got == want


@systemd_only
@pytest.mark.parametrize("service", ["add-svc", "sub-svc"])
def test_connect_srv_lists_the_sidecars_on_the_node_address(host, model, service):
    """<svc>.connect.consul: the sidecars' mTLS listeners, at the node's address: the name other nodes use."""
    got = _srv(host, model, f"{service}.connect.consul")
    want = sorted((i["node_address"], i["sidecar_port"]) for i in instances_of(model, service))
    print(f"{service}.connect.consul: {got}")
    assert got == want

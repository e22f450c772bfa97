"""Discovery: Consul's catalog, health API and DNS know every instance."""

import pytest

from conftest import systemd_only


@pytest.mark.parametrize("service", ["add-svc", "sub-svc"])
def test_two_passing_instances(mesh, catalog, service):
    expected = next(s["instances"] for s in catalog if s["name"] == service)
    assert expected == 2
    passing = mesh.consul(f"/v1/health/service/{service}?passing=1")
    assert sorted(e["Service"]["ID"] for e in passing) == [f"{service}-1", f"{service}-2"]


def test_catalog_lists_every_service_and_its_proxy(mesh, catalog):
    services = mesh.consul("/v1/catalog/services")
    for svc in catalog:
        assert svc["name"] in services
        assert f"{svc['name']}-sidecar-proxy" in services


def _srv(host, name):
    out = host.check_output(f"dig +short @127.0.0.1 -p 8600 {name} SRV")
    return sorted(line.split()[2] for line in out.splitlines() if line.strip())


@systemd_only
def test_dns_srv_returns_both_add_svc_instances(host, catalog):
    add = next(s for s in catalog if s["name"] == "add-svc")
    assert _srv(host, "add-svc.service.consul") == [str(add["port"]), str(add["port"] + 1)]


@systemd_only
def test_dns_connect_srv_returns_both_add_svc_proxies(host, catalog):
    add = next(s for s in catalog if s["name"] == "add-svc")
    assert _srv(host, "add-svc.connect.consul") == [str(add["sidecar_port"]), str(add["sidecar_port"] + 1)]

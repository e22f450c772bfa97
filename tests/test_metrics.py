"""Prometheus' plan and config (meshlab/metrics.py) and the lab's own Consul services (meshlab/model.py) for the
three-node test inventory: what is scraped where and how, the registrations that let Prometheus find each part, the
tokens and intentions that let it in, and every bad setting refused with what to change."""

import pytest

from meshlab import acl, metrics
from meshlab import model as lab_model


@pytest.fixture(scope="module")
def plan(model):
    return metrics.plan(model, {})


@pytest.fixture(scope="module")
def jobs(plan):
    return {job["job_name"]: job for job in metrics.config(plan)["scrape_configs"]}


def test_prometheus_runs_on_the_first_server_and_expects_every_part(plan, model):
    assert plan["node"] == "mesh-1" == model["metrics"]["node"]
    instances = sorted(i["id"] for i in model["instances"])
    expected = metrics.expected_targets(plan)
    assert sorted(i for job, i in expected if job == "mesh") == instances  # every catalog instance
    assert [i for job, i in expected if job == "node"] == ["mesh-1", "mesh-2", "mesh-3"]  # every agent
    assert [i for job, i in expected if job == "consul"] == model["metrics"]["servers"]
    assert [i for job, i in expected if job == "edge"] == model["edge"]["nodes"]
    assert [i for job, i in expected if job == "prometheus"] == ["mesh-1"]


def test_every_job_discovers_its_targets_in_consul(jobs):
    assert sorted(jobs) == ["consul", "edge", "mesh", "node", "prometheus", "zipkin"]
    for job in jobs.values():
        assert "static_configs" not in job
        [sd] = job["consul_sd_configs"]
        assert sd["server"] == "127.0.0.1:8500"
        assert "token" not in sd  # the agent's default token reads the catalog; no secret in prometheus.yml
    assert "services" not in jobs["mesh"]["consul_sd_configs"][0]  # any service whose sidecar says metrics_path
    assert jobs["node"]["consul_sd_configs"][0]["services"] == ["node-exporter"]
    assert jobs["consul"]["consul_sd_configs"][0]["services"] == ["consul"]


def _consul_catalog(model):
    """{service name: catalog entries} as Consul would list the model's registrations (sidecar ids and names are
    Consul's defaults), with the servers' `consul` service."""
    catalog = {}

    def add(name, sid, node, meta):
        catalog.setdefault(name, []).append({"ServiceID": sid, "Node": node, "ServiceMeta": meta or {}})

    for inst in model["instances"]:
        service = inst["registration"]["service"]
        add(service["name"], service["id"], inst["node"], service.get("meta"))
        sidecar = service["connect"]["sidecar_service"]
        add(f"{service['name']}-sidecar-proxy", f"{service['id']}-sidecar-proxy", inst["node"], sidecar.get("meta"))
    for node, where in model["nodes"].items():
        for own in lab_model.node_services(model, node, where["address"]):
            service = own["registration"]["service"]
            add(service["name"], service["id"], node, service["meta"])
    for server in model["metrics"]["servers"]:
        add("consul", "consul", server, {})
    return catalog


def test_what_consul_lists_is_what_prometheus_must_find(model, plan):
    """`make dashboard` counts the targets Consul's catalog implies: for the model's registrations, exactly the
    model's targets (an app's own registration, on 127.0.0.1, is never one)."""
    catalog = _consul_catalog(model)
    assert metrics.catalog_targets(catalog) == metrics.expected_targets(plan)
    # control: one instance fewer in the catalog is one mesh target fewer
    catalog["add-svc-sidecar-proxy"].pop()
    assert len(metrics.catalog_targets(catalog)) == len(metrics.expected_targets(plan)) - 1


def test_the_apps_are_scraped_through_their_sidecars_with_mtls(jobs, model):
    mesh = jobs["mesh"]
    assert mesh["scheme"] == "https"
    assert mesh["tls_config"]["cert_file"] == "/etc/prometheus/mesh/prometheus.pem"
    keep, path = mesh["relabel_configs"][:2]
    assert keep == {"source_labels": ["__meta_consul_service_metadata_metrics_path"], "regex": "/.*", "action": "keep"}
    assert path["target_label"] == "__metrics_path__"
    for inst in model["instances"]:
        sidecar = inst["registration"]["service"]["connect"]["sidecar_service"]
        assert sidecar["meta"]["metrics_path"] == "/metrics" and sidecar["meta"]["instance"] == inst["id"]
        assert sidecar["meta"]["service"] == inst["service"]
    for svc in ("add-svc", "sub-svc", "frontend"):
        assert {"source": "prometheus", "destination": svc, "action": "allow"} in model["intentions"]


def test_a_service_without_metrics_path_is_neither_scraped_nor_allowed(catalog, settings):
    quiet = [dict(s, metrics_path=None) if s["name"] == "sub-svc" else s for s in catalog]
    quiet = [{k: v for k, v in s.items() if v is not None} for s in quiet]
    model = lab_model.build(quiet, [{"name": "mesh-1", "address": "10.0.0.11"}], settings)
    sub = lab_model.instances_of(model, "sub-svc")[0]
    assert "meta" not in sub["registration"]["service"]["connect"]["sidecar_service"]
    assert not any(i["destination"] == "sub-svc" and i["source"] == "prometheus" for i in model["intentions"])
    assert "sub-svc-1" not in [i for job, i in metrics.expected_targets(metrics.plan(model)) if job == "mesh"]


def test_the_consul_servers_are_scraped_over_https_with_the_token(jobs, plan):
    consul = jobs["consul"]
    assert consul["scheme"] == "https" and consul["metrics_path"] == "/v1/agent/metrics"
    assert consul["params"] == {"format": ["prometheus"]}
    assert consul["bearer_token_file"] == "/etc/prometheus/mesh/consul-token"  # agent read
    assert consul["tls_config"] == {"ca_file": "/etc/prometheus/mesh/consul-ca.pem"}  # verified, host name included
    assert consul["relabel_configs"][0]["replacement"] == "$1:8501"


def test_each_node_registers_the_lab_services_it_runs(model):
    found = {node: {s["id"]: s for s in lab_model.node_services(model, node, f"10.0.0.{10 + n}")}
             for n, node in enumerate(model["nodes"], 1)}
    assert sorted(found["mesh-1"]) == ["edge", "node-exporter", "prometheus", "zipkin"]
    assert sorted(found["mesh-2"]) == sorted(found["mesh-3"]) == ["node-exporter"]
    edge = found["mesh-1"]["edge"]["registration"]["service"]
    assert (edge["port"], edge["meta"]) == (8080, {"metrics_port": "8404"})
    assert edge["check"]["http"] == "http://10.0.0.11:8404/ready"  # HAProxy's monitor-uri, not the public port
    exporter = found["mesh-2"]["node-exporter"]
    assert exporter["registration"]["service"]["check"]["tcp"] == "10.0.0.12:9100"
    assert exporter["secret"] == "consul/node-exporter"
    # Zipkin (tracing) on Prometheus' node: its own HTTP check, and a sidecar that hands spans to it on the node's address.
    zipkin = found["mesh-1"]["zipkin"]
    service = zipkin["registration"]["service"]
    assert (service["port"], service["check"]["http"], zipkin["secret"]) == (9411, "http://10.0.0.11:9411/health", "consul/zipkin")
    sidecar = service["connect"]["sidecar_service"]
    assert (sidecar["address"], sidecar["port"]) == ("10.0.0.11", 21411)
    assert (sidecar["proxy"]["local_service_address"], sidecar["proxy"]["local_service_port"]) == ("10.0.0.11", 9411)


def test_prometheus_has_its_own_identity_and_a_token_that_only_reads_agents(model):
    tokens = {t["name"]: t for t in acl.workload_tokens(model)}
    prom = tokens["prometheus"]
    assert prom["service_identities"] == [{"service_name": "prometheus"}] and prom["policies"] == []
    assert prom["nodes"] == ["mesh-1"]
    assert tokens["node-exporter"]["nodes"] == []  # only the registrations carry it
    [reader] = [t for t in acl.tokens(list(model["nodes"])) if t["secret"] == "consul/metrics-reader"]
    assert reader["policies"] == [{"name": "agents-read"}] and reader["service_identities"] == []
    [policy] = [p for p in acl.policies(list(model["nodes"])) if p["name"] == "agents-read"]
    assert policy["rules"] == 'agent_prefix "" { policy = "read" }'


def test_without_metrics_there_is_no_prometheus(catalog, settings):
    model = lab_model.build(catalog, [{"name": "mesh-1", "address": "10.0.0.11"}], {**settings, "metrics": False})
    assert model["metrics"] == {} and metrics.plan(model) is None
    assert not any(i["source"] == "prometheus" for i in model["intentions"])
    # Zipkin does not need Prometheus (it runs on the first Consul server then).
    assert [s["id"] for s in lab_model.node_services(model, "mesh-1", "10.0.0.11")] == ["edge", "zipkin"]
    assert "prometheus" not in {t["name"] for t in acl.workload_tokens(model)}


@pytest.mark.parametrize("change, message", [
    ({"metrics_port": 9011}, "mesh_metrics_port 9011: taken by the catalog's instances"),
    ({"node_exporter_port": 8404}, "mesh_node_exporter_port 8404: taken"),
    ({"metrics_port": 9100}, "both want port 9100"),
    ({"metrics_port": 70000}, "mesh_metrics_port 70000 is not a TCP port"),
])
def test_bad_ports_are_refused(catalog, settings, change, message):
    model = lab_model.build(catalog, [{"name": "mesh-1", "address": "10.0.0.11"}], {**settings, **change})
    [problem] = metrics.problems(model, {})
    assert message in problem


@pytest.mark.parametrize("options, message", [
    ({"scrape_interval": "5"}, "mesh_metrics_scrape_interval '5' is not a Prometheus duration"),
    ({"retention": "two days"}, "mesh_metrics_retention 'two days'"),
])
def test_bad_durations_are_refused(model, options, message):
    [problem] = metrics.problems(model, options)
    assert message in problem


def test_a_metrics_node_that_is_no_workload_node_is_refused(catalog, settings):
    with pytest.raises(lab_model.ModelError, match="mesh_metrics_node 'elsewhere' is not a workload node"):
        lab_model.build(catalog, [{"name": "mesh-1", "address": "10.0.0.11"}], {**settings, "metrics_node": "elsewhere"})

"""meshlab.tracing and the model's tracing part: where Zipkin runs, how every instance reaches it, what is refused."""

import pytest

from meshlab import acl, metrics, tracing
from meshlab import model as lab_model

OPTIONS = {"version": "3.6.1", "max_spans": 100000, "heap": "320m"}


@pytest.fixture(scope="module")
def plan(model):
    return tracing.plan(model, OPTIONS)


def test_zipkin_runs_on_prometheus_node_behind_its_own_sidecar(plan, model):
    assert plan["node"] == model["metrics"]["node"] == "mesh-1"
    assert plan["address"] == model["nodes"]["mesh-1"]["address"]
    assert plan["jar"] == "/opt/zipkin/zipkin-server-3.6.1-exec.jar"
    assert plan["env"]["STORAGE_TYPE"] == "mem" and plan["env"]["MEM_MAX_SPANS"] == "100000"
    assert "-Xmx320m" in plan["argv"] and f"--armeria.ports[0].ip={plan['address']}" in plan["argv"]
    assert plan["sidecar_argv"][-4:] == ["-sidecar-for", "zipkin", "-log-level", "warn"]
    assert plan["token_file"].endswith("/zipkin")


def test_every_instance_sends_its_spans_through_its_own_sidecar(model):
    t = model["tracing"]
    for inst in model["instances"]:
        upstreams = inst["registration"]["service"]["connect"]["sidecar_service"]["proxy"]["upstreams"]
        assert {"destination_name": "zipkin", "local_bind_address": inst["upstream_address"],
                "local_bind_port": t["local_port"]} in upstreams
        env = inst["env"]
        assert env["OTEL_EXPORTER_ZIPKIN_ENDPOINT"] == f"http://{inst['upstream_address']}:{t['local_port']}/api/v2/spans"
        assert env["OTEL_SERVICE_NAME"] == inst["service"]
        assert f"service.instance.id={inst['id']}" in env["OTEL_RESOURCE_ATTRIBUTES"].split(",")
        assert (env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"]) == ("parentbased_traceidratio", "0.1")
    assert {(i["source"], i["destination"]) for i in model["intentions"] if i["destination"] == "zipkin"} == \
        {(s["name"], "zipkin") for s in model["services"]}


def test_zipkin_has_a_token_of_its_own_and_a_scrape_job(model):
    [token] = [t for t in acl.workload_tokens(model) if t["name"] == "zipkin"]
    assert token["service_identities"] == [{"service_name": "zipkin"}] and token["nodes"] == ["mesh-1"]
    plan = metrics.plan(model, {})
    assert ("zipkin", "mesh-1") in metrics.expected_targets(plan)
    [job] = [j for j in metrics.config(plan)["scrape_configs"] if j["job_name"] == "zipkin"]
    assert job["metrics_path"] == "/prometheus"
    # The dashboard's link to Zipkin's UI reads the address Consul gave the target.
    assert {"source_labels": ["__address__"], "target_label": "address"} in job["relabel_configs"]


def test_without_tracing_nothing_is_traced(catalog, settings):
    model = lab_model.build(catalog, [{"name": "mesh-1", "address": "10.0.0.11"}], {**settings, "tracing": False})
    assert model["tracing"] == {} and tracing.plan(model, OPTIONS) is None
    assert not any(k.startswith("OTEL_") for i in model["instances"] for k in i["env"])
    assert not any(u["destination_name"] == "zipkin" for i in model["instances"]
                   for u in i["registration"]["service"]["connect"]["sidecar_service"]["proxy"]["upstreams"])
    assert "zipkin" not in {i["destination"] for i in model["intentions"]}
    assert "zipkin" not in {t["name"] for t in acl.workload_tokens(model)}
    assert "zipkin" not in [s["id"] for s in lab_model.node_services(model, "mesh-1", "10.0.0.11")]


def test_sampling_ratio_reaches_the_apps(catalog, settings):
    model = lab_model.build(catalog, [{"name": "mesh-1", "address": "10.0.0.11"}], {**settings, "tracing_sample_ratio": 0})
    assert {i["env"]["OTEL_TRACES_SAMPLER_ARG"] for i in model["instances"]} == {"0.0"}


@pytest.mark.parametrize("change, options, message", [
    ({"tracing_port": 9011}, {}, "mesh_tracing_port 9011: taken"),
    ({"tracing_sidecar_port": 8080}, {}, "mesh_tracing_sidecar_port 8080: taken"),
    ({"tracing_port": 9090}, {}, "mesh_tracing_port 9090: taken"),  # Prometheus'
    ({"tracing_local_port": 9191}, {}, "mesh_tracing_local_port 9191: taken"),  # the frontend's add-svc upstream
    ({"tracing_sidecar_port": 9411}, {}, "give each its own port"),
    ({"tracing_sample_ratio": 1.5}, {}, "mesh_tracing_sample_ratio 1.5"),
    ({}, {"heap": "lots"}, "mesh_zipkin_heap 'lots'"),
    ({}, {"max_spans": 10}, "mesh_zipkin_max_spans 10"),
    ({}, {"version": "latest"}, "mesh_zipkin_version 'latest'"),
])
def test_bad_settings_are_refused(catalog, settings, change, options, message):
    model = lab_model.build(catalog, [{"name": "mesh-1", "address": "10.0.0.11"}], {**settings, **change})
    [problem] = tracing.problems(model, {**OPTIONS, **options})
    assert message in problem


def test_zipkin_node_must_be_a_workload_node(catalog, settings):
    with pytest.raises(lab_model.ModelError, match="mesh_tracing_node 'nowhere'"):
        lab_model.build(catalog, [{"name": "mesh-1", "address": "10.0.0.11"}], {**settings, "tracing_node": "nowhere"})

"""The lab model (meshlab): catalog validation, placement, names, ports, addresses, registrations.

The catalog is the inventory's, as Ansible resolves it (conftest: playbooks/model.yml
against the three-node tests/inventory).
"""

import copy
import json
import shutil

import pytest

from meshlab import apps, catalog as lab_catalog, model as lab_model
from meshlab.catalog import LOOPBACK
from testkit.lab import rebuilt_model


def by_name(cat, name):
    return next(s for s in cat if s["name"] == name)


def ids(model, node=None):
    return [i["id"] for i in model["instances"] if node is None or i["node"] == node]


def test_the_inventorys_catalog_is_valid(catalog, settings):
    nodes = ["mesh-1", "mesh-2", "mesh-3"]
    for scheduler in ("systemd", "nomad"):
        assert lab_catalog.errors(catalog, scheduler, settings["consul_ports"], nodes, {"mesh_nodes": nodes}) == []


CASES = [
    (lambda c: c.append(copy.deepcopy(c[0])), "service name 'add-svc' is declared 2 times"),
    (lambda c: by_name(c, "sub-svc").update(port=8082), "port 8082 is used by sub-svc-1 app port and frontend-2 app port"),
    (lambda c: by_name(c, "frontend").update(port=8500), "port 8500 is used by consul http port and frontend-1 app port"),
    (lambda c: by_name(c, "frontend")["upstreams"].append({"service": "mul-svc", "local_port": 9193, "env": "MUL_SVC_URL"}),
     "upstream 'mul-svc' names no service"),
    (lambda c: by_name(c, "add-svc").update(instances=0), "instances is 0: it must be an integer of at least 1"),
    (lambda c: by_name(c, "add-svc").update(instances=255), "instances is 255: at most 254"),
    (lambda c: by_name(c, "add-svc").update(instances="2"), "instances is '2'"),
    (lambda c: by_name(c, "sub-svc").pop("health_path"), "service 'sub-svc': missing health_path"),
    (lambda c: by_name(c, "sub-svc").pop("app"), "service 'sub-svc': missing app"),
    (lambda c: by_name(c, "sub-svc").update(health_path="health"), "health_path 'health' must start with '/'"),
    (lambda c: by_name(c, "sub-svc").update(language="cobol"), "language 'cobol' is not one of python, node"),
    (lambda c: by_name(c, "sub-svc").update(name="Sub_Svc"), "name must be lowercase"),
    (lambda c: by_name(c, "sub-svc").update(sidecar_port=70000), "sidecar_port 70000 is not a TCP port"),
    (lambda c: by_name(c, "sub-svc").update(args="python -m x"), "args must be a list of strings"),
    (lambda c: by_name(c, "sub-svc").update(command=["x"]), "unknown key(s) command"),
    (lambda c: by_name(c, "frontend")["upstreams"].append({"service": "frontend", "local_port": 9194, "env": "X"}),
     "a service cannot be its own upstream"),
    (lambda c: by_name(c, "frontend")["upstreams"][0].update(env="add-url"), "each upstream needs service, local_port"),
    (lambda c: by_name(c, "sub-svc").update(placement={"nodes": ["mesh-9"]}), "placement.nodes names mesh-9"),
    (lambda c: by_name(c, "sub-svc").update(placement={"group": "edge"}), "placement.group 'edge' has no workload node"),
    (lambda c: by_name(c, "sub-svc").update(placement={"rack": "a"}), "placement must be {nodes: [<node>, ...]}"),
]


@pytest.mark.parametrize("mutate, message", CASES)
def test_each_problem_is_reported_with_what_to_fix(catalog, settings, mutate, message):
    bad = copy.deepcopy(catalog)
    mutate(bad)
    nodes = ["mesh-1", "mesh-2", "mesh-3"]
    errors = lab_catalog.errors(bad, "systemd", settings["consul_ports"], nodes, {"mesh_nodes": nodes})
    assert any(message in e for e in errors), errors


def test_unknown_scheduler(catalog):
    assert lab_catalog.errors(catalog, "kubernetes") == ["mesh_scheduler is 'kubernetes': use one of systemd, nomad"]


@pytest.mark.parametrize("bad", [None, [], {}, "add-svc"])
def test_empty_or_wrong_type_catalog(bad):
    assert lab_catalog.errors(bad) == ["mesh_catalog must be a non-empty list of services"]


def test_instance_ids_are_unique_cluster_wide_and_count_the_catalogs_instances(model, catalog):
    assert len(set(ids(model))) == len(ids(model)) == sum(s["instances"] for s in catalog)
    assert ids(model) == [f"{s['name']}-{n}" for s in catalog for n in range(1, s["instances"] + 1)]


def test_default_placement_deals_round_robin_across_services(model):
    """add-svc-1 mesh-1, add-svc-2 mesh-2, sub-svc-1 mesh-3, sub-svc-2 mesh-1, frontend-1 mesh-2, frontend-2 mesh-3,
    frontend-3 mesh-1."""
    assert [(i["id"], i["node"]) for i in model["instances"]] == [
        ("add-svc-1", "mesh-1"), ("add-svc-2", "mesh-2"), ("sub-svc-1", "mesh-3"),
        ("sub-svc-2", "mesh-1"), ("frontend-1", "mesh-2"), ("frontend-2", "mesh-3"),
        ("frontend-3", "mesh-1")]
    for service in ("add-svc", "sub-svc", "frontend"):
        nodes = [i["node"] for i in lab_model.instances_of(model, service)]
        assert len(set(nodes)) == len(nodes), f"{service} has two instances on one node: {nodes}"
    assert {n: v["instances"] for n, v in model["nodes"].items()} == {
        "mesh-1": ["add-svc-1", "sub-svc-2", "frontend-3"], "mesh-2": ["add-svc-2", "frontend-1"], "mesh-3": ["sub-svc-1", "frontend-2"]}


def test_pinned_and_grouped_placement(catalog, settings):
    cat = copy.deepcopy(catalog)
    by_name(cat, "add-svc")["placement"] = {"nodes": ["mesh-3"]}
    by_name(cat, "frontend")["placement"] = {"group": "edge"}
    nodes = [{"name": f"mesh-{n}", "address": f"10.0.0.{10 + n}"} for n in (1, 2, 3)]
    built = lab_model.build(cat, nodes, {**settings, "groups": {"edge": ["mesh-1", "mesh-2"]}})
    where = {i["id"]: i["node"] for i in built["instances"]}
    assert where["add-svc-1"] == where["add-svc-2"] == "mesh-3"
    assert (where["frontend-1"], where["frontend-2"]) == ("mesh-1", "mesh-2")
    # Unpinned services keep dealing round-robin from the start.
    assert (where["sub-svc-1"], where["sub-svc-2"]) == ("mesh-1", "mesh-2")


def test_ports_addresses_and_environment(model):
    inst = {i["id"]: i for i in model["instances"]}
    assert (inst["sub-svc-2"]["port"], inst["sub-svc-2"]["sidecar_port"], inst["sub-svc-2"]["admin_port"]) == (9012, 21012, 19012)
    assert inst["add-svc-1"]["env"]["APP_BIND"] == LOOPBACK and inst["add-svc-1"]["address"] == LOOPBACK
    front = inst["frontend-2"]
    # The frontend too listens on loopback only: the edge is the way in (meshlab/edge.py).
    assert front["env"]["APP_BIND"] == LOOPBACK and front["address"] == LOOPBACK and front["node_address"] == "10.0.0.13"
    assert front["env"]["APP_VERSION"] == "v1" and inst["frontend-3"]["env"]["APP_VERSION"] == "v2"
    # Each instance's upstream listeners have a loopback address of their own: several instances fit on one node.
    assert front["upstream_address"] == "127.0.0.2"
    assert front["env"]["ADD_SVC_URL"] == "http://127.0.0.2:9191" and front["env"]["SUB_SVC_URL"] == "http://127.0.0.2:9192"
    assert inst["frontend-1"]["env"]["ADD_SVC_URL"] == "http://127.0.0.1:9191"
    assert inst["sub-svc-2"]["env"]["INSTANCE_ID"] == "sub-svc-2"
    assert inst["add-svc-1"]["argv"][:1] == [f"{model['apps']['arith']['venv']}/bin/python"]
    assert model["apps"]["arith"]["venv"] == f"{model['settings']['apps_dir']}/venvs/arith"
    assert front["argv"][0] == "/usr/bin/node"
    assert inst["add-svc-1"]["units"] == {"app": "mesh-app-add-svc-1.service", "sidecar": "mesh-sidecar-add-svc-1.service"}


def test_registration_says_where_the_app_and_its_sidecar_listen(model, settings):
    front = next(i for i in model["instances"] if i["id"] == "frontend-1")
    svc = front["registration"]["service"]
    assert (svc["id"], svc["name"], svc["port"], svc["address"]) == ("frontend-1", "frontend", 8081, "127.0.0.1")
    assert svc["check"] == {"id": "frontend-1-health", "name": "frontend HTTP /health",
                            "http": "http://127.0.0.1:8081/health",
                            "interval": settings["check_interval"], "timeout": settings["check_timeout"]}
    sidecar = svc["connect"]["sidecar_service"]
    assert (sidecar["address"], sidecar["port"]) == ("10.0.0.12", 21021)
    assert sidecar["proxy"]["config"] == {"bind_address": "10.0.0.12"}
    assert sidecar["proxy"]["upstreams"] == [
        {"destination_name": "add-svc", "local_bind_address": "127.0.0.1", "local_bind_port": 9191},
        {"destination_name": "sub-svc", "local_bind_address": "127.0.0.1", "local_bind_port": 9192},
        # Tracing: the app's spans go to Zipkin through this sidecar too.
        {"destination_name": "zipkin", "local_bind_address": "127.0.0.1", "local_bind_port": 19411}]
    assert front["env"]["OTEL_EXPORTER_ZIPKIN_ENDPOINT"] == "http://127.0.0.1:19411/api/v2/spans"
    assert front["env"]["OTEL_RESOURCE_ATTRIBUTES"] == "service.instance.id=frontend-1,service.version=v1"
    assert front["env"]["OTEL_SERVICE_NAME"] == "frontend"
    add = next(i for i in model["instances"] if i["id"] == "add-svc-1")["registration"]["service"]
    assert add["address"] == LOOPBACK  # the app listens on loopback only: its DNS answer says so


def test_sidecar_argv(model, settings):
    inst = model["instances"][0]
    assert inst["sidecar_argv"] == ["consul", "connect", "proxy", f"-http-addr={settings['consul_http_addr']}",
                                    f"-token-file={settings['tokens_dir']}/{inst['id']}",
                                    "-sidecar-for", inst["id"], "-log-level", "warn"]
    assert inst["token_file"] == f"{settings['tokens_dir']}/{inst['id']}"


def test_intentions_are_the_declared_edges(model):
    assert model["intentions"] == [
        {"source": "add-svc", "destination": "zipkin", "action": "allow"},
        {"source": "edge", "destination": "frontend", "action": "allow"},
        {"source": "frontend", "destination": "add-svc", "action": "allow"},
        {"source": "frontend", "destination": "sub-svc", "action": "allow"},
        {"source": "frontend", "destination": "zipkin", "action": "allow"},
        # Prometheus scrapes every service with metrics_path through its sidecar.
        {"source": "prometheus", "destination": "add-svc", "action": "allow"},
        {"source": "prometheus", "destination": "frontend", "action": "allow"},
        {"source": "prometheus", "destination": "sub-svc", "action": "allow"},
        # With tracing, every service sends its spans to Zipkin through the mesh.
        {"source": "sub-svc", "destination": "zipkin", "action": "allow"}]


def test_the_model_built_in_python_is_json_and_the_one_ansible_resolves(model):
    """testkit.lab.rebuilt_model (the Molecule tests' changed catalogs) builds what playbooks/model.yml writes;
    a tuple, a set or another non-JSON value in the model would make the round trip differ."""
    built = rebuilt_model(model, model["catalog"])
    assert json.loads(json.dumps(built)) == built
    assert built == model


def test_no_node_or_no_address_is_a_clear_error(catalog, settings):
    with pytest.raises(lab_model.ModelError, match="mesh_nodes is empty"):
        lab_model.build(catalog, [], settings)
    with pytest.raises(lab_model.ModelError, match="no address for node"):
        lab_model.build(catalog, [{"name": "mesh-1", "address": ""}], settings)


def test_summary_names_every_node_and_instance(model):
    text = "\n".join(lab_model.summary(model))
    for name in model["nodes"]:
        assert name in text
    for inst in model["instances"]:
        assert f"{inst['id']} on {inst['node']}" in text


# --- the apps' code -----------------------------------------------------------

def test_installed_files_leave_out_tests_and_dev_files():
    files = apps.files(apps.SOURCE, "arith")
    assert "arith_svc/app.py" in files and "requirements.txt" in files
    assert not [f for f in files if f.startswith("tests/") or "__pycache__" in f or f.endswith(".pyc")]
    assert "requirements-dev.txt" not in files and "pyproject.toml" not in files
    front = apps.files(apps.SOURCE, "frontend")
    assert "src/server.js" in front and not [f for f in front if f.startswith(("test/", "test-support/"))]
    assert "node_modules/cockatiel/package.json" in front  # its pinned dependency travels with it


def test_new_code_changes_the_revision_in_every_instances_environment(tmp_path, catalog, settings):
    for app in ("arith", "frontend"):
        for path in apps.files(apps.SOURCE, app):
            dest = tmp_path / app / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f"{apps.SOURCE}/{app}/{path}", dest)
    nodes = [{"name": "mesh-1", "address": "10.0.0.11"}]
    before = lab_model.build(catalog, nodes, {**settings, "apps_src": str(tmp_path)})
    (tmp_path / "arith" / "arith_svc" / "app.py").write_text("# changed\n", encoding="utf-8")
    (tmp_path / "arith" / "tests").mkdir()
    after = lab_model.build(catalog, nodes, {**settings, "apps_src": str(tmp_path)})
    for b, a in zip(before["instances"], after["instances"]):
        changed = b["env"]["MESH_APP_REVISION"] != a["env"]["MESH_APP_REVISION"]
        assert changed == (b["app"] == "arith"), b["id"]  # only the changed app's instances restart
    (tmp_path / "arith" / "tests" / "test_x.py").write_text("x = 1\n", encoding="utf-8")
    again = lab_model.build(catalog, nodes, {**settings, "apps_src": str(tmp_path)})
    assert [i["env"] for i in again["instances"]] == [i["env"] for i in after["instances"]]  # tests do not count


def test_install_plan_covers_every_app_of_the_catalog(model):
    plan = {p["app"]: p for p in apps.install_plan(model)}
    assert set(plan) == {s["app"] for s in model["services"]}
    assert plan["arith"]["venv"] and plan["arith"]["requirements"].endswith("/arith/requirements.txt")
    assert plan["frontend"]["venv"] == "" and plan["frontend"]["revision"] == model["apps"]["frontend"]["revision"]


def test_the_tar_of_an_app_is_deterministic_and_holds_only_its_installed_files(tmp_path):
    import tarfile

    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    apps.tarball(apps.SOURCE, "arith", first)
    apps.tarball(apps.SOURCE, "arith", second)
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        assert tar.getnames() == apps.files(apps.SOURCE, "arith")


def test_ports_in_use_are_every_instance_port_and_the_edges_on_request(model):
    """One answer for the edge's, the metrics' and the bench's port checks (meshlab.model.ports_in_use)."""
    instance_ports = {p for i in model["instances"] for p in (i["port"], i["sidecar_port"], i["admin_port"])}
    zipkin = {model["tracing"]["port"], model["tracing"]["sidecar_port"]}
    assert lab_model.ports_in_use(model) == instance_ports | zipkin
    edge = {model["edge"]["port"], model["edge"]["stats_port"]}
    assert lab_model.ports_in_use(model, edge=True) == instance_ports | zipkin | edge
    assert not edge & instance_ports  # so the edge's ports really come from the edge=True part

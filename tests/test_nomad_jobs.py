"""Nomad jobs rendered from the lab model, parsed back with an HCL2 parser.

Every job of the inventory's catalog and of a changed one is rendered with the role's
template (roles/scheduler_nomad/templates/job.nomad.hcl.j2) and parsed with python-hcl2;
the structure is checked against the model functions the systemd scheduler uses:
counts, ports, placement, the Consul registration (meshlab.model.registration), the
proxy argv (= the systemd sidecar unit's), the app's argv and environment. One test
renders the jobs through Ansible itself (the role's render.yml) and compares.

What this cannot show (no Nomad binary here): that Nomad accepts and runs the jobs.
The Molecule scenario `nomad` does that where a Nomad release is available.
"""

import copy
import json
import pathlib
import re

import hcl2
import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import FilterModule as AnsibleCoreFilters
from hcl2.utils import SerializationOptions

from meshlab import model as lab_model, nomad
from testkit.lab import ROOT, run_playbook

ROLE = pathlib.Path(ROOT) / "roles" / "scheduler_nomad"
TEMPLATE = ROLE / "templates" / "job.nomad.hcl.j2"
PARSE = SerializationOptions(strip_string_quotes=True, preserve_heredocs=False, explicit_blocks=False, with_comments=False)


@pytest.fixture(scope="module")
def variables():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    return {**defaults, "ansible_managed": "Ansible managed", "mesh_user": "mesh"}


def changed(catalog, settings):
    """add-svc scaled to 3 and pinned, a new service mul-svc calling add-svc, env text that HCL would interpolate."""
    cat = copy.deepcopy(catalog)
    add = next(s for s in cat if s["name"] == "add-svc")
    add["instances"] = 3
    add["placement"] = {"nodes": ["mesh-1", "mesh-3"]}
    add["env"] = {**add["env"], "GREETING": 'say "hi" ${HOME} %{if} \\ done'}
    mul = copy.deepcopy(add)
    mul.update(name="mul-svc", instances=1, port=9021, sidecar_port=21031, args=add["args"][:-1] + ["mul"],
               upstreams=[{"service": "add-svc", "local_port": 9291, "env": "ADD_SVC_URL"}])
    del mul["placement"]
    cat.append(mul)
    return cat


@pytest.fixture(params=["inventory", "changed"])
def lab(request, model, catalog, settings):
    if request.param == "inventory":
        return model
    nodes = [{"name": n, "address": v["address"]} for n, v in model["nodes"].items()]
    return lab_model.build(changed(catalog, settings), nodes, settings)


def render(service, lab, variables):
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(AnsibleCoreFilters().filters())
    env.filters.update({"mesh_nomad_job": nomad.job, "hcl_string": nomad.hcl_string})
    return env.from_string(TEMPLATE.read_text()).render(item=service, mesh_model=lab, **variables)


def parse(text):
    """The job as HCL2 parses it: (name, job, group name, group, {task name: task}) with blocks flattened."""
    doc = hcl2.loads(text, serialization_options=PARSE)
    [job_block] = doc["job"]
    [(name, job)] = job_block.items()
    [group_block] = job["group"]
    [(group_name, group)] = group_block.items()
    tasks = {}
    for block in group["task"]:
        [(task_name, task)] = block.items()
        tasks[task_name] = task
    return name, job, group_name, group, tasks


def consul_template(text, env):
    """Evaluate the only consul-template expressions the jobs use: env lookups (+ parseInt | add 1)."""
    def expr(match):
        name, rest = match.group(1), match.group(2).strip()
        value = env[name]
        if rest == "| parseInt | add 1":
            return str(int(value) + 1)
        assert rest == "", f"unexpected consul-template expression {match.group(0)}"
        return value
    out = re.sub(r'\{\{ env "([A-Z0-9_a-z]+)" ?([^}]*)\}\}', expr, text)
    assert "{{" not in out, out
    return out


def each_job(lab, variables):
    for svc in lab["services"]:
        yield svc, parse(render(svc, lab, variables))


def test_every_service_renders_to_one_parsable_job(lab, variables):
    for svc, (name, job, group_name, group, tasks) in each_job(lab, variables):
        assert name == group_name == svc["name"]
        assert job["type"] == "service"
        assert set(tasks) == {"register", "app", "sidecar", "deregister"}
        assert all(t["driver"] == "raw_exec" and t["user"] == variables["mesh_user"] for t in tasks.values())


def test_group_count_is_the_instance_count(lab, variables):
    for svc, (_, _, _, group, _) in each_job(lab, variables):
        assert group["count"] == svc["instances"], svc["name"]


def test_placement_is_the_models_rule(lab, variables):
    for svc, (_, job, _, _, _) in each_job(lab, variables):
        constraints = job["constraint"]
        assert constraints[0] == {"attribute": "${attr.consul.version}", "operator": "is_set"}
        if svc["placement"]:
            nodes = sorted({i["node"] for i in lab_model.instances_of(lab, svc["name"])})
            assert constraints[1] == {"attribute": "${node.unique.name}", "operator": "set_contains_any",
                                      "value": ",".join(svc["placement"]["nodes"])}
            assert set(svc["placement"]["nodes"]) == set(nodes)
            assert "spread" not in job
        else:
            assert len(constraints) == 1
            assert job["spread"] == [{"attribute": "${node.unique.name}"}]


def test_ports_are_dynamic(lab, variables):
    for svc, (_, _, _, group, _) in each_job(lab, variables):
        [network] = group["network"]
        assert network["mode"] == "host"
        ports = {label: body for p in network["port"] for label, body in p.items()}
        expected = {"http", "sidecar", "admin"} | {nomad.port_label(u["service"]) for u in svc["upstreams"]}
        assert set(ports) == expected
        assert not [label for label, body in ports.items() if "static" in body], svc["name"]


def test_app_task_runs_the_models_argv_with_the_systemd_environment(lab, variables):
    for svc, (_, _, _, _, tasks) in each_job(lab, variables):
        app = tasks["app"]
        [config] = app["config"]
        assert [config["command"]] + config["args"] == [a.replace("${", "$${").replace("%{", "%%{") for a in svc["argv"]]
        assert config["work_dir"] == svc["dir"]
        [env] = app["env"]
        systemd_env = lab_model.instances_of(lab, svc["name"])[0]["env"]
        # Same variables as the systemd unit (but the catalog's per-instance faults); INSTANCE_ID comes from
        # the instance template.
        # APP_VERSION neither: the edge does not split versions on Nomad (meshlab/edge.py).
        # Nor tracing's OTEL_* (the Nomad jobs carry no Zipkin upstream: their apps run untraced, meshlab/model.py).
        assert set(env) | {"INSTANCE_ID"} == {k for k in systemd_env
                                              if not k.startswith(("FAULT_", "OTEL_")) and k != "APP_VERSION"}
        assert env["APP_PORT"] == "${NOMAD_PORT_http}"
        assert env["APP_ADMIN_PORT"] == "${NOMAD_PORT_admin}"
        assert env["APP_BIND"] == svc["bind"]
        assert env["MESH_APP_REVISION"] == svc["revision"]
        for key, value in svc["env"].items():
            # HCL's $${ and %%{ are the literal ${ and %{: catalog text is never interpolated.
            assert env[key] == str(value).replace("${", "$${").replace("%{", "%%{")
        for up in svc["upstreams"]:
            assert env[up["env"]] == f"http://127.0.0.1:${{NOMAD_PORT_{nomad.port_label(up['service'])}}}"


def test_sidecar_runs_the_systemd_units_proxy_command_line(lab, variables):
    for svc, (_, _, _, _, tasks) in each_job(lab, variables):
        [config] = tasks["sidecar"]["config"]
        argv = [config["command"]] + config["args"]
        assert argv == lab_model.sidecar_argv("${INSTANCE_ID}", lab["settings"], token_ref=svc["name"])
        systemd = lab_model.instances_of(lab, svc["name"])[0]["sidecar_argv"]
        # The same argv but for the instance id and the token (one per service on Nomad).
        assert argv[:4] == systemd[:4] and argv[-2:] == systemd[-2:]
        assert argv[4] == f"-token-file={lab['settings']['tokens_dir']}/{svc['name']}"
        assert "lifecycle" not in tasks["sidecar"] and "lifecycle" not in tasks["app"]


def _templates(task):
    return {t["destination"]: t for t in task["template"]}


def test_instance_id_is_the_systemd_id(lab, variables):
    for svc, (_, _, _, _, tasks) in each_job(lab, variables):
        for task in tasks.values():
            tpl = _templates(task)["local/instance.env"]
            assert tpl["env"] is True
            for inst in lab_model.instances_of(lab, svc["name"]):
                rendered = consul_template(tpl["data"], {"NOMAD_ALLOC_INDEX": str(inst["index"] - 1)})
                assert rendered.strip() == f"INSTANCE_ID={inst['id']}"


def test_registration_is_the_systemd_consul_definition_with_nomads_ports(lab, variables):
    for svc, (_, _, _, _, tasks) in each_job(lab, variables):
        register = tasks["register"]
        assert register["lifecycle"] == [{"hook": "prestart", "sidecar": False}]
        [config] = register["config"]
        api = lab["settings"]["consul_http_addr"]
        token = f"-token-file={lab['settings']['tokens_dir']}/{svc['name']}"
        assert [config["command"]] + config["args"] == [
            "consul", "services", "register", f"-http-addr={api}", token, "${NOMAD_TASK_DIR}/service.json"]
        data = _templates(register)["local/service.json"]["data"]
        labels = ["http", "sidecar", "admin"] + [nomad.port_label(u["service"]) for u in svc["upstreams"]]
        ports = {f"NOMAD_PORT_{label}": str(23000 + n) for n, label in enumerate(labels)}
        for inst in lab_model.instances_of(lab, svc["name"]):
            env = {**ports, "NOMAD_IP_http": "10.9.9.9", "NOMAD_IP_sidecar": "10.9.9.9",
                   "NOMAD_ALLOC_INDEX": str(inst["index"] - 1), "NOMAD_ALLOC_ID": "0c5a"}
            got = json.loads(consul_template(data, env))
            want = lab_model.registration({
                "id": inst["id"], "service": svc["name"], "port": 23000, "sidecar_port": 23001,
                "address": "10.9.9.9" if svc["bind"] != "127.0.0.1" else "127.0.0.1", "node_address": "10.9.9.9",
                "health_path": svc["health_path"],
                # (23002 is the admin port: not in the registration)
                "upstreams": [{"service": u["service"], "local_port": 23003 + n} for n, u in enumerate(svc["upstreams"])],
            }, lab["settings"])
            want["service"]["meta"]["nomad_alloc_id"] = "0c5a"
            assert got == want


def test_deregistration_runs_after_the_group_stops(lab, variables):
    for svc, (_, _, _, _, tasks) in each_job(lab, variables):
        dereg = tasks["deregister"]
        assert dereg["lifecycle"] == [{"hook": "poststop"}]
        [config] = dereg["config"]
        assert [config["command"]] + config["args"] == [
            "consul", "services", "deregister", f"-http-addr={lab['settings']['consul_http_addr']}",
            f"-token-file={lab['settings']['tokens_dir']}/{svc['name']}", "-id=${INSTANCE_ID}"]


def test_restart_reschedule_and_health_gated_rolling_updates(lab, variables):
    for svc, (_, job, _, group, _) in each_job(lab, variables):
        [update] = job["update"]
        assert update["health_check"] == "task_states"
        assert update["max_parallel"] == svc["max_parallel"] == 1
        assert update["auto_revert"] is True
        [restart] = group["restart"]
        assert restart["mode"] == "fail" and restart["delay"] == variables["scheduler_nomad_restart"]["delay"]
        [reschedule] = group["reschedule"]
        assert reschedule["unlimited"] is True
        assert job["meta"] == [{"managed_by": "hello-servicemesh"}]


def test_catalog_text_cannot_end_a_heredoc(model, variables):
    """JSON escapes newlines, so no catalog text ends the registration heredoc early."""
    svc = copy.deepcopy(model["services"][0])
    svc["health_path"] = "/health\nEOT\n}"
    _, _, _, _, tasks = parse(render(svc, model, variables))
    data = _templates(tasks["register"])["local/service.json"]["data"]
    env = {"NOMAD_PORT_http": "1", "NOMAD_PORT_sidecar": "2", "NOMAD_ALLOC_INDEX": "0", "NOMAD_ALLOC_ID": "x",
           "NOMAD_IP_sidecar": "10.0.0.1"}
    assert json.loads(consul_template(data, env))["service"]["check"]["http"] == "http://127.0.0.1:1/health\nEOT\n}"


def test_ansible_renders_the_same_jobs(tmp_path, inventory, model, variables):
    """The role's render.yml, run by ansible-playbook against the test inventory, writes the jobs rendered here."""
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render the Nomad jobs", "hosts": "mesh-1", "gather_facts": False,
        "vars": {"scheduler_nomad_jobs_dir": str(tmp_path / "jobs"), "scheduler_nomad_validate": False},
        "tasks": [{"name": "Render", "ansible.builtin.import_role": {"name": "scheduler_nomad", "tasks_from": "render.yml"}}],
    }]))
    rc, out = run_playbook(inventory, str(playbook), '{"ansible_managed": "Ansible managed"}')
    assert rc == 0, out[-3000:]
    for svc in model["services"]:
        written = (tmp_path / "jobs" / f"{svc['name']}.nomad.hcl").read_text()
        assert written == render(svc, model, variables)


def test_the_catalogs_max_parallel_is_the_update_blocks(lab, variables):
    """The same catalog field drives the systemd scheduler's batches (meshlab/rollout.py) and Nomad's update block."""
    services = [{**svc, "max_parallel": 3} if svc["name"] == "frontend" else svc for svc in lab["services"]]
    for svc in services:
        _, job, _, _, _ = parse(render(svc, {**lab, "services": services}, variables))
        [update] = job["update"]
        assert update["max_parallel"] == (3 if svc["name"] == "frontend" else 1)

"""Nomad jobs rendered from the service catalog, parsed back with an HCL2 parser.

Every job of the default catalog and of a changed one is rendered with the role's
template (roles/mesh_nomad/templates/job.nomad.hcl.j2) and parsed with python-hcl2;
the structure is checked against the catalog functions the systemd scheduler uses:
counts, ports, the Consul registration (= mesh_consul_service), the proxy argv
(= the systemd sidecar unit's), the app's command and environment. One test renders
the jobs through Ansible itself (the role's render.yml) and compares.

What this cannot show (no Nomad binary here): that Nomad accepts and runs the jobs.
The Molecule scenario `nomad` does that where a Nomad release is available.
"""

import copy
import json
import os
import pathlib
import re
import subprocess
import sys

import hcl2
import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import FilterModule as AnsibleCoreFilters
from hcl2.utils import SerializationOptions

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "plugins" / "filter"))

import mesh_catalog as mc  # noqa: E402
import mesh_nomad as mn  # noqa: E402

GROUP_VARS = ROOT / "inventory" / "lab" / "group_vars" / "all"
TEMPLATE = ROOT / "roles" / "mesh_nomad" / "templates" / "job.nomad.hcl.j2"
CONSUL_BIN = "/usr/bin/consul"
CONSUL_HTTP = "http://127.0.0.1:8500"
PARSE = SerializationOptions(strip_string_quotes=True, preserve_heredocs=False, explicit_blocks=False, with_comments=False)


def _render_strings(value, variables):
    """Render the Jinja in catalog strings ({{ mesh_venv_dir }} ...) as Ansible would."""
    if isinstance(value, str) and "{{" in value:
        return jinja2.Template(value, undefined=jinja2.StrictUndefined).render(**variables)
    if isinstance(value, list):
        return [_render_strings(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _render_strings(v, variables) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def variables():
    mesh = yaml.safe_load((GROUP_VARS / "mesh.yml").read_text())
    defaults = yaml.safe_load((ROOT / "roles" / "mesh_nomad" / "defaults" / "main.yml").read_text())
    plain = {k: v for k, v in mesh.items() if not (isinstance(v, str) and "{{" in v)}
    return {**defaults, **plain, "ansible_managed": "Ansible managed",
            "_mesh_nomad_consul_bin": CONSUL_BIN, "_mesh_nomad_consul_http_addr": CONSUL_HTTP}


@pytest.fixture(scope="module")
def default_catalog(variables):
    raw = yaml.safe_load((GROUP_VARS / "catalog.yml").read_text())["mesh_catalog"]
    return _render_strings(raw, variables)


def changed(catalog):
    """add-svc scaled to 3, a new service mul-svc calling add-svc, env text that HCL would interpolate."""
    cat = copy.deepcopy(catalog)
    add = next(s for s in cat if s["name"] == "add-svc")
    add["instances"] = 3
    add["env"] = {**add["env"], "GREETING": 'say "hi" ${HOME} %{if} \\ done'}
    mul = copy.deepcopy(add)
    mul.update(name="mul-svc", instances=1, port=9021, sidecar_port=21031,
               command=add["command"][:-1] + ["mul"],
               upstreams=[{"service": "add-svc", "local_port": 9291, "env": "ADD_SVC_URL"}])
    cat.append(mul)
    assert mc.mesh_catalog_errors(cat, "nomad") == []
    return cat


def render(service, variables):
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(AnsibleCoreFilters().filters())
    env.filters.update(mn.FilterModule().filters())
    return env.from_string(TEMPLATE.read_text()).render(item=service, **variables)


def parse(text):
    """The job as HCL2 parses it: {name, group, tasks{name: task}} with blocks flattened."""
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


def catalogs():
    return ["default", "changed"]


@pytest.fixture(params=catalogs())
def catalog(request, default_catalog):
    return default_catalog if request.param == "default" else changed(default_catalog)


def each_job(catalog, variables):
    for svc in catalog:
        yield svc, parse(render(svc, variables))


def test_every_catalog_service_renders_to_one_parsable_job(catalog, variables):
    for svc, (name, job, group_name, group, tasks) in each_job(catalog, variables):
        assert name == group_name == svc["name"]
        assert job["type"] == "service"
        assert set(tasks) == {"register", "app", "sidecar", "deregister"}
        assert all(t["driver"] == "raw_exec" and t["user"] == variables["mesh_user"] for t in tasks.values())


def test_group_count_is_the_instance_count(catalog, variables):
    for svc, (_, _, _, group, _) in each_job(catalog, variables):
        assert group["count"] == svc["instances"], svc["name"]


def test_ports_are_dynamic_except_the_edge_app_port(catalog, variables):
    for svc, (_, _, _, group, _) in each_job(catalog, variables):
        [network] = group["network"]
        assert network["mode"] == "host"
        ports = {label: body for p in network["port"] for label, body in p.items()}
        expected = {"http", "sidecar"} | {mn.mesh_nomad_port_label(u["service"]) for u in svc.get("upstreams") or []}
        assert set(ports) == expected
        static = {label: body["static"] for label, body in ports.items() if "static" in body}
        if svc.get("bind", "127.0.0.1") == "127.0.0.1":
            assert static == {}, svc["name"]
        else:
            assert static == {"http": svc["port"]}, svc["name"]


def test_app_task_runs_the_catalog_command_with_the_systemd_environment(catalog, variables):
    for svc, (_, _, _, _, tasks) in each_job(catalog, variables):
        app = tasks["app"]
        [config] = app["config"]
        assert [config["command"]] + config["args"] == [a.replace("${", "$${").replace("%{", "%%{") for a in svc["command"]]
        assert config["work_dir"] == svc["workdir"]
        [env] = app["env"]
        systemd_env = next(i for i in mc.mesh_instances([svc]))["env"]
        # Same variables as the systemd unit; INSTANCE_ID comes from the instance template.
        assert set(env) | {"INSTANCE_ID"} == set(systemd_env)
        assert env["APP_PORT"] == "${NOMAD_PORT_http}"
        assert env["APP_BIND"] == svc.get("bind", "127.0.0.1")
        for key, value in (svc.get("env") or {}).items():
            # HCL's $${ and %%{ are the literal ${ and %{: catalog text is never interpolated.
            assert env[key] == str(value).replace("${", "$${").replace("%{", "%%{")
        for up in svc.get("upstreams") or []:
            assert env[up["env"]] == f"http://127.0.0.1:${{NOMAD_PORT_{mn.mesh_nomad_port_label(up['service'])}}}"


def _systemd_sidecar_argv(instance_id):
    """The sidecar argv as roles/mesh_systemd/vars/main.yml renders it for a unit."""
    units = yaml.safe_load((ROOT / "roles" / "mesh_systemd" / "vars" / "main.yml").read_text())["_mesh_systemd_units"]
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters.update(mc.FilterModule().filters())
    expr = units["sidecar"]["argv"].strip()
    assert expr.startswith("{{") and expr.endswith("}}")
    return env.compile_expression(expr[2:-2].strip())(
        item=[{"id": instance_id}, "sidecar"], _consul_bin=CONSUL_BIN, consul_ports={"http": 8500})


def test_sidecar_runs_the_systemd_units_proxy_command_line(catalog, variables):
    for svc, (_, _, _, _, tasks) in each_job(catalog, variables):
        [config] = tasks["sidecar"]["config"]
        argv = [config["command"]] + config["args"]
        assert argv == mc.mesh_proxy_args("${INSTANCE_ID}", CONSUL_BIN, CONSUL_HTTP)
        assert argv == _systemd_sidecar_argv("${INSTANCE_ID}")
        assert "lifecycle" not in tasks["sidecar"] and "lifecycle" not in tasks["app"]


def _templates(task):
    return {t["destination"]: t for t in task["template"]}


def test_instance_id_is_the_systemd_id(catalog, variables):
    for svc, (_, _, _, _, tasks) in each_job(catalog, variables):
        for task in tasks.values():
            tpl = _templates(task)["local/instance.env"]
            assert tpl["env"] is True
            for index in range(svc["instances"]):
                rendered = consul_template(tpl["data"], {"NOMAD_ALLOC_INDEX": str(index)})
                assert rendered.strip() == f"INSTANCE_ID={mc.mesh_instance_id(svc['name'], index + 1)}"


def test_registration_is_the_systemd_consul_definition_with_nomads_ports(catalog, variables):
    for svc, (_, _, _, _, tasks) in each_job(catalog, variables):
        register = tasks["register"]
        assert register["lifecycle"] == [{"hook": "prestart", "sidecar": False}]
        [config] = register["config"]
        assert [config["command"]] + config["args"] == [
            CONSUL_BIN, "services", "register", f"-http-addr={CONSUL_HTTP}", "${NOMAD_TASK_DIR}/service.json"]
        data = _templates(register)["local/service.json"]["data"]
        labels = ["http", "sidecar"] + [mn.mesh_nomad_port_label(u["service"]) for u in svc.get("upstreams") or []]
        ports = {f"NOMAD_PORT_{label}": str(23000 + n) for n, label in enumerate(labels)}
        for index in range(svc["instances"]):
            env = {**ports, "NOMAD_ALLOC_INDEX": str(index), "NOMAD_ALLOC_ID": "0c5a"}
            got = json.loads(consul_template(data, env))
            instance = {
                "id": mc.mesh_instance_id(svc["name"], index + 1), "service": svc["name"],
                "port": 23000, "sidecar_port": 23001, "health_path": svc["health_path"],
                "upstreams": [{"service": u["service"], "local_port": 23002 + n}
                              for n, u in enumerate(svc.get("upstreams") or [])],
            }
            want = mc.mesh_consul_service(instance, variables["mesh_check_interval"], variables["mesh_check_timeout"])
            want["service"]["meta"]["nomad_alloc_id"] = "0c5a"
            assert got == want
            check = got["service"]["check"]
            assert check["http"] == f"http://127.0.0.1:23000{svc['health_path']}"
            assert check["interval"] == variables["mesh_check_interval"]


def test_deregistration_runs_after_the_group_stops(catalog, variables):
    for _, (_, _, _, _, tasks) in each_job(catalog, variables):
        dereg = tasks["deregister"]
        assert dereg["lifecycle"] == [{"hook": "poststop"}]
        [config] = dereg["config"]
        assert [config["command"]] + config["args"] == [
            CONSUL_BIN, "services", "deregister", f"-http-addr={CONSUL_HTTP}", "-id=${INSTANCE_ID}"]


def test_restart_reschedule_and_health_gated_rolling_updates(catalog, variables):
    for _, (_, job, _, group, _) in each_job(catalog, variables):
        [update] = job["update"]
        assert update["health_check"] == "task_states"
        assert update["max_parallel"] == variables["mesh_nomad_update"]["max_parallel"]
        assert update["auto_revert"] is True
        [restart] = group["restart"]
        assert restart["mode"] == "fail" and restart["delay"] == variables["mesh_nomad_restart"]["delay"]
        [reschedule] = group["reschedule"]
        assert reschedule["unlimited"] is True
        assert job["meta"] == [{"managed_by": "hello-servicemesh"}]
        assert job["constraint"] == [{"attribute": "${attr.consul.version}", "operator": "is_set"}]


def test_changed_catalog_adds_a_job_and_scales_one(default_catalog, variables):
    before = {svc["name"]: parse(render(svc, variables))[3]["count"] for svc in default_catalog}
    after = {svc["name"]: parse(render(svc, variables))[3]["count"] for svc in changed(default_catalog)}
    assert before == {"add-svc": 2, "sub-svc": 2, "frontend": 1}
    assert after == {"add-svc": 3, "sub-svc": 2, "frontend": 1, "mul-svc": 1}


def test_catalog_text_cannot_end_a_heredoc(default_catalog, variables):
    """JSON escapes newlines, so no catalog text ends the registration heredoc early."""
    svc = copy.deepcopy(default_catalog[0])
    svc["health_path"] = "/health\nEOT\n}"
    _, _, _, _, tasks = parse(render(svc, variables))
    data = _templates(tasks["register"])["local/service.json"]["data"]
    env = {"NOMAD_PORT_http": "1", "NOMAD_PORT_sidecar": "2", "NOMAD_ALLOC_INDEX": "0", "NOMAD_ALLOC_ID": "x"}
    assert json.loads(consul_template(data, env))["service"]["check"]["http"] == "http://127.0.0.1:1/health\nEOT\n}"


@pytest.mark.skipif(os.geteuid() != 0, reason="render.yml writes root-owned files: needs root")
def test_ansible_renders_the_same_jobs(tmp_path, default_catalog, variables):
    """The role's render.yml, run by ansible-playbook on localhost, writes the jobs this module renders."""
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render the Nomad jobs", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"mesh_nomad_jobs_dir": str(tmp_path / "jobs"), "_mesh_nomad_bin": "",
                 "_mesh_nomad_consul_bin": CONSUL_BIN, "_mesh_nomad_consul_http_addr": CONSUL_HTTP,
                 "ansible_managed": "Ansible managed"},
        "tasks": [{"name": "Render", "ansible.builtin.import_role": {"name": "mesh_nomad", "tasks_from": "render.yml"}}],
    }]))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
           "ANSIBLE_FILTER_PLUGINS": str(ROOT / "plugins" / "filter")}
    run = subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", str(ROOT / "inventory" / "lab"),
         "-e", "ansible_python_interpreter=" + sys.executable, str(playbook)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for svc in default_catalog:
        written = (tmp_path / "jobs" / f"{svc['name']}.nomad.hcl").read_text()
        assert written == render(svc, variables)

"""The Nomad scheduler's pieces, built from the same catalog functions as the systemd path.

`mesh_nomad_job(service, ...)` turns one `mesh_catalog` entry into everything the
job template (roles/mesh_nomad/templates/job.nomad.hcl.j2) lays out, every value
already an HCL literal, so the template stays a thin layout and no catalog text
can break out of its string:

* the group's ports: `http` (the app), `sidecar` (the proxy's public mTLS
  listener) and one `up_<service>` per upstream, all dynamic except the app
  port of the edge service (catalog `bind` other than 127.0.0.1), which keeps
  its catalog `port` so that users can reach it;
* task `register` (prestart): `consul services register` of the file that a
  Nomad `template` block renders from `mesh_consul_service(...)` - the same
  definition the systemd path writes - with the ports Nomad assigned;
* task `app`: the catalog command, environment and working directory;
  APP_PORT and each upstream's URL come from Nomad's interpolation;
* task `sidecar`: exactly `mesh_proxy_args(...)`, the systemd units' argv;
* task `deregister` (poststop): `consul services deregister`.

Instance ids are `<service>-<n>` (n = NOMAD_ALLOC_INDEX + 1), as on systemd.
Nomad's `${...}` interpolation cannot add, so a `template` block with `env =
true` computes INSTANCE_ID, and the other fields refer to `${INSTANCE_ID}`.
"""

import json
import os
import re
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # Ansible loads filter files one by one: make the sibling importable.
    sys.path.insert(0, _HERE)

from mesh_catalog import mesh_consul_service, mesh_proxy_args  # noqa: E402

# consul-template (Nomad `template` blocks) expressions.
ALLOC_NUMBER = '{{ env "NOMAD_ALLOC_INDEX" | parseInt | add 1 }}'
ALLOC_ID = '{{ env "NOMAD_ALLOC_ID" }}'
# Nomad runtime interpolation of the id computed by the instance template.
INSTANCE_REF = "${INSTANCE_ID}"
# Placeholders that survive json.dumps, then become consul-template expressions:
# a port that is a whole JSON value becomes a bare number, anything else is text.
_WHOLE_PORT = re.compile(r'"@@NOMAD_PORT_([a-z0-9_]+)@@"')
_PLACEHOLDERS = {"@@ALLOC_NUMBER@@": ALLOC_NUMBER, "@@ALLOC_ID@@": ALLOC_ID}
_PORT = re.compile(r"@@NOMAD_PORT_([a-z0-9_]+)@@")


def mesh_nomad_port_label(service_name):
    """Port label (and NOMAD_PORT_<label> suffix) of the local listener for upstream `service_name`."""
    return "up_" + re.sub(r"[^a-z0-9]", "_", service_name)


def hcl_string(value):
    """A literal HCL string: quotes, backslashes and control characters escaped, and
    `${` / `%{` doubled so that Nomad neither interpolates nor templates catalog text."""
    text = json.dumps(str(value), ensure_ascii=False)
    return text.replace("${", "$${").replace("%{", "%%{")


def hcl_interpolated(value):
    """An HCL string whose `${...}` are Nomad runtime interpolations (built here, never from the catalog)."""
    return json.dumps(str(value), ensure_ascii=False)


def _hcl_list(items):
    return "[" + ", ".join(items) + "]"


def mesh_nomad_instance_id(service_name):
    """consul-template expression of the instance id: `<service>-<NOMAD_ALLOC_INDEX + 1>`."""
    return f"{service_name}-{ALLOC_NUMBER}"


def mesh_nomad_registration(service, check_interval="2s", check_timeout="1s"):
    """The Consul service definition of one allocation, as a consul-template template.

    It IS `mesh_consul_service(...)`: ports are placeholders that become
    `{{ env "NOMAD_PORT_<label>" }}` (bare numbers in JSON), the id becomes the
    allocation's instance id; meta also records the allocation id.
    """
    instance = {
        "id": f"{service['name']}-@@ALLOC_NUMBER@@",
        "service": service["name"],
        "port": "@@NOMAD_PORT_http@@",
        "sidecar_port": "@@NOMAD_PORT_sidecar@@",
        "health_path": service["health_path"],
        "upstreams": [
            {"service": up["service"], "local_port": f"@@NOMAD_PORT_{mesh_nomad_port_label(up['service'])}@@"}
            for up in service.get("upstreams") or []
        ],
    }
    definition = mesh_consul_service(instance, check_interval, check_timeout)
    definition["service"]["meta"]["nomad_alloc_id"] = "@@ALLOC_ID@@"
    text = json.dumps(definition, indent=2, sort_keys=True)
    text = _WHOLE_PORT.sub(lambda m: '{{ env "NOMAD_PORT_%s" }}' % m.group(1), text)
    text = _PORT.sub(lambda m: '{{ env "NOMAD_PORT_%s" }}' % m.group(1), text)
    for placeholder, expression in _PLACEHOLDERS.items():
        text = text.replace(placeholder, expression)
    return text


def _heredoc(text, marker="EOT"):
    """An HCL heredoc; its bodies are JSON or NAME=value lines built here, which cannot hold the marker."""
    body = text.replace("${", "$${").replace("%{", "%%{")
    if any(line.strip() == marker for line in body.splitlines()):
        raise ValueError(f"heredoc body contains its end marker {marker}")
    return f"<<{marker}\n{body}\n{marker}"


def mesh_nomad_job(service, consul_bin="consul", consul_http_addr="http://127.0.0.1:8500",
                   check_interval="2s", check_timeout="1s"):
    """Every value the job template needs for one catalog service, as HCL literals."""
    name = service["name"]
    bind = service.get("bind", "127.0.0.1")
    edge = bind != "127.0.0.1"
    ports = [{"label": "http", "static": service["port"] if edge else None},
             {"label": "sidecar", "static": None}]
    env = {str(k): hcl_string(v) for k, v in (service.get("env") or {}).items()}
    for up in service.get("upstreams") or []:
        label = mesh_nomad_port_label(up["service"])
        ports.append({"label": label, "static": None})
        env[up["env"]] = hcl_interpolated(f"http://127.0.0.1:${{NOMAD_PORT_{label}}}")
    env["APP_BIND"] = hcl_string(bind)
    env["APP_PORT"] = hcl_interpolated("${NOMAD_PORT_http}")

    proxy = mesh_proxy_args(INSTANCE_REF, consul_bin, consul_http_addr)
    hook = f"-http-addr={consul_http_addr}"
    command = list(service["command"])
    return {
        "name": hcl_string(name),
        "count": int(service["instances"]),
        "edge": edge,
        "ports": ports,
        "instance_env": _heredoc(f"INSTANCE_ID={mesh_nomad_instance_id(name)}"),
        "registration": _heredoc(mesh_nomad_registration(service, check_interval, check_timeout)),
        "tasks": {
            "register": {
                "command": hcl_string(consul_bin),
                "args": _hcl_list([hcl_string("services"), hcl_string("register"), hcl_string(hook),
                                   hcl_interpolated("${NOMAD_TASK_DIR}/service.json")]),
            },
            "app": {
                "command": hcl_string(command[0]),
                "args": _hcl_list([hcl_string(a) for a in command[1:]]),
                "work_dir": hcl_string(service.get("workdir", "/")),
                "env": dict(sorted(env.items())),
            },
            "sidecar": {
                "command": hcl_string(proxy[0]),
                "args": _hcl_list([hcl_interpolated(a) if a == INSTANCE_REF else hcl_string(a) for a in proxy[1:]]),
            },
            "deregister": {
                "command": hcl_string(consul_bin),
                "args": _hcl_list([hcl_string("services"), hcl_string("deregister"), hcl_string(hook),
                                   hcl_interpolated(f"-id={INSTANCE_REF}")]),
            },
        },
    }


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "mesh_nomad_job": mesh_nomad_job,
            "mesh_nomad_registration": mesh_nomad_registration,
            "mesh_nomad_port_label": mesh_nomad_port_label,
            "hcl_string": hcl_string,
        }

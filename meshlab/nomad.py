"""The nomad scheduler's jobs, built from the same model functions as the systemd scheduler.

``job(service, model)`` turns one service of the model
(``model["services"]``) into everything the job template
(roles/scheduler_nomad/templates/job.nomad.hcl.j2) lays out, each value already
an HCL literal, so that the template stays a thin layout and no catalog text
can break out of its string:

* the group's ports: ``http`` (the app), ``sidecar`` (the proxy's public mTLS
  listener) and one ``up_<service>`` per upstream, all dynamic: several
  allocations of a service may share a node (a public app is found through
  Consul: ``<svc>.service.consul`` or the catalog API, as ``make click`` does);
* placement: the model's rule as a ``constraint`` on the node name for services
  with ``placement``, else a ``spread`` over nodes (round-robin's Nomad twin);
* task ``register`` (prestart): ``consul services register`` of the file that a
  Nomad ``template`` renders from ``meshlab.model.registration`` - the same
  definition the systemd scheduler writes - with Nomad's ports and addresses;
* task ``app``: the service's argv, environment and working directory;
* task ``sidecar``: exactly ``meshlab.model.sidecar_argv`` (with the service's token file);
* task ``deregister`` (poststop): ``consul services deregister``.

Instance ids are ``<service>-<n>`` (n = NOMAD_ALLOC_INDEX + 1), as on systemd.
Nomad's ``${...}`` interpolation cannot add, so a ``template`` with ``env = true``
computes INSTANCE_ID, and the other fields refer to ``${INSTANCE_ID}``.
"""

import json
import re

from .catalog import LOOPBACK
from .model import placement_nodes, registration, sidecar_argv, token_file, upstream_env

# consul-template (Nomad `template` blocks) expressions.
ALLOC_NUMBER = '{{ env "NOMAD_ALLOC_INDEX" | parseInt | add 1 }}'
ALLOC_ID = '{{ env "NOMAD_ALLOC_ID" }}'
# Nomad runtime interpolation of the id computed by the instance template.
INSTANCE_REF = "${INSTANCE_ID}"
# Placeholders that survive json.dumps, then become consul-template expressions:
# a port that is a whole JSON value becomes a bare number, anything else is text.
_WHOLE_PORT = re.compile(r'"@@NOMAD_PORT_([a-z0-9_]+)@@"')
_PORT = re.compile(r"@@NOMAD_PORT_([a-z0-9_]+)@@")
_IP = re.compile(r"@@NOMAD_IP_([a-z0-9_]+)@@")
_PLACEHOLDERS = {"@@ALLOC_NUMBER@@": ALLOC_NUMBER, "@@ALLOC_ID@@": ALLOC_ID}


def port_label(service_name):
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


def instance_id_template(service_name):
    """consul-template expression of the instance id: `<service>-<NOMAD_ALLOC_INDEX + 1>`."""
    return f"{service_name}-{ALLOC_NUMBER}"


def registration_template(service, settings):
    """The Consul service definition of one allocation, as a consul-template template.

    It IS ``meshlab.model.registration``: ports become ``{{ env "NOMAD_PORT_<label>" }}``
    (bare numbers in JSON), addresses ``{{ env "NOMAD_IP_<label>" }}``, the id the
    allocation's instance id; meta also records the allocation id.
    """
    public = service["bind"] != LOOPBACK
    instance = {
        "id": f"{service['name']}-@@ALLOC_NUMBER@@",
        "service": service["name"],
        "port": "@@NOMAD_PORT_http@@",
        "sidecar_port": "@@NOMAD_PORT_sidecar@@",
        "address": "@@NOMAD_IP_http@@" if public else LOOPBACK,
        "node_address": "@@NOMAD_IP_sidecar@@",
        "health_path": service["health_path"],
        "upstreams": [
            {"service": up["service"], "local_port": f"@@NOMAD_PORT_{port_label(up['service'])}@@"}
            for up in service.get("upstreams") or []
        ],
    }
    definition = registration(instance, settings)
    definition["service"]["meta"]["nomad_alloc_id"] = "@@ALLOC_ID@@"
    text = json.dumps(definition, indent=2, sort_keys=True)
    text = _WHOLE_PORT.sub(lambda m: '{{ env "NOMAD_PORT_%s" }}' % m.group(1), text)
    text = _PORT.sub(lambda m: '{{ env "NOMAD_PORT_%s" }}' % m.group(1), text)
    text = _IP.sub(lambda m: '{{ env "NOMAD_IP_%s" }}' % m.group(1), text)
    for placeholder, expression in _PLACEHOLDERS.items():
        text = text.replace(placeholder, expression)
    return text


def _heredoc(text, marker="EOT"):
    """An HCL heredoc; its bodies are JSON or NAME=value lines built here, which cannot hold the marker."""
    body = text.replace("${", "$${").replace("%{", "%%{")
    if any(line.strip() == marker for line in body.splitlines()):
        raise ValueError(f"heredoc body contains its end marker {marker}")
    return f"<<{marker}\n{body}\n{marker}"


def placement(service, model):
    """The model's placement rule for Nomad: a constraint on node names, or a spread over nodes."""
    if not service.get("placement"):
        return {"constraint": None, "spread": hcl_interpolated("${node.unique.name}")}
    allowed = placement_nodes(service, list(model["nodes"]), model["settings"]["groups"])
    return {
        "constraint": {"attribute": hcl_interpolated("${node.unique.name}"), "operator": hcl_string("set_contains_any"),
                       "value": hcl_string(",".join(allowed))},
        "spread": None,
    }


def job(service, model):
    """Every value the job template needs for one service of the model (meshlab.model.build), as HCL literals."""
    settings = model["settings"]
    name = service["name"]
    public = service["bind"] != LOOPBACK
    ports = [{"label": "http", "static": None}, {"label": "sidecar", "static": None}, {"label": "admin", "static": None}]
    env = {key: hcl_string(value) for key, value in service["env"].items()}
    # The upstreams' policies as on systemd; their URLs point at Nomad's ports.
    env.update({key: hcl_string(value) for key, value in upstream_env(service).items()})
    for up in service.get("upstreams") or []:
        label = port_label(up["service"])
        ports.append({"label": label, "static": None})
        env[up["env"]] = hcl_interpolated(f"http://{LOOPBACK}:${{NOMAD_PORT_{label}}}")
    env["APP_BIND"] = hcl_string(service["bind"])
    env["APP_PORT"] = hcl_interpolated("${NOMAD_PORT_http}")
    # The admin endpoint (fault injection) binds 127.0.0.1 itself. Catalog faults are not applied on
    # Nomad (they are per instance); the admin endpoint sets them at run time.
    env["APP_ADMIN_PORT"] = hcl_interpolated("${NOMAD_PORT_admin}")
    env["MESH_APP_REVISION"] = hcl_string(service["revision"])

    # One ACL token per service on Nomad (allocations are not known in advance): the scheduler
    # writes it to every node before it submits the job.
    proxy = sidecar_argv(INSTANCE_REF, settings, token_ref=name)
    hook = f"-http-addr={settings['consul_http_addr']}"
    token = f"-token-file={token_file(name, settings)}"
    argv = list(service["argv"])
    return {
        "name": hcl_string(name),
        "count": int(service["instances"]),
        "max_parallel": int(service["max_parallel"]),  # the update block's, as the systemd scheduler's batches
        "public": public,
        "ports": ports,
        "placement": placement(service, model),
        "instance_env": _heredoc(f"INSTANCE_ID={instance_id_template(name)}"),
        "registration": _heredoc(registration_template(service, settings)),
        "tasks": {
            "register": {
                "command": hcl_string(settings["consul_bin"]),
                "args": _hcl_list([hcl_string("services"), hcl_string("register"), hcl_string(hook), hcl_string(token),
                                   hcl_interpolated("${NOMAD_TASK_DIR}/service.json")]),
            },
            "app": {
                "command": hcl_string(argv[0]),
                "args": _hcl_list([hcl_string(a) for a in argv[1:]]),
                "work_dir": hcl_string(service["dir"]),
                "env": dict(sorted(env.items())),
            },
            "sidecar": {
                "command": hcl_string(proxy[0]),
                "args": _hcl_list([hcl_interpolated(a) if a == INSTANCE_REF else hcl_string(a) for a in proxy[1:]]),
            },
            "deregister": {
                "command": hcl_string(settings["consul_bin"]),
                "args": _hcl_list([hcl_string("services"), hcl_string("deregister"), hcl_string(hook), hcl_string(token),
                                   hcl_interpolated(f"-id={INSTANCE_REF}")]),
            },
        },
    }

"""The service catalog: validation and expansion into what every renderer needs.

`mesh_catalog` (inventory/lab/group_vars/all/catalog.yml) is the one place that
describes the workloads. Every renderer reads it through these functions:

* `mesh_catalog_errors` - preflight: a list of messages, empty when valid;
* `mesh_instances`      - one dict per instance (id, ports, environment) for
                          the systemd scheduler;
* `mesh_consul_service` - the Consul service definition of one instance, with
                          its HTTP health check and Connect sidecar;
* `mesh_proxy_args`     - the `consul connect proxy` command line, shared by
                          the systemd units and the Nomad jobs;
* `mesh_intentions`     - the allowed edges (source -> destination).

It is plain Python so that unit tests import it without Ansible.
"""

import re

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
SCHEDULERS = ("systemd", "nomad")
LANGUAGES = ("python", "node")
REQUIRED = ("name", "language", "command", "instances", "port", "sidecar_port", "health_path")


def _is_port(value):
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def mesh_catalog_errors(catalog, scheduler="systemd", reserved_ports=None):
    """Return every problem of `catalog`, each message saying what to change.

    `reserved_ports` maps names to ports that are already taken (Consul's).
    """
    errors = []
    if scheduler not in SCHEDULERS:
        errors.append(f"mesh_scheduler is '{scheduler}': use one of {', '.join(SCHEDULERS)}")
    if not isinstance(catalog, list) or not catalog:
        return errors + ["mesh_catalog must be a non-empty list of services"]

    names = []
    for pos, svc in enumerate(catalog, 1):
        if not isinstance(svc, dict):
            errors.append(f"mesh_catalog entry {pos} is not a mapping")
            continue
        name = svc.get("name", f"#{pos}")
        names.append(name)
        where = f"mesh_catalog service '{name}'"
        missing = [key for key in REQUIRED if svc.get(key) in (None, "", [])]
        if missing:
            errors.append(f"{where}: missing {', '.join(missing)}")
        if "name" in svc and not NAME_RE.match(str(svc["name"])):
            errors.append(f"{where}: name must be lowercase letters, digits and '-', starting with a letter")
        if svc.get("language") and svc["language"] not in LANGUAGES:
            errors.append(f"{where}: language '{svc['language']}' is not one of {', '.join(LANGUAGES)}")
        instances = svc.get("instances")
        if instances is not None and (not isinstance(instances, int) or isinstance(instances, bool) or instances < 1):
            errors.append(f"{where}: instances is {instances!r}: it must be an integer of at least 1")
        if "command" in svc and not (isinstance(svc["command"], list) and all(isinstance(a, str) for a in svc["command"])):
            errors.append(f"{where}: command must be a list of strings (argv)")
        health = svc.get("health_path")
        if health and not str(health).startswith("/"):
            errors.append(f"{where}: health_path '{health}' must start with '/'")
        for key in ("port", "sidecar_port"):
            if key in svc and not _is_port(svc[key]):
                errors.append(f"{where}: {key} {svc[key]!r} is not a TCP port (1-65535)")
        for var in (svc.get("env") or {}):
            if not ENV_RE.match(str(var)):
                errors.append(f"{where}: env name '{var}' is not an environment variable name")
        for up in svc.get("upstreams") or []:
            if not isinstance(up, dict) or not up.get("service") or not _is_port(up.get("local_port")) \
                    or not ENV_RE.match(str(up.get("env", ""))):
                errors.append(f"{where}: each upstream needs service, local_port (a TCP port) and env (a variable name): got {up!r}")

    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"mesh_catalog: service name '{name}' is declared {names.count(name)} times: names must be unique")

    known = set(names)
    for svc in catalog:
        if not isinstance(svc, dict):
            continue
        for up in svc.get("upstreams") or []:
            if isinstance(up, dict) and up.get("service") and up["service"] not in known:
                errors.append(f"mesh_catalog service '{svc.get('name')}': upstream '{up['service']}' names no service in mesh_catalog")
            if isinstance(up, dict) and up.get("service") == svc.get("name"):
                errors.append(f"mesh_catalog service '{svc.get('name')}': a service cannot be its own upstream")

    if not errors:
        errors.extend(_port_collisions(catalog, reserved_ports or {}))
    return errors


def _port_collisions(catalog, reserved_ports):
    """Every port the systemd scheduler would open, with its owner; report clashes."""
    owners = {}
    for name, port in reserved_ports.items():
        owners.setdefault(int(port), []).append(f"consul {name} port")
    for svc in catalog:
        for inst in range(svc["instances"]):
            owners.setdefault(svc["port"] + inst, []).append(f"{svc['name']}-{inst + 1} app port")
            owners.setdefault(svc["sidecar_port"] + inst, []).append(f"{svc['name']}-{inst + 1} sidecar port")
        for up in svc.get("upstreams") or []:
            owners.setdefault(up["local_port"], []).append(f"{svc['name']} upstream {up['service']} local port")
    return [
        f"mesh_catalog: port {port} is used by {' and '.join(who)}: give each a port of its own"
        for port, who in sorted(owners.items())
        if len(who) > 1 or port > 65535
    ]


def mesh_instance_id(service, index):
    """Instance ids are `<service>-<n>`, n counting from 1."""
    return f"{service}-{index}"


def mesh_upstream_env(service):
    """Environment that points an app at its local Connect upstream listeners."""
    return {up["env"]: f"http://127.0.0.1:{up['local_port']}" for up in service.get("upstreams") or []}


def mesh_instances(catalog):
    """Expand the catalog into one dict per instance, with static ports (systemd scheduler)."""
    result = []
    for svc in catalog:
        for i in range(svc["instances"]):
            iid = mesh_instance_id(svc["name"], i + 1)
            port = svc["port"] + i
            env = {str(k): str(v) for k, v in (svc.get("env") or {}).items()}
            env.update(mesh_upstream_env(svc))
            env.update({"APP_BIND": svc.get("bind", "127.0.0.1"), "APP_PORT": str(port), "INSTANCE_ID": iid})
            result.append({
                "id": iid,
                "service": svc["name"],
                "language": svc["language"],
                "index": i + 1,
                "port": port,
                "sidecar_port": svc["sidecar_port"] + i,
                "command": list(svc["command"]),
                "workdir": svc.get("workdir", "/"),
                "env": env,
                "health_path": svc["health_path"],
                "upstreams": list(svc.get("upstreams") or []),
            })
    return result


def mesh_consul_service(instance, check_interval="2s", check_timeout="1s", address="127.0.0.1"):
    """Consul service definition for one instance: app + HTTP check + Connect sidecar.

    The app's own health check is what makes a dead instance leave the pool:
    the sidecar gets Consul's default alias check on its parent, so the
    upstream proxies stop choosing it when the app fails (environment.md).
    `instance` needs id, service, port, sidecar_port, health_path, upstreams;
    ports may be strings (Nomad template expressions) - callers render them.
    """
    upstreams = [
        {"destination_name": up["service"], "local_bind_port": up["local_port"]}
        for up in instance.get("upstreams") or []
    ]
    return {
        "service": {
            "id": instance["id"],
            "name": instance["service"],
            "port": instance["port"],
            "meta": {"instance": instance["id"]},
            "check": {
                "id": f"{instance['id']}-health",
                "name": f"{instance['service']} HTTP {instance['health_path']}",
                "http": f"http://{address}:{instance['port']}{instance['health_path']}",
                "interval": check_interval,
                "timeout": check_timeout,
            },
            "connect": {
                "sidecar_service": {
                    "port": instance["sidecar_port"],
                    "proxy": {
                        "local_service_address": address,
                        "local_service_port": instance["port"],
                        "upstreams": upstreams,
                    },
                },
            },
        },
    }


def mesh_proxy_args(instance_id, consul_bin="consul", http_addr="http://127.0.0.1:8500"):
    """argv of the sidecar proxy of one instance (systemd units and Nomad tasks)."""
    return [consul_bin, "connect", "proxy", f"-http-addr={http_addr}", "-sidecar-for", instance_id, "-log-level", "warn"]


def mesh_intentions(catalog):
    """The edges the catalog declares: each service may reach its upstreams, nothing else."""
    return sorted(
        {(svc["name"], up["service"]) for svc in catalog for up in svc.get("upstreams") or []}
    )


def mesh_intention_dicts(catalog):
    return [{"source": s, "destination": d, "action": "allow"} for s, d in mesh_intentions(catalog)]


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "mesh_catalog_errors": mesh_catalog_errors,
            "mesh_instances": mesh_instances,
            "mesh_consul_service": mesh_consul_service,
            "mesh_proxy_args": mesh_proxy_args,
            "mesh_intentions": mesh_intention_dicts,
        }

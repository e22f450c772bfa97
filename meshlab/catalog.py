"""The service catalog: what a valid ``mesh_catalog`` looks like, and every error in words a user can act on.

A service (one entry of ``mesh_catalog``; inventory/lab/group_vars/all/catalog.yml
documents each key):

    name, app, language, args, instances, port, sidecar_port, health_path   required
    bind, env, upstreams, placement                                          optional
"""

import re

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
APP_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
SCHEDULERS = ("systemd", "nomad")
LANGUAGES = ("python", "node")
REQUIRED = ("name", "app", "language", "args", "instances", "port", "sidecar_port", "health_path")
OPTIONAL = ("bind", "env", "upstreams", "placement")
LOOPBACK = "127.0.0.1"


def is_port(value):
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _service_errors(svc, where):
    errors = []
    missing = [key for key in REQUIRED if svc.get(key) in (None, "", [])]
    if missing:
        errors.append(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(svc) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        errors.append(f"{where}: unknown key(s) {', '.join(unknown)}: use only {', '.join(REQUIRED + OPTIONAL)}")
    if "name" in svc and not NAME_RE.match(str(svc["name"])):
        errors.append(f"{where}: name must be lowercase letters, digits and '-', starting with a letter")
    if svc.get("app") and not APP_RE.match(str(svc["app"])):
        errors.append(f"{where}: app '{svc['app']}' must be the name of a directory under apps/ (lowercase, digits, '-', '_')")
    if svc.get("language") and svc["language"] not in LANGUAGES:
        errors.append(f"{where}: language '{svc['language']}' is not one of {', '.join(LANGUAGES)}")
    instances = svc.get("instances")
    if instances is not None and (not isinstance(instances, int) or isinstance(instances, bool) or instances < 1):
        errors.append(f"{where}: instances is {instances!r}: it must be an integer of at least 1")
    elif instances is not None and instances > 254:
        errors.append(f"{where}: instances is {instances}: at most 254 (each instance's upstream listeners get 127.0.0.<n>)")
    if "args" in svc and not (isinstance(svc["args"], list) and all(isinstance(a, str) for a in svc["args"])):
        errors.append(f"{where}: args must be a list of strings (the argv after the interpreter)")
    health = svc.get("health_path")
    if health and not str(health).startswith("/"):
        errors.append(f"{where}: health_path '{health}' must start with '/'")
    for key in ("port", "sidecar_port"):
        if key in svc and not is_port(svc[key]):
            errors.append(f"{where}: {key} {svc[key]!r} is not a TCP port (1-65535)")
    if "env" in svc and not isinstance(svc.get("env") or {}, dict):
        errors.append(f"{where}: env must be a mapping of variable names to values")
    for var in (svc.get("env") or {}) if isinstance(svc.get("env") or {}, dict) else ():
        if not ENV_RE.match(str(var)):
            errors.append(f"{where}: env name '{var}' is not an environment variable name")
    for up in svc.get("upstreams") or []:
        if not isinstance(up, dict) or not up.get("service") or not is_port(up.get("local_port")) \
                or not ENV_RE.match(str(up.get("env", ""))):
            errors.append(f"{where}: each upstream needs service, local_port (a TCP port) and env (a variable name): got {up!r}")
    return errors


def _placement_errors(svc, where, nodes, groups):
    placement = svc.get("placement")
    if placement in (None, {}):
        return []
    if not isinstance(placement, dict) or set(placement) - {"nodes", "group"} or len(placement) != 1:
        return [f"{where}: placement must be {{nodes: [<node>, ...]}} or {{group: <inventory group>}}, got {placement!r}"]
    if nodes is None:
        return []
    if "nodes" in placement:
        pinned = placement["nodes"]
        if not isinstance(pinned, list) or not pinned:
            return [f"{where}: placement.nodes must be a non-empty list of node names"]
        unknown = [n for n in pinned if n not in nodes]
        if unknown:
            return [f"{where}: placement.nodes names {', '.join(map(str, unknown))}, which "
                    f"{'is' if len(unknown) == 1 else 'are'} not workload node(s) (mesh_nodes: {', '.join(nodes)}): "
                    "pin to workload nodes, or add the node(s) to mesh_nodes"]
        return []
    group = placement["group"]
    members = [n for n in (groups or {}).get(group, []) if n in nodes]
    if not members:
        return [f"{where}: placement.group '{group}' has no workload node (mesh_nodes: {', '.join(nodes)}): "
                f"put workload nodes into the inventory group '{group}', or change the placement"]
    return []


def errors(catalog, scheduler="systemd", reserved_ports=None, nodes=None, groups=None):
    """Every problem of `catalog`, each message saying what to change; [] when valid.

    `reserved_ports` maps names to ports already taken (Consul's); `nodes` lists the
    workload nodes and `groups` the inventory groups, for the placement rules (None:
    placement is checked for its shape only).
    """
    found = []
    if scheduler not in SCHEDULERS:
        found.append(f"mesh_scheduler is '{scheduler}': use one of {', '.join(SCHEDULERS)}")
    if not isinstance(catalog, list) or not catalog:
        return found + ["mesh_catalog must be a non-empty list of services"]
    if nodes is not None and not nodes:
        found.append("the inventory has no workload node: put at least one host into the group mesh_nodes")

    names = []
    for pos, svc in enumerate(catalog, 1):
        if not isinstance(svc, dict):
            found.append(f"mesh_catalog entry {pos} is not a mapping")
            continue
        name = svc.get("name", f"#{pos}")
        names.append(name)
        where = f"mesh_catalog service '{name}'"
        found += _service_errors(svc, where)
        found += _placement_errors(svc, where, nodes, groups)

    for name in sorted({n for n in names if names.count(n) > 1}):
        found.append(f"mesh_catalog: service name '{name}' is declared {names.count(name)} times: names must be unique")

    known = set(names)
    for svc in catalog:
        if not isinstance(svc, dict):
            continue
        for up in svc.get("upstreams") or []:
            if isinstance(up, dict) and up.get("service") and up["service"] not in known:
                found.append(f"mesh_catalog service '{svc.get('name')}': upstream '{up['service']}' names no service in mesh_catalog")
            if isinstance(up, dict) and up.get("service") == svc.get("name"):
                found.append(f"mesh_catalog service '{svc.get('name')}': a service cannot be its own upstream")

    if not found:
        found += _port_collisions(catalog, reserved_ports or {})
    return found


def _port_collisions(catalog, reserved_ports):
    """Every port an instance opens is unique in the whole lab (instances may share a node)."""
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

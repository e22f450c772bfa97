"""The service catalog: what a valid ``mesh_catalog`` looks like, and every error in words a user can act on.

A service (one entry of ``mesh_catalog``; inventory/lab/group_vars/all/catalog.yml
documents each key):

    name, app, language, args, instances, health_path                      required
    port, sidecar_port, admin_port, bind, env, upstreams, placement, faults,
    versions, expose, metrics_path, max_parallel                            optional

Without ``port`` / ``sidecar_port`` (and ``admin_port``) the lab model gives each instance ports of its own
from the dynamic range (meshlab.model.dynamic_ports), as Nomad does.

``scaled(catalog, scale)`` is the catalog with the instance counts of ``mesh_scale`` ({service: count},
`make scale`); ``scale_errors`` says what is wrong with one.
"""

import re

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
APP_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
SCHEDULERS = ("systemd", "nomad")
LANGUAGES = ("python", "node")
REQUIRED = ("name", "app", "language", "args", "instances", "health_path")
OPTIONAL = ("port", "sidecar_port", "admin_port", "bind", "env", "upstreams", "placement", "faults", "versions", "expose",
            "metrics_path", "max_parallel")
VERSION_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# Caller-side policy of one upstream (the frontend's client; apps/README.md), as <PREFIX>_<KEY> variables.
POLICY_KEYS = ("timeout_ms", "attempt_timeout_ms", "retries", "retry_backoff_ms", "retry_budget_percent",
               "retry_budget_min_per_s", "breaker_failures", "breaker_half_open_ms")
# Fault injection of one instance at start-up (the apps' FAULT_* variables; the admin endpoint changes it).
FAULT_KEYS = {"latency_ms": (0, 60000, True), "latency_jitter_ms": (0, 60000, True),
              "error_rate": (0, 1, False), "abort_rate": (0, 1, False)}
LOOPBACK = "127.0.0.1"


def admin_port(svc):
    """Instance 1's admin endpoint port (127.0.0.1 only): the catalog's admin_port, else port + 10000; None when
    the service has neither (the model gives each instance a dynamic one)."""
    if svc.get("admin_port"):
        return svc["admin_port"]
    return svc["port"] + 10000 if svc.get("port") else None


def first_ports(svc):
    """{app, sidecar, admin}: instance 1's planned ports (instance n: + n - 1), None for a dynamic one."""
    return {"app": svc.get("port"), "sidecar": svc.get("sidecar_port"), "admin": admin_port(svc)}


def whole(value, low=1):
    """A whole number (not a bool) of at least `low`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


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
    for key in ("health_path", "metrics_path"):
        path = svc.get(key)
        if path and not str(path).startswith("/"):
            errors.append(f"{where}: {key} '{path}' must start with '/'")
    for key in ("port", "sidecar_port", "admin_port"):
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
            continue
        policy = up.get("policy") or {}
        bad = [k for k, v in policy.items() if k not in POLICY_KEYS or not isinstance(v, int) or isinstance(v, bool) or v < 0] \
            if isinstance(policy, dict) else ["(not a mapping)"]
        if bad:
            errors.append(f"{where}: upstream {up.get('service')} policy {', '.join(map(str, bad))}: use whole numbers "
                          f"for {', '.join(POLICY_KEYS)}")
    errors += _fault_errors(svc, where)
    errors += _version_errors(svc, where)
    if "max_parallel" in svc and not whole(svc["max_parallel"]):
        errors.append(f"{where}: max_parallel {svc['max_parallel']!r} must be a whole number of at least 1 "
                      "(how many of its instances a rolling update restarts at a time)")
    if "expose" in svc and not isinstance(svc["expose"], bool):
        errors.append(f"{where}: expose must be true or false (true: the edge serves it)")
    return errors


def _version_errors(svc, where):
    versions = svc.get("versions")
    if versions in (None, []):
        return []
    if not isinstance(versions, list) or not all(isinstance(v, dict) for v in versions):
        return [f"{where}: versions must be a list of {{name: v1, instances: 2, weight: 90}}"]
    found = []
    names = [v.get("name") for v in versions]
    for v in versions:
        if not VERSION_RE.match(str(v.get("name", ""))):
            found.append(f"{where}: version name {v.get('name')!r} must be lowercase letters, digits and '-' (a Consul tag)")
        if not isinstance(v.get("instances"), int) or isinstance(v.get("instances"), bool) or v["instances"] < 1:
            found.append(f"{where}: version {v.get('name')!r} needs instances, a whole number of at least 1")
        weight = v.get("weight")
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
            found.append(f"{where}: version {v.get('name')!r} weight {weight!r} must be a whole number from 0 to 100")
    if len(set(names)) != len(names):
        found.append(f"{where}: version names must be unique, got {names}")
    if not found:
        total = sum(v["instances"] for v in versions)
        if isinstance(svc.get("instances"), int) and total != svc["instances"]:
            found.append(f"{where}: its versions have {total} instances in all, but instances is {svc['instances']}: make them agree")
        if sum(v["weight"] for v in versions) != 100:
            found.append(f"{where}: the versions' weights add up to {sum(v['weight'] for v in versions)}: make them add up to 100")
    return found


def _fault_errors(svc, where):
    faults = svc.get("faults")
    if faults in (None, []):
        return []
    if not isinstance(faults, list):
        return [f"{where}: faults must be a list of {{instance: <n>, latency_ms: ..., error_rate: ...}}"]
    found = []
    for fault in faults:
        if not isinstance(fault, dict) or not isinstance(fault.get("instance"), int) \
                or not 1 <= fault["instance"] <= (svc.get("instances") if isinstance(svc.get("instances"), int) else 0):
            found.append(f"{where}: each fault needs instance (1 to the instance count): got {fault!r}")
            continue
        for key, value in fault.items():
            if key == "instance":
                continue
            if key not in FAULT_KEYS:
                found.append(f"{where}: fault key '{key}' is unknown: use {', '.join(FAULT_KEYS)}")
                continue
            low, high, integer = FAULT_KEYS[key]
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or (integer and not isinstance(value, int)) or not low <= value <= high:
                found.append(f"{where}: fault {key} {value!r} must be {'an integer' if integer else 'a number'} from {low} to {high}")
    return found


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


def scale_errors(catalog, scale):
    """What is wrong with `scale` ({service: instance count}, mesh_scale) for `catalog`; [] when it applies."""
    if scale in (None, {}):
        return []
    if not isinstance(scale, dict):
        return [f"mesh_scale must be a mapping {{service: instances}}, got {scale!r}"]
    services = {s.get("name"): s for s in catalog if isinstance(s, dict)} if isinstance(catalog, list) else {}
    found = []
    for name, count in scale.items():
        svc = services.get(name)
        if svc is None:
            found.append(f"mesh_scale: '{name}' is no service of mesh_catalog (services: {', '.join(map(str, services))})")
        elif not whole(count) or count > 254:
            found.append(f"mesh_scale: {name} {count!r} must be a whole number from 1 to 254")
        elif svc.get("versions"):
            found.append(f"mesh_scale: {name} has versions (a canary split): change their instances in mesh_catalog")
        elif svc.get("faults") and any(f.get("instance", 0) > count for f in svc["faults"] if isinstance(f, dict)):
            found.append(f"mesh_scale: {name} {count} leaves out an instance its faults name")
    return found


def scaled(catalog, scale):
    """`catalog` with the instance counts of `scale` (make scale), when they apply (scale_errors says when not)."""
    if not scale or scale_errors(catalog, scale):
        return catalog
    return [{**svc, "instances": int(scale[svc["name"]])} if svc.get("name") in scale else svc for svc in catalog]


def errors(catalog, scheduler="systemd", reserved_ports=None, nodes=None, groups=None, scale=None):
    """Every problem of `catalog` (with the instance counts of `scale`, mesh_scale), each message saying what to
    change; [] when valid.

    `reserved_ports` maps names to ports already taken (Consul's); `nodes` lists the
    workload nodes and `groups` the inventory groups, for the placement rules (None:
    placement is checked for its shape only).
    """
    problems = scale_errors(catalog, scale)
    if problems:
        return problems
    catalog = scaled(catalog, scale)
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
            for kind, first in first_ports(svc).items():
                if first:  # a dynamic port (none in the catalog) is the model's to choose, free by construction
                    owners.setdefault(first + inst, []).append(f"{svc['name']}-{inst + 1} {kind} port")
        for up in svc.get("upstreams") or []:
            owners.setdefault(up["local_port"], []).append(f"{svc['name']} upstream {up['service']} local port")
    return [
        f"mesh_catalog: port {port} is used by {' and '.join(who)}: give each a port of its own"
        for port, who in sorted(owners.items())
        if len(who) > 1 or port > 65535
    ]

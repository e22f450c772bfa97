"""The lab model: the catalog expanded into what every renderer and test needs.

``build(catalog, nodes, settings)`` returns one JSON-able dict:

    catalog      the catalog as given (templated)
    settings     the settings it was built with (the Consul API, its ports, check timing, ...)
    services     the catalog's services, with defaults filled in
    instances    one entry per instance in the cluster: id (unique cluster-wide),
                 node, ports, addresses, argv, environment, unit names, the Consul
                 registration and the sidecar's argv
    nodes        node name -> address and the ids of the instances placed there
    apps         app directory -> language, services, installed path, revision
    intentions   the allowed edges (each service may reach its upstreams, the edge the exposed
                 service, Prometheus every service with metrics_path)
    edge         the nodes that run the edge proxy (HAProxy, meshlab/edge.py) and its token file
    metrics      the node that runs Prometheus (meshlab/metrics.py), its ports and token file
                 ({} when the lab runs without metrics)
    tracing      the node that runs Zipkin, its ports, the local port of every instance's tracing upstream,
                 the sampling ratio and its token file ({} when the lab runs without tracing)
    rollout      how planned stops and rolling updates go (meshlab/rollout.py): drain_s, the seconds an
                 instance stays out of discovery before it stops (default: the edge's DNS refresh, see
                 drain_seconds)

Ports: a service with ``port`` / ``sidecar_port`` in the catalog gives instance n that port + n - 1; without
them each instance gets ports from the dynamic range (``dynamic_ports``, 20000-32000 like Nomad's), chosen
per node from a hash of the instance id (stable across runs) and probing past every port taken on the node.

``node_services(model, node, address)`` are the lab's own services on a node that Consul lists beside
the workloads (the edge, the node exporter, Prometheus, Zipkin), so that Prometheus finds them there.

Tracing: with ``tracing`` on, every instance's sidecar gets one more upstream, Zipkin (at the instance's
loopback address, ``tracing_local_port``), and the app gets OpenTelemetry's standard variables pointing its span
exporter there (OTEL_EXPORTER_ZIPKIN_ENDPOINT, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, the sampler and the
batch processor's bounds). The spans travel through the mesh: mTLS to Zipkin's sidecar, allowed by an intention
per service, like any call. The exporters are plain HTTP clients, and the sidecar's listener is where a plain
client reaches a mesh service; Consul DNS would need every node's resolver to forward ``.consul`` and would
carry the spans in clear text outside the mesh. The Nomad jobs carry no tracing upstream (Nomad cannot run
here; their apps run untraced).

Placement: a service without ``placement`` has its instances dealt round-robin
over the workload nodes in inventory order, continuing from one service to the
next, so a service's instances land on different nodes while there are enough
of them. ``placement: {nodes: [...]}`` or ``{group: <inventory group>}`` limits a
service to those nodes (dealt round-robin over them). The nomad scheduler gets
the same rule as a constraint (meshlab.nomad).

Addresses: apps listen on 127.0.0.1 unless the catalog sets ``bind``; their
Consul registration carries the address where the app really listens (so
``<svc>.service.consul`` never points at an unreachable node address), while the
sidecar's public mTLS listener binds to, and is registered at, the node's address
(``<svc>.connect.consul`` is the name other nodes use).
"""

import hashlib

from . import apps as _apps
from .acl import secret_name
from .catalog import LOOPBACK, first_ports

RUNTIMES = {
    # interpreter: argv[0]; {venv} is the app's Python venv (<apps_dir>/venvs/<app>, outside its code
    # directory, which is replaced whole when the code changes).
    # python3-packaging: what Ansible's pip module imports on the node (found by the archive-installed node,
    # where no package pulled it in by chance).
    "python": {"interpreter": "{venv}/bin/python", "packages": ["python3", "python3-venv", "python3-packaging"]},
    "node": {"interpreter": "/usr/bin/node", "packages": ["nodejs"]},
}

DEFAULTS = {
    "apps_dir": "/opt/mesh/apps",
    "apps_src": None,  # the repository's apps/ (meshlab.apps.SOURCE)
    "check_interval": "2s",
    "check_timeout": "1s",
    "consul_bin": "consul",
    "consul_http_addr": "http://127.0.0.1:8500",
    "consul_ports": {},
    "tokens_dir": "/etc/mesh/tokens",
    "user": "mesh",
    "groups": {},
    "edge_nodes": [],  # the nodes that run the edge (role edge)
    "edge_port": 8080,  # its public port
    "edge_stats_port": 8404,  # its stats page and Prometheus exporter
    "metrics": True,  # Prometheus and a node exporter per node (meshlab/metrics.py)
    "metrics_node": None,  # the node that runs Prometheus (None: the first Consul server)
    "metrics_port": 9090,
    "node_exporter_port": 9100,
    "tracing": False,  # Zipkin and the apps' spans (meshlab/tracing.py)
    "tracing_node": None,  # the node that runs Zipkin (None: the metrics node, else the first Consul server)
    "tracing_port": 9411,  # Zipkin's API and UI, on its node's address
    "tracing_sidecar_port": 21411,  # Zipkin's sidecar (the apps' spans arrive there, mTLS)
    "tracing_local_port": 19411,  # every instance's upstream listener to Zipkin, on the instance's loopback address
    "tracing_sample_ratio": 1.0,  # the share of new traces kept (a request continues its caller's decision)
    "tracing_queue_size": 2048,  # spans an app keeps waiting for export; more are dropped (and counted)
    "tracing_batch_delay_ms": 500,  # how long an app gathers spans before it sends them
    "tracing_export_timeout_ms": 2000,  # how long an app waits for Zipkin to take a batch
    "dynamic_ports": [20000, 32000],  # where instances without catalog ports get theirs (Nomad's default range)
    "drain_s": None,  # seconds out of discovery before a planned stop (None or "": drain_seconds(); 0: no drain)
}

# The edge's DNS discovery (meshlab/edge.py's resolvers section): HAProxy asks Consul DNS every
# EDGE_DNS_RESOLVE_S seconds and keeps a server that left the answers for EDGE_DNS_HOLD_OBSOLETE_S more.
EDGE_DNS_RESOLVE_S = 1
EDGE_DNS_HOLD_OBSOLETE_S = 2


def drain_seconds(settings, services=()):
    """How long an instance stays out of discovery before a planned stop: the settings' drain_s, else the longer of
    the time the edge takes to drop it (one DNS refresh, then the hold of obsolete answers) and the life of a
    caller's pooled connection (a service's UPSTREAM_SOCKET_MAX_AGE_MS: the frontend's pool keeps a connection,
    and with it the instance the sidecar dealt it to, that long), plus one second for Consul to sync the change
    from the agent to the servers. The upstream sidecars follow Consul within that (blocking queries), and a new
    connection never reaches a drained instance. docs/shipping.md has what it measured."""
    if settings.get("drain_s") not in (None, ""):
        return float(settings["drain_s"])
    pooled = [int(s["env"]["UPSTREAM_SOCKET_MAX_AGE_MS"]) / 1000 for s in services
              if str(s.get("env", {}).get("UPSTREAM_SOCKET_MAX_AGE_MS", "")).isdigit()]
    return float(max([EDGE_DNS_RESOLVE_S + EDGE_DNS_HOLD_OBSOLETE_S] + pooled) + 1)


class ModelError(ValueError):
    """The model cannot be built from these inputs (preflight reports the catalog's own errors first)."""


def unit_names(instance_id):
    """systemd units of one instance on the systemd scheduler."""
    return {"app": f"mesh-app-{instance_id}.service", "sidecar": f"mesh-sidecar-{instance_id}.service"}


def instance_id(service, index):
    """`<service>-<n>`, n counting from 1 over the whole cluster."""
    return f"{service}-{index}"


def upstream_address(index):
    """Loopback address of instance `index`'s upstream listeners: 127.0.0.<index>.

    Every instance's sidecar opens the catalog's local ports for its upstreams; giving
    each instance of a service its own loopback address lets several instances share a
    node (Linux routes all of 127.0.0.0/8 to the loopback interface).
    """
    return f"127.0.0.{index}"


def upstream_env(service, address=LOOPBACK):
    """Environment that points an app at its local Connect upstream listeners on `address`, and each
    upstream's caller-side policy (`policy` in the catalog) as <PREFIX>_<KEY> (ADD_SVC_URL -> ADD_SVC_RETRIES)."""
    env = {}
    for up in service.get("upstreams") or []:
        env[up["env"]] = f"http://{address}:{up['local_port']}"
        prefix = up["env"][:-4] if up["env"].endswith("_URL") else up["env"]
        for key, value in (up.get("policy") or {}).items():
            env[f"{prefix}_{key.upper()}"] = str(value)
    return env


def fault_env(service, index):
    """FAULT_* variables of instance `index` from the catalog's `faults` (none: no fault)."""
    env = {}
    for fault in service.get("faults") or []:
        if fault.get("instance") == index:
            env.update({f"FAULT_{k.upper()}": str(v) for k, v in fault.items() if k != "instance"})
    return env


def versions(service):
    """The service's versions [{name, instances, weight}] (a Consul tag each), or one unnamed group."""
    return list(service.get("versions") or []) or [{"name": None, "instances": service["instances"], "weight": 100}]


def version_of(service, index):
    """The version (tag) of instance `index` (1-based): versions take instances in their order."""
    first = 1
    for v in versions(service):
        if index < first + v["instances"]:
            return v["name"]
        first += v["instances"]
    return None


def registration(instance, settings):
    """Consul service definition of one instance: the app, its HTTP health check, its Connect sidecar.

    The app's own health check makes a dead instance leave the pool: the sidecar
    gets Consul's default alias check on its parent, so upstream proxies stop
    choosing it when the app fails. `instance` needs id, service, port,
    sidecar_port, address, node_address, health_path, upstreams; ports and
    addresses may be strings (the Nomad job's template expressions).
    """
    upstreams = [
        {"destination_name": up["service"], "local_bind_address": instance.get("upstream_address", LOOPBACK),
         "local_bind_port": up["local_port"]}
        for up in instance.get("upstreams") or []
    ]
    if instance.get("tracing_port"):
        upstreams.append({"destination_name": ZIPKIN, "local_bind_address": instance.get("upstream_address", LOOPBACK),
                          "local_bind_port": instance["tracing_port"]})
    version = instance.get("version")
    return {
        "service": {
            "id": instance["id"],
            "name": instance["service"],
            "address": instance["address"],
            "port": instance["port"],
            # A version is a tag: <version>.<service>.connect.consul lists its sidecars (the edge's split).
            "tags": [version] if version else [],
            "meta": {"instance": instance["id"], **({"version": version} if version else {})},
            "check": {
                "id": f"{instance['id']}-health",
                "name": f"{instance['service']} HTTP {instance['health_path']}",
                "http": f"http://{LOOPBACK}:{instance['port']}{instance['health_path']}",
                "interval": settings["check_interval"],
                "timeout": settings["check_timeout"],
            },
            "connect": {
                "sidecar_service": {
                    "address": instance["node_address"],
                    # What Prometheus needs to scrape the app through this sidecar (meshlab/metrics.py).
                    **({"meta": {"instance": instance["id"], "service": instance["service"],
                                 "metrics_path": instance["metrics_path"], **({"version": version} if version else {})}}
                       if instance.get("metrics_path") else {}),
                    # The version tag on the sidecar too: the edge finds a version's sidecars by tag (meshlab/edge.py).
                    "tags": [version] if version else [],
                    "port": instance["sidecar_port"],
                    # Consul's default sidecar checks dial 127.0.0.1, where this listener is not: the same two
                    # checks, with the TCP one at the node's address (the alias one follows the app's health).
                    "checks": [
                        {"name": "Connect Sidecar Listening",
                         "tcp": f"{instance['node_address']}:{instance['sidecar_port']}",
                         "interval": settings["check_interval"], "timeout": settings["check_timeout"]},
                        {"name": f"Connect Sidecar Aliasing {instance['id']}", "alias_service": instance["id"]},
                    ],
                    "proxy": {
                        "local_service_address": LOOPBACK,
                        "local_service_port": instance["port"],
                        "config": {"bind_address": instance["node_address"]},
                        "upstreams": upstreams,
                    },
                },
            },
        },
    }


def token_file(name, settings):
    """The node file with the ACL token of an instance (systemd) or a service (Nomad): root:mesh 0640."""
    return f"{settings['tokens_dir']}/{name}"


def sidecar_argv(instance_ref, settings, token_ref=None):
    """argv of the sidecar proxy of one instance (systemd units and Nomad tasks); its token comes from a file."""
    return [settings["consul_bin"], "connect", "proxy", f"-http-addr={settings['consul_http_addr']}",
            f"-token-file={token_file(token_ref or instance_ref, settings)}",
            "-sidecar-for", instance_ref, "-log-level", "warn"]


EDGE = "edge"
"""The edge's identity in the mesh (its certificate's service name; it may reach every exposed service)."""
PROMETHEUS = "prometheus"
"""Prometheus' identity in the mesh (it scrapes every service with metrics_path through its sidecar)."""
NODE_EXPORTER = "node-exporter"
ZIPKIN = "zipkin"
"""Zipkin's name in Consul (its sidecar takes the apps' spans; every service may reach it when tracing is on)."""


def tracing_env(tracing, instance):
    """OpenTelemetry's standard variables for one instance (read by the apps' SDKs), or {} without tracing."""
    if not tracing:
        return {}
    attributes = [f"service.instance.id={instance['id']}"] + (
        [f"service.version={instance['version']}"] if instance.get("version") else [])
    return {
        "OTEL_SERVICE_NAME": instance["service"],
        "OTEL_RESOURCE_ATTRIBUTES": ",".join(attributes),
        "OTEL_EXPORTER_ZIPKIN_ENDPOINT": f"http://{instance['upstream_address']}:{tracing['local_port']}/api/v2/spans",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": str(tracing["sample_ratio"]),
        "OTEL_BSP_MAX_QUEUE_SIZE": str(tracing["queue_size"]),
        "OTEL_BSP_SCHEDULE_DELAY": str(tracing["batch_delay_ms"]),
        "OTEL_BSP_EXPORT_TIMEOUT": str(tracing["export_timeout_ms"]),
    }


def intentions(catalog, metrics=True, tracing=False):
    """The edges the catalog declares: each service may reach its upstreams, the edge the exposed services,
    Prometheus (with `metrics`) the services that serve metrics, every service Zipkin (with `tracing`)."""
    edges = {(svc["name"], up["service"]) for svc in catalog for up in svc.get("upstreams") or []}
    edges |= {(EDGE, svc["name"]) for svc in catalog if svc.get("expose")}
    if metrics:
        edges |= {(PROMETHEUS, svc["name"]) for svc in catalog if svc.get("metrics_path")}
    if tracing:
        edges |= {(svc["name"], ZIPKIN) for svc in catalog}
    return [{"source": s, "destination": d, "action": "allow"} for s, d in sorted(edges)]


def placement_nodes(service, names, groups):
    """The workload nodes (of `names`, in inventory order) a service may run on (pins: in the pin's order)."""
    placement = service.get("placement") or {}
    if "nodes" in placement:
        return [n for n in placement["nodes"] if n in names]
    if "group" in placement:
        members = set(groups.get(placement["group"], []))
        return [n for n in names if n in members]
    return names


def _taken_everywhere(services, settings, tracing):
    """The ports no dynamic port may take on any node: every static catalog port, the upstream listeners, Consul's,
    the edge's, Prometheus', the node exporter's and Zipkin's."""
    taken = {int(p) for p in (settings["consul_ports"] or {}).values()}
    taken |= {settings["edge_port"], settings["edge_stats_port"], settings["metrics_port"],
              settings["node_exporter_port"]}
    if tracing:
        taken |= {tracing["port"], tracing["sidecar_port"], tracing["local_port"]}
    for svc in services:
        for first in first_ports(svc).values():
            if first:
                taken |= set(range(first, first + svc["instances"]))
        taken |= {up["local_port"] for up in svc["upstreams"]}
    return taken


def dynamic_port(instance_id, kind, taken, low, high):
    """A port for `instance_id`'s `kind` (app, sidecar, admin) in [low, high): its hash's slot, or the next free
    one after it. The same id gets the same port on every run while nothing else took that slot first."""
    size = high - low
    start = int(hashlib.sha256(f"{instance_id}/{kind}".encode()).hexdigest(), 16) % size
    for step in range(size):
        port = low + (start + step) % size
        if port not in taken:
            taken.add(port)
            return port
    raise ModelError(f"no free port left in the dynamic range {low}-{high} for {instance_id} ({kind})")


def _service(svc, settings):
    runtime = RUNTIMES[svc["language"]]
    app_dir = f"{settings['apps_dir']}/{svc['app']}"
    venv = f"{settings['apps_dir']}/venvs/{svc['app']}"
    return {
        **svc,
        "bind": svc.get("bind", LOOPBACK),
        "env": {str(k): str(v) for k, v in (svc.get("env") or {}).items()},
        "upstreams": list(svc.get("upstreams") or []),
        "placement": svc.get("placement") or {},
        "faults": list(svc.get("faults") or []),
        "versions": versions(svc),
        "expose": bool(svc.get("expose")),
        "max_parallel": int(svc.get("max_parallel") or 1),
        "dir": app_dir,
        "argv": [runtime["interpreter"].format(venv=venv)] + list(svc["args"]),
    }


def build(catalog, nodes, settings=None):
    """The model of the lab; see the module's docstring. `nodes`: [{name, address}] of the workload nodes."""
    settings = {**DEFAULTS, **(settings or {})}
    if not nodes:
        raise ModelError("no workload node: the inventory group mesh_nodes is empty")
    missing = [n.get("name") for n in nodes if not n.get("address")]
    if missing:
        raise ModelError(f"no address for node(s) {', '.join(map(str, missing))}: gather facts or set mesh_node_address")
    address = {n["name"]: n["address"] for n in nodes}
    apps_src = settings["apps_src"] or _apps.SOURCE
    services = [_service(svc, settings) for svc in catalog]
    revisions = {app: _apps.revision(apps_src, app) for app in sorted({s["app"] for s in services})}
    for svc in services:
        svc["revision"] = revisions[svc["app"]]

    metrics = _metrics(settings, address)
    tracing = _tracing(settings, address, metrics)
    # Placement first, then the ports: a dynamic port is free on its node, in instance id order (stable).
    placed = []
    dealt = 0  # round-robin position over all workload nodes, shared by services without placement
    for svc in services:
        candidates = placement_nodes(svc, list(address), settings["groups"])
        if not candidates:
            raise ModelError(f"service '{svc['name']}' has no node to run on (placement {svc['placement']})")
        for i in range(svc["instances"]):
            if svc["placement"]:
                node = candidates[i % len(candidates)]
            else:
                node = candidates[dealt % len(candidates)]
                dealt += 1
            placed.append((svc, i, node))
    everywhere = _taken_everywhere(services, settings, tracing)
    low, high = (int(p) for p in settings["dynamic_ports"])
    taken = {node: set(everywhere) for node in address}
    ports = {}
    for svc, i, node in sorted(placed, key=lambda p: instance_id(p[0]["name"], p[1] + 1)):
        iid = instance_id(svc["name"], i + 1)
        ports[iid] = {kind: first + i if first else dynamic_port(iid, kind, taken[node], low, high)
                      for kind, first in first_ports(svc).items()}

    instances = []
    for svc, i, node in placed:
        iid = instance_id(svc["name"], i + 1)
        port = ports[iid]["app"]
        env = dict(svc["env"])
        env.update(upstream_env(svc, upstream_address(i + 1)))
        env.update(fault_env(svc, i + 1))
        version = version_of(svc, i + 1)
        if version:
            env["APP_VERSION"] = version
        env.update({"APP_BIND": svc["bind"], "APP_PORT": str(port), "APP_ADMIN_PORT": str(ports[iid]["admin"]),
                    "INSTANCE_ID": iid, "MESH_APP_REVISION": revisions[svc["app"]]})
        inst = {
            "id": iid,
            "service": svc["name"],
            "index": i + 1,
            "node": node,
            "node_address": address[node],
            "app": svc["app"],
            "language": svc["language"],
            "port": port,
            "sidecar_port": ports[iid]["sidecar"],
            "admin_port": ports[iid]["admin"],
            "version": version,
            "bind": svc["bind"],
            # Where the app really listens: loopback, or the node's address for a public app.
            "address": LOOPBACK if svc["bind"] == LOOPBACK else address[node],
            "argv": list(svc["argv"]),
            "workdir": svc["dir"],
            "env": env,
            "health_path": svc["health_path"],
            "metrics_path": svc.get("metrics_path"),
            "upstreams": list(svc["upstreams"]),
            "upstream_address": upstream_address(i + 1),
            "units": unit_names(iid),
            "tracing_port": tracing["local_port"] if tracing else None,
        }
        inst["env"].update(tracing_env(tracing, inst))
        inst["registration"] = registration(inst, settings)
        inst["sidecar_argv"] = sidecar_argv(iid, settings)
        inst["token_file"] = token_file(iid, settings)
        instances.append(inst)

    return {
        "catalog": catalog,
        "settings": {k: v for k, v in settings.items() if k != "apps_src"},
        "services": services,
        "instances": instances,
        "nodes": {
            n["name"]: {"address": n["address"], "instances": [i["id"] for i in instances if i["node"] == n["name"]]}
            for n in nodes
        },
        "apps": {
            app: {
                "language": next(s["language"] for s in services if s["app"] == app),
                "services": [s["name"] for s in services if s["app"] == app],
                "dir": f"{settings['apps_dir']}/{app}",
                "venv": f"{settings['apps_dir']}/venvs/{app}",
                "revision": revisions[app],
                "nodes": sorted({i["node"] for i in instances if i["app"] == app}),
            }
            for app in revisions
        },
        "runtimes": {lang: RUNTIMES[lang]["packages"] for lang in sorted({s["language"] for s in services})},
        "intentions": intentions(catalog, bool(settings["metrics"]), bool(tracing)),
        # The edge (meshlab/edge.py): where it runs, and the file with its ACL token on those nodes.
        "edge": {"nodes": [n for n in settings["edge_nodes"] if n in address], "port": settings["edge_port"],
                 "stats_port": settings["edge_stats_port"], "token_file": token_file(EDGE, settings)},
        "metrics": metrics,
        "tracing": tracing,
        "rollout": {"drain_s": drain_seconds(settings, services)},
    }


def _metrics(settings, address):
    """Where Prometheus runs (a workload node: the first that is a Consul server by default), the nodes with a node
    exporter (every workload node) and the Consul servers (Prometheus scrapes their HTTPS API)."""
    if not settings["metrics"]:
        return {}
    servers = list((settings["groups"] or {}).get("consul_servers") or [])
    nodes = list(address)
    node = settings["metrics_node"] or next((n for n in nodes if n in servers), nodes[0])
    if node not in nodes:
        raise ModelError(f"mesh_metrics_node '{node}' is not a workload node: pick one of {', '.join(nodes)}")
    return {"node": node, "port": settings["metrics_port"], "node_exporter_port": settings["node_exporter_port"],
            "agents": nodes, "servers": servers, "token_file": token_file(PROMETHEUS, settings)}


def _tracing(settings, address, metrics):
    """Where Zipkin runs (a workload node: the metrics node by default, else the first Consul server) and what
    every instance needs to send it spans; {} without tracing."""
    if not settings["tracing"]:
        return {}
    servers = list((settings["groups"] or {}).get("consul_servers") or [])
    nodes = list(address)
    node = settings["tracing_node"] or (metrics or {}).get("node") or next((n for n in nodes if n in servers), nodes[0])
    if node not in nodes:
        raise ModelError(f"mesh_tracing_node '{node}' is not a workload node: pick one of {', '.join(nodes)}")
    return {"node": node, "address": address[node], "port": settings["tracing_port"],
            "sidecar_port": settings["tracing_sidecar_port"], "local_port": settings["tracing_local_port"],
            "sample_ratio": float(settings["tracing_sample_ratio"]), "queue_size": settings["tracing_queue_size"],
            "batch_delay_ms": settings["tracing_batch_delay_ms"],
            "export_timeout_ms": settings["tracing_export_timeout_ms"], "token_file": token_file(ZIPKIN, settings)}


def node_services(model, node, address):
    """[{id, secret, registration}] of the lab's own services on `node` (at `address`): the edge on an edge node, a
    node exporter on every workload node, Prometheus on its node; `secret` names the ACL token that
    registers each one (meshlab/acl.py). Checks are TCP: Consul only needs to know that each one listens."""
    settings = model["settings"]
    found = []

    def add(name, port, secret, meta=None, check=None, connect=None):
        check = check or {"name": f"{name} listening", "tcp": f"{address}:{port}"}
        service = {"id": name, "name": name, "address": address, "port": port, "meta": meta or {},
                   "check": {"id": f"{name}-check", **check,
                             "interval": settings["check_interval"], "timeout": settings["check_timeout"]},
                   **({"connect": connect} if connect else {})}
        found.append({"id": name, "secret": secret, "registration": {"service": service}})

    edge = model["edge"]
    if node in edge["nodes"]:
        # HTTP on the stats port: a bare TCP check on the public port would count as a bad request there.
        add(EDGE, edge["port"], secret_name(EDGE), {"metrics_port": str(edge["stats_port"])},
            {"name": "edge ready", "http": f"http://{address}:{edge['stats_port']}/ready"})
    metrics = model.get("metrics") or {}
    if metrics and node in metrics["agents"]:
        add(NODE_EXPORTER, metrics["node_exporter_port"], secret_name(NODE_EXPORTER))
    if metrics and node == metrics["node"]:
        add(PROMETHEUS, metrics["port"], secret_name(PROMETHEUS))
    tracing = model.get("tracing") or {}
    if tracing and node == tracing["node"]:
        # Zipkin's sidecar (unit zipkin-sidecar, role zipkin) takes the apps' spans over mTLS and hands them to
        # Zipkin on its node's address (where its UI also listens); registered like the instances' sidecars.
        sidecar = registration({"id": ZIPKIN, "service": ZIPKIN, "address": address, "node_address": address,
                                "port": tracing["port"], "sidecar_port": tracing["sidecar_port"],
                                "health_path": "/health", "upstreams": []}, settings)["service"]["connect"]
        sidecar["sidecar_service"]["proxy"]["local_service_address"] = address
        add(ZIPKIN, tracing["port"], secret_name(ZIPKIN), None,
            {"name": "zipkin ready", "http": f"http://{address}:{tracing['port']}/health"}, sidecar)
    return found


def ports_in_use(model, edge=False):
    """Every port the model's instances take on their nodes (app, sidecar, admin), and the edge's when `edge`:
    what the edge, the metrics and the bench check their own ports against."""
    taken = set()
    for i in model["instances"]:
        taken |= {i["port"], i["sidecar_port"], i["admin_port"]}
    if edge and model["edge"]["nodes"]:
        taken |= {model["edge"]["port"], model["edge"]["stats_port"]}
    tracing = model.get("tracing") or {}
    if tracing:
        taken |= {tracing["port"], tracing["sidecar_port"]}
    return taken


def on_node(model, node):
    """The instances placed on `node`."""
    return [i for i in model["instances"] if i["node"] == node]


def service(model, name):
    return next(s for s in model["services"] if s["name"] == name)


def instances_of(model, name):
    return [i for i in model["instances"] if i["service"] == name]


def summary(model):
    """One line per node and per instance: where it runs and on which ports (`make model`)."""
    lines = []
    for name, node in model["nodes"].items():
        lines.append(f"{name} ({node['address']}): {', '.join(node['instances']) or 'no instance'}")
    for inst in model["instances"]:
        lines.append(f"{inst['id']} on {inst['node']}: app {inst['address']}:{inst['port']}, "
                     f"sidecar {inst['node_address']}:{inst['sidecar_port']}")
    return lines

"""The edge: HAProxy in front of the catalog's exposed service, planned from the lab model.

``plan(model, options)`` checks the edge's options against the model and returns what
the edge does; ``config(plan)`` renders HAProxy's configuration from it (the role edge
installs it after ``haproxy -c``). Every error is a sentence saying what to change.

What the edge does with the exposed service (at most one: the edge's port serves it):

* discovery: one backend per version, filled by ``server-template`` from Consul DNS SRV
  ``_<service>-sidecar-proxy._<version>.service.consul`` (unversioned:
  ``._tcp``), i.e. the passing instances' sidecars; HAProxy re-resolves every second,
  so a new instance is served without a reload;
* mTLS into the mesh: the edge presents a Connect leaf certificate for the service
  ``edge`` (the intention edge -> <service> allows it) and verifies the sidecars
  against the Connect CA;
* per-request round robin, active HTTP checks of the health path through the sidecar,
  passive outlier detection (``observe layer7``: `error_limit` 5xx answers in a row mark a
  server down until its checks pass again), retries with redispatch to another server;
* a weighted split between versions (one random draw per request), a header that pins a
  request to the canary (the last version), and a version with no server up handing its
  share to the others;
* a rate limit per client address (stick table): above it, 429 with a JSON body and
  Retry-After;
* admission control: at most ``server_maxconn`` requests at a time on each frontend server, the
  rest waiting in the backend's queue for at most ``queue_timeout_ms``, then shed with a JSON
  503, Retry-After and ``X-Edge-Shed: queue`` (what is admitted is what the mesh can serve);
* request bodies over ``max_body_bytes`` (the exposed service's own limit) refused with a JSON
  413 by the edge itself, before the body travels;
* a stats page and the Prometheus exporter on their own port.
"""

from .model import EDGE, EDGE_DNS_HOLD_OBSOLETE_S, EDGE_DNS_RESOLVE_S, ports_in_use

# The edge's own 503: the mesh is full (the queue timed out) or no server is up.
SHED_BODY = '{"error": "the mesh is busy: try again in a second", "shed": "edge"}'

# The stats port's readiness answer (HAProxy's monitor-uri): Consul's check of the edge asks it.
READY_PATH = "/ready"

# Its ports are the model's (model["edge"]: mesh_edge_port, mesh_edge_stats_port), not options.
DEFAULTS = {
    "rate_limit": 50,  # requests per rate_period_s per client address
    "rate_period_s": 1,
    "rate_exempt": [],  # client addresses/networks the limit skips
    "canary_header": "X-Canary",
    "canary_value": "always",
    "weights": {},  # {service: {version: weight}}: overrides the catalog's weights
    "canary_weight": None,  # the canary's weight (0-100); the others share the rest as in the catalog
    "server_slots": 8,  # servers per version backend (the most instances of one version the edge can use)
    "check_interval_ms": 2000,
    "check_fall": 2,
    "check_rise": 2,
    "error_limit": 5,
    "retries": 3,
    # Admission control (docs/edge.md, "Overload"): requests at a time per frontend server, how long the rest may
    # wait for one, and the largest request body (the frontend's MAX_BODY_BYTES, apps/frontend/src/app.js).
    "server_maxconn": 3,
    "queue_timeout_ms": 500,
    "max_body_bytes": 16384,
    "timeout_connect_ms": 1000,
    "timeout_server_ms": 5000,
    "dns": "127.0.0.1:8600",
    "domain": "consul",
    "certs_dir": "/etc/haproxy/mesh",
    "state_file": "/var/lib/haproxy/server-state",
    "admin_socket": "/run/haproxy/admin.sock",
    "scheduler": "systemd",  # nomad: no versions (its jobs carry no version tags), one backend for all instances
}


class EdgeError(ValueError):
    """The edge's options do not fit the model; the message says what to change."""


def _whole(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def exposed(model):
    """The catalog's exposed services (the catalog allows at most one)."""
    return [s for s in model["services"] if s.get("expose")]


def _weights(svc, options):
    """{version: weight} of a versioned service after the overrides; EdgeError if they are wrong."""
    names = [v["name"] for v in svc["versions"]]
    weights = {v["name"]: v["weight"] for v in svc["versions"]}
    override = (options.get("weights") or {}).get(svc["name"])
    if override is not None:
        if not isinstance(override, dict):
            raise EdgeError(f"edge_weights.{svc['name']} must map version names to weights, e.g. {{v1: 90, v2: 10}}")
        unknown = [str(k) for k in override if k not in names]
        if unknown:
            raise EdgeError(f"edge_weights.{svc['name']} names version(s) {', '.join(unknown)}: "
                            f"{svc['name']} has {', '.join(names)}")
        bad = [f"{k}={v!r}" for k, v in override.items() if not _whole(v, 0, 100)]
        if bad:
            raise EdgeError(f"edge_weights.{svc['name']}: {', '.join(bad)}: weights are whole numbers from 0 to 100")
        weights = {name: override.get(name, 0) for name in names}
    canary = options.get("canary_weight")
    if canary not in (None, ""):
        if isinstance(canary, str) and canary.strip().isdigit():
            canary = int(canary)
        if not _whole(canary, 0, 100):
            raise EdgeError(f"edge_canary_weight {canary!r}: give the canary's share as a whole number from 0 to 100")
        others = names[:-1]
        rest = sum(weights[n] for n in others)
        share = {n: (weights[n] / rest if rest else 1 / len(others)) * (100 - canary) for n in others}
        rounded = {n: int(share[n]) for n in others}
        rounded[others[0]] += 100 - canary - sum(rounded.values())  # what rounding left goes to the first version
        weights = {**rounded, names[-1]: canary}
    if sum(weights.values()) != 100:
        raise EdgeError(f"the weights of {svc['name']} add up to {sum(weights.values())} ({weights}): make them add up to 100")
    return weights


def plan(model, options=None):
    """What the edge serves and how, or EdgeError naming the option to fix."""
    opts = {**DEFAULTS, **{k: v for k, v in (options or {}).items() if v is not None},
            "port": model["edge"]["port"], "stats_port": model["edge"]["stats_port"]}
    for key in ("port", "stats_port", "rate_limit", "rate_period_s"):  # Ansible may hand over numbers as text
        if isinstance(opts[key], str) and opts[key].strip().isdigit():
            opts[key] = int(opts[key])
    for key in ("port", "stats_port"):
        if not _whole(opts[key], 1, 65535):
            raise EdgeError(f"mesh_edge_{key} {opts[key]!r} is not a TCP port (1-65535)")
    if opts["port"] == opts["stats_port"]:
        raise EdgeError(f"the edge's port and its stats port are both {opts['port']}: give each its own")
    for key in ("server_maxconn", "queue_timeout_ms", "max_body_bytes"):  # Ansible may hand over numbers as text
        if isinstance(opts[key], str) and opts[key].strip().isdigit():
            opts[key] = int(opts[key])
    for key, low in (("rate_limit", 1), ("rate_period_s", 1), ("server_slots", 1), ("error_limit", 1), ("retries", 0),
                     ("server_maxconn", 1), ("queue_timeout_ms", 1), ("max_body_bytes", 1)):
        if not _whole(opts[key], low, 1_000_000):
            raise EdgeError(f"edge {key} {opts[key]!r} must be a whole number of at least {low}")
    if not isinstance(opts["rate_exempt"], list):
        raise EdgeError("edge_rate_limit_exempt must be a list of addresses or networks")
    services = exposed(model)
    if len(services) > 1:
        raise EdgeError(f"services {', '.join(s['name'] for s in services)} are all exposed: the edge serves one "
                        "(its port); set expose: true on one of them")
    weights = opts.get("weights") or {}
    if not isinstance(weights, dict):
        raise EdgeError("edge_weights must map an exposed service to its versions' weights, e.g. {frontend: {v1: 90, v2: 10}}")
    unknown = [str(name) for name in weights if name not in [s["name"] for s in services]]
    if unknown:
        raise EdgeError(f"edge_weights names {', '.join(unknown)}, which the edge does not serve "
                        f"(exposed: {', '.join(s['name'] for s in services) or 'none'})")
    taken = ports_in_use(model)
    clash = [p for p in (opts["port"], opts["stats_port"]) if p in taken]
    if clash:
        raise EdgeError(f"edge port(s) {clash} are taken by catalog instances: move the edge or the service")

    result = {"options": opts, "service": None, "backends": [], "canary": None}
    if not services:
        return result
    svc = services[0]
    versioned = svc["versions"][0]["name"] is not None
    if opts["scheduler"] == "nomad" and versioned:
        # A Nomad job runs one group per service without version tags: the edge balances over every instance.
        svc = {**svc, "versions": [{"name": None, "instances": svc["instances"], "weight": 100}]}
        versioned = False
        result["note"] = "no split on the nomad scheduler: its jobs carry no version tags"
    if opts.get("canary_weight") not in (None, "") and not (versioned and len(svc["versions"]) > 1):
        raise EdgeError(f"edge_canary_weight needs {svc['name']} to have two or more versions (catalog key versions)")
    split = _weights(svc, opts) if versioned else {None: 100}
    low = 0
    for v in svc["versions"]:
        name = v["name"]
        tag = name or "tcp"
        weight = split[name]
        result["backends"].append({
            "name": f"{svc['name']}_{name}" if name else svc["name"],
            "version": name,
            "weight": weight,
            "range": [low, low + weight - 1] if weight else None,  # of one draw rand(100)
            "srv": f"_{svc['name']}-sidecar-proxy._{tag}.service.{opts['domain']}",
            "prefix": f"{name or svc['name']}-",
        })
        low += weight
    result.update(service=svc["name"], health_path=svc["health_path"],
                  canary=svc["versions"][-1]["name"] if versioned and len(svc["versions"]) > 1 else None)
    return result


def split(edge_plan):
    """{version: weight} the plan sends to each version ({} when nothing is exposed)."""
    return {b["version"]: b["weight"] for b in edge_plan["backends"]}


def _q(text):
    """A string in single quotes for HAProxy's parser (no quote inside)."""
    if "'" in text:
        raise EdgeError(f"cannot quote {text!r} for HAProxy")
    return f"'{text}'"


def config(edge_plan):
    """haproxy.cfg for the plan (the role validates it with `haproxy -c` before it goes live)."""
    o = edge_plan["options"]
    certs = o["certs_dir"]
    lines = [
        "# hello-servicemesh edge (meshlab/edge.py renders this file; the role edge installs it)",
        "global",
        "    log stdout format short local0 notice",
        "    user haproxy",
        "    group haproxy",
        f"    stats socket {o['admin_socket']} mode 660 level admin expose-fd listeners",
        f"    server-state-file {o['state_file']}",
        "    ssl-server-verify required",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlog-normal",
        "    option forwardfor",
        # The whole request before a server is chosen: without it a POST whose body comes in a second packet
        # cannot be retried on a 5xx (L7 retries need the request in the buffer).
        "    option http-buffer-request",
        f"    timeout connect {o['timeout_connect_ms']}ms",
        "    timeout client 30s",
        f"    timeout server {o['timeout_server_ms']}ms",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        f"    timeout queue {o['queue_timeout_ms']}ms",
        "    load-server-state-from-file global",
        "",
        "# Consul's DNS on this node: the passing instances' sidecars, re-read every second.",
        "resolvers consul",
        f"    nameserver consul {o['dns']}",
        # Consul answers a 512-byte query with 3 records, silently (facts file): ask for more.
        "    accepted_payload_size 8192",
        "    resolve_retries 3",
        f"    timeout resolve {EDGE_DNS_RESOLVE_S}s",
        "    timeout retry 1s",
        "    hold valid 5s",
        "    hold nx 2s",
        f"    hold obsolete {EDGE_DNS_HOLD_OBSOLETE_S}s",
        "",
        f"frontend {EDGE}",
        f"    bind :{o['port']}",
        # The rate of requests let through (gpc0, counted after the limit's check): a client above the limit gets
        # `rate_limit` answers per period and 429 for the rest, however hard it keeps sending.
        f"    stick-table type ip size 100k expire {max(10, 2 * o['rate_period_s'])}s store gpc0_rate({o['rate_period_s']}s)",
    ]
    if o["rate_exempt"]:
        lines.append(f"    acl rate_exempt src {' '.join(map(str, o['rate_exempt']))}")
        lines.append("    http-request track-sc0 src unless rate_exempt")
    else:
        lines.append("    http-request track-sc0 src")
    body = (f'{{"error": "rate limit: more than {o["rate_limit"]} requests in {o["rate_period_s"]} s from your address", '
            f'"limit": {o["rate_limit"]}, "period_s": {o["rate_period_s"]}}}')
    lines.append(f"    http-request return status 429 content-type application/json hdr Retry-After {o['rate_period_s']} "
                 f"string {_q(body)} if {{ sc_gpc0_rate(0) ge {o['rate_limit']} }}")
    lines.append("    http-request sc-inc-gpc0(0)" + (" unless rate_exempt" if o["rate_exempt"] else ""))
    # A body over the exposed service's limit: refused here, from its Content-Length, before it travels (the service's
    # own 413 came with a closed connection while the body still streamed in: the client saw a reset).
    too_big = f'{{"error": "request body larger than {o["max_body_bytes"]} bytes", "limit": {o["max_body_bytes"]}}}'
    lines.append(f"    http-request return status 413 content-type application/json string {_q(too_big)} "
                 f"if {{ req.hdr_val(content-length) gt {o['max_body_bytes']} }}")
    # The services' own metrics are Prometheus' (through the mesh), not the public's.
    lines.append("    http-request return status 404 content-type application/json "
                 "string '{\"error\": \"/metrics is not served at the edge\"}' if { path_beg /metrics }")
    backends = edge_plan["backends"]
    if not backends:
        lines.append("    http-request return status 404 content-type application/json "
                     "string '{\"error\": \"the catalog exposes no service (expose: true)\"}'")
    else:
        # The trace id the exposed service answers with (X-Trace-Id, with tracing) beside the request in the edge's log.
        lines.append("    declare capture response len 32")
        lines.append("    http-response capture res.hdr(X-Trace-Id) id 0")
        # After-response rules name the backend on every answer, the edge's own 503s (shed) too: which version a
        # request was drawn to, served or not.
        lines.append("    http-after-response set-header X-Edge-Backend %b")
        lines.append("    http-after-response set-header X-Edge-Server %s")
        if edge_plan["canary"]:
            canary = next(b for b in backends if b["version"] == edge_plan["canary"])
            lines.append(f"    use_backend {canary['name']} if {{ req.hdr({o['canary_header']}) -m str {o['canary_value']} }}")
        if len(backends) > 1:
            lines.append("    http-request set-var(txn.split) rand(100)")
            for b in backends:
                if b["range"]:
                    lines.append(f"    use_backend {b['name']} if {{ var(txn.split) -m int {b['range'][0]}:{b['range'][1]} }} "
                                 f"{{ nbsrv({b['name']}) gt 0 }}")
            lines.append("    # A version with no server up hands its share to the others.")
            for b in backends:
                lines.append(f"    use_backend {b['name']} if {{ nbsrv({b['name']}) gt 0 }}")
        lines.append(f"    default_backend {backends[0]['name']}")
    for b in backends:
        lines += [
            "",
            f"backend {b['name']}",
            "    balance roundrobin",
            "    option httpchk",
            f"    http-check send meth GET uri {edge_plan['health_path']}",
            "    http-check expect status 200",
            f"    retries {o['retries']}",
            # Shed: no server took the request within the queue timeout (or none is up).
            f"    http-error status 503 content-type application/json string {_q(SHED_BODY)} "
            f"hdr Retry-After 1 hdr X-Edge-Shed queue",
            "    option redispatch 1",
            # Retried: what a dead or unreachable instance causes. Not 500: an instance's own errors reach the user
            # and feed outlier detection (a retried answer is never observed, so retrying 500s would hide a broken
            # instance from it for good).
            "    retry-on conn-failure empty-response response-timeout 502 503 504",
            f"    default-server ssl crt {certs}/edge.pem ca-file {certs}/connect-ca.pem verify required "
            f"maxconn {o['server_maxconn']} check inter {o['check_interval_ms']}ms fall {o['check_fall']} rise {o['check_rise']} "
            f"observe layer7 error-limit {o['error_limit']} on-error mark-down "
            "resolvers consul resolve-prefer ipv4 resolve-opts allow-dup-ip init-addr last,none",
            f"    server-template {b['prefix']} {o['server_slots']} {b['srv']}",
        ]
    lines += [
        "",
        "frontend stats",
        f"    bind :{o['stats_port']}",
        "    no log",
        # What Consul's check of the edge asks (a bare TCP check would count as a bad request at the edge).
        f"    monitor-uri {READY_PATH}",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /",
        "    stats refresh 5s",
        "    stats show-legends",
        "",
    ]
    return "\n".join(lines)


def problems(model, options=None):
    """[] when the edge can be planned with these options, else [the reason] (preflight reports it)."""
    try:
        plan(model, options)
    except EdgeError as exc:
        return [str(exc)]
    return []

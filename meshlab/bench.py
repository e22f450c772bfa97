"""The benchmark's plan: everything bench/driver.py (on the node) and playbooks/bench.yml need.

``plan(model, options)`` decides, from the model alone:

* the node it runs on: the one with the first instance of the benchmarked frontend;
* the mesh path: that instance's port; the direct path: the same frontend code in a
  transient systemd unit (``systemd-run`` argv, same user and hardening) whose
  upstream URLs are the app ports of upstream instances on the same node, no proxy;
* the one-hop micro benchmark: one call of ``hop_service`` straight to an instance's
  app port, and through the frontend sidecar's upstream listener;
* the components whose CPU and memory the driver samples, each with its group;
* with tracing, a third compute path: the mesh path with every request's ``traceparent`` unsampled, so that no
  app records or sends a span (what the lab costs untraced, next to the mesh path at the lab's sampling ratio),
  and Zipkin with its sidecar among the components when they run on the bench node.
"""

import json

from . import SEED_EXPRESSION, SEED_RESULT
from .catalog import LOOPBACK
from .model import ModelError, instances_of, ports_in_use, service

OPTIONS = {
    "duration": 30,  # seconds of each wrk run of the compute benchmark
    "rounds": 3,  # mesh/direct pairs, each path first in every other round
    "threads": 5,  # the seed's shape: 5 wrk threads, 5 connections
    "connections": 5,
    "warmup": 3,  # unrecorded wrk run per path (seconds)
    "frontend": "frontend",
    "hop_service": "add-svc",
    "direct_port": 8090,  # 127.0.0.1 port of the direct path's frontend
    "direct_unit": "mesh-bench-direct.service",
    "user": "mesh",
    "timeout": "5s",
}
# An unsampled W3C trace context (flags 00): the apps follow their caller's decision and record nothing.
UNSAMPLED_TRACEPARENT = "00-" + "b" * 32 + "-" + "c" * 16 + "-00"
HARDENING = ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes"]


def hop_duration(duration):
    return max(int(duration) // 3, 1)


def expected_seconds(options, paths=2):
    """How long the driver runs with these options and this many compute paths (for progress output and the
    async timeout)."""
    o = {**OPTIONS, **options}
    return ((int(o["duration"]) * paths + hop_duration(o["duration"]) * 2) * int(o["rounds"])
            + paths * int(o["warmup"]) + 10)


def problems(model, options):
    """What makes the plan impossible, in words a user can act on; [] when it can run."""
    o = {**OPTIONS, **options}
    found = []
    for key in ("duration", "rounds", "threads", "connections"):
        if not isinstance(o[key], int) or o[key] < 1:
            found.append(f"mesh_bench_{key} must be a whole number of at least 1 (got {o[key]!r})")
    if not found and o["connections"] < o["threads"]:
        found.append("mesh_bench_connections must be at least mesh_bench_threads")
    names = [s["name"] for s in model["services"]]
    if o["frontend"] not in names:
        return found + [f"mesh_bench_frontend '{o['frontend']}' is not a catalog service"]
    front = service(model, o["frontend"])
    if o["hop_service"] not in [u["service"] for u in front["upstreams"]]:
        found.append(f"mesh_bench_hop_service '{o['hop_service']}' must be an upstream of {o['frontend']}")
    taken = ports_in_use(model)
    if o["direct_port"] in taken:
        found.append(f"mesh_bench_direct_port {o['direct_port']} is a catalog port: choose a free one")
    node = instances_of(model, o["frontend"])[0]["node"]
    for up in front["upstreams"]:
        if not [i for i in instances_of(model, up["service"]) if i["node"] == node]:
            found.append(f"the direct path calls {up['service']} on {node} (the node of {o['frontend']}-1), "
                         f"which runs no {up['service']} instance: benchmark a lab where it does (one node)")
    return found


def plan(model, options=None):
    """The driver's configuration plus what the playbook needs (node, direct path argv)."""
    o = {**OPTIONS, **(options or {})}
    bad = problems(model, o)
    if bad:
        raise ModelError("; ".join(bad))
    front = service(model, o["frontend"])
    fe = instances_of(model, o["frontend"])[0]
    node = fe["node"]
    local = [i for i in model["instances"] if i["node"] == node]

    def first_here(name):
        return next(i for i in local if i["service"] == name)

    # Without a proxy nothing balances: the direct path calls the first instance of each upstream on this node.
    direct_upstreams = {up["env"]: f"http://{LOOPBACK}:{first_here(up['service'])['port']}" for up in front["upstreams"]}
    # One instance per upstream: the pool's re-deal (a connection retires after UPSTREAM_REROLL_REQUESTS while
    # it reaches one instance only) would reach no other; off, so the direct path keeps its connections as a
    # client without a mesh would.
    direct_env = {**fe["env"], **direct_upstreams,
                  "APP_BIND": LOOPBACK, "APP_PORT": str(o["direct_port"]), "APP_ADMIN_PORT": "0",
                  "INSTANCE_ID": f"{o['frontend']}-direct", "UPSTREAM_REROLL_REQUESTS": "10000000"}
    argv = ["systemd-run", "--unit", o["direct_unit"], "--collect", "--quiet",
            "--description", f"hello-servicemesh benchmark: {o['frontend']} without proxies",
            "--working-directory", fe["workdir"],
            "-p", f"User={o['user']}", "-p", f"Group={o['user']}", "-p", "Type=exec"]
    for prop in HARDENING:
        argv += ["-p", prop]
    argv += [f"--setenv={k}={v}" for k, v in sorted(direct_env.items())]
    argv += fe["argv"]

    hop = first_here(o["hop_service"])
    hop_local_port = next(u["local_port"] for u in front["upstreams"] if u["service"] == o["hop_service"])
    components = [{"name": "consul", "unit": "consul.service", "kind": "consul", "group": "consul"}]
    for inst in local:
        components.append({"name": inst["id"], "unit": inst["units"]["app"], "kind": "app", "group": inst["app"]})
    for inst in local:
        components.append({"name": f"proxy {inst['id']}", "unit": inst["units"]["sidecar"], "kind": "proxy",
                           "group": "proxies"})
    components += [
        {"name": f"{o['frontend']} (direct path)", "unit": o["direct_unit"], "kind": "direct", "group": fe["app"]},
        {"name": "journald", "unit": "systemd-journald.service", "kind": "system", "group": "journald"},
    ]
    # The lab's metrics run beside the mesh: Prometheus (its scrapes of every instance) and the node exporter.
    metrics = model.get("metrics") or {}
    if metrics and node == metrics["node"]:
        components.append({"name": "prometheus", "unit": "prometheus.service", "kind": "metrics", "group": "metrics"})
    if metrics and node in metrics["agents"]:
        components.append({"name": "node exporter", "unit": "prometheus-node-exporter.service", "kind": "metrics",
                           "group": "metrics"})
    tracing = model.get("tracing") or {}
    if tracing and tracing["node"] == node:
        components += [{"name": "zipkin", "unit": "zipkin.service", "kind": "tracing", "group": "tracing"},
                       {"name": "proxy zipkin", "unit": "zipkin-sidecar.service", "kind": "tracing",
                        "group": "tracing"}]
    paths = {"mesh": f"http://{LOOPBACK}:{fe['port']}/api/v1/compute",
             "direct": f"http://{LOOPBACK}:{o['direct_port']}/api/v1/compute"}
    headers = {}
    if tracing:
        paths["mesh-unsampled"] = paths["mesh"]
        headers["mesh-unsampled"] = {"traceparent": UNSAMPLED_TRACEPARENT}
    execute = "/api/v1/execute?l=1&r=2"
    return {
        "node": node,
        "direct": {"unit": o["direct_unit"], "argv": argv, "port": o["direct_port"],
                   "health_url": f"http://{LOOPBACK}:{o['direct_port']}{front['health_path']}"},
        "expected_seconds": expected_seconds(o, len(paths)),
        "timeout_seconds": expected_seconds(o, len(paths)) * 2 + 120,
        "driver": {
            "duration": o["duration"],
            "rounds": o["rounds"],
            "threads": o["threads"],
            "connections": o["connections"],
            "warmup": o["warmup"],
            "timeout": o["timeout"],
            "expression": SEED_EXPRESSION,
            "expected_result": SEED_RESULT,
            "body": json.dumps({"expression": SEED_EXPRESSION}),
            "paths": paths,
            # Request headers per path (wrk's script sends them): the unsampled trace context.
            "path_headers": headers,
            "sample_ratio": tracing.get("sample_ratio") if tracing else None,
            "direct_upstreams": direct_upstreams,
            "hop": {
                "service": o["hop_service"],
                "duration": hop_duration(o["duration"]),
                "threads": 1,
                "connections": 1,
                "expected_result": 3,
                "paths": {
                    "direct": f"http://{LOOPBACK}:{hop['port']}{execute}",
                    "mesh": f"http://{fe['upstream_address']}:{hop_local_port}{execute}",
                },
            },
            "components": components,
        },
    }

"""Tracing: Zipkin on one node, fed by the apps' OpenTelemetry SDKs through the mesh, planned from the model.

The model (``meshlab.model``, settings ``tracing*``) decides where Zipkin runs, its ports, the local port of every
instance's tracing upstream and the apps' OpenTelemetry variables; ``plan(model, options)`` adds how Zipkin runs
(the role zipkin): the server is the executable jar ``io.zipkin:zipkin-server:<version>:jar:exec`` from Maven
Central, fetched on the controller by its Maven client (``scripts/zipkin-jar`` checks the pinned SHA-256), run by
Debian's Java 17 with in-memory storage bounded by a span count and a heap size. Every error is a sentence
saying what to change.

    part             where                                   who reaches it
    Zipkin           <node address>:<port> (API, UI,         the apps' spans, through its sidecar; users (UI);
                     /health, /prometheus)                   Consul's check; Prometheus (job zipkin)
    its sidecar      <node address>:<sidecar port> (mTLS)    every instance's sidecar upstream `zipkin`
    tracing upstream <instance loopback>:<local port>        the instance's app (OTEL_EXPORTER_ZIPKIN_ENDPOINT)
"""

import re

from .model import ZIPKIN, ports_in_use, sidecar_argv

DEFAULTS = {
    "version": None,  # the pinned jar's version (mesh_zipkin_version)
    "max_spans": 100000,  # in-memory storage keeps at most this many spans (the oldest traces go first)
    "heap": "320m",  # the JVM's largest heap (-Xmx)
    "dir": "/opt/zipkin",
    "user": "zipkin",
}
HEAP_RE = re.compile(r"^[1-9][0-9]*[mMgG]$")
MAVEN_ARTIFACT = "io.zipkin:zipkin-server:{version}:jar:exec"


class TracingError(ValueError):
    """The tracing options do not fit the model; the message says what to change."""


def jar_name(version):
    return f"zipkin-server-{version}-exec.jar"


def plan(model, options=None):
    """How Zipkin and its sidecar run, or TracingError naming the option to fix (None when the model has no
    tracing: mesh_tracing_enabled false, or the jar could not be had)."""
    where = model.get("tracing") or {}
    if not where:
        return None
    opts = {**DEFAULTS, **{k: v for k, v in (options or {}).items() if v not in (None, "")}}
    if not re.match(r"^[0-9]+(\.[0-9]+)*$", str(opts["version"] or "")):
        raise TracingError(f"mesh_zipkin_version {opts['version']!r} is not a version such as 3.6.1")
    if not isinstance(opts["max_spans"], int) or isinstance(opts["max_spans"], bool) or opts["max_spans"] < 1000:
        raise TracingError(f"mesh_zipkin_max_spans {opts['max_spans']!r}: at least 1000 spans (a compute makes 33)")
    if not HEAP_RE.match(str(opts["heap"])):
        raise TracingError(f"mesh_zipkin_heap {opts['heap']!r} is not a JVM size such as 320m or 1g")
    ratio = where["sample_ratio"]
    if not 0.0 <= ratio <= 1.0:
        raise TracingError(f"mesh_tracing_sample_ratio {ratio}: a share between 0 and 1")
    ports = {"mesh_tracing_port": where["port"], "mesh_tracing_sidecar_port": where["sidecar_port"],
             "mesh_tracing_local_port": where["local_port"]}
    for name, port in ports.items():
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise TracingError(f"{name} {port!r} is not a TCP port (1-65535)")
    if len(set(ports.values())) < len(ports):
        raise TracingError(f"{', '.join(f'{k} {v}' for k, v in ports.items())}: give each its own port")
    without = {**model, "tracing": {}}
    taken = ports_in_use(without, edge=True)
    metrics = model.get("metrics") or {}
    taken |= {metrics.get("port"), metrics.get("node_exporter_port")} - {None}
    clash = [f"{name} {port}" for name, port in ports.items() if name != "mesh_tracing_local_port" and port in taken]
    local = {up["local_port"] for s in model["services"] for up in s["upstreams"]} | taken
    if where["local_port"] in local:
        clash.append(f"mesh_tracing_local_port {where['local_port']}")
    if clash:
        raise TracingError(f"{', '.join(clash)}: taken by the catalog's instances or upstreams, the edge or "
                           "Prometheus: give them other ports")
    jar = f"{opts['dir']}/{jar_name(opts['version'])}"
    address = where["address"]
    return {
        "options": opts,
        "node": where["node"],
        "address": address,
        "port": where["port"],
        "sidecar_port": where["sidecar_port"],
        "jar": jar,
        "argv": ["/usr/bin/java", "-Xms64m", f"-Xmx{opts['heap']}", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError",
                 "-jar", jar,
                 # Its API and UI on the node's address only (the apps reach it through its sidecar).
                 f"--armeria.ports[0].ip={address}", f"--armeria.ports[0].port={where['port']}",
                 "--armeria.ports[0].protocols=http"],
        "env": {"STORAGE_TYPE": "mem", "MEM_MAX_SPANS": str(opts["max_spans"]), "QUERY_PORT": str(where["port"]),
                "JAVA_TOOL_OPTIONS": "-Djava.io.tmpdir=/var/tmp"},
        "sidecar_argv": sidecar_argv(ZIPKIN, model["settings"]),
        "token_file": where["token_file"],
        "services": [s["name"] for s in model["services"]],
    }


def problems(model, options=None):
    """[] when Zipkin can be planned with these options, else [the reason] (preflight reports it)."""
    try:
        plan(model, options)
    except TracingError as exc:
        return [str(exc)]
    return []

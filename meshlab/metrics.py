"""Metrics: Prometheus on one node, scraping every part of the lab it finds in Consul, planned from the model.

``plan(model, options)`` checks the options against the model and returns what Prometheus does;
``config(plan)`` is its prometheus.yml (as data; the role prometheus writes it as YAML and checks it with
``promtool check config`` before it goes live); ``expected_targets(plan)`` lists the targets it must find
(the tests compare them with Prometheus' own list). Every error is a sentence saying what to change.

Every target is discovered through Consul (``consul_sd_configs`` against the local agent), never listed.
Prometheus is Debian bullseye's 2.24 (the role prometheus says why: later Debian builds leave Consul discovery
out), so the config uses only what 2.24 reads (``bearer_token_file``, no ``authorization``).


    job       Consul service(s)                    scraped at                                  how
    mesh      every sidecar whose registration     <node>:<sidecar port><metrics_path>         HTTPS through the sidecar:
              has meta metrics_path (the catalog's                                             mTLS with a Connect
              services with metrics_path)                                                      certificate for the
                                                                                               service `prometheus`
    consul    consul (the servers)                 <node>:<https port>/v1/agent/metrics        HTTPS (lab CA), token
    node      node-exporter (every workload node)  <node>:<node exporter port>/metrics         HTTP
    edge      edge (the edge nodes)                <node>:<meta metrics_port>/metrics          HTTP (HAProxy's exporter)
    prometheus  prometheus                         <node>:<port>/metrics                       HTTP
    zipkin    zipkin (with tracing)                <node>:<port>/prometheus                    HTTP

A new instance of a catalog service is scraped as soon as its sidecar is registered: no config change. Its
series carry ``instance`` (the instance id, or the node for the others), ``service``, ``node`` and ``version``.

Client agents serve no HTTPS (their API listens on loopback only), so the ``consul`` job scrapes the servers
only; the lab's tested layouts (one node; three servers) have no client agent.
"""

from .model import EDGE, NODE_EXPORTER, PROMETHEUS, ZIPKIN, ports_in_use

# Where Prometheus runs and the node exporters' port are the model's (model["metrics"]); these are how it scrapes.
DEFAULTS = {
    "scrape_interval": "5s",
    "retention": "2d",
    "consul_http": "127.0.0.1:8500",  # the local agent's API: discovery
    "datacenter": "lab",  # named, so that discovery need not ask the agent (which needs agent read)
    "consul_https_port": 8501,  # the servers' HTTPS API: their own metrics
    "certs_dir": "/etc/prometheus/mesh",
    "consoles_dir": "/etc/prometheus/consoles",
    "console_libraries_dir": "/etc/prometheus/console_libraries",
}
# How Prometheus reads its secrets and certificates (files in certs_dir; the role puts them there).
FILES = {
    "token": "consul-token",  # its ACL token: the servers' metrics (agent read)
    "consul_ca": "consul-ca.pem",  # the lab's CA: the servers' HTTPS certificates
    "connect_cert": f"{PROMETHEUS}.pem",  # its Connect leaf certificate and key (role connect_cert)
    "connect_ca": "connect-ca.pem",  # the Connect CA roots
}
DURATION_CHARS = set("0123456789smhdwy")
# The Consul service each job but `mesh` discovers (config() asks for them; catalog_targets() counts them).
JOB_SERVICES = {"consul": "consul", "node": NODE_EXPORTER, "edge": EDGE, "prometheus": PROMETHEUS, "zipkin": ZIPKIN}


class MetricsError(ValueError):
    """The metrics options do not fit the model; the message says what to change."""


def _whole(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _duration(value):
    """A Prometheus duration such as 5s, 1m30s, 2d."""
    return isinstance(value, str) and value[:1].isdigit() and set(value) <= DURATION_CHARS and value[-1] in "smhdwy"


def plan(model, options=None):
    """What Prometheus scrapes and where it runs, or MetricsError naming the option to fix (None when the model
    has no metrics: mesh_metrics_enabled false)."""
    where = model.get("metrics") or {}
    if not where:
        return None
    opts = {**DEFAULTS, **{k: v for k, v in (options or {}).items() if v not in (None, "")}}
    if isinstance(opts["consul_https_port"], str) and opts["consul_https_port"].strip().isdigit():
        opts["consul_https_port"] = int(opts["consul_https_port"])
    ports = {"mesh_metrics_port": where["port"], "mesh_node_exporter_port": where["node_exporter_port"]}
    for name, port in ports.items():
        if not _whole(port, 1, 65535):
            raise MetricsError(f"{name} {port!r} is not a TCP port (1-65535)")
    if where["port"] == where["node_exporter_port"]:
        raise MetricsError(f"Prometheus and the node exporter both want port {where['port']}: give each its own")
    for key in ("scrape_interval", "retention"):
        if not _duration(opts[key]):
            raise MetricsError(f"mesh_metrics_{key} {opts[key]!r} is not a Prometheus duration (e.g. 5s, 1m, 2d)")
    taken = ports_in_use(model, edge=True)
    clash = [f"{name} {port}" for name, port in ports.items() if port in taken]
    if clash:
        raise MetricsError(f"{', '.join(clash)}: taken by the catalog's instances or the edge: give them other ports")
    scraped = [s["name"] for s in model["services"] if s.get("metrics_path")]
    return {
        "options": opts,
        "node": where["node"],
        "port": where["port"],
        "node_exporter_port": where["node_exporter_port"],
        "servers": where["servers"],
        "agents": where["agents"],
        "edge_nodes": list(model["edge"]["nodes"]),
        "tracing_node": (model.get("tracing") or {}).get("node"),
        "services": scraped,
        "instances": [i["id"] for i in model["instances"] if i["service"] in scraped],
    }


def _sd(opts, services=None):
    # No token: discovery reads the catalog with the agent's default token, which may read services and nodes
    # (as DNS does); Prometheus 2.24 reads a Consul token only from its configuration, where no secret goes.
    sd = {"server": opts["consul_http"], "datacenter": opts["datacenter"], "refresh_interval": "5s"}
    if services:
        sd["services"] = services
    return [sd]


def _file(opts, name):
    return f"{opts['certs_dir']}/{FILES[name]}"


# Labels every job sets from Consul's view: the node, and the target's own name as `instance`.
_NODE_LABELS = [
    {"source_labels": ["__meta_consul_node"], "target_label": "node"},
    {"source_labels": ["__meta_consul_node"], "target_label": "instance"},
]


def config(metrics_plan):
    """prometheus.yml for the plan, as data."""
    o = metrics_plan["options"]
    address = {"source_labels": ["__meta_consul_address", "__meta_consul_service_port"], "separator": ":",
               "target_label": "__address__"}
    jobs = [
        {
            "job_name": "mesh",
            "scheme": "https",
            # Prometheus presents its Connect certificate (the sidecar checks it and the intention
            # prometheus -> <service>); it cannot check the sidecar's, whose names are SPIFFE URIs, not host names.
            "tls_config": {"cert_file": _file(o, "connect_cert"), "key_file": _file(o, "connect_cert"),
                           "ca_file": _file(o, "connect_ca"), "insecure_skip_verify": True},
            "consul_sd_configs": _sd(o),
            "relabel_configs": [
                {"source_labels": ["__meta_consul_service_metadata_metrics_path"], "regex": "/.*", "action": "keep"},
                {"source_labels": ["__meta_consul_service_metadata_metrics_path"], "target_label": "__metrics_path__"},
                address,
                {"source_labels": ["__meta_consul_service_metadata_instance"], "target_label": "instance"},
                {"source_labels": ["__meta_consul_service_metadata_service"], "target_label": "service"},
                {"source_labels": ["__meta_consul_service_metadata_version"], "target_label": "version"},
                {"source_labels": ["__meta_consul_node"], "target_label": "node"},
            ],
        },
        {
            "job_name": "consul",
            "scheme": "https",
            "metrics_path": "/v1/agent/metrics",
            "params": {"format": ["prometheus"]},
            "bearer_token_file": _file(o, "token"),
            "tls_config": {"ca_file": _file(o, "consul_ca")},
            "consul_sd_configs": _sd(o, [JOB_SERVICES["consul"]]),
            "relabel_configs": [
                {"source_labels": ["__meta_consul_address"], "replacement": f"$1:{o['consul_https_port']}",
                 "target_label": "__address__"},
                *_NODE_LABELS,
            ],
        },
        {
            "job_name": "node",
            "consul_sd_configs": _sd(o, [JOB_SERVICES["node"]]),
            "relabel_configs": [address, *_NODE_LABELS],
        },
        {
            "job_name": "edge",
            "consul_sd_configs": _sd(o, [JOB_SERVICES["edge"]]),
            "relabel_configs": [
                {"source_labels": ["__meta_consul_address", "__meta_consul_service_metadata_metrics_port"],
                 "separator": ":", "target_label": "__address__"},
                *_NODE_LABELS,
            ],
        },
        {
            "job_name": "prometheus",
            "consul_sd_configs": _sd(o, [JOB_SERVICES["prometheus"]]),
            "relabel_configs": [address, *_NODE_LABELS],
        },
    ]
    if metrics_plan.get("tracing_node"):
        jobs.append({
            "job_name": "zipkin",
            "metrics_path": "/prometheus",
            "consul_sd_configs": _sd(o, [JOB_SERVICES["zipkin"]]),
            # Its address as a label too: the dashboard links to Zipkin's UI where Consul says it is.
            "relabel_configs": [address, *_NODE_LABELS, {"source_labels": ["__address__"], "target_label": "address"}],
        })
    return {
        "global": {"scrape_interval": o["scrape_interval"], "evaluation_interval": o["scrape_interval"],
                   "scrape_timeout": o["scrape_interval"] if _seconds(o["scrape_interval"]) < 10 else "10s"},
        "scrape_configs": jobs,
    }


def _seconds(duration):
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total, number = 0, ""
    for char in duration:
        if char.isdigit():
            number += char
        else:
            total += int(number or 0) * units[char]
            number = ""
    return total


def expected_targets(metrics_plan):
    """[(job, instance)] Prometheus must scrape, sorted: what the model says is there."""
    found = [("mesh", iid) for iid in metrics_plan["instances"]]
    found += [("consul", n) for n in metrics_plan["servers"]]
    found += [("node", n) for n in metrics_plan["agents"]]
    found += [("edge", n) for n in metrics_plan["edge_nodes"]]
    found.append(("prometheus", metrics_plan["node"]))
    if metrics_plan.get("tracing_node"):
        found.append(("zipkin", metrics_plan["tracing_node"]))
    return sorted(found)


def catalog_targets(catalog):
    """[(job, instance)] config() has Prometheus find in a Consul catalog, sorted like expected_targets():
    `catalog` is {service name: its entries from /v1/catalog/service/<name>}. The mesh job keeps the entries whose
    meta has a metrics_path (the sidecars of the catalog's services), named by their meta instance; the other jobs
    take every entry of their service, named by its node. `make dashboard` holds Prometheus' targets against it:
    a part Consul lists that discovery has not (yet) found counts as missing."""
    job_of = {service: job for job, service in JOB_SERVICES.items()}
    found = []
    for name, entries in catalog.items():
        for entry in entries:
            meta = entry.get("ServiceMeta") or {}
            if str(meta.get("metrics_path", "")).startswith("/"):
                found.append(("mesh", meta.get("instance") or entry["ServiceID"]))
            if name in job_of:
                found.append((job_of[name], entry["Node"]))
    return sorted(found)


def problems(model, options=None):
    """[] when Prometheus can be planned with these options, else [the reason] (preflight reports it)."""
    try:
        plan(model, options)
    except MetricsError as exc:
        return [str(exc)]
    return []

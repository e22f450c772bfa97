"""The lab's ACL policies and tokens: least privilege, one place.

Every token's secret is made once on the controller (meshlab/secrets.py, named by secret_name below)
and already sits in the agents' config or registrations; the role consul_acl makes the
ACL system know it. Accessor ids are derived from the secrets (Ansible's to_uuid), so a
re-run addresses the same tokens.

    token (secret name)            policy / identity              used by
    consul/management              global-management (built in)   Ansible's ACL calls, the tests, `make status`
    consul/agent-<node>            agent-<node>                   the node's agent (acl.tokens.agent) and its
                                                                  consul-restart (operator read: autopilot health)
    consul/snapshot                snapshot (acl write)           the servers' snapshot timer, make backup; 1.8
                                                                  allows snapshots to acl-write tokens only
    consul/dns                     dns-read                       requests without a token, DNS among them
    consul/intentions              intentions-write               the intentions reconciler (not management)
    consul/nomad                   nomad-agent                    Nomad's Consul integration (full profile)
    consul/instance-<id>           service identity <service>     the instance's registration and sidecar (systemd)
    consul/service-<name>          service identity <name>        the service's Nomad tasks (nomad scheduler)
    consul/edge                    service identity edge          the edge's Connect certificate and registration
    consul/prometheus              service identity prometheus    Prometheus' Connect certificate (it scrapes the apps
                                                                  through their sidecars) and registration
    consul/metrics-reader          agents-read                    Prometheus' scrapes of the servers' /v1/agent/metrics
    consul/node-exporter           service identity node-exporter the node exporters' registrations
    consul/zipkin                  service identity zipkin        Zipkin's registration and its sidecar (tracing)
"""


def secret_name(role, subject=None):
    """The one naming of the lab's secrets (files under mesh_secrets_dir, meshlab/secrets.py): the token of `role`
    (management, dns, intentions, nomad, metrics-reader, or a lab service's name: edge, prometheus, zipkin, ...),
    of `role`'s `subject` (agent, instance, service: consul/agent-mesh-1), or the gossip key (gossip). Roles and
    templates reach it through the filter mesh_secret_name."""
    return f"consul/{role}" if subject is None else f"consul/{role}-{subject}"


def policies(nodes):
    """[{name, description, rules}] of the lab's policies for these node names."""
    found = [{"name": f"agent-{node}", "description": f"the Consul agent of {node}",
              "rules": f'node "{node}" {{ policy = "write" }}\nagent "{node}" {{ policy = "write" }}\n'
                       'service_prefix "" { policy = "read" }\noperator = "read"'}
             for node in nodes]
    found.append({"name": "dns-read", "description": "DNS and token-less reads: nodes and services, nothing else",
                  "rules": 'node_prefix "" { policy = "read" }\n'
                           'service_prefix "" { policy = "read" intentions = "deny" }'})
    found.append({"name": "intentions-write", "description": "the intentions reconciler: services read, intentions write",
                  "rules": 'service_prefix "" { policy = "read" intentions = "write" }'})
    found.append({"name": "agents-read", "description": "Prometheus: every agent's /v1/agent/metrics",
                  "rules": 'agent_prefix "" { policy = "read" }'})
    found.append({"name": "snapshot", "description": "Consul snapshots: 1.8 (and later) ask acl write for them",
                  "rules": 'acl = "write"'})
    found.append({"name": "nomad-agent", "description": "Nomad's Consul integration: agents, nodes and services read",
                  "rules": 'agent_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
                           'service_prefix "" { policy = "read" }'})
    return found


def tokens(nodes):
    """[{secret, description, policies, service_identities}] of the agents' and tools' tokens."""
    found = [{"secret": secret_name("agent", node), "description": f"agent of {node}",
              "policies": [{"name": f"agent-{node}"}], "service_identities": []} for node in nodes]
    found.append({"secret": secret_name("dns"), "description": "default: DNS and token-less reads",
                  "policies": [{"name": "dns-read"}], "service_identities": []})
    found.append({"secret": secret_name("intentions"), "description": "intentions reconciler",
                  "policies": [{"name": "intentions-write"}], "service_identities": []})
    found.append({"secret": secret_name("snapshot"), "description": "snapshots (the servers' timer, make backup)",
                  "policies": [{"name": "snapshot"}], "service_identities": []})
    found.append({"secret": secret_name("nomad"), "description": "Nomad's Consul integration",
                  "policies": [{"name": "nomad-agent"}], "service_identities": []})
    found.append({"secret": secret_name("metrics-reader"), "description": "Prometheus: the agents' metrics",
                  "policies": [{"name": "agents-read"}], "service_identities": []})
    return found


def workload_tokens(model, scheduler="systemd"):
    """The workloads' tokens, each a service identity: one per instance on the systemd scheduler (its
    registration and its sidecar use it), one per service on Nomad (allocations are not known in
    advance), with the file each token is written to and the nodes that get that file."""
    from .model import EDGE, NODE_EXPORTER, PROMETHEUS, ZIPKIN, token_file

    edge = model.get("edge") or {}
    lab_tokens = [{"secret": secret_name(EDGE), "description": f"workload {EDGE}", "name": EDGE, "nodes": edge["nodes"],
                    "file": edge["token_file"], "policies": [], "service_identities": [{"service_name": EDGE}]}
                   ] if edge.get("nodes") else []
    metrics = model.get("metrics") or {}
    if metrics:
        # The node exporters' token only registers them (it is in their registrations): no file on the nodes.
        lab_tokens += [
            {"secret": secret_name(PROMETHEUS), "description": f"workload {PROMETHEUS}", "name": PROMETHEUS,
             "nodes": [metrics["node"]], "file": metrics["token_file"], "policies": [],
             "service_identities": [{"service_name": PROMETHEUS}]},
            {"secret": secret_name(NODE_EXPORTER), "description": f"workload {NODE_EXPORTER}", "name": NODE_EXPORTER,
             "nodes": [], "file": None, "policies": [], "service_identities": [{"service_name": NODE_EXPORTER}]},
        ]
    tracing = model.get("tracing") or {}
    if tracing:
        lab_tokens.append({"secret": secret_name(ZIPKIN), "description": f"workload {ZIPKIN}", "name": ZIPKIN,
                           "nodes": [tracing["node"]], "file": tracing["token_file"], "policies": [],
                           "service_identities": [{"service_name": ZIPKIN}]})
    if scheduler == "nomad":
        every = list(model["nodes"])
        return lab_tokens + [{"secret": secret_name("service", s["name"]), "description": f"workload service {s['name']}",
                 "name": s["name"], "nodes": every, "file": token_file(s["name"], model["settings"]),
                 "policies": [], "service_identities": [{"service_name": s["name"]}]}
                for s in model["services"]]
    return lab_tokens + [{"secret": secret_name("instance", i["id"]), "description": f"workload instance {i['id']}", "name": i["id"],
             "nodes": [i["node"]], "file": i["token_file"], "policies": [],
             "service_identities": [{"service_name": i["service"]}]}
            for i in model["instances"]]


DESCRIPTION_PREFIX = "hello-servicemesh: "
WORKLOAD_PREFIX = DESCRIPTION_PREFIX + "workload "


def token_files(model, node, secrets_dir, scheduler="systemd"):
    """{file name: secret} of the workload tokens `node` gets (controller side; for no_log tasks only)."""
    from . import secrets

    return {t["file"].rsplit("/", 1)[1]: secrets.ensure(secrets_dir, t["secret"])
            for t in workload_tokens(model, scheduler) if node in t["nodes"]}

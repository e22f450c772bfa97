"""The Vagrant lab's state file: its one documented shape, checked wherever it is read.

vagrant/lab.rb writes ``$VAGRANT_DOTFILE_PATH/hello-servicemesh.json`` (default
.vagrant/) on every ``vagrant up``/``provision``/``reload``; scripts/lab reads it.

    {
      "settings":    {"nodes": 3, "servers": 3, "network": "192.168.56",
                      "container_prefix": "hsm-"},      # sticky: a lab keeps its shape
      "profile":     "offline",                          # full | offline (meshlab.profile)
      "profile_reason": "HashiCorp cannot be reached (...)",
      "provider":    "docker",                           # virtualbox | libvirt | docker
      "nodes":       ["mesh-1", "mesh-2", "mesh-3"],
      "servers":     ["mesh-1", "mesh-2", "mesh-3"],     # Consul servers (odd count)
      "ips":         ["192.168.56.11", ...],             # one per node, private network
      "containers":  ["hsm-mesh-1", ...] | null,         # docker provider only
      "guest_ports": {"consul_ui": 8500, "nomad_ui": 4646, "frontend": 8080, "prometheus": 9090,
                      "zipkin": 9411},
      "host_ports":  {"consul_ui": 8500, ...},           # asked for (vagrant.yml)
      "forwarded":   {"consul_ui": 8500, ...}            # really forwarded from mesh-1 (optional)
    }
"""

import ipaddress
import json

PORT_KEYS = ("consul_ui", "nomad_ui", "frontend", "prometheus", "zipkin")
PROVIDERS = ("virtualbox", "libvirt", "docker")


def _ports(value, where, optional_values=False):
    if not isinstance(value, dict) or set(value) != set(PORT_KEYS):
        return [f"{where} must map exactly {', '.join(PORT_KEYS)} to ports"]
    bad = [k for k, v in value.items()
           if not (optional_values and v is None) and not (isinstance(v, int) and 1 <= v <= 65535)]
    return [f"{where}.{k} is not a TCP port: {value[k]!r}" for k in bad]


def problems(state):
    """Every way `state` differs from the documented shape; [] when it fits."""
    if not isinstance(state, dict):
        return ["the state is not a JSON object"]
    found = []
    settings = state.get("settings")
    if not isinstance(settings, dict) or not {"nodes", "servers", "network", "container_prefix"} <= set(settings):
        found.append("settings must hold nodes, servers, network and container_prefix")
    if state.get("profile") not in ("full", "offline"):
        found.append(f"profile must be full or offline, got {state.get('profile')!r}")
    if state.get("provider") not in PROVIDERS:
        found.append(f"provider must be one of {', '.join(PROVIDERS)}, got {state.get('provider')!r}")
    nodes = state.get("nodes")
    if not isinstance(nodes, list) or not nodes or not all(isinstance(n, str) for n in nodes):
        return found + ["nodes must be a non-empty list of node names"]
    servers = state.get("servers")
    if not isinstance(servers, list) or not servers or len(servers) % 2 == 0 or not set(servers) <= set(nodes):
        found.append(f"servers must be an odd number of the nodes, got {servers!r}")
    ips = state.get("ips")
    if not isinstance(ips, list) or len(ips) != len(nodes):
        found.append("ips must hold one address per node")
    else:
        for ip in ips:
            try:
                ipaddress.ip_address(ip)
            except (ValueError, TypeError):
                found.append(f"ips: {ip!r} is not an IP address")
    containers = state.get("containers")
    if containers is not None and (not isinstance(containers, list) or len(containers) != len(nodes)):
        found.append("containers must be null or one name per node")
    if state.get("provider") == "docker" and containers is None:
        found.append("the docker provider records its container names")
    found += _ports(state.get("guest_ports"), "guest_ports")
    found += _ports(state.get("host_ports"), "host_ports")
    if "forwarded" in state:
        found += _ports(state["forwarded"], "forwarded", optional_values=True)
    return found


def load(path):
    """The state at `path`, or ValueError saying what is wrong with it (FileNotFoundError if there is none)."""
    with open(path, encoding="utf-8") as fh:
        try:
            state = json.load(fh)
        except ValueError as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from None
    bad = problems(state)
    if bad:
        raise ValueError(f"{path} does not have the lab state's shape (meshlab/labstate.py): " + "; ".join(bad))
    return state

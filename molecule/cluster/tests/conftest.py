"""Fixtures of the cluster scenario: three nodes, each a Consul server and a workload node.

Tests run on the controller. They talk to each node's local Consul agent from inside
the node (podman exec), send load from the controller to the nodes' addresses on the
scenario's own network, and kill or restart nodes with podman. Every id, node, port
and address comes from the lab model as Ansible resolves it for this scenario.
"""

import json
import subprocess
import time

import pytest
import testinfra

from meshlab import SEED_EXPRESSION, SEED_RESULT
from testkit.fixtures import inventory, management_token, model  # noqa: F401 - fixtures
from testkit.lab import NodeLoad
from testkit.load import CHANGE_EXPRESSION, CHANGE_RESULT

# Serf's failure detection on a small cluster (probe 1 s, suspicion ~4 s: 5-7 s measured on
# 1.8.7) plus one health-check interval (2 s) and a second's margin: after this long a dead
# node's instances have left every pool, and no request may fail.
DETECTION_WINDOW_S = 10
# Load of the failure tests: computes per second through one frontend, and how long the node loss's lasts (the
# kill at 10 s, the detection window, then 20 s in which every request must succeed; 50 s until 2026-12-08).
RATE, DURATION_S = 20, 40


class Cluster:
    """The scenario's nodes: podman containers named after their inventory hosts."""

    def __init__(self, model, token):
        self.model = model
        self.token = token  # the management token: the tests' own calls (refusals pass token="")
        self.names = list(model["nodes"])
        self.hosts = {n: testinfra.get_host(f"podman://{n}") for n in self.names}
        self.api = model["settings"]["consul_http_addr"]

    def address(self, node):
        return self.model["nodes"][node]["address"]

    def node_of(self, iid):
        return next(i["node"] for i in self.model["instances"] if i["id"] == iid)

    def instances(self, service=None, node=None):
        return [i for i in self.model["instances"]
                if (service is None or i["service"] == service) and (node is None or i["node"] == node)]

    def run(self, node, command, *args):
        return self.hosts[node].run(command, *args)

    def consul(self, node, path, method="GET", data=None, token=None):
        """The node's local agent API: the parsed answer, None when it does not answer or refuses."""
        res = self.status(node, path, method, data, token=token)
        if res[0] != 200:
            return None
        return json.loads(res[1]) if res[1].strip() else ""

    def status(self, node, path, method="GET", data=None, timeout=5, token=None, url=None):
        """(HTTP status, body) of one call to `node`'s agent (or to `url` from `node`), with the management
        token unless `token` says otherwise ("" for none); status 0 when nothing answers within `timeout` s."""
        token = self.token if token is None else token
        res = self.hosts[node].run("curl -s -m %s --cacert /etc/consul.d/tls/ca.pem -H %s -o /dev/stdout "
                                   "-w '\\n%%{http_code}' -X %s --data-binary %s %s",
                                   str(timeout), f"X-Consul-Token: {token}", method,
                                   json.dumps(data) if data is not None else "", url or f"{self.api}{path}")
        body, _, code = res.stdout.rpartition("\n")
        return (int(code) if code.strip().isdigit() else 0), body

    def leader(self, node):
        """The Raft leader's address as `node`'s agent sees it ('' when there is none)."""
        return self.consul(node, "/v1/status/leader") or ""

    def leader_node(self, via):
        address = self.leader(via).rsplit(":", 1)[0]
        return next((n for n in self.names if self.address(n) == address), None)

    def passing(self, via, service):
        return sorted(e["Service"]["ID"] for e in self.consul(via, f"/v1/health/service/{service}?passing=1") or [])

    def alive_members(self, via):
        return sorted(m["Name"] for m in self.consul(via, "/v1/agent/members") or [] if m["Status"] == 1)

    def kill(self, node):
        subprocess.run(["podman", "kill", node], check=True, capture_output=True)
        return time.monotonic()

    def start(self, node):
        subprocess.run(["podman", "start", node], check=True, capture_output=True)

    def healthy(self, via):
        """Three alive members, three Raft voters with one leader, every instance passing."""
        raft = self.consul(via, "/v1/operator/raft/configuration") or {}
        servers = raft.get("Servers", [])
        return (self.alive_members(via) == sorted(self.names)
                and len(servers) == len(self.names) and all(s["Voter"] for s in servers)
                and sum(s["Leader"] for s in servers) == 1
                and all(self.passing(via, s["name"]) == sorted(i["id"] for i in self.instances(s["name"]))
                        for s in self.model["services"]))

    def wait_healthy(self, timeout=180):
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while time.monotonic() < deadline:
            for via in self.names:
                try:
                    if self.healthy(via):
                        return time.monotonic() - started
                except (RuntimeError, ValueError, KeyError, TypeError):
                    pass
            time.sleep(2)
        raise AssertionError(f"the cluster is not healthy {timeout} s after the test")

    def load(self, frontend, body, rate, seconds):
        """A bounded load of computes on one frontend instance, run on its node (it listens on loopback only)."""
        inst = next(i for i in self.model["instances"] if i["id"] == frontend)
        return NodeLoad(inst["node"], f"http://127.0.0.1:{inst['port']}/api/v1/compute", body, rate, seconds)

    def edge_url(self, node, path="/api/v1/compute"):
        """The edge on `node` (every node of this scenario runs one), from outside the nodes."""
        return f"http://{self.model['nodes'][node]['address']}:{self.model['edge']['port']}{path}"


@pytest.fixture(scope="session")
def cluster(model, management_token):
    return Cluster(model, management_token)


@pytest.fixture
def restore(cluster):
    """Every failure test leaves the cluster as it found it: all nodes up, everything passing."""
    yield
    for node in cluster.names:
        cluster.start(node)  # a no-op for a running container
    took = cluster.wait_healthy()
    print(f"cluster healthy again {took:.0f} s after the test")


@pytest.fixture(scope="session")
def seed():
    return {"body": {"expression": SEED_EXPRESSION}, "result": SEED_RESULT}


@pytest.fixture(scope="session")
def light():
    """The change tests' compute (testkit.load.CHANGE_EXPRESSION: six upstream calls; the seed's 16 at 20/s filled
    the three nodes' 2 cores), in the seed's shape."""
    return {"body": {"expression": CHANGE_EXPRESSION}, "result": CHANGE_RESULT}

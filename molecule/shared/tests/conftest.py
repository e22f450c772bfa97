"""Shared fixtures of the single-node mesh scenarios' testinfra tests (default, nomad).

Tests run on the controller; `host` is the Molecule node. Traffic goes only to
the node's loopback (commands run inside it) and to the node's own address on
the scenario's podman network. Every port, id, address and expression comes
from the lab model as Ansible resolves it for the scenario (testkit.lab).
"""

import csv
import io
import json
import math
import os
import shlex
import urllib.request

import pytest
import testinfra

from meshlab import SEED_EXPRESSION, SEED_RESULT
from testkit.fixtures import inventory, management_token, model  # noqa: F401 - fixtures
from testkit.lab import run_playbook, wait_until  # noqa: F401 - for the test modules
from testkit.load import CHANGE_EXPRESSION, CHANGE_RESULT

# Which scheduler runs the workloads in this scenario (molecule/<scenario>/molecule.yml verifier env).
SCHEDULER = os.environ.get("MESH_SCHEDULER", "systemd")
# Tests of what only the systemd scheduler has: unit names and the catalog's static ports.
# On Nomad (dynamic ports, allocations) their twins are in molecule/nomad/tests.
systemd_only = pytest.mark.skipif(
    SCHEDULER != "systemd",
    reason=f"systemd scheduler only (units, static catalog ports): the {SCHEDULER} scenario tests its twin",
)


@pytest.fixture(scope="session")
def host(model):
    """The scenario's one node, reached with `podman exec` (testinfra's ansible:// backend would run a
    whole `ansible` command for every check, seconds each)."""
    [name] = list(model["nodes"])
    return testinfra.get_host(f"podman://{name}")


@pytest.fixture(scope="session")
def catalog(model):
    """The service catalog as the inventory resolves it (templated)."""
    return model["catalog"]


@pytest.fixture(scope="session")
def instances(model):
    return model["instances"]


def instance(model, iid):
    return next(i for i in model["instances"] if i["id"] == iid)


def instances_of(model, service):
    return [i for i in model["instances"] if i["service"] == service]


class Mesh:
    """HTTP calls made inside the node with one `host.run` each (fast, loopback only)."""

    def __init__(self, host, model, token):
        self.host = host
        self.model = model
        self.token = token
        self.api = model["settings"]["consul_http_addr"]
        front = instances_of(model, "frontend")[0]
        self.compute_url = f"http://127.0.0.1:{front['port']}/api/v1/compute"

    def consul(self, path, token=True):
        """GET from the node's agent, with the management token unless token=False."""
        header = f"-H 'X-Consul-Token: {self.token}'" if token else ""
        out = self.host.check_output(f"curl -sf {header} {self.api}{path}")
        return json.loads(out) if out else None

    def instance_ids(self, service, passing=True):
        """The ids of the service's instances in Consul's health view (only the passing ones unless passing=False)."""
        return sorted(e["Service"]["ID"] for e in self.consul(f"/v1/health/service/{service}{'?passing=1' if passing else ''}"))

    def status(self, path, method="GET", token=None, data=None, api=None, curl_opts=""):
        """HTTP status of one call (0: no answer); token None sends none."""
        header = f"-H 'X-Consul-Token: {token}'" if token else ""
        body = f"--data-binary {shlex.quote(json.dumps(data))}" if data is not None else ""
        out = self.host.run(f"curl -s -m 10 {curl_opts} -o /dev/null -w '%{{http_code}}' -X {method} {header} {body} "
                            f"{shlex.quote((api or self.api) + path)}").stdout
        return int(out) if out.strip().isdigit() else 0

    def compute_many(self, count, expression=SEED_EXPRESSION, url=None):
        """POST `count` compute requests sequentially; return [(status, body-dict)]."""
        script = (
            "import json,sys,urllib.request,urllib.error\n"
            f"n={count}; expr={expression!r}; url={(url or self.compute_url)!r}\n"
            "out=[]\n"
            "for _ in range(n):\n"
            "    req=urllib.request.Request(url,data=json.dumps({'expression':expr}).encode(),"
            "headers={'Content-Type':'application/json'})\n"
            "    try:\n"
            "        with urllib.request.urlopen(req,timeout=10) as r: out.append([r.status,json.load(r)])\n"
            "    except urllib.error.HTTPError as e: out.append([e.code,json.load(e)])\n"
            "    except Exception as e: out.append([0,{'error':repr(e)}])\n"
            "print(json.dumps(out))\n"
        )
        result = self.host.run("python3 -c %s", script)
        assert result.rc == 0, result.stderr
        return [tuple(item) for item in json.loads(result.stdout)]


@pytest.fixture
def mesh(host, model, management_token):
    return Mesh(host, model, management_token)


@pytest.fixture(scope="session")
def prom(model):
    """Prometheus' API on its node (testkit.observe.Prometheus), asked from the controller."""
    from testkit.observe import Prometheus

    where = model["metrics"]
    return Prometheus(f"http://{model['nodes'][where['node']]['address']}:{where['port']}")


def scrape_health(prom):
    """{(job, instance): health} of Prometheus' active targets."""
    return {(t["job"], t["instance"]): t["health"] for t in prom.targets()}


@pytest.fixture(scope="session")
def edge(model):
    """Where the edge (HAProxy) answers: its port and its stats on the edge node's address."""
    [node] = model["edge"]["nodes"]
    address = model["nodes"][node]["address"]
    return {"node": node, "address": address, "url": f"http://{address}:{model['edge']['port']}",
            "stats": f"http://{address}:{model['edge']['stats_port']}"}


def edge_stats(edge):
    """HAProxy's stats as CSV rows: one per proxy and per server."""
    with urllib.request.urlopen(f"{edge['stats']}/;csv", timeout=5) as resp:
        text = resp.read().decode().lstrip("# ")
    return list(csv.DictReader(io.StringIO(text)))


def edge_servers(edge, up_only=True):
    """{sidecar address:port: (backend, server, status)} of the edge's frontend servers that have an address."""
    found = {}
    for row in edge_stats(edge):
        if not row["pxname"].startswith("frontend") or row["svname"] in ("FRONTEND", "BACKEND") or not row.get("addr"):
            continue
        if up_only and not row["status"].startswith("UP"):
            continue
        found[row["addr"]] = (row["pxname"], row["svname"], row["status"])
    return found


def passing_sidecars(mesh):
    """{address:port: version tag} of the frontend's passing sidecars in Consul."""
    return {f"{e['Service']['Address']}:{e['Service']['Port']}": (e["Service"]["Tags"] or [None])[0]
            for e in mesh.consul("/v1/health/service/frontend-sidecar-proxy?passing=1")}


def edge_matches_consul(edge, mesh):
    """(servers, passing) when the edge's UP servers are exactly the passing frontend sidecars, each in its
    version's backend; else None."""
    servers, passing = edge_servers(edge), passing_sidecars(mesh)
    ok = set(servers) == set(passing) and all(servers[a][0] == f"frontend_{v}" for a, v in passing.items())
    return (servers, passing) if ok else None


def edge_pids(host):
    """HAProxy's master pid and its workers' pids: the same after a change means no reload or restart."""
    return (host.check_output("systemctl show -p MainPID --value haproxy.service"),
            host.check_output("pgrep -u haproxy -x haproxy || true").split())


def binomial_bounds(n, p, sigmas=4.5):
    """The count range a fair split stays in but for about 1 in 150,000 runs (normal approximation)."""
    spread = sigmas * math.sqrt(n * p * (1 - p))
    return max(0, math.floor(n * p - spread)), math.ceil(n * p + spread)


@pytest.fixture(scope="session")
def seed():
    return {"expression": SEED_EXPRESSION, "result": SEED_RESULT,
            "ops": [c for c in SEED_EXPRESSION if c in "+-"]}


@pytest.fixture(scope="session")
def light():
    """The change tests' compute (testkit.load.CHANGE_EXPRESSION: six upstream calls, the seed's 16 at 20/s fill
    the machine), in the seed's shape."""
    return {"expression": CHANGE_EXPRESSION, "result": CHANGE_RESULT,
            "ops": [c for c in CHANGE_EXPRESSION if c in "+-"]}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failed test, print the journal of the mesh's units that failed or restarted."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed or "host" not in item.funcargs:
        return
    host = item.funcargs["host"]
    failed = host.run("systemctl list-units --state=failed --no-legend --plain 'mesh-*' consul.service").stdout
    units = [line.split()[0] for line in failed.splitlines() if line.strip()] + ["consul.service"]
    journal = host.run("journalctl --no-pager -n 60 " + " ".join(f"-u {shlex.quote(u)}" for u in units)).stdout
    report.sections.append(("journal of " + ", ".join(units), journal))

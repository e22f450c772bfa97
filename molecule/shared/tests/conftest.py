"""Shared fixtures of the single-node mesh scenarios' testinfra tests (default, nomad).

Tests run on the controller; `host` is the Molecule node. Traffic goes only to
the node's loopback (commands run inside it) and to the node's own address on
the scenario's podman network. Every port, id, address and expression comes
from the lab model as Ansible resolves it for the scenario (meshlab.testing).
"""

import json
import os
import shlex

import pytest
import testinfra

from meshlab import SEED_EXPRESSION, SEED_RESULT
from meshlab.molecule_fixtures import inventory, management_token, model  # noqa: F401 - fixtures
from meshlab.testing import run_playbook  # noqa: F401 - for the test modules

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
    """Prometheus' API on its node (meshlab.observe.Prometheus), asked from the controller."""
    from meshlab.observe import Prometheus

    where = model["metrics"]
    return Prometheus(f"http://{model['nodes'][where['node']]['address']}:{where['port']}")


def scrape_health(prom):
    """{(job, instance): health} of Prometheus' active targets."""
    return {(t["job"], t["instance"]): t["health"] for t in prom.targets()}


@pytest.fixture(scope="session")
def seed():
    return {"expression": SEED_EXPRESSION, "result": SEED_RESULT,
            "ops": [c for c in SEED_EXPRESSION if c in "+-"]}


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

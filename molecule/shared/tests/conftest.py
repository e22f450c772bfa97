"""Shared fixtures of the mesh scenarios' testinfra tests.

Tests run on the controller; `host` is the molecule node. Traffic goes only to
the node's loopback (commands run inside it) and to the node's own address.
"""

import json
import os
import shlex
import subprocess

import pytest
import yaml

# Which scheduler runs the workloads in this scenario (molecule/<scenario>/molecule.yml verifier env).
SCHEDULER = os.environ.get("MESH_SCHEDULER", "systemd")
# Tests of what only the systemd scheduler has: unit names and the catalog's static ports.
# On Nomad (dynamic ports, allocations) their twins are in molecule/nomad/tests.
systemd_only = pytest.mark.skipif(
    SCHEDULER != "systemd",
    reason=f"systemd scheduler only (units, static catalog ports): the {SCHEDULER} scenario tests its twin",
)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CATALOG_FILE = os.path.join(ROOT, "inventory", "lab", "group_vars", "all", "catalog.yml")
SEED_EXPRESSION = "1+1+2+3+4+5+6-1-2-3-4-5-6+9+8-4-5"


def _load_catalog():
    with open(CATALOG_FILE, encoding="utf-8") as fh:
        return yaml.safe_load(fh)["mesh_catalog"]


@pytest.fixture(scope="session")
def catalog():
    """The service catalog as the inventory declares it (commands unrendered)."""
    return _load_catalog()


@pytest.fixture(scope="session")
def instances(catalog):
    """(service, instance id) pairs the systemd scheduler runs."""
    return [(svc["name"], f"{svc['name']}-{i + 1}") for svc in catalog for i in range(svc["instances"])]


@pytest.fixture(scope="session")
def inventory():
    """The Molecule inventory, for tests that run the project's playbooks against the node."""
    path = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not path:
        pytest.skip("runs under Molecule only: needs MOLECULE_INVENTORY_FILE to reach the node")
    return path


def run_playbook(inventory, playbook, *extra_vars, timeout=600):
    """ansible-playbook from the repository root (its ansible.cfg); returns (rc, whitespace-normalised output)."""
    args = ["ansible-playbook", "-i", inventory, playbook]
    for item in extra_vars:
        args += ["-e", item]
    run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return run.returncode, " ".join((run.stdout + run.stderr).split())


class Mesh:
    """Run HTTP calls inside the node with one `host.run` each (fast, loopback only)."""

    def __init__(self, host):
        self.host = host

    def consul(self, path):
        out = self.host.check_output(f"curl -sf http://127.0.0.1:8500{path}")
        return json.loads(out) if out else None

    def compute_many(self, count, expression=SEED_EXPRESSION, url="http://127.0.0.1:8080/api/v1/compute"):
        """POST `count` compute requests sequentially; return [(status, body-dict)]."""
        script = (
            "import json,sys,urllib.request,urllib.error\n"
            f"n={count}; expr={expression!r}; url={url!r}\n"
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
def mesh(host):
    return Mesh(host)


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

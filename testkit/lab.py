"""What every test suite shares: running the project's playbooks and reading the lab model as Ansible resolves it.

The Molecule verifiers (molecule/*/tests) and the unit tests (tests/) import this;
nothing here talks to a node by itself.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def ansible_env(**extra):
    """The environment ansible-playbook needs from any working directory: the repository's ansible.cfg,
    as `make` uses it (not Molecule's generated one), and no colours."""
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = os.path.join(ROOT, "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    env.update(extra)
    return env


def ansible_playbook():
    """The ansible-playbook of this Python's venv when there is one, else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    return beside if os.path.exists(beside) else shutil.which("ansible-playbook") or "ansible-playbook"


def run_playbook(inventory, playbook, *extra_vars, timeout=900, raw=False, options=()):
    """ansible-playbook `playbook` (relative to the repository) against `inventory`, each extra var as `-e`,
    `options` (e.g. ["-v"]) as they are.

    Returns (rc, output): the output whitespace-normalised to one line unless raw=True.
    """
    args = [ansible_playbook(), *options, "-i", inventory, os.path.join(ROOT, playbook)]
    for item in extra_vars:
        args += ["-e", item]
    run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=ansible_env())
    output = ANSI.sub("", run.stdout + run.stderr)
    return run.returncode, output if raw else " ".join(output.split())


def resolved_model(inventory, *extra_vars):
    """The lab model (meshlab.model.build) exactly as the playbooks resolve it for `inventory`.

    Runs playbooks/model.yml, which templates the inventory's catalog and node
    addresses and writes the model as JSON; extra vars (e.g. "@catalog.yml") apply.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.json")
        rc, output = run_playbook(inventory, "playbooks/model.yml", f"mesh_model_output={out}", *extra_vars, timeout=300)
        if rc != 0:
            raise RuntimeError(f"playbooks/model.yml failed for {inventory}: {output[-3000:]}")
        with open(out, encoding="utf-8") as fh:
            return json.load(fh)


def rebuilt_model(model, catalog):
    """The model of another catalog on the same nodes and settings as `model`, built in Python
    (meshlab.model.build): what resolved_model gives for that catalog, without a playbook run."""
    from meshlab.model import build

    nodes = [{"name": name, "address": node["address"]} for name, node in model["nodes"].items()]
    return build(catalog, nodes, model["settings"])


def wait_until(predicate, timeout, what, interval=0.5):
    """Call `predicate` until it returns something true or `timeout` seconds pass; return its last value.
    Prints how long `what` took (or that it did not happen), so that a run's log shows every wait."""
    start = time.monotonic()
    while True:
        value = predicate()
        waited = time.monotonic() - start
        if value:
            print(f"waited {waited:.1f} s: {what}")
            return value
        if waited > timeout:
            print(f"gave up after {waited:.1f} s: {what}")
            return value
        time.sleep(interval)


def recap(output):
    """{host: {ok, changed, unreachable, failed, ...}} of every PLAY RECAP line in a raw ansible-playbook output."""
    totals = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[1] == ":" and all("=" in p for p in parts[2:]):
            counts = totals.setdefault(parts[0], {})
            for item in parts[2:]:
                key, _, value = item.partition("=")
                counts[key] = counts.get(key, 0) + int(value)
    return totals


# --- bounded load: testkit/load.py (scripts/lab's chaos probes use it too) ------------------

from .load import BoundedLoad, NodeLoad, load_summary  # noqa: E402,F401 - the test suites import them from here


# --- TLS probe ----------------------------------------------------------------------

# Run inside a node (python3 -c TLS_PROBE HOST PORT CONSUL_API TOKEN): TLS handshakes with a sidecar's public
# listener with no client certificate, with one from a CA of its own, and with a mesh certificate for
# `frontend` from the local agent (the control; the token may ask for it); prints one JSON object with
# the three outcomes.
TLS_PROBE = r'''
import json, socket, ssl, subprocess, sys, tempfile, urllib.request
host, port, api, token, tmp = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], tempfile.mkdtemp()
def write(name, text):
    with open(f"{tmp}/{name}", "w") as fh: fh.write(text)
    return f"{tmp}/{name}"
def attempt(cert=None, key=None, cafile=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED if cafile else ssl.CERT_NONE
    if cafile: ctx.load_verify_locations(cafile)
    if cert: ctx.load_cert_chain(cert, key)
    try:
        raw = socket.create_connection((host, port), timeout=5)
    except OSError as exc:
        return {"tcp": False, "error": repr(exc)}
    try:
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := tls.recv(4096): data += chunk
        return {"tcp": True, "tls": True, "http": data.split(b"\r\n", 1)[0].decode()}
    except ssl.SSLError as exc:
        return {"tcp": True, "tls": False, "ssl_error": exc.reason or str(exc)}
    except OSError as exc:
        return {"tcp": True, "tls": None, "error": repr(exc)}
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{tmp}/foreign.key", "-out", f"{tmp}/foreign.pem", "-days", "1", "-subj", "/CN=intruder"],
               check=True, capture_output=True)
def get(path):
    return json.load(urllib.request.urlopen(urllib.request.Request(f"{api}{path}", headers={"X-Consul-Token": token})))
leaf = get("/v1/agent/connect/ca/leaf/frontend")
roots = get("/v1/agent/connect/ca/roots")
print(json.dumps({
    "no_cert": attempt(),
    "foreign_ca": attempt(f"{tmp}/foreign.pem", f"{tmp}/foreign.key"),
    "mesh_cert": attempt(write("leaf.pem", leaf["CertPEM"]), write("leaf.key", leaf["PrivateKeyPEM"]),
                         write("roots.pem", "".join(r["RootCert"] for r in roots["Roots"]))),
}))
'''


# --- Molecule and DNS helpers ------------------------------------------------------

def secrets_dir(inventory):
    """The lab's secrets directory for an inventory file or directory (mesh_secrets_dir's default)."""
    base = inventory if os.path.isdir(inventory) else os.path.dirname(inventory)
    return os.path.join(base, ".secrets")


def printed_secrets(sdir, outputs):
    """(names of the lab's secrets under `sdir`, those of them whose value appears in any of `outputs`): every
    secret file's value, a private key's base64 body (not its other PEM files: certificates are public)."""
    from meshlab import secrets

    values = {}
    for root, _, files in os.walk(sdir):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith("-key.pem"):
                with open(path, encoding="utf-8") as fh:
                    values[os.path.relpath(path, sdir)] = "".join(fh.read().split("\n")[1:-2])
            elif not name.endswith(".pem") and os.sep + "backups" not in path:
                values[os.path.relpath(path, sdir)] = secrets.read(root, name)
    return sorted(values), sorted(name for name, value in values.items() if any(value in out for out in outputs))


def molecule_inventory():
    """The Molecule scenario's inventory; skips the test when it does not run under Molecule."""
    path = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not path:
        import pytest

        pytest.skip("runs under Molecule only: needs MOLECULE_INVENTORY_FILE to reach the nodes")
    return path


def srv_records(dig_output):
    """[(address, port)] of an SRV answer from `dig +noall +answer +additional`, targets resolved
    through the additional A records (sorted)."""
    targets, addresses = [], {}
    for line in dig_output.splitlines():
        fields = line.split()
        if len(fields) >= 8 and fields[3] == "SRV":
            targets.append((fields[7], int(fields[6])))
        elif len(fields) >= 5 and fields[3] == "A":
            addresses[fields[0]] = fields[4]
    return sorted((addresses.get(t, t), port) for t, port in targets)


def dig_srv(run, dns_port, name):
    """SRV records of `name` asked of the local agent's DNS; `run(command)` runs a command on the node."""
    return srv_records(run(f"dig +noall +answer +additional @127.0.0.1 -p {dns_port} {name} SRV"))

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


# --- bounded load -----------------------------------------------------------------

class BoundedLoad:
    """Requests at a fixed rate for a fixed time, every outcome recorded with its timestamp.

    POSTs `body` (JSON) to `url` `rate` times a second for `seconds` seconds from a
    thread pool, whatever the answers' latency; `start()` returns at once, `join()`
    waits and returns the records. Each record: t (seconds since the start, when the
    request was sent), status (0: no HTTP answer), latency_ms, body (parsed JSON or
    None), error. Only for addresses on this machine (loopback, the test's own nodes).
    """

    def __init__(self, url, body, rate, seconds, timeout=5.0):
        import concurrent.futures
        import threading

        self.url, self.body, self.rate, self.seconds, self.timeout = url, body, rate, seconds, timeout
        self.records = []
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(8, int(rate * (timeout + 1))))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = None

    def _one(self, sent):
        import time
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.url, data=json.dumps(self.body).encode(),
                                     headers={"Content-Type": "application/json"})
        begin = time.monotonic()
        record = {"t": round(sent, 3), "status": 0, "body": None, "error": ""}
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                record["status"], record["body"] = resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            record["status"] = exc.code
            try:
                record["body"] = json.load(exc)
            except ValueError:
                pass
        except Exception as exc:  # noqa: BLE001 - every failure is an outcome to record
            record["error"] = repr(exc)
        record["latency_ms"] = round((time.monotonic() - begin) * 1000, 1)
        with self._lock:
            self.records.append(record)

    def _run(self):
        import time

        total = int(self.rate * self.seconds)
        for n in range(total):
            due = self.started + n / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._pool.submit(self._one, due - self.started)
        self._pool.shutdown(wait=True)

    def start(self):
        import time

        self.started = time.monotonic()
        self._thread.start()
        return self

    def elapsed(self):
        import time

        return time.monotonic() - self.started

    def join(self):
        self._thread.join()
        return sorted(self.records, key=lambda r: r["t"])


def load_summary(records, ok=lambda r: r["status"] == 200):
    """Counts and latency percentiles of a list of load records."""
    lat = sorted(r["latency_ms"] for r in records)

    def pct(p):
        return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] if lat else None

    failed = [r for r in records if not ok(r)]
    return {"requests": len(records), "ok": len(records) - len(failed), "failed": len(failed),
            "p50_ms": pct(50), "p99_ms": pct(99),
            "first_failure_s": failed[0]["t"] if failed else None, "last_failure_s": failed[-1]["t"] if failed else None}


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

"""The lab's command line (scripts/lab, the Makefile's lab targets): talk to a running lab from the controller.

Two kinds of lab. The Vagrant lab (`make up`; the default when its inventory exists): its facts come from what
vagrant/lab.rb records in
$VAGRANT_DOTFILE_PATH/hello-servicemesh.json (default .vagrant/; its shape:
meshlab/labstate.py): provider, profile, nodes, servers and the host ports
forwarded from mesh-1. Each guest port is reached at 127.0.0.1:<forwarded port>
and, when that does not answer, directly at mesh-1's address (the VM's private IP
or the container's IP). Any other inventory (`--inventory`, the Makefile's INVENTORY=..., e.g. a Molecule
scenario's or your own hosts): its facts come from the lab model as Ansible resolves it for that inventory
(testkit.lab.resolved_model): the edge node's address and port, the first Consul server's HTTPS port,
Prometheus' node, the secrets beside the inventory.

  scripts/lab urls      the URLs to open and the profile in use
  scripts/lab status    machines, Consul members, services, instances, health (exit 1 if unhealthy)
  scripts/lab click     the seed's request: prints `result: N` and which instances answered
                        (exit 1 unless the result is 9)
  scripts/lab chaos kill|slow|errors|heal [--service S] [--ms N] [--rate R]
                        break one instance (playbooks/chaos.yml) between two bounded probe loads
                        and print both: success rate, p50/p99, which instances answered
  scripts/lab overload [--steps 20,60,120,200] [--seconds 10]
                        a step load through the edge from the edge node's loopback (the rate limit exempts it):
                        per step offered, admitted, succeeded, shed at the edge (503), failed inside, p50/p99
  scripts/lab trace [--id ID]
                        one compute through the edge (or the trace ID), printed as a tree from Zipkin: service,
                        instance, span, start offset, duration, status; and its address in Zipkin's UI
  scripts/lab dashboard the mesh dashboard's address (Prometheus' console), opened in a browser if there is a screen
  scripts/lab screenshots
                        pictures for the README (docs/img/): the dashboard during a bounded load with one add-svc
                        instance killed in the middle, and the Consul UI's services (headless Chromium)
Runs with the project's venv Python (make puts it first on PATH): it imports the lab model.
`overload` runs its load on the edge node: `docker exec` (docker provider), `vagrant ssh`, or `podman exec` for a
node that is a podman container (Molecule).
"""

import argparse
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

from meshlab import SEED_EXPRESSION, SEED_RESULT, acl, labstate, metrics, secrets
from testkit.lab import resolved_model, secrets_dir
from testkit.load import BoundedLoad, NodeLoad, is_shed, load_summary, overload_summary, overload_table
from testkit.observe import DASHBOARD_PATH, Prometheus, Zipkin, sampled_traceparent, trace_tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOTFILE = os.path.join(ROOT, os.environ.get("VAGRANT_DOTFILE_PATH") or ".vagrant")
STATE_FILE = os.path.join(DOTFILE, "hello-servicemesh.json")
# The inventory Vagrant generates, and the lab's secrets beside it (mesh_secrets_dir): the CA and the management token.
VAGRANT_INVENTORY = os.path.join(DOTFILE, "provisioners", "ansible", "inventory")
# The edge's stats page (HAProxy), on the edge node's address (group_vars edge.yml).
with open(os.path.join(ROOT, "inventory", "lab", "group_vars", "all", "edge.yml"), encoding="utf-8") as _fh:
    EDGE_STATS_PORT = int(re.search(r"^mesh_edge_stats_port: (\d+)", _fh.read(), re.M).group(1))
BOLD, GREEN, RED, YELLOW, RESET = ("\033[1m", "\033[32m", "\033[31m", "\033[33m", "\033[0m") \
    if sys.stdout.isatty() else ("",) * 5


class LabError(Exception):
    pass


def load_state():
    try:
        return labstate.load(STATE_FILE)
    except FileNotFoundError:
        raise LabError(f"no lab here ({STATE_FILE} is missing): start one with `make up`") from None
    except ValueError as exc:
        raise LabError(f"{exc}: `make down && make up` makes a new lab") from None


def _answers(host, port, timeout=1.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _container_ip(name):
    """The container's address on its first network (docker provider), or None."""
    env = dict(os.environ)
    if not env.get("DOCKER_HOST"):
        out = subprocess.run([os.path.join(ROOT, "scripts", "podman-docker-socket"), "--quiet"],
                             capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("export DOCKER_HOST="):
                env["DOCKER_HOST"] = line.split("=", 1)[1]
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    res = subprocess.run(["docker", "inspect", "-f", fmt, name], capture_output=True, text=True, env=env, check=False)
    ips = res.stdout.split() if res.returncode == 0 else []
    return ips[0] if ips else None


class Lab:
    """The Vagrant lab, from its state file and forwarded ports."""

    vagrant = True

    def __init__(self, state):
        self.state = state
        self.inventory = VAGRANT_INVENTORY
        self.secrets = secrets_dir(VAGRANT_INVENTORY)
        self._endpoints = {}

    def node_command(self):
        """How to run `python3 -` (stdin: a script) on mesh-1, the edge's node."""
        containers = self.state.get("containers") or []
        if containers:
            return ["docker", "exec", "-i", containers[0], "python3", "-"]
        return ["vagrant", "ssh", "mesh-1", "--", "sudo", "python3", "-"]

    def guest_port(self, key):
        return self.state["guest_ports"][key]

    @property
    def profile(self):
        return self.state.get("profile", "?")

    def forwarded_port(self, key):
        return (self.state.get("forwarded") or {}).get(key) or (self.state.get("host_ports") or {}).get(key)

    def node_address(self):
        if self.state.get("ips"):
            return self.state["ips"][0]
        if self.state.get("containers"):
            return _container_ip(self.state["containers"][0])
        return None

    def endpoint(self, key):
        """host:port where mesh-1's guest port `key` (consul_ui, nomad_ui, frontend) answers."""
        if key in self._endpoints:
            return self._endpoints[key]
        guest = self.state["guest_ports"][key]
        tried = []
        port = self.forwarded_port(key)
        if port:
            tried.append(f"127.0.0.1:{port}")
            if _answers("127.0.0.1", port):
                return self._endpoints.setdefault(key, f"127.0.0.1:{port}")
        addr = self.node_address()
        if addr:
            tried.append(f"{addr}:{guest}")
            if _answers(addr, guest):
                return self._endpoints.setdefault(key, f"{addr}:{guest}")
        raise LabError(f"nothing answers for {key} (tried {', '.join(tried) or 'no address'}): "
                       "is the lab up (`make status`), and were the workloads started (`make start-workloads`)?")

    def get_json(self, key, path, timeout=5):
        return get_json(self, key, path, timeout)


def get_json(lab, key, path, timeout=5):
    """GET from the lab: Consul over HTTPS (the lab's CA, the management token), the rest over HTTP."""
    if key != "consul_ui":
        with urllib.request.urlopen(f"http://{lab.endpoint(key)}{path}", timeout=timeout) as resp:
            return json.load(resp)
    try:
        token = secrets.read(lab.secrets, acl.secret_name("management"))
    except FileNotFoundError:
        raise LabError(f"no management token in {lab.secrets}: was the lab provisioned?") from None
    ctx = ssl.create_default_context(cafile=os.path.join(lab.secrets, "tls", "ca.pem"))
    req = urllib.request.Request(f"https://{lab.endpoint(key)}{path}", headers={"X-Consul-Token": token})
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
        return json.load(resp)


class InventoryLab:
    """A lab that any inventory describes: every address and port from its lab model."""

    vagrant = False

    def __init__(self, inventory):
        self.inventory = inventory
        self.secrets = secrets_dir(inventory)
        try:
            self.model = resolved_model(inventory)
        except RuntimeError as exc:
            raise LabError(f"cannot resolve the lab model of {inventory}: {str(exc)[-500:]}") from None
        self.state = {"provider": f"inventory {inventory}", "nodes": list(self.model["nodes"])}
        self.profile = "?"

    def _address(self, node):
        return self.model["nodes"][node]["address"]

    def guest_port(self, key):
        settings = self.model["settings"]
        return {"frontend": self.model["edge"]["port"], "consul_ui": settings["consul_ports"].get("https", 8501),
                "prometheus": (self.model.get("metrics") or {}).get("port"), "nomad_ui": 4646,
                "zipkin": (self.model.get("tracing") or {}).get("port")}[key]

    def endpoint(self, key):
        """host:port of `key` (frontend: the edge; consul_ui: the first Consul server's HTTPS; prometheus)."""
        if key == "frontend":
            if not self.model["edge"]["nodes"]:
                raise LabError("this inventory runs no edge (mesh_edge_nodes is empty)")
            node = self.model["edge"]["nodes"][0]
        elif key == "prometheus":
            node = (self.model.get("metrics") or {}).get("node")
            if not node:
                raise LabError("this inventory runs no Prometheus (mesh_metrics_enabled is false)")
        elif key == "zipkin":
            node = (self.model.get("tracing") or {}).get("node")
            if not node:
                raise LabError("this inventory runs no Zipkin (mesh_tracing_enabled is false, or its jar was not found)")
        else:
            node = (self.model["settings"]["groups"].get("consul_servers") or list(self.model["nodes"]))[0]
        return f"{self._address(node)}:{self.guest_port(key)}"

    def node_address(self):
        return self._address(self.model["edge"]["nodes"][0]) if self.model["edge"]["nodes"] else None

    def node_command(self):
        node = self.model["edge"]["nodes"][0]
        if subprocess.run(["podman", "container", "exists", node], capture_output=True, check=False).returncode == 0:
            return ["podman", "exec", "-i", node, "python3", "-"]
        raise LabError(f"overload runs its load on the edge node: {node} is no podman container here "
                       "(on your own hosts, run testkit/load.py's NodeLoad over ssh)")

    def get_json(self, key, path, timeout=5):
        return get_json(self, key, path, timeout)


def cmd_urls(lab, _args):
    if not lab.vagrant:
        print(f"{BOLD}Lab{RESET}: {lab.state['provider']}, nodes: {', '.join(lab.state['nodes'])}")
        for key, what in (("frontend", "Edge (POST /api/v1/compute; `make click`)"),
                          ("consul_ui", "Consul UI (https, /ui/)"),
                          ("prometheus", f"Prometheus (dashboard: {DASHBOARD_PATH})"),
                          ("zipkin", "Zipkin (traces: /zipkin/; `make trace`)")):
            try:
                print(f"  {what:<40} {lab.endpoint(key)}")
            except LabError as exc:
                print(f"  {what:<40} {exc}")
        print(f"  secrets (CA, management token)           {lab.secrets}")
        return 0
    st = lab.state
    servers = set(st.get("servers", []))
    nodes = ", ".join(f"{n}{' (Consul server)' if n in servers else ''}" for n in st.get("nodes", []))
    print(f"{BOLD}Lab{RESET}: provider {st.get('provider')}, profile {BOLD}{lab.profile}{RESET}, nodes: {nodes}")
    if lab.profile == "offline":
        print("  offline profile: Consul 1.8.7 from Debian's archive, systemd scheduler, no Nomad")
    else:
        print("  full profile: HashiCorp's current Consul and Nomad, nomad scheduler")
    ports = {k: lab.forwarded_port(k) for k in labstate.PORT_KEYS}
    print(f"{BOLD}URLs{RESET} (forwarded from mesh-1 to this host):")
    print(f"  Consul UI   https://127.0.0.1:{ports['consul_ui']}/ui/   (ACLs: log in with the token below)")
    print(f"    CA certificate (trust it, or accept the warning): {os.path.join(lab.secrets, 'tls', 'ca.pem')}")
    print(f"    management token: the file {os.path.join(lab.secrets, 'consul', 'management')}")
    if lab.profile == "offline":
        print(f"  Nomad UI    http://127.0.0.1:{ports['nomad_ui']}/ui/   (nothing there: no Nomad in the offline profile)")
    else:
        print(f"  Nomad UI    http://127.0.0.1:{ports['nomad_ui']}/ui/")
    print(f"  Edge        http://127.0.0.1:{ports['frontend']}/api/v1/compute   (HAProxy in front of the frontend; POST; "
          "`make click` sends the sample)")
    print(f"    curl -s -H 'Content-Type: application/json' -d '{{\"expression\":\"{SEED_EXPRESSION}\"}}' "
          f"http://127.0.0.1:{ports['frontend']}/api/v1/compute")
    stats_host = lab.node_address()
    if stats_host:
        print(f"  Edge stats  http://{stats_host}:{EDGE_STATS_PORT}/   (HAProxy's servers, UP/DOWN; Prometheus: /metrics)")
    print(f"  Dashboard   http://127.0.0.1:{ports['prometheus']}{DASHBOARD_PATH}   (the mesh, live: `make dashboard`)")
    print(f"  Prometheus  http://127.0.0.1:{ports['prometheus']}/graph   (every part of the lab, found in Consul)")
    if ports.get("zipkin"):
        print(f"  Zipkin      http://127.0.0.1:{ports['zipkin']}/zipkin/   (one request's path through the mesh: `make trace`)")
    if st.get("ips"):
        print(f"  Nodes       {', '.join(f'{n} {ip}' for n, ip in zip(st['nodes'], st['ips']))} (private network)")
    print("Next: make click | make status | vagrant ssh mesh-1 | make down")
    return 0


def _machines():
    """[(name, state)] from `vagrant status`, or [] if Vagrant cannot tell."""
    res = subprocess.run(["vagrant", "status", "--machine-readable"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    out = []
    for line in res.stdout.splitlines():
        parts = line.split(",")
        if len(parts) >= 4 and parts[2] == "state":
            out.append((parts[1], parts[3]))
    return out


def _health(entry):
    states = [c["Status"] for c in entry.get("Checks", [])]
    for worst in ("critical", "warning"):
        if worst in states:
            return worst
    return "passing" if states else "no checks"


def cmd_status(lab, _args):
    ok = True
    print(f"{BOLD}Lab{RESET}: provider {lab.state.get('provider')}, profile {lab.profile}")
    if lab.vagrant:
        print(f"{BOLD}Machines{RESET} (vagrant status):")
        machines = _machines()
        for name, state in machines or [("?", "vagrant status failed")]:
            print(f"  {name:<10} {state}")
            ok &= state == "running"
    consul = lab.endpoint("consul_ui")
    leader = lab.get_json("consul_ui", "/v1/status/leader")
    members = lab.get_json("consul_ui", "/v1/agent/members")
    print(f"{BOLD}Consul{RESET} (https://{consul}): leader {leader or 'NONE'}")
    ok &= bool(leader)
    for m in sorted(members, key=lambda m: m["Name"]):
        alive = m.get("Status") == 1
        ok &= alive
        role = "server" if m.get("Tags", {}).get("role") == "consul" else "client"
        print(f"  {m['Name']:<10} {m['Addr']:<15} {role:<7} {'alive' if alive else RED + 'not alive' + RESET}")
    services = sorted(s for s in lab.get_json("consul_ui", "/v1/catalog/services") if s != "consul")
    print(f"{BOLD}Services{RESET}:")
    print(f"  {'SERVICE':<24} {'INSTANCE':<28} {'NODE':<8} {'ADDRESS':<21} HEALTH")
    if not services:
        print("  (none registered: `make start-workloads` deploys them)")
        ok = False
    for name in services:
        for entry in lab.get_json("consul_ui", f"/v1/health/service/{name}"):
            svc = entry["Service"]
            health = _health(entry)
            ok &= health == "passing"
            colour = GREEN if health == "passing" else RED
            addr = f"{svc.get('Address') or entry['Node']['Address']}:{svc['Port']}"
            print(f"  {name:<24} {svc['ID']:<28} {entry['Node']['Node']:<8} {addr:<21} {colour}{health}{RESET}")
    if lab.profile == "full":
        try:
            jobs = lab.get_json("nomad_ui", "/v1/jobs")
            print(f"{BOLD}Nomad jobs{RESET}:")
            for job in sorted(jobs, key=lambda j: j["Name"]):
                print(f"  {job['Name']:<24} {job['Status']}")
                ok &= job["Status"] == "running"
        except (LabError, OSError, ValueError) as exc:
            print(f"{BOLD}Nomad{RESET}: {RED}unreachable{RESET} ({exc})")
            ok = False
    print(f"{GREEN}all healthy{RESET}" if ok else f"{RED}not everything is healthy{RESET}")
    return 0 if ok else 1


def _compute(lab, expression, headers=None, show=""):
    """One compute through the edge, printed as `POST <url> <body><show>`: (status, response headers, JSON answer)."""
    url = f"http://{lab.endpoint('frontend')}/api/v1/compute"
    if show is not None:
        print(f"POST {url} {{\"expression\": \"{expression}\"}}{show}")
    req = urllib.request.Request(url, data=json.dumps({"expression": expression}).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.load(exc)


def cmd_click(lab, args):
    status, _, answer = _compute(lab, args.expression)
    if status != 200:
        print(f"{RED}HTTP {status}{RESET}: {json.dumps(answer)}")
        return 1
    counts = Counter(call["instance"] for call in answer.get("calls", []))
    result = answer.get("result")
    good = result == args.expect
    print(f"result: {result}" + ("" if good else f"   {RED}(expected {args.expect}){RESET}"))
    print("answered: " + ", ".join(f"{iid} ({n} call{'s' if n != 1 else ''})" for iid, n in sorted(counts.items())))
    return 0 if good else 1


def cmd_trace(lab, args):
    """One compute through the edge (or the trace args.id) as a tree of its spans in Zipkin."""
    zipkin = Zipkin(f"http://{lab.endpoint('zipkin')}")
    trace_id = args.id
    if not trace_id:
        # A sampled trace context: traced whatever the lab's sampling ratio (mesh_tracing_sample_ratio).
        _, traceparent = sampled_traceparent()
        status, headers, answer = _compute(lab, args.expression, traceparent,
                                           f" traceparent: {traceparent['traceparent']}")
        trace_id = headers.get("X-Trace-Id") or answer.get("trace_id")
        print(f"HTTP {status}, result {answer.get('result')}, {len(answer.get('calls', []))} calls, trace {trace_id}")
        if not trace_id:
            print(f"{RED}no trace id in the answer{RESET}: the frontend runs untraced (mesh_tracing_enabled false, or "
                  "the Zipkin jar was not found: see the Facts play's output of `make start-workloads`)")
            return 1
    spans = zipkin.wait_trace(trace_id, spans=1, timeout=args.timeout)
    if not spans:
        print(f"{RED}Zipkin has no span of trace {trace_id}{RESET} after {args.timeout:.0f} s "
              "(sampled out, or the spans were dropped: the apps' tracing_spans_dropped_total)")
        return 1
    services = sorted({(s.get("localEndpoint") or {}).get("serviceName", "?") for s in spans})
    print(f"{len(spans)} spans from {', '.join(services)}:")
    for line in trace_tree(spans):
        print("  " + line)
    print(f"Zipkin UI: {zipkin.ui_url(trace_id)}")
    return 0


def _probe(lab, label, seconds=5, rate=10, meanwhile=None):
    """A bounded load (rate/s for seconds) on the frontend, `meanwhile()` run while it goes; prints and
    returns its summary."""
    url = f"http://{lab.endpoint('frontend')}/api/v1/compute"
    load = BoundedLoad(url, {"expression": SEED_EXPRESSION}, rate, seconds).start()
    if meanwhile:
        meanwhile()
    records = load.join()
    ok = lambda r: r["status"] == 200 and (r["body"] or {}).get("result") == SEED_RESULT  # noqa: E731
    summary = load_summary(records, ok)
    calls = Counter(c["instance"] for r in records if r["body"] for c in r["body"].get("calls", []))
    statuses = Counter(r["status"] or "no answer" for r in records if not ok(r))
    rate_ok = 100.0 * summary["ok"] / max(1, summary["requests"])
    colour = GREEN if summary["failed"] == 0 else RED
    print(f"{BOLD}{label}{RESET}: {rate}/s for {seconds} s to {url}: {colour}{summary['ok']}/{summary['requests']} ok "
          f"({rate_ok:.1f}%){RESET}, p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms"
          + (f", failures {dict(statuses)}" if statuses else ""))
    print("  answered: " + ", ".join(f"{iid} {n}" for iid, n in sorted(calls.items())))
    return summary


def cmd_hammer(lab, args):
    """A bounded burst through the edge: counts per status and per version, per second, so the 429s show."""
    url = f"http://{lab.endpoint('frontend')}/api/v1/compute"
    print(f"{BOLD}hammer{RESET}: {args.rate}/s for {args.seconds} s to {url} (the edge limits each client address)")
    records = BoundedLoad(url, {"expression": SEED_EXPRESSION}, args.rate, args.seconds, timeout=5).start().join()
    for second in range(args.seconds):
        window = [r for r in records if second <= r["t"] < second + 1]
        statuses = Counter(r["status"] or "no answer" for r in window)
        print(f"  {second}-{second + 1} s: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str)))
    statuses = Counter(r["status"] or "no answer" for r in records)
    versions = Counter((r["body"] or {}).get("version") for r in records if r["status"] == 200)
    limited = next((r for r in records if r["status"] == 429), None)
    print(f"{BOLD}total{RESET}: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str))
          + "; 200s per version: " + ", ".join(f"{k}: {v}" for k, v in sorted(versions.items(), key=str)))
    if limited:
        print(f"a 429: Retry-After {limited['headers'].get('retry-after')}, {json.dumps(limited['body'])}")
    return 0


def cmd_overload(lab, args):
    """A step load through the edge, from mesh-1's loopback (the edge's rate limit exempts 127.0.0.1, so what stops
    the excess is the edge's admission control): a table of what each step offered, what the edge admitted and shed,
    and what the mesh served."""
    url = f"http://127.0.0.1:{lab.guest_port('frontend')}/api/v1/compute"
    command = lab.node_command()
    body = {"expression": SEED_EXPRESSION}
    ok = lambda r: r["status"] == 200 and (r["body"] or {}).get("result") == SEED_RESULT  # noqa: E731
    print(f"{BOLD}overload{RESET}: {', '.join(map(str, args.steps))} computes/s for {args.seconds} s each, "
          f"to {url} on the edge's node (loopback: no rate limit)")
    steps = []
    for rate in args.steps:
        records = NodeLoad(None, url, body, rate, args.seconds, timeout=5, command=command).start().join()
        steps.append(overload_summary(rate, args.seconds, records, ok))
        s = steps[-1]
        print(f"  {rate}/s: {s['succeeded']}/{s['offered']} ok, shed {s['shed']}, failed inside {s['failed_inside']}, "
              f"p99 {s['p99_ms']} ms")
    print("\n".join(overload_table(steps)))
    return 0 if all(s["failed_inside"] == 0 for s in steps) else 1


def _workloads(lab, extra):
    """workloads.yml on the lab with `extra` vars, its output on the terminal (a run takes a minute or more)."""
    argv = ["ansible-playbook", "-i", lab.inventory, os.path.join(ROOT, "playbooks", "workloads.yml")]
    if extra:
        argv += ["-e", json.dumps(extra)]
    return subprocess.run(argv, cwd=ROOT, check=False).returncode


def _while(lab, label, action, rate=10):
    """`action()` under a probe load through the edge (rate/s for as long as it runs): what users saw meanwhile.
    Prints the summary and the instances that answered; returns (action's result, summary)."""
    url = f"http://{lab.endpoint('frontend')}/api/v1/compute"
    load = BoundedLoad(url, {"expression": SEED_EXPRESSION}, rate, 3600).start()
    result = action()
    records = load.stop().join()
    ok = lambda r: r["status"] == 200 and (r["body"] or {}).get("result") == SEED_RESULT  # noqa: E731
    summary = load_summary(records, ok)
    shed = sum(1 for r in records if is_shed(r))
    statuses = Counter(r["status"] or "no answer" for r in records if not ok(r) and not is_shed(r))
    retried = sum(c["attempts"] - 1 for r in records if r["body"] for c in r["body"].get("calls", []))
    calls = Counter(c["instance"] for r in records if r["body"] for c in r["body"].get("calls", []))
    colour = GREEN if summary["failed"] == 0 else RED
    print(f"{BOLD}{label}{RESET}: {rate}/s to {url} for {load.elapsed():.0f} s: {colour}{summary['ok']}/{summary['requests']} "
          f"ok{RESET}, shed by the edge {shed}, failed inside {sum(statuses.values())}, retried upstream attempts "
          f"{retried}, p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms" + (f", failures {dict(statuses)}" if statuses else ""))
    print("  answered: " + ", ".join(f"{iid} {n}" for iid, n in sorted(calls.items())))
    return result, summary


def cmd_scale(lab, args):
    """workloads.yml with mesh_scale {service: count} (until the next run without it) under a probe load."""
    _probe(lab, "before")
    print(f"{BOLD}scale{RESET}: {args.service} to {args.count} instances (playbooks/workloads.yml -e mesh_scale; "
          "removed instances are drained first; the next run without mesh_scale goes back to the catalog's count)")
    rc, _ = _while(lab, "during", lambda: _workloads(lab, {"mesh_scale": {args.service: args.count}}))
    return rc


def cmd_ship(lab, _args):
    """workloads.yml (new code or settings: a rolling update of the instances whose units changed) under a probe load."""
    _probe(lab, "before")
    print(f"{BOLD}ship{RESET}: playbooks/workloads.yml: instances whose code or settings changed are drained and restarted "
          "one batch at a time (max_parallel)")
    rc, _ = _while(lab, "during", lambda: _workloads(lab, {}))
    return rc


def cmd_split(lab, args):
    """Which version answers: `count` requests to the edge (at 20/s, under the rate limit), with a header if asked."""
    url = f"http://{lab.endpoint('frontend')}/health"
    headers = dict([args.header.split(":", 1)]) if args.header else {}
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    records = BoundedLoad(url, None, 20, max(1, args.count // 20), headers=headers).start().join()
    versions = Counter(r["headers"].get("x-version") if r["status"] == 200 else r["status"] for r in records)
    print(f"{len(records)} requests to {url}{' with ' + args.header if args.header else ''}: "
          + ", ".join(f"{k}: {v} ({100.0 * v / len(records):.0f}%)" for k, v in sorted(versions.items(), key=str)))
    return 0


def cmd_chaos(lab, args):
    extra = {"chaos_action": args.action, "chaos_service": args.service, "chaos_ms": args.ms, "chaos_rate": args.rate}
    what = {"kill": f"kill -9 the first {args.service} instance (systemd restarts it after 1 s)",
            "slow": f"+{args.ms} ms on every answer of the first {args.service} instance",
            "errors": f"{args.rate:.0%} of the first {args.service} instance's answers become HTTP 500",
            "heal": "every instance back to no faults"}[args.action]
    def act():
        _chaos_playbook(lab, extra)

    _probe(lab, "before")
    print(f"{BOLD}chaos{RESET}: {what} (playbooks/chaos.yml)")
    if args.action == "kill":
        # The instance is back within seconds: the probe runs while the playbook kills it.
        _probe(lab, "during (the kill falls inside)", seconds=15, meanwhile=act)
    else:
        act()
        _probe(lab, "after")
    if args.action != "heal":
        print("Watch more with `make click`; undo with `make chaos-heal`.")
    return 0


def cmd_dashboard(lab, _args):
    """Print the dashboard's address and Prometheus' targets against what Consul's catalog lists for its jobs
    (meshlab/metrics.py), waiting up to 30 s for every one to be found and up (discovery follows the catalog within
    seconds); exit 1 if some stay missing or down. Open the dashboard where there is a screen."""
    prom = Prometheus(f"http://{lab.endpoint('prometheus')}")
    url = f"{prom.url}{DASHBOARD_PATH}"
    deadline = time.monotonic() + 30
    while True:
        targets = prom.targets()
        catalog = {name: lab.get_json("consul_ui", f"/v1/catalog/service/{name}")
                   for name in lab.get_json("consul_ui", "/v1/catalog/services")}
        expected = metrics.catalog_targets(catalog)
        found = {(t["job"], t["instance"]) for t in targets}
        missing = [f"{job}/{instance}" for job, instance in expected if (job, instance) not in found]
        down = [f"{t['job']}/{t['instance']}" for t in targets if t["health"] != "up"]
        good = bool(targets) and not down and not missing
        if good or time.monotonic() > deadline:
            break
        time.sleep(2)
    print(f"{BOLD}dashboard{RESET}: {url}")
    print(f"  {GREEN if good else RED}{len(targets) - len(down)} of {len(targets)} targets up, "
          f"{len(expected)} expected from Consul's catalog{RESET}"
          + (f"; down: {', '.join(down)}" if down else "")
          + (f"; not found by Prometheus: {', '.join(missing)}" if missing else "")
          + "   (`make screenshots` takes its picture)")
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        subprocess.run(["xdg-open", url], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return 0 if good else 1


def cmd_screenshots(lab, args):
    """The README's pictures: the dashboard during a bounded load through the edge with one add-svc instance killed
    half-way (its line drops, the other takes the calls), the Consul UI's services page, and Zipkin's UI with a
    compute's trace, healthy and with one add-svc instance slow."""
    from playwright.sync_api import sync_playwright

    from testkit.observe import browser, consul_services, dashboard, screenshot

    os.makedirs(args.out, exist_ok=True)
    prom = f"http://{lab.endpoint('prometheus')}"
    url = f"http://{lab.endpoint('frontend')}/api/v1/compute"
    seconds = args.seconds
    print(f"{BOLD}screenshots{RESET}: {args.rate}/s for {seconds} s through the edge ({url}); add-svc's first instance "
          f"killed after {seconds // 3} s (playbooks/chaos.yml); the dashboard is shot at the end")
    load = BoundedLoad(url, {"expression": SEED_EXPRESSION}, args.rate, seconds).start()
    time.sleep(seconds // 3)
    _chaos_playbook(lab, {"chaos_action": "kill", "chaos_service": "add-svc", "chaos_ms": 0, "chaos_rate": 0})
    time.sleep(max(0, seconds - load.elapsed() - 2))
    with sync_playwright() as pw:
        chromium = browser(pw)
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        panels = dashboard(page, prom, window_s=seconds + 60)
        path = screenshot(page, os.path.join(args.out, "dashboard.png"))
        empty = [p["panel"] for p in panels if not p["series"]]
        print(f"  {path}: {len(panels)} panels" + (f", {RED}empty: {', '.join(empty)}{RESET}" if empty else ", every one drawn"))
        page = chromium.new_page(viewport={"width": 1400, "height": 900}, ignore_https_errors=True)
        listed = consul_services(page, f"https://{lab.endpoint('consul_ui')}", ["frontend"])
        path = screenshot(page, os.path.join(args.out, "consul-ui-services.png"))
        print(f"  {path}: the Consul UI lists {', '.join(listed)}")
        chromium.close()
    summary = load_summary(load.join())
    print(f"  the load: {summary['ok']}/{summary['requests']} ok, p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms")
    traced = _trace_shots(lab, args.out) if _has_zipkin(lab) else True
    return 0 if not empty and traced else 1


def _has_zipkin(lab):
    try:
        lab.endpoint("zipkin")
        return True
    except (LabError, KeyError) as exc:
        print(f"  no Zipkin pictures: {exc}")
        return False


def _traced_compute(lab):
    """One traced compute of the seed through the edge: (trace id, its calls)."""
    trace_id, traceparent = sampled_traceparent()
    _, _, answer = _compute(lab, SEED_EXPRESSION, traceparent, show=None)
    return trace_id, answer.get("calls", [])


def _trace_shots(lab, out):
    """Zipkin's UI with a compute's trace, and with one taken while an add-svc instance is slow (`make chaos-slow`:
    its attempts time out and are retried on the other instance)."""
    from playwright.sync_api import sync_playwright

    from testkit.observe import browser, screenshot, zipkin_trace_page

    zipkin = Zipkin(f"http://{lab.endpoint('zipkin')}")
    shots = []
    trace_id, calls = _traced_compute(lab)
    shots.append(("zipkin-trace.png", trace_id, 1 + 2 * len(calls)))
    _chaos_playbook(lab, {"chaos_action": "slow", "chaos_service": "add-svc", "chaos_ms": 300, "chaos_rate": 0})
    try:
        for _ in range(10):
            trace_id, calls = _traced_compute(lab)
            if any(c.get("attempts", 1) > 1 for c in calls):
                shots.append(("zipkin-trace-slow.png", trace_id, 1 + 2 * sum(c["attempts"] for c in calls)))
                break
    finally:
        _chaos_playbook(lab, {"chaos_action": "heal", "chaos_service": "add-svc", "chaos_ms": 0, "chaos_rate": 0})
    with sync_playwright() as pw:
        chromium = browser(pw)
        for name, trace_id, count in shots:
            zipkin.wait_trace(trace_id, spans=count)
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            zipkin_trace_page(page, zipkin, trace_id, ("frontend", "add-svc", "sub-svc"))
            print(f"  {screenshot(page, os.path.join(out, name))}: trace {trace_id} in Zipkin's UI")
        chromium.close()
    return len(shots) == 2


def _chaos_playbook(lab, extra):
    run = subprocess.run(["ansible-playbook", "-i", lab.inventory, os.path.join(ROOT, "playbooks", "chaos.yml"),
                          "-e", json.dumps(extra)], cwd=ROOT, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        print(run.stdout[-2000:] + run.stderr[-1000:])
        raise LabError("playbooks/chaos.yml failed")


def main():
    parser = argparse.ArgumentParser(prog="scripts/lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inventory", default="", help="the lab's inventory (default: the Vagrant lab's)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("urls", help="the URLs to open and the profile in use")
    sub.add_parser("status", help="machines, Consul members, services, instances and their health")
    click = sub.add_parser("click", help="send the seed's sample request to the frontend")
    click.add_argument("--expression", default=SEED_EXPRESSION)
    click.add_argument("--expect", type=int, default=SEED_RESULT)
    hammer = sub.add_parser("hammer", help="a bounded burst through the edge: 200s turning into 429s")
    hammer.add_argument("--rate", type=int, default=100)
    hammer.add_argument("--seconds", type=int, default=5)
    overload = sub.add_parser("overload", help="a step load through the edge: admitted, shed and failed per step")
    overload.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[20, 60, 120, 200])
    overload.add_argument("--seconds", type=int, default=10)
    split = sub.add_parser("split", help="which version answers how many requests through the edge")
    split.add_argument("--count", type=int, default=200)
    split.add_argument("--header", default="", help="e.g. 'X-Canary: always'")
    chaos = sub.add_parser("chaos", help="break one instance (or heal all) between two probe loads")
    chaos.add_argument("action", choices=["kill", "slow", "errors", "heal"])
    chaos.add_argument("--service", default="add-svc")
    chaos.add_argument("--ms", type=int, default=300)
    chaos.add_argument("--rate", type=float, default=0.5)
    scale = sub.add_parser("scale", help="run SERVICE with COUNT instances (this run), under a probe load")
    scale.add_argument("--service", default="add-svc")
    scale.add_argument("--count", type=int, required=True)
    sub.add_parser("ship", help="start-workloads under a probe load: the rolling update of what changed")
    trace = sub.add_parser("trace", help="one compute through the edge (or --id ID) as a tree of spans from Zipkin")
    trace.add_argument("--id", default="", help="a trace id to print (default: send a compute and print its trace)")
    trace.add_argument("--expression", default=SEED_EXPRESSION)
    trace.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for the trace's spans")
    sub.add_parser("dashboard", help="the mesh dashboard's address (opened where there is a screen)")
    shots = sub.add_parser("screenshots", help="the README's pictures of the dashboard and the Consul UI")
    shots.add_argument("--out", default=os.path.join(ROOT, "docs", "img"))
    shots.add_argument("--rate", type=int, default=10)
    shots.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    try:
        vagrant = not args.inventory or os.path.realpath(args.inventory) == os.path.realpath(VAGRANT_INVENTORY)
        lab = Lab(load_state()) if vagrant else InventoryLab(args.inventory)
        return {"urls": cmd_urls, "status": cmd_status, "click": cmd_click, "hammer": cmd_hammer, "overload": cmd_overload,
                "split": cmd_split, "trace": cmd_trace, "scale": cmd_scale, "ship": cmd_ship,
                "chaos": cmd_chaos, "dashboard": cmd_dashboard, "screenshots": cmd_screenshots}[args.command](lab, args)
    except LabError as exc:
        print(f"{RED}lab:{RESET} {exc}", file=sys.stderr)
        return 2
    except urllib.error.HTTPError as exc:
        print(f"{RED}lab:{RESET} {exc.url} answered HTTP {exc.code}: is the lab still starting? (`make status`)", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"{RED}lab:{RESET} an answer that is not the expected JSON ({exc}): is the lab still starting?", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{RED}lab:{RESET} {exc}", file=sys.stderr)
        return 2


#!/usr/bin/env python3
"""Benchmark driver: runs ON the lab node (python3 standard library only).

playbooks/bench.yml copies this file and request.lua to the node, writes the
config (JSON, planned by meshlab/bench.py from the lab model) and runs:

    python3 driver.py --config bench.json --lua request.lua --out results.json

What it does, in this order:

1. checks that every component's systemd unit runs and that each path answers
   the expression correctly;
2. warms each path up (wrk, not recorded);
3. the compute benchmark: `rounds` rounds of wrk (`threads` threads,
   `connections` connections, `duration` seconds) against the frontend of the
   mesh and against the direct path (with tracing, also the mesh path with every
   request's trace context unsampled), alternating A B C / C B A from round to
   round so that drift of a noisy machine hits every path alike;
4. the one-hop micro benchmark: one add-svc call straight to the app's port
   versus through the frontend sidecar's upstream listener (outbound proxy,
   mTLS, inbound proxy), alternated the same way;
5. during every wrk run it samples each component's processes from /proc
   (the unit's cgroup, or its MainPID and descendants): CPU time used during
   the run and peak/mean resident memory;
6. writes one JSON document; `valid` is false, with the reasons in `problems`,
   when any run had a socket error, a timeout, a non-2xx answer or a wrong
   answer, or when a component was not running. The exit code is 0 either way
   (the renderer on the controller reports and fails); 2 means the driver
   itself could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_EVERY_S = 0.5


# ---------------------------------------------------------------- processes --

def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read()


def unit_props(unit: str) -> dict:
    out = subprocess.run(
        ["systemctl", "show", unit, "-p", "MainPID", "-p", "ControlGroup", "-p", "ActiveState"],
        capture_output=True, text=True, check=False,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = _read(f"/proc/{name}/stat")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    return children


def pid_source(unit: str) -> dict:
    """Where to find a unit's processes, resolved once (systemctl is too slow to call per sample)."""
    props = unit_props(unit)
    cgroup = props.get("ControlGroup", "")
    if cgroup:
        for root in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
            path = f"{root}{cgroup}/cgroup.procs"
            try:
                if _read(path).split():
                    return {"procs": path}
            except OSError:
                continue
    return {"main": int(props.get("MainPID", "0") or 0)}


def source_pids(source: dict) -> list[int]:
    """Processes of a unit: its cgroup's procs (v1 name=systemd or v2), else MainPID and descendants."""
    if "procs" in source:
        try:
            return [int(p) for p in _read(source["procs"]).split()]
        except (OSError, ValueError):
            return []
    main = source.get("main", 0)
    if main <= 0:
        return []
    children, pids, todo = _children_map(), [], [main]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def proc_cpu_ticks(pid: int) -> int | None:
    try:
        fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


def proc_rss_bytes(pid: int) -> int:
    try:
        return int(_read(f"/proc/{pid}/statm").split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def host_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine (in a container: the host's)."""
    fields = [int(x) for x in _read("/proc/stat").splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


class Sampler(threading.Thread):
    """Samples CPU ticks and RSS of every component while one wrk run lasts."""

    def __init__(self, components: list[dict], extra_pids: dict[str, int]):
        super().__init__(daemon=True)
        self.components = components
        self.extra_pids = extra_pids  # e.g. {"wrk (load generator)": pid}
        self.stop_event = threading.Event()
        self.pids: dict[str, list[int]] = {}
        self.base: dict[str, dict[int, int]] = {}
        self.last: dict[str, dict[int, int]] = {}
        self.rss: dict[str, list[int]] = {}
        self.started = time.monotonic()
        self.host_start = host_cpu_ticks()
        for comp in components:
            self.pids[comp["name"]] = source_pids(comp["source"])
        for name, pid in extra_pids.items():
            self.pids[name] = [pid]
        for name, pids in self.pids.items():
            ticks = {pid: proc_cpu_ticks(pid) for pid in pids}
            self.base[name] = {pid: t for pid, t in ticks.items() if t is not None}
            self.last[name] = dict(self.base[name])
            self.rss[name] = []

    def _sample(self) -> None:
        for comp in self.components:
            # Pick up processes that appear during the run (their CPU counts from 0).
            self.pids[comp["name"]] = sorted(set(self.pids[comp["name"]]) | set(source_pids(comp["source"])))
        for name, pids in self.pids.items():
            total = 0
            for pid in pids:
                ticks = proc_cpu_ticks(pid)
                if ticks is not None:
                    self.last[name][pid] = ticks
                    self.base[name].setdefault(pid, 0)
                    total += proc_rss_bytes(pid)
            self.rss[name].append(total)

    def run(self) -> None:
        while not self.stop_event.wait(SAMPLE_EVERY_S):
            self._sample()

    def finish(self) -> dict:
        self.stop_event.set()
        self.join()
        self._sample()
        wall = time.monotonic() - self.started
        busy0, total0 = self.host_start
        busy1, total1 = host_cpu_ticks()
        result = {}
        for name in self.pids:
            ticks = sum(self.last[name][pid] - self.base[name].get(pid, 0) for pid in self.last[name])
            rss = self.rss[name] or [0]
            result[name] = {
                "cpu_s": round(ticks / CLK_TCK, 3),
                "cpu_pct": round(100.0 * ticks / CLK_TCK / wall, 1),  # 100 = one core busy
                "rss_mb_peak": round(max(rss) / 2**20, 1),
                "rss_mb_mean": round(sum(rss) / len(rss) / 2**20, 1),
                "processes": len([p for p in self.last[name]]),
            }
        return {
            "wall_s": round(wall, 3),
            "machine_cpu_busy_pct": round(100.0 * (busy1 - busy0) / max(1, total1 - total0), 1),
            "components": result,
        }


# ---------------------------------------------------------------------- wrk --

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict:
    """Parse wrk --latency text output (plus the BENCH_JSON line of request.lua)."""
    res: dict = {"errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0}, "non_2xx": 0}
    lat = {}
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", output, re.M)
    if m:
        lat["avg"], lat["stdev"], lat["max"] = (_ms(x) for x in m.groups())
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.M):
        lat[f"p{pct}"] = _ms(value)
    res["latency_ms"] = {k: round(v, 3) for k, v in lat.items()}
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+)(\w+)", output, re.M)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.M)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        res["errors"] = dict(zip(("connect", "read", "write", "timeout"), (int(x) for x in m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if m:
        res["non_2xx"] = int(m.group(1))
    m = re.search(r"^BENCH_JSON (\{.*\})\s*$", output, re.M)
    exact = json.loads(m.group(1)) if m else {}
    res["exact"] = exact
    res["wrong_body"] = exact.get("wrong_body", 0)
    # The Lua counters are exact; trust the larger of the two in case the text was cut.
    if exact:
        for key in ("connect", "read", "write", "timeout"):
            res["errors"][key] = max(res["errors"][key], exact.get(key, 0))
        res["non_2xx"] = max(res["non_2xx"], exact.get("status", 0))
        res["latency_ms"]["p99.9"] = round(exact.get("p999_us", 0) / 1000, 3)
    return res


def run_wrk(cfg: dict, url: str, duration: float, threads: int, connections: int, env: dict,
            lua: str, components: list[dict], sample: bool) -> dict:
    argv = [cfg.get("wrk", "wrk"), "--latency", "-t", str(threads), "-c", str(connections),
            "-d", f"{duration}s", "--timeout", cfg.get("timeout", "5s"), "-s", lua, url]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **env})
    sampler = Sampler(components, {"wrk (load generator)": proc.pid}) if sample else None
    if sampler:
        sampler.start()
    output, _ = proc.communicate(timeout=duration + 60)
    usage = sampler.finish() if sampler else None
    res = parse_wrk(output)
    res["exit_code"] = proc.returncode
    res["output"] = output
    if usage:
        res.update(usage)
    return res


def run_problems(label: str, res: dict) -> list[str]:
    problems = []
    errors = sum(res["errors"].values())
    if res["exit_code"] != 0:
        problems.append(f"{label}: wrk exited with {res['exit_code']}: {res['output'][-300:]}")
    if errors:
        problems.append(f"{label}: {errors} socket errors {res['errors']}")
    if res["non_2xx"]:
        problems.append(f"{label}: {res['non_2xx']} non-2xx answers")
    if res["wrong_body"]:
        problems.append(f"{label}: {res['wrong_body']} answers with a wrong result")
    if not res.get("requests") or not res.get("rps"):
        problems.append(f"{label}: no request completed")
    return problems


# ------------------------------------------------------------------- checks --

def check_path(url: str, method: str, body: str | None, expect: str) -> str | None:
    """One request through a path; None when the answer is right, else what is wrong."""
    data = body.encode() if method == "POST" else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode("utf-8", "replace")
            if resp.status != 200 or expect not in text:
                return f"{url} answered {resp.status} {text[:200]!r}, expected {expect!r}"
    except Exception as exc:  # noqa: BLE001 - reported as a problem of the run
        return f"{url} failed: {exc!r}"
    return None


def host_info() -> dict:
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    mem = 0
    try:
        mem = int(re.search(r"MemTotal:\s+(\d+)", _read("/proc/meminfo")).group(1)) // 1024
    except (OSError, AttributeError):
        pass
    virt = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_mb": mem,
        "kernel": platform.release(),
        "virtualization": virt or "none",
        "loadavg_before": _read("/proc/loadavg").split()[:3],
        "wrk_version": subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        .stdout.splitlines()[:1],
    }


# --------------------------------------------------------------------- main --

def alternate(paths: list[str], rounds: int) -> list[tuple[int, str]]:
    """A B, B A, A B, ...: each path goes first in every other round."""
    order = []
    for rnd in range(rounds):
        seq = paths if rnd % 2 == 0 else list(reversed(paths))
        order.extend((rnd + 1, p) for p in seq)
    return order


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--lua", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = json.loads(_read(args.config))

    problems: list[str] = []
    started = time.time()
    # What to sample, and each component's group, come from the plan (meshlab/bench.py).
    components = [dict(c) for c in cfg["components"]]
    info = host_info()

    for comp in components:
        props = unit_props(comp["unit"])
        comp["source"] = pid_source(comp["unit"])
        if props.get("ActiveState") != "active" or not source_pids(comp["source"]):
            problems.append(f"component {comp['name']}: unit {comp['unit']} is {props.get('ActiveState', '?')}")

    compute_env = {"BENCH_METHOD": "POST", "BENCH_BODY": cfg["body"],
                   "BENCH_EXPECT": f'"result":{cfg["expected_result"]},'}
    hop = cfg["hop"]
    hop_env = {"BENCH_METHOD": "GET", "BENCH_EXPECT": f'"result":{hop["expected_result"]},'}

    def path_env(env, path):
        """The bench's environment for wrk's script, plus the path's own request header (bench/request.lua)."""
        tp = (cfg.get("path_headers") or {}).get(path, {}).get("traceparent")
        return {**env, "BENCH_TRACEPARENT": tp} if tp else env

    for path, url in cfg["paths"].items():
        bad = check_path(url, "POST", compute_env["BENCH_BODY"], compute_env["BENCH_EXPECT"])
        if bad:
            problems.append(f"compute {path}: {bad}")
    for path, url in hop["paths"].items():
        bad = check_path(url, "GET", None, hop_env["BENCH_EXPECT"])
        if bad:
            problems.append(f"hop {path}: {bad}")

    runs = []
    if not problems:
        # Warm-up, not recorded: JIT, connection pools, proxies' upstream connections.
        for path, url in cfg["paths"].items():
            run_wrk(cfg, url, cfg["warmup"], cfg["threads"], cfg["connections"], path_env(compute_env, path),
                    args.lua, components, sample=False)
        for bench, settings, env in (("compute", cfg, compute_env), ("hop", hop, hop_env)):
            for seq, (rnd, path) in enumerate(alternate(list(settings["paths"]), cfg["rounds"])):
                print(f"{bench} round {rnd} {path}: {settings['duration']} s", file=sys.stderr, flush=True)
                res = run_wrk(cfg, settings["paths"][path], settings["duration"], settings["threads"],
                              settings["connections"], path_env(env, path) if bench == "compute" else env,
                              args.lua, components, sample=True)
                res.update({"bench": bench, "path": path, "round": rnd, "seq": seq,
                            "threads": settings["threads"], "connections": settings["connections"]})
                problems += run_problems(f"{bench} round {rnd} {path}", res)
                runs.append(res)
        for res in runs:
            for name, usage in res["components"].items():
                if usage["rss_mb_peak"] <= 0:
                    problems.append(f"{res['bench']} round {res['round']} {res['path']}: no process found for {name}")

    info["loadavg_after"] = _read("/proc/loadavg").split()[:3]
    doc = {
        "schema": 1,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": info,
        "config": cfg,
        "components": components,
        "valid": not problems,
        "problems": problems,
        "runs": runs,
    }
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
    for problem in problems:
        print(f"INVALID: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

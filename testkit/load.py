"""Bounded load: requests at a fixed rate for a fixed time, every outcome recorded.

The failure tests (molecule/*/tests) and the chaos targets (scripts/lab) use it. Only for
addresses on this machine: loopback, and the nodes of the lab or of a test.
"""

import concurrent.futures
import json
import os
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

# Response headers a record keeps, by lowercase name prefix (names are stored lowercase: HAProxy sends them so):
# the app's instance and version, the edge's choice, 429's Retry-After.
KEPT_HEADERS = ("x-", "retry-after")

# The load of the tests that change the lab while users call (rollouts, shipping, the cluster's rotations and rolling
# restart): 20 computes/s of a six-call expression (four add-svc and two sub-svc calls, 120 upstream calls/s through
# the sidecars). The README's seed makes 16 calls per compute: at 20/s its 320 calls/s filled the 2-core machine
# (the edge's p50 270 ms and 3.5 % shed during test_20's ship on 2026-12-07, 17-36 % shed in the cluster's
# rotations), so those tests timed the machine as much as the change, and Ansible ran at half speed beside it.
CHANGE_EXPRESSION = "1+2+3+4+5-6-7"
CHANGE_RESULT = 2


def _kept(headers):
    """The response headers a record keeps, names lowercase."""
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith(KEPT_HEADERS)}


class BoundedLoad:
    """Requests at a fixed rate for a fixed time, every outcome recorded with its timestamp.

    POSTs `body` (JSON) to `url` `rate` times a second for `seconds` seconds from a
    thread pool, whatever the answers' latency; `start()` returns at once, `join()`
    waits and returns the records. Each record: t (seconds since the start, when the
    request was sent), status (0: no HTTP answer), latency_ms, body (parsed JSON or
    None), error. Only for addresses on this machine (loopback, the test's own nodes).
    """

    def __init__(self, url, body, rate, seconds, timeout=5.0, headers=None, method=None):
        self.url, self.body, self.rate, self.seconds, self.timeout = url, body, rate, seconds, timeout
        self.headers = dict(headers or {})
        self.method = method or ("POST" if body is not None else "GET")
        self.records = []
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(8, int(rate * (timeout + 1))))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop = threading.Event()
        self.started = None

    def _one(self, sent):
        data = json.dumps(self.body).encode() if self.body is not None else None
        req = urllib.request.Request(self.url, data=data, method=self.method,
                                     headers={"Content-Type": "application/json", **self.headers})
        begin = time.monotonic()
        record = {"t": round(sent, 3), "status": 0, "body": None, "error": "", "headers": {}}
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                record["status"], record["body"] = resp.status, json.load(resp)
                record["headers"] = _kept(resp.headers)
        except urllib.error.HTTPError as exc:
            record["status"] = exc.code
            record["headers"] = _kept(exc.headers)
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
        total = int(self.rate * self.seconds)
        for n in range(total):
            if self._stop.is_set():
                break
            due = self.started + n / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._pool.submit(self._one, due - self.started)
        self._pool.shutdown(wait=True)

    def start(self):
        self.started = time.monotonic()
        self._thread.start()
        return self

    def elapsed(self):
        return time.monotonic() - self.started

    def stop(self):
        """End the load early (what was sent is still waited for): for loads that last as long as an action."""
        self._stop.set()
        return self

    def join(self):
        self._thread.join()
        return sorted(self.records, key=lambda r: r["t"])


class ClosedLoad(BoundedLoad):
    """`concurrency` clients, each sending its next request when its last one is answered, for `seconds`
    seconds: what the path can serve at that concurrency (its capacity), every outcome recorded like
    BoundedLoad's (`rate` is the concurrency here)."""

    def _run(self):
        def client():
            while not self._stop.is_set() and time.monotonic() - self.started < self.seconds:
                self._one(time.monotonic() - self.started)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(int(self.rate))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


class NodeLoad:
    """A BoundedLoad (or with closed=True a ClosedLoad) that runs inside a lab node (`podman exec`), for ports on the
    node's loopback only.

    Same interface as BoundedLoad (start, elapsed, join -> records). This file is stdlib-only: it is
    piped to the node's python3 with a runner that prints the start time (the node shares the
    controller's clock) and, at the end, the records as JSON.
    """

    RUNNER = """
import json as _json, sys as _sys, time as _time
_a = _json.loads(_sys.argv[1])
_kind = ClosedLoad if _a.get("closed") else BoundedLoad
_load = _kind(_a["url"], _a["body"], _a["rate"], _a["seconds"], _a["timeout"], _a["headers"], _a["method"])
_load.start()
print(_json.dumps({"started_wall": _time.time() - (_time.monotonic() - _load.started)}), flush=True)
print(_json.dumps(_load.join()), flush=True)
"""

    def __init__(self, container, url, body, rate, seconds, timeout=5.0, headers=None, method=None, closed=False,
                 command=None):
        self.container = container
        # How to run `python3 - ARGS` on the node with this file on stdin: `podman exec -i <container>` unless
        # another command prefix is given (e.g. `docker exec -i <name> python3 -`, or `vagrant ssh <node> -- sudo python3 -`).
        self.command = command or ["podman", "exec", "-i", container, "python3", "-"]
        self.args = {"url": url, "body": body, "rate": rate, "seconds": seconds, "timeout": timeout,
                     "headers": headers or {}, "method": method, "closed": closed}
        self.started = None
        self._proc = None

    def start(self):
        with open(os.path.abspath(__file__), encoding="utf-8") as fh:
            source = fh.read().split("\nclass NodeLoad:")[0] + self.RUNNER
        arg = json.dumps(self.args)
        if self.command[0] in ("ssh", "vagrant"):  # the argument goes through the node's shell
            arg = shlex.quote(arg)
        self._proc = subprocess.Popen([*self.command, arg],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._proc.stdin.write(source)
        self._proc.stdin.close()
        first = self._proc.stdout.readline()
        if not first:
            raise RuntimeError(f"the load in {self.container} did not start: {self._proc.stderr.read()[-2000:]}")
        wall = json.loads(first)["started_wall"]
        self.started = time.monotonic() - (time.time() - wall)
        return self

    def elapsed(self):
        return time.monotonic() - self.started

    def join(self):
        out = self._proc.stdout.read()  # stdin is closed already: communicate() would try to flush it
        err = self._proc.stderr.read()
        self._proc.wait()
        if self._proc.returncode != 0:
            raise RuntimeError(f"the load in {self.container} failed (rc {self._proc.returncode}): {err[-2000:]}")
        return json.loads(out)


def percentile(ordered, p):
    """The p-th percentile (nearest rank) of an ascending list, None when it is empty."""
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else None


def load_summary(records, ok=lambda r: r["status"] == 200):
    """Counts and latency percentiles of a list of load records."""
    lat = sorted(r["latency_ms"] for r in records)

    failed = [r for r in records if not ok(r)]
    return {"requests": len(records), "ok": len(records) - len(failed), "failed": len(failed),
            "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "first_failure_s": failed[0]["t"] if failed else None, "last_failure_s": failed[-1]["t"] if failed else None}


def is_shed(record):
    """The edge turned the request away because the mesh was full (its own JSON 503, meshlab/edge.py)."""
    return record["status"] == 503 and record["headers"].get("x-edge-shed") == "queue"


def overload_summary(rate, seconds, records, ok=lambda r: r["status"] == 200):
    """One step of a step load: offered, admitted (neither shed nor rate-limited), succeeded, shed at the edge,
    rate-limited (429), failed inside the mesh (admitted but not ok: 5xx from the frontend, no answer), goodput
    (succeeded per second) and the admitted requests' p50/p99."""
    shed = [r for r in records if is_shed(r)]
    limited = [r for r in records if r["status"] == 429]
    admitted = [r for r in records if not is_shed(r) and r["status"] != 429]
    succeeded = [r for r in admitted if ok(r)]
    lat = sorted(r["latency_ms"] for r in admitted)
    return {"rate": rate, "seconds": seconds, "offered": len(records), "admitted": len(admitted),
            "succeeded": len(succeeded), "shed": len(shed), "limited": len(limited),
            "failed_inside": len(admitted) - len(succeeded), "goodput": round(len(succeeded) / seconds, 1),
            "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "shed_retry_after": sorted({r["headers"].get("retry-after") for r in shed}),
            "inside_statuses": dict(sorted(Counter(r["status"] or "no answer" for r in admitted if not ok(r)).items(),
                                           key=str))}


def overload_table(steps):
    """The step load's figures as Markdown table rows (make overload prints it; docs/edge.md shows one)."""
    rows = ["| offered/s | offered | admitted | succeeded | shed (503 at the edge) | failed inside | goodput/s "
            "| p50 ms (admitted) | p99 ms (admitted) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in steps:
        rows.append(f"| {s['rate']} | {s['offered']} | {s['admitted']} | {s['succeeded']} | {s['shed']} | "
                    f"{s['failed_inside']}{' ' + str(s['inside_statuses']) if s['failed_inside'] else ''} | "
                    f"{s['goodput']} | {s['p50_ms']} | {s['p99_ms']} |")
    return rows

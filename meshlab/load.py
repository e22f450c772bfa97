"""Bounded load: requests at a fixed rate for a fixed time, every outcome recorded.

The failure tests (molecule/*/tests) and the chaos targets (scripts/lab) use it. Only for
addresses on this machine: loopback, and the nodes of the lab or of a test.
"""

import concurrent.futures
import json
import threading
import time
import urllib.error
import urllib.request


class BoundedLoad:
    """Requests at a fixed rate for a fixed time, every outcome recorded with its timestamp.

    POSTs `body` (JSON) to `url` `rate` times a second for `seconds` seconds from a
    thread pool, whatever the answers' latency; `start()` returns at once, `join()`
    waits and returns the records. Each record: t (seconds since the start, when the
    request was sent), status (0: no HTTP answer), latency_ms, body (parsed JSON or
    None), error. Only for addresses on this machine (loopback, the test's own nodes).
    """

    def __init__(self, url, body, rate, seconds, timeout=5.0):
        self.url, self.body, self.rate, self.seconds, self.timeout = url, body, rate, seconds, timeout
        self.records = []
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(8, int(rate * (timeout + 1))))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = None

    def _one(self, sent):
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
        total = int(self.rate * self.seconds)
        for n in range(total):
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

"""Fault injection (off by default): added latency (fixed plus a uniform jitter), an error rate
(HTTP 500 with a JSON body) and an abort rate (the connection is closed in the middle of the answer).

Set at start-up from FAULT_* variables (config.py) or at run time through the admin endpoint
on 127.0.0.1:<admin port> (app.py): GET/PUT/DELETE /admin/faults. The same settings and
messages as the frontend (apps/frontend/src/faults.js). The current setting is kept in a
small file, so that every granian worker of the instance applies the same one (within CHECK_EVERY_S).
"""

from __future__ import annotations

import json
import math
import os
import random
import time

FIELDS = {
    "latency_ms": (0, 60000, True),
    "latency_jitter_ms": (0, 60000, True),
    "error_rate": (0, 1, False),
    "abort_rate": (0, 1, False),
}
NONE = {"latency_ms": 0, "latency_jitter_ms": 0, "error_rate": 0, "abort_rate": 0}
# How often a worker looks at the shared setting's file (a stat() per request cost 4 % of a call's CPU): a change
# made through another worker's admin endpoint applies within this time; the worker that made it applies it at once.
CHECK_EVERY_S = 0.1


class FaultError(ValueError):
    """A fault setting that cannot be applied; the message says what to change."""


def validate(data) -> dict:
    """Check a fault setting (every problem in one message); missing fields are 0."""
    if not isinstance(data, dict):
        raise FaultError('faults must be a JSON object such as {"latency_ms": 300} or {"error_rate": 0.5}')
    problems = []
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)}: use {', '.join(FIELDS)}")
    faults = dict(NONE)
    for key, (low, high, integer) in FIELDS.items():
        if key not in data:
            continue
        value = data[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or (integer and not float(value).is_integer()) or not low <= value <= high:
            problems.append(f"{key} must be {'an integer' if integer else 'a number'} from {low} to {high}, got {json.dumps(value)}")
        else:
            faults[key] = int(value) if integer else value
    if faults["error_rate"] + faults["abort_rate"] > 1:
        problems.append("error_rate + abort_rate must not exceed 1")
    if problems:
        raise FaultError("; ".join(problems))
    return faults


def draw(faults: dict, rand=random.random) -> tuple[float, str]:
    """(delay in seconds, outcome 'ok' | 'error' | 'abort') for one request."""
    delay = faults["latency_ms"] + (rand() * faults["latency_jitter_ms"] if faults["latency_jitter_ms"] else 0)
    roll = rand()
    outcome = "abort" if roll < faults["abort_rate"] else "error" if roll < faults["abort_rate"] + faults["error_rate"] else "ok"
    return delay / 1000.0, outcome


def active(faults: dict) -> bool:
    return any(faults[key] for key in NONE)


class FaultState:
    """The instance's current faults, shared by its workers through a file (re-read when it changes);
    in memory only when `path` is None. `initial` is written when given (the main process does,
    before its workers start)."""

    def __init__(self, path: str | None, initial: dict | None = None):
        self.path = path
        self._mtime = None
        self._next_check = 0.0
        self._faults = dict(NONE)
        if initial is not None:
            self.set(initial)

    def get(self) -> dict:
        if self.path is None:
            return self._faults
        now = time.monotonic()
        if now < self._next_check:
            return self._faults
        self._next_check = now + CHECK_EVERY_S
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return self._faults
        if mtime != self._mtime:
            try:
                with open(self.path, encoding="utf-8") as fh:
                    self._faults = validate(json.load(fh))
                self._mtime = mtime
            except (OSError, ValueError):
                pass  # a half-written file: keep the last good setting
        return self._faults

    def set(self, faults: dict) -> dict:
        faults = validate(faults)
        if self.path is None:
            self._faults = faults
            return faults
        tmp = f"{self.path}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(faults, fh)
        os.replace(tmp, self.path)
        self._faults = faults
        return faults

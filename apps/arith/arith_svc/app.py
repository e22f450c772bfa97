"""Flask application shared by add-svc and sub-svc.

The only difference between the two services is the binary operation chosen by
``op``; routing, validation, error handling and logging are common.
"""

from __future__ import annotations

import json
import operator
import re
import sys
import time
from typing import Callable

from flask import Flask, Response, g, jsonify, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

OPERATIONS: dict[str, Callable[[int, int], int]] = {
    "add": operator.add,
    "sub": operator.sub,
}

#: Operands must satisfy ``abs(v) <= MAX_ABS_OPERAND`` (10**15). Results can
#: therefore reach 2 * 10**15, still well inside IEEE-754 safe integers
#: (2**53 - 1 ~ 9.007e15), so JavaScript clients never lose precision.
MAX_ABS_OPERAND = 10**15

# ASCII only: Python's int() and str.isdigit() would also accept "١٢" or "²".
_INTEGER_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)


class InvalidOperand(ValueError):
    """A query parameter is missing, repeated, malformed or out of range."""


def parse_operand(args: MultiDict, name: str) -> int:
    """Return query parameter ``name`` as a bounded int or raise InvalidOperand."""
    values = args.getlist(name)
    if not values:
        raise InvalidOperand(f"missing query parameter '{name}'")
    if len(values) > 1:
        raise InvalidOperand(f"query parameter '{name}' must be given once, got {len(values)}")
    raw = values[0]
    if not _INTEGER_RE.fullmatch(raw):
        raise InvalidOperand(
            f"query parameter '{name}' must be an integer (ASCII digits with optional sign)"
        )
    # Strip leading zeros and check the length first: int() refuses strings of
    # more than 4300 digits, and long ones are slow to convert anyway.
    magnitude = raw.lstrip("+-").lstrip("0") or "0"
    if len(magnitude) > len(str(MAX_ABS_OPERAND)) or int(magnitude) > MAX_ABS_OPERAND:
        raise InvalidOperand(
            f"query parameter '{name}' out of range: |{name}| must be <= {MAX_ABS_OPERAND}"
        )
    return -int(magnitude) if raw.startswith("-") else int(magnitude)


def _write_log_line(record: dict) -> None:
    """Write one JSON record to stdout and flush (one journald entry per request)."""
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def create_app(op: str, instance_id: str) -> Flask:
    """Build the WSGI app for operation ``op`` ("add" or "sub")."""
    if op not in OPERATIONS:
        raise ValueError(f"op must be one of {sorted(OPERATIONS)}, got {op!r}")
    compute = OPERATIONS[op]

    app = Flask(__name__)
    app.json.sort_keys = False

    @app.get("/api/v1/execute")
    def execute():
        try:
            left = parse_operand(request.args, "l")
            right = parse_operand(request.args, "r")
        except InvalidOperand as exc:
            return jsonify(error=str(exc)), 400
        return jsonify(result=compute(left, right), instance=instance_id)

    @app.get("/health")
    def health():
        return jsonify(status="ok", instance=instance_id, op=op)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # Keep the status and headers (e.g. Allow on 405) but replace the HTML body.
        response = exc.get_response()
        response.data = app.json.dumps({"error": exc.description})
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error="internal error"), 500

    @app.before_request
    def start_timer():
        g.started = time.monotonic()

    @app.after_request
    def tag_and_log(response: Response) -> Response:
        # after_request also runs for responses produced by the error handlers above.
        response.headers["X-Instance-Id"] = instance_id
        started = g.get("started", time.monotonic())
        _write_log_line(
            {
                "instance": instance_id,
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.monotonic() - started) * 1000, 3),
            }
        )
        return response

    return app

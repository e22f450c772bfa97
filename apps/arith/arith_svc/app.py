"""Flask application shared by add-svc and sub-svc.

The only difference between the two services is the binary operation chosen by
``op``; routing, validation, error handling and logging are common.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from flask import Flask, Response, abort, g, jsonify, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from . import faults as fault_injection
from .config import ACCESS_LOG_MODES, OPERATIONS, TRACE_ERROR_KEY, TRACING_ENDPOINT_ENV
from .metrics import Metrics

#: Operands must satisfy ``abs(v) <= MAX_ABS_OPERAND`` (10**15). Results can
#: therefore reach 2 * 10**15, still well inside IEEE-754 safe integers
#: (2**53 - 1 ~ 9.007e15), so JavaScript clients never lose precision.
MAX_ABS_OPERAND = 10**15

# ASCII only: Python's int() and str.isdigit() would also accept "١٢" or "²".
_INTEGER_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)


# The methods the metrics name (any other counts as "other": a label keeps a bounded number of values).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE"})


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


class _Abort(Exception):
    """An abort fault: the connection is closed before the answer is complete."""


def create_app(op: str, instance_id: str, admin_port: int = 0, faults: fault_injection.FaultState | None = None,
               access_log: str = "all", tracing: bool = False) -> Flask:
    """Build the WSGI app for operation ``op`` ("add" or "sub").

    ``access_log``: which requests get a JSON line on stdout: "all", "errors" (status >= 400) or "off".

    ``admin_port``: the port (bound to 127.0.0.1 by the server) whose requests may reach /admin/faults,
    and nothing else; 0: no admin endpoint. ``faults``: the instance's fault state (in memory if None).

    ``tracing``: trace the requests when OTEL_EXPORTER_ZIPKIN_ENDPOINT is set (tracing.py); the server's workers ask
    for it, a test only where it tests tracing.
    """
    if op not in OPERATIONS:
        raise ValueError(f"op must be one of {sorted(OPERATIONS)}, got {op!r}")
    if access_log not in ACCESS_LOG_MODES:
        raise ValueError(f"access_log must be one of {', '.join(ACCESS_LOG_MODES)}, got {access_log!r}")
    min_status = ACCESS_LOG_MODES[access_log]
    compute = OPERATIONS[op]
    state = faults or fault_injection.FaultState(None)

    metrics = Metrics(instance_id)
    app = Flask(__name__)
    app.json.sort_keys = False
    if tracing and os.environ.get(TRACING_ENDPOINT_ENV):
        # Imported only then, so that an untraced instance never loads OpenTelemetry. Where the app answers a 5xx
        # itself it says why in the environ (TRACE_ERROR_KEY): the span's error description.
        from .tracing import instrument

        instrument(app, op, instance_id, metrics.tracing_counters())

    @app.before_request
    def admin_port_only_serves_admin():
        on_admin = bool(admin_port) and request.environ.get("SERVER_PORT") == str(admin_port)
        if on_admin != request.path.startswith("/admin/"):
            abort(404)

    @app.route("/admin/faults", methods=["GET", "PUT", "DELETE"])
    def admin_faults():
        if request.method == "GET":
            return jsonify(state.get())
        if request.method == "DELETE":
            return jsonify(state.set(fault_injection.NONE))
        try:
            return jsonify(state.set(request.get_json(force=True, silent=True)))
        except fault_injection.FaultError as exc:
            return jsonify(error=str(exc)), 400

    @app.get("/api/v1/execute")
    def execute():
        current = state.get()
        if fault_injection.active(current):
            delay, outcome = fault_injection.draw(current)
            if delay:
                time.sleep(delay)
            if outcome == "abort":
                raise _Abort()
            if outcome == "error":
                request.environ[TRACE_ERROR_KEY] = "injected fault: error"
                return jsonify(error="injected fault: error", instance=instance_id), 500
        try:
            left = parse_operand(request.args, "l")
            right = parse_operand(request.args, "r")
        except InvalidOperand as exc:
            return jsonify(error=str(exc)), 400
        # Every upstream call ends here: the answer is built directly (jsonify's provider machinery cost about a tenth
        # of a call's CPU), the same compact JSON.
        return Response(json.dumps({"result": compute(left, right), "instance": instance_id}, separators=(",", ":")),
                        mimetype="application/json")

    @app.get("/health")
    def health():
        return jsonify(status="ok", instance=instance_id, op=op, faults=state.get())

    @app.get("/metrics")
    def prometheus_metrics():
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # Keep the status and headers (e.g. Allow on 405) but replace the HTML body.
        response = exc.get_response()
        response.data = app.json.dumps({"error": exc.description})
        response.content_type = "application/json"
        return response

    @app.errorhandler(_Abort)
    def abort_connection(exc: _Abort):
        request.environ[TRACE_ERROR_KEY] = "injected fault: abort"
        # The WSGI server gives the app no handle on the connection: promise a body that never comes and
        # ask for the connection to close. The server sends the status line and headers, then closes the
        # connection in the middle of the answer; the client never gets a complete one.
        response = Response(b"{", status=500, content_type="application/json")
        response.headers["Content-Length"] = "64"
        response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        request.environ[TRACE_ERROR_KEY] = f"unhandled {type(exc).__name__}"
        return jsonify(error="internal error"), 500

    @app.before_request
    def start_timer():
        g.started = time.monotonic()

    @app.after_request
    def tag_count_and_log(response: Response) -> Response:
        # after_request also runs for responses produced by the error handlers above.
        response.headers["X-Instance-Id"] = instance_id
        elapsed = time.monotonic() - g.get("started", time.monotonic())
        # The matched rule; a known path with the wrong method (405) keeps its route, unknown paths are "other".
        rule = request.url_rule
        route = rule.rule if rule is not None else request.path if request.path in known_routes else "other"
        method = request.method if request.method in _METHODS else "other"
        metrics.observe(route, method, response.status_code, elapsed)
        if response.status_code < min_status:
            return response
        _write_log_line(
            {
                "instance": instance_id,
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 3),
            }
        )
        return response

    known_routes = frozenset(rule.rule for rule in app.url_map.iter_rules())
    return app

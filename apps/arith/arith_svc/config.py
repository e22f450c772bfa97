"""Command-line / environment settings for ``python -m arith_svc``.

Every option can be given as a flag or as an environment variable; the flag
wins, an empty environment variable counts as unset. Invalid values end the
process with exit code 2 (argparse's convention) and a message naming the
offending flag or variable.
"""

from __future__ import annotations

import argparse
import ipaddress
import operator
import re
import socket
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, TypeVar

from . import faults as fault_injection

T = TypeVar("T")

OPERATIONS: dict[str, Callable[[int, int], int]] = {
    "add": operator.add,
    "sub": operator.sub,
}


_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
# The instance id is echoed in a response header: visible ASCII only, no spaces.
_INSTANCE_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")

# flag name -> (environment variable, help text)
_FLAGS = {
    "op": ("ARITH_OP", "operation to serve: add or sub (required)"),
    "bind": ("APP_BIND", "address to listen on (default 127.0.0.1)"),
    "port": ("APP_PORT", "TCP port (default 8000)"),
    "workers": ("ARITH_WORKERS", "granian worker processes, 1-64 (default 2)"),
    "threads": ("ARITH_THREADS", "threads per worker running the app, 1-256 (default 4)"),
    "instance_id": ("INSTANCE_ID", "id reported in responses (default <hostname>:<port>)"),
    "admin_port": ("APP_ADMIN_PORT", "admin endpoint port on 127.0.0.1 (/admin/faults); 0, the default: none"),
    "access_log": ("ACCESS_LOG", "JSON line per request on stdout: all (default), errors (status >= 400) or off"),
}
# prometheus-client's multi-process mode (metrics.py): the directory where each worker writes its counts.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# OpenTelemetry's standard variable for the Zipkin exporter (tracing.py): set, the workers trace their requests and
# send the spans there (the lab: the instance's sidecar upstream to Zipkin); unset, no tracing at all. The other
# OTEL_* variables are read by OpenTelemetry's SDK itself.
TRACING_ENDPOINT_ENV = "OTEL_EXPORTER_ZIPKIN_ENDPOINT"
# The WSGI environ's key where the app says why it answered a 5xx (an injected fault, an unhandled exception): the
# request's span carries it as its error description (tracing.py).
TRACE_ERROR_KEY = "arith_svc.trace_error"
# ACCESS_LOG mode -> lowest status that gets a line.
ACCESS_LOG_MODES = {"all": 0, "errors": 400, "off": 1000}
# Initial faults (off by default), environment only; the admin endpoint changes them at run time.
FAULT_ENV = {"latency_ms": "FAULT_LATENCY_MS", "latency_jitter_ms": "FAULT_LATENCY_JITTER_MS",
             "error_rate": "FAULT_ERROR_RATE", "abort_rate": "FAULT_ABORT_RATE"}


@dataclass(frozen=True)
class Settings:
    op: str
    bind: str
    port: int
    workers: int
    threads: int
    instance_id: str
    admin_port: int = 0
    faults: dict | None = None
    access_log: str = "all"


def _op(value: str) -> str:
    if value not in OPERATIONS:
        raise ValueError(f"must be one of: {', '.join(sorted(OPERATIONS))}")
    return value


def _access_log(value: str) -> str:
    if value not in ACCESS_LOG_MODES:
        raise ValueError(f"must be one of: {', '.join(ACCESS_LOG_MODES)}")
    return value


def _bind(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME_RE.fullmatch(value):
            raise ValueError("must be an IP address or a host name") from None
    return value


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def convert(value: str) -> int:
        if not re.fullmatch(r"[0-9]{1,6}", value, re.ASCII) or not low <= int(value) <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return int(value)

    return convert


def _instance_id(value: str) -> str:
    if not _INSTANCE_ID_RE.fullmatch(value):
        raise ValueError("must be 1-128 visible ASCII characters, no spaces")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m arith_svc",
        description="Serve add-svc or sub-svc with granian. Each flag falls back to "
        "the environment variable shown, then to its default.",
    )
    for name, (env_name, help_text) in _FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, metavar=env_name, help=help_text)
    return parser


def parse_settings(argv: Sequence[str] | None, env: Mapping[str, str]) -> Settings:
    """Resolve each setting from flag, then environment, then default.

    Calls ``parser.error`` (exit status 2) on a missing ``op`` or an invalid value.
    """
    parser = build_parser()
    args = parser.parse_args(argv)

    def resolve(name: str, convert: Callable[[str], T], default: str | None) -> T:
        env_name = _FLAGS[name][0]
        flag = "--" + name.replace("_", "-")
        if getattr(args, name) is not None:
            raw, source = getattr(args, name), flag
        elif env.get(env_name):
            raw, source = env[env_name], env_name
        elif default is None:
            parser.error(f"{flag} or environment variable {env_name} is required")
        else:
            raw, source = default, f"default {name}"
        try:
            return convert(raw)
        except ValueError as exc:
            parser.error(f"invalid {source} {raw!r}: {exc}")

    op = resolve("op", _op, None)
    bind = resolve("bind", _bind, "127.0.0.1")
    port = resolve("port", _int_between(1, 65535), "8000")
    workers = resolve("workers", _int_between(1, 64), "2")
    threads = resolve("threads", _int_between(1, 256), "4")
    instance_id = resolve("instance_id", _instance_id, f"{socket.gethostname()}:{port}")
    admin_port = resolve("admin_port", _int_between(0, 65535), "0")
    access_log = resolve("access_log", _access_log, "all")
    if admin_port and admin_port == port:
        parser.error(f"--admin-port/APP_ADMIN_PORT {admin_port} must differ from the service port")
    initial = {}
    for key, env_name in FAULT_ENV.items():
        if env.get(env_name):
            try:
                initial[key] = float(env[env_name]) if "rate" in key else int(env[env_name])
            except ValueError:
                parser.error(f"invalid {env_name} {env[env_name]!r}: must be a number")
    try:
        faults = fault_injection.validate(initial)
    except fault_injection.FaultError as exc:
        parser.error(f"invalid FAULT_* settings: {exc}")
    return Settings(op, bind, port, workers, threads, instance_id, admin_port, faults, access_log)

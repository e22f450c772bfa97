"""Run the Flask app under granian (a Rust HTTP server with a WSGI interface), configured in code.

Why granian: on one core it serves the same Flask app at about half the CPU per request of
gunicorn's gthread worker (docs/bench.md has the figures), and every upstream call of the lab pays
that cost. Layout of one instance:

    main process   granian's supervisor (no Flask in it); it writes the initial faults file
    workers        `workers` processes serving the service port, each running the Flask app on up to
                   `threads` threads (a latency fault sleeps in one of them, not in the event loop),
                   and, when APP_ADMIN_PORT is set, the admin endpoint (/admin/faults) on 127.0.0.1 in a
                   thread; the workers share that port (SO_REUSEPORT) and the faults file; with more
                   than one worker, also a directory of metrics files (metrics.py), made empty at start

The workers are multiprocessing processes (forked from the main process with Python up to 3.13 on Linux,
spawned elsewhere; the main process has no Flask either way): each calls the factory worker_app once started, which
builds the app from the settings the main process resolved, passed in ARITH_SVC_SETTINGS, and its tracer when the
instance traces (tracing.py), so that the tracer's export thread runs in the worker that serves.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import shutil
import signal
import tempfile
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.server import Server

from . import faults as fault_injection
from .config import MULTIPROC_ENV, Settings

SETTINGS_ENV = "ARITH_SVC_SETTINGS"
# granian's own messages (start, stop, worker restarts) go to stderr: stdout is the app's JSON access log.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"generic": {"()": "logging.Formatter", "fmt": "[%(levelname)s] %(message)s"}},
    "handlers": {"console": {"formatter": "generic", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "loggers": {"_granian": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}


def faults_file(settings: Settings) -> str:
    """Where the instance's workers share its fault setting (the unit's private /tmp in the lab)."""
    return os.path.join(tempfile.gettempdir(), f"arith-faults-{settings.port}.json")


def granian_options(settings: Settings) -> dict:
    return {
        "target": "arith_svc.server:worker_app",
        "factory": True,
        "interface": Interfaces.WSGI,
        "address": settings.bind,
        "port": settings.port,
        "workers": settings.workers,
        "blocking_threads": settings.threads,
        # HTTP/1.1 with keep-alive; granian does not close idle connections, so it is always the client
        # (the frontend retires its pooled connections) that closes one, never a race with a server close.
        "http": HTTPModes.http1,
        "http1_settings": HTTP1Settings(keep_alive=True),
        "websockets": False,
        "log_dictconfig": LOG_CONFIG,
        "log_access": False,  # the app writes its own JSON access log
        "respawn_failed_workers": True,
        "workers_kill_timeout": 10,  # graceful stop: in-flight requests get 10 s
    }


def worker_app():
    """The Flask app of one granian worker (factory target), from the main process' settings;
    starts the admin endpoint's thread too."""
    from .app import create_app  # here, not at the top: the main process stays without Flask

    _die_with_parent()
    settings = Settings(**json.loads(os.environ[SETTINGS_ENV]))
    app = create_app(settings.op, settings.instance_id, settings.admin_port,
                     fault_injection.FaultState(faults_file(settings)), settings.access_log, tracing=True)
    if settings.admin_port:
        admin = make_server("127.0.0.1", settings.admin_port, app, server_class=_AdminServer, handler_class=_QuietHandler)
        threading.Thread(target=admin.serve_forever, name="admin", daemon=True).start()
    return app


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when its main process dies (as gunicorn's workers exit with their
    master), so a killed instance leaves no worker behind holding its port."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _AdminServer(WSGIServer):
    allow_reuse_port = True  # every worker of the instance listens on the admin port


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the app logs each request as JSON
        pass


class ArithServer:
    """One add-svc or sub-svc instance: granian serving the Flask app (and the admin endpoint) in its workers."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # The main process writes the initial faults before its workers start; workers read them,
        # the admin endpoint changes them.
        fault_injection.FaultState(faults_file(settings), settings.faults or fault_injection.NONE)

    def run(self) -> None:
        os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(self.settings))
        if self.settings.workers > 1:
            # prometheus-client's multi-process mode, chosen when a worker imports it (this process never imports
            # it, so the choice is the workers' however they are started): a fresh directory per start, so that
            # counters begin at 0 with the instance (the unit's private /tmp in the lab), removed at the end.
            metrics_dir = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix=f"arith-metrics-{self.settings.port}-")
        else:
            metrics_dir = None
            os.environ.pop(MULTIPROC_ENV, None)
        try:
            Server(**granian_options(self.settings)).serve()
        finally:
            if metrics_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)

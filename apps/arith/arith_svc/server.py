"""Run the Flask app under gunicorn, configured in code (no gunicorn CLI/config file)."""

from __future__ import annotations

import os
import tempfile

from gunicorn.app.base import BaseApplication

from . import faults as fault_injection
from .app import create_app
from .config import Settings

#: Seconds an idle client connection is kept open. Longer than the frontend's
#: UPSTREAM_SOCKET_MAX_AGE_MS default (10 s), so the client always closes first
#: and never reuses a connection the server is closing at the same moment.
KEEPALIVE_SECONDS = 75


def faults_file(settings: Settings) -> str:
    """Where the instance's workers share its fault setting (the unit's private /tmp in the lab)."""
    return os.path.join(tempfile.gettempdir(), f"arith-faults-{settings.port}.json")


def gunicorn_options(settings: Settings) -> dict:
    host = f"[{settings.bind}]" if ":" in settings.bind else settings.bind  # IPv6 literal
    binds = [f"{host}:{settings.port}"]
    if settings.admin_port:
        binds.append(f"127.0.0.1:{settings.admin_port}")  # the admin endpoint: loopback only
    return {
        "bind": binds,
        "workers": settings.workers,
        # gthread: each worker serves `threads` connections concurrently and keeps
        # idle keep-alive connections in a poller instead of blocking a thread.
        "worker_class": "gthread",
        "threads": settings.threads,
        "keepalive": KEEPALIVE_SECONDS,
        "timeout": 30,
        "graceful_timeout": 10,
        "accesslog": None,  # the app writes its own JSON access log
        "errorlog": "-",  # gunicorn's own messages go to stderr
        "proc_name": f"arith-{settings.op}",
        # gunicorn >= 25 opens a control socket in $HOME or $XDG_RUNTIME_DIR by
        # default; add-svc and sub-svc on one host would fight over that path.
        "control_socket_disable": True,
    }


class ArithServer(BaseApplication):
    """Minimal gunicorn application: options from Settings, app from create_app."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # The master writes the initial faults before its workers start; workers only read and change them.
        fault_injection.FaultState(faults_file(settings), settings.faults or fault_injection.NONE)
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)

    def load(self):
        state = fault_injection.FaultState(faults_file(self.settings))
        return create_app(self.settings.op, self.settings.instance_id, self.settings.admin_port, state)

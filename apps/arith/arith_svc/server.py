"""Run the Flask app under gunicorn, configured in code (no gunicorn CLI/config file)."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from .app import create_app
from .config import Settings

#: Seconds an idle client connection is kept open. Longer than the frontend's
#: UPSTREAM_SOCKET_MAX_AGE_MS default (10 s), so the client always closes first
#: and never reuses a connection the server is closing at the same moment.
KEEPALIVE_SECONDS = 75


def gunicorn_options(settings: Settings) -> dict:
    host = f"[{settings.bind}]" if ":" in settings.bind else settings.bind  # IPv6 literal
    return {
        "bind": f"{host}:{settings.port}",
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
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)

    def load(self):
        return create_app(self.settings.op, self.settings.instance_id)

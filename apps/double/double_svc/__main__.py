"""`python -m double_svc`: serve on APP_BIND:APP_PORT (default 127.0.0.1:8000); see the package docstring."""

import json
import os
import re
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

INTEGER = re.compile(r"[+-]?[0-9]{1,15}")


class Handler(BaseHTTPRequestHandler):
    upstream = os.environ.get("ADD_SVC_URL", "http://127.0.0.1:9191")
    instance = os.environ.get("INSTANCE_ID", "double-svc")

    def _send(self, status, body):
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Instance-Id", self.instance)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        if url.path == "/health":
            return self._send(200, {"status": "ok", "instance": self.instance})
        if url.path != "/api/v1/double":
            return self._send(404, {"error": f"no route for {url.path}"})
        values = parse_qs(url.query).get("x", [])
        if len(values) != 1 or not INTEGER.fullmatch(values[0]):
            return self._send(400, {"error": "query parameter 'x' must be one integer of at most 15 digits"})
        x = int(values[0])
        try:
            with urllib.request.urlopen(f"{self.upstream}/api/v1/execute?l={x}&r={x}", timeout=5) as resp:
                answer = json.load(resp)
                via = resp.headers.get("X-Instance-Id")
        except (OSError, ValueError) as exc:
            return self._send(502, {"error": f"add-svc failed: {exc}", "upstream": "add-svc"})
        return self._send(200, {"result": answer["result"], "via": via, "instance": self.instance})

    def log_message(self, fmt, *args):  # one line per request on stdout (the journal)
        sys.stdout.write(json.dumps({"instance": self.instance, "request": fmt % args}) + "\n")
        sys.stdout.flush()


def main():
    bind = os.environ.get("APP_BIND", "127.0.0.1")
    port = int(os.environ.get("APP_PORT", "8000"))
    server = ThreadingHTTPServer((bind, port), Handler)
    print(f"double-svc {Handler.instance} on {bind}:{port}, add-svc at {Handler.upstream}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

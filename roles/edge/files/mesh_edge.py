#!/usr/bin/python3
"""The edge's helper on its node (role edge): its Connect certificate, and HAProxy's server state.

    mesh_edge.py certs       fetch the leaf certificate of the service `edge` and the Connect CA roots
                             from the local agent; write them (only when they changed) for HAProxy and
                             reload HAProxy if it runs; exit 0 if they were current, 0 after a change
    mesh_edge.py save-state  write HAProxy's `show servers state` to its state file (before a reload,
                             so the new process starts with the servers the old one had resolved)

Settings from the environment: CONSUL_HTTP_ADDR, MESH_EDGE_TOKEN_FILE, MESH_EDGE_CERTS_DIR,
MESH_EDGE_SOCKET, MESH_EDGE_STATE_FILE. Secrets are never printed.
"""

import json
import os
import socket
import subprocess
import sys
import urllib.request

API = os.environ.get("CONSUL_HTTP_ADDR", "http://127.0.0.1:8500")
TOKEN_FILE = os.environ.get("MESH_EDGE_TOKEN_FILE", "/etc/mesh/tokens/edge")
CERTS_DIR = os.environ.get("MESH_EDGE_CERTS_DIR", "/etc/haproxy/mesh")
SOCKET = os.environ.get("MESH_EDGE_SOCKET", "/run/haproxy/admin.sock")
STATE_FILE = os.environ.get("MESH_EDGE_STATE_FILE", "/var/lib/haproxy/server-state")


def _get(path, token):
    req = urllib.request.Request(API + path, headers={"X-Consul-Token": token})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def _write(path, content, mode):
    """Write atomically if the content differs; True if it did. Files are root:haproxy."""
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == content:
                return False
    except FileNotFoundError:
        pass
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)
    try:
        import grp
        os.chown(tmp, 0, grp.getgrnam("haproxy").gr_gid)
    except (KeyError, PermissionError):
        pass
    os.replace(tmp, path)
    return True


def certs():
    with open(TOKEN_FILE, encoding="utf-8") as fh:
        token = fh.read().strip()
    leaf = _get("/v1/agent/connect/ca/leaf/edge", token)
    roots = _get("/v1/agent/connect/ca/roots", token)
    pem = leaf["CertPEM"].strip() + "\n" + leaf["PrivateKeyPEM"].strip() + "\n"
    ca = "".join(r["RootCert"].strip() + "\n" for r in roots["Roots"])
    changed = _write(os.path.join(CERTS_DIR, "connect-ca.pem"), ca, 0o640)
    changed = _write(os.path.join(CERTS_DIR, "edge.pem"), pem, 0o640) or changed
    print(f"edge certificate {leaf['SerialNumber']} valid until {leaf['ValidBefore']}; "
          f"{len(roots['Roots'])} CA root(s); {'written' if changed else 'unchanged'}")
    active = subprocess.run(["systemctl", "is-active", "--quiet", "haproxy.service"], check=False).returncode == 0
    if changed and active:
        # --no-block: the reload is ordered after this unit (the drop-in), which must end first.
        subprocess.run(["systemctl", "reload", "--no-block", "haproxy.service"], check=True)
        print("haproxy reloaded with the new certificate")
    return 0


def save_state():
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(SOCKET)
            sock.sendall(b"show servers state\n")
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except OSError as exc:
        print(f"no server state saved ({exc}): HAProxy starts with fresh DNS answers", file=sys.stderr)
        return 0
    _write(STATE_FILE, b"".join(chunks).decode(), 0o640)
    return 0


if __name__ == "__main__":
    commands = {"certs": certs, "save-state": save_state}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(commands[sys.argv[1]]())

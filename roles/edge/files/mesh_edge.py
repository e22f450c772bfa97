#!/usr/bin/python3
"""The edge's helper on its node (role edge): HAProxy's server state.

    mesh_edge.py save-state  write HAProxy's `show servers state` to its state file (before a reload,
                             so the new process starts with the servers the old one had resolved)

Settings from the environment: MESH_EDGE_SOCKET, MESH_EDGE_STATE_FILE. (The edge's Connect certificate is the
role connect_cert's.)
"""

import os
import socket
import sys

SOCKET = os.environ.get("MESH_EDGE_SOCKET", "/run/haproxy/admin.sock")
STATE_FILE = os.environ.get("MESH_EDGE_STATE_FILE", "/var/lib/haproxy/server-state")


def _write(path, content, mode):
    """Write atomically if the content differs. Files are root:haproxy."""
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == content:
                return
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
    commands = {"save-state": save_state}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(commands[sys.argv[1]]())

#!/usr/bin/python3
"""Fetch one service's Connect leaf certificate and the Connect CA roots from the local Consul agent (role connect_cert).

    mesh_connect_cert.py --api URL --service NAME --token-file FILE --dir DIR [--group GROUP] [--reload UNIT]

Writes DIR/NAME.pem (the certificate, then its key) and DIR/connect-ca.pem (the roots), atomically, root:GROUP
0640, and only when they changed; then reloads UNIT (if given and active). The agent renews the leaf before it
expires: a run every few minutes keeps the files current. Secrets are never printed.
"""

import argparse
import grp
import json
import os
import subprocess
import sys
import urllib.request


def _get(api, path, token):
    req = urllib.request.Request(api + path, headers={"X-Consul-Token": token})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def _write(path, content, gid):
    """Write atomically if the content differs; True if it did."""
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == content:
                return False
    except FileNotFoundError:
        pass
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)
    os.chown(tmp, 0, gid)
    os.replace(tmp, path)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8500")
    parser.add_argument("--service", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--group", default="root")
    parser.add_argument("--reload", default="")
    args = parser.parse_args(argv)
    with open(args.token_file, encoding="utf-8") as fh:
        token = fh.read().strip()
    leaf = _get(args.api, f"/v1/agent/connect/ca/leaf/{args.service}", token)
    roots = _get(args.api, "/v1/agent/connect/ca/roots", token)
    gid = grp.getgrnam(args.group).gr_gid
    pem = leaf["CertPEM"].strip() + "\n" + leaf["PrivateKeyPEM"].strip() + "\n"
    ca = "".join(r["RootCert"].strip() + "\n" for r in roots["Roots"])
    changed = _write(os.path.join(args.dir, "connect-ca.pem"), ca, gid)
    changed = _write(os.path.join(args.dir, f"{args.service}.pem"), pem, gid) or changed
    print(f"{args.service} certificate {leaf['SerialNumber']} valid until {leaf['ValidBefore']}; "
          f"{len(roots['Roots'])} CA root(s); {'written' if changed else 'unchanged'}")
    if changed and args.reload:
        active = subprocess.run(["systemctl", "is-active", "--quiet", args.reload], check=False).returncode == 0
        if active:
            # --no-block: the unit may be ordered after this one, which must end first.
            subprocess.run(["systemctl", "reload", "--no-block", args.reload], check=True)
            print(f"{args.reload} reloaded with the new certificate")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line of the lab model: ``python -m meshlab <command>`` (the Vagrantfile and playbooks call it).

    profile [--requested auto|full|offline]   the profile this lab takes, as JSON (probes HashiCorp for auto)
    labstate PATH                             check a Vagrant lab state file's shape (exit 1 with the reasons)
    ports                                     the guest ports the Vagrant lab forwards, as JSON
    app-tarball APP                           pack the files of apps/APP a node gets as a deterministic tar in
                                              .cache/apps/<app>-<revision>.tar (kept; printed)
"""

import argparse
import json
import os
import sys

from . import apps, labstate, profile, secrets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _yaml(relpath):
    import yaml  # the venv has it (Ansible's dependency)

    with open(os.path.join(ROOT, relpath), encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def guest_ports():
    """Consul's HTTPS port (the UI and API from outside a node), Nomad's HTTP port, the lab's public port
    (key "frontend": the edge, which serves the frontend), Prometheus' (the dashboard) and Zipkin's (both run on
    the first Consul server, mesh-1), from the lab's group_vars."""
    consul = _yaml("inventory/lab/group_vars/all/consul.yml")["mesh_consul_ports"]["https"]
    nomad = _yaml("inventory/lab/group_vars/all/nomad.yml")["mesh_nomad_ports"]["http"]
    edge = _yaml("inventory/lab/group_vars/all/edge.yml")["mesh_edge_port"]
    prometheus = _yaml("inventory/lab/group_vars/all/metrics.yml")["mesh_metrics_port"]
    zipkin = _yaml("inventory/lab/group_vars/all/tracing.yml")["mesh_tracing_port"]
    return {"consul_ui": int(consul), "nomad_ui": int(nomad), "frontend": int(edge), "prometheus": int(prometheus),
            "zipkin": int(zipkin)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m meshlab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prof = sub.add_parser("profile", help="resolve the profile (probing HashiCorp for auto) and print it as JSON")
    prof.add_argument("--requested", default="auto", choices=profile.CHOICES)
    prof.add_argument("--nomad-everywhere", action="store_true", help="Nomad already answers on every node")
    state = sub.add_parser("labstate", help="check a lab state file")
    state.add_argument("path")
    sub.add_parser("ports", help="guest ports of the Vagrant lab as JSON")
    tar = sub.add_parser("app-tarball", help="the installed files of an app as a deterministic tar")
    tar.add_argument("app")
    promote = sub.add_parser("secret-promote", help="end a rotation: the staged <name>.next replaces the secret <name>")
    promote.add_argument("directory")
    promote.add_argument("name")
    renew = sub.add_parser("secret-renew", help="new values for every secret whose name starts with PREFIX (names printed, "
                                              "never values)")
    renew.add_argument("directory")
    renew.add_argument("prefix")
    args = parser.parse_args(argv)

    if args.command == "profile":
        problem = profile.probe() if args.requested == "auto" and not args.nomad_everywhere else None
        print(json.dumps(profile.resolve(args.requested, problem, args.nomad_everywhere)))
        return 0
    if args.command == "labstate":
        try:
            labstate.load(args.path)
        except (OSError, ValueError) as exc:
            print(f"labstate: {exc}", file=sys.stderr)
            return 1
        print(f"labstate: {args.path} has the documented shape")
        return 0
    if args.command == "secret-promote":
        print("promoted" if secrets.promote(args.directory, args.name) else "nothing staged")
        return 0
    if args.command == "secret-renew":
        renewed = secrets.names(args.directory, args.prefix)
        for name in renewed:
            secrets.renew(args.directory, name)
        print(json.dumps({"renewed": renewed}))
        return 0 if renewed else 3
    if args.command == "app-tarball":
        path = os.path.join(ROOT, ".cache", "apps", f"{args.app}-{apps.revision(apps.SOURCE, args.app)}.tar")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            apps.tarball(apps.SOURCE, args.app, path + ".part")
            os.replace(path + ".part", path)
        print(path)
        return 0
    print(json.dumps(guest_ports()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

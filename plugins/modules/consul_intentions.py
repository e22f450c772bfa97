#!/usr/bin/python
"""Ansible module: make Consul's Connect intentions exactly the declared set."""

DOCUMENTATION = r"""
module: consul_intentions
short_description: Manage Consul Connect intentions declaratively
description:
  - Makes the intentions in Consul exactly the given list plus a C(*) -> C(*)
    intention carrying I(default_action); every other intention is deleted.
  - Uses the C(/v1/connect/intentions) HTTP API, present in Consul 1.8 and later.
options:
  url:
    description: Consul's HTTP API address.
    type: str
    default: http://127.0.0.1:8500
  intentions:
    description: Intentions to keep, each with source, destination and action (allow or deny).
    type: list
    elements: dict
    required: true
  default_action:
    description: Action of the C(*) -> C(*) intention (deny makes the mesh default-deny without ACLs).
    type: str
    choices: [allow, deny]
    default: deny
  token:
    description: ACL token, if ACLs are enabled.
    type: str
    default: ""
author: hello-servicemesh
"""

EXAMPLES = r"""
- name: Frontend may call add-svc, nothing else is allowed
  consul_intentions:
    intentions:
      - {source: frontend, destination: add-svc, action: allow}
    default_action: deny
"""

RETURN = r"""
intentions:
  description: The intentions after the run, as source/destination/action.
  returned: always
  type: list
created:
  description: Number of intentions created.
  type: int
  returned: always
updated:
  description: Number of intentions whose action changed.
  type: int
  returned: always
deleted:
  description: Number of intentions deleted.
  type: int
  returned: always
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

DESCRIPTION = "managed by hello-servicemesh"


def plan(current, desired):
    """Compare Consul's intentions with the desired ones.

    current: list of API objects (ID, SourceName, DestinationName, Action).
    desired: {(source, destination): action}.
    Returns (create, update, delete): lists of (source, destination, action) /
    (id, source, destination, action) / (id, source, destination).
    """
    seen = {}
    delete = []
    for item in current:
        key = (item["SourceName"], item["DestinationName"])
        if key in desired and key not in seen:
            seen[key] = item
        else:
            delete.append((item["ID"], key[0], key[1]))
    update = [
        (seen[key]["ID"], key[0], key[1], action)
        for key, action in desired.items()
        if key in seen and seen[key]["Action"] != action
    ]
    create = [(key[0], key[1], action) for key, action in desired.items() if key not in seen]
    return create, update, delete


class Consul:
    def __init__(self, url, token):
        self.url = url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["X-Consul-Token"] = token

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        resp = open_url(self.url + path, method=method, data=data, headers=self.headers, timeout=10)
        text = resp.read()
        return json.loads(text) if text else None


def body(source, destination, action):
    return {"SourceName": source, "DestinationName": destination, "Action": action, "Description": DESCRIPTION}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", default="http://127.0.0.1:8500"),
            intentions=dict(type="list", elements="dict", required=True),
            default_action=dict(type="str", choices=["allow", "deny"], default="deny"),
            token=dict(type="str", default="", no_log=True),
        ),
        supports_check_mode=True,
    )
    desired = {("*", "*"): module.params["default_action"]}
    for entry in module.params["intentions"]:
        if entry.get("action", "allow") not in ("allow", "deny") or not entry.get("source") or not entry.get("destination"):
            module.fail_json(msg=f"each intention needs source, destination and action allow|deny: got {entry}")
        desired[(entry["source"], entry["destination"])] = entry.get("action", "allow")

    consul = Consul(module.params["url"], module.params["token"])
    try:
        current = consul.call("GET", "/v1/connect/intentions") or []
        create, update, delete = plan(current, desired)
        if not module.check_mode:
            for source, destination, action in create:
                consul.call("POST", "/v1/connect/intentions", body(source, destination, action))
            for ident, source, destination, action in update:
                consul.call("PUT", f"/v1/connect/intentions/{ident}", body(source, destination, action))
            for ident, _source, _destination in delete:
                consul.call("DELETE", f"/v1/connect/intentions/{ident}")
    except Exception as exc:  # urllib errors, JSON errors: say which API failed
        module.fail_json(msg=f"Consul intentions API at {module.params['url']} failed: {exc}")

    changed = bool(create or update or delete)
    module.exit_json(
        changed=changed,
        created=len(create),
        updated=len(update),
        deleted=len(delete),
        intentions=[{"source": s, "destination": d, "action": a} for (s, d), a in sorted(desired.items())],
        diff={
            "before": "\n".join(sorted(f"{i['SourceName']} -> {i['DestinationName']}: {i['Action']}" for i in current)) + "\n",
            "after": "\n".join(sorted(f"{s} -> {d}: {a}" for (s, d), a in desired.items())) + "\n",
        },
    )


if __name__ == "__main__":
    main()

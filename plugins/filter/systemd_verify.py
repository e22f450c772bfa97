"""`validate:` command that runs `systemd-analyze verify` on a rendered unit.

systemd-analyze only accepts files whose name is a unit name, while Ansible
validates a temporary file with an arbitrary name: copy it to a proper name
first. Usage: `validate: "{{ 'consul.service' | systemd_verify }}"`.
"""

import shlex


def systemd_verify(unit_name):
    path = shlex.quote(f"/run/ansible-verify-{unit_name}")
    script = f'cp "$0" {path} && systemd-analyze verify {path}; rc=$?; rm -f {path}; exit $rc'
    return f"sh -c {shlex.quote(script)} %s"


class FilterModule:
    def filters(self):
        return {"systemd_verify": systemd_verify}

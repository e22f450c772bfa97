#!/usr/bin/python
"""Ansible module: make a directory's managed files exactly the given set, validated together, in one call."""

DOCUMENTATION = r"""
module: mesh_files
short_description: Write a set of files into one directory, validate them together, prune the stale ones
description:
  - Makes the files of I(dest) that match I(prune) exactly I(files) (name -> content), with one owner,
    group and mode. Only files whose content or attributes differ are written (atomically); matching
    files that I(files) does not name are removed.
  - Before anything changes, the whole new set is written to a staging directory and I(validate)
    runs on it; a failing validation changes nothing.
  - One call per directory replaces a loop of template/copy tasks (one remote round trip per file).
options:
  dest:
    description: The directory.
    type: path
    required: true
  files:
    description: File name (no directory part) -> content; a missing final newline is added.
    type: dict
    required: true
  owner:
    description: Owner of the written files.
    type: str
    default: root
  group:
    description: Group of the written files.
    type: str
    default: root
  mode:
    description: Mode of the written files (octal string).
    type: str
    default: "0644"
  prune:
    description: Glob patterns (file names in I(dest)) of the files this call manages; those not in I(files) are removed.
    type: list
    elements: str
    default: []
  validate:
    description:
      - Command (argv) that checks the new set; C({dir}) stands for the staging directory, C({files}) for
        every staged file (several arguments). Runs only when something would change.
    type: list
    elements: str
    default: []
author: hello-servicemesh
"""

EXAMPLES = r"""
- name: Units of this node's instances, checked together by systemd-analyze
  mesh_files:
    dest: /etc/systemd/system
    files: {mesh-app-add-svc-1.service: "[Unit]\n...", mesh.target: "[Unit]\n..."}
    prune: ["mesh-app-*.service", "mesh-sidecar-*.service", "mesh.target"]
    validate: [systemd-analyze, verify, "{files}"]
"""

RETURN = r"""
written:
  description: Paths written (new or changed content or attributes).
  type: list
  returned: always
created:
  description: Paths written that did not exist before (a subset of I(written)).
  type: list
  returned: always
removed:
  description: Paths removed (matched I(prune), not in I(files)).
  type: list
  returned: always
"""

import fnmatch
import grp
import os
import pwd
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule


def _differs(path, content, uid, gid, mode):
    try:
        st = os.stat(path)
        with open(path, "rb") as fh:
            same = fh.read() == content
    except FileNotFoundError:
        return True
    return not same or st.st_uid != uid or st.st_gid != gid or (st.st_mode & 0o7777) != mode


def _validate(module, argv, files):
    """Stage the whole new set, run the validation command on it; fail (before any change) when it does."""
    stage = tempfile.mkdtemp(prefix="mesh-files.")
    try:
        staged = []
        for name, content in sorted(files.items()):
            path = os.path.join(stage, name)
            with open(path, "wb") as fh:
                fh.write(content)
            staged.append(path)
        cmd = []
        for arg in argv:
            if arg == "{files}":
                cmd.extend(staged)
            else:
                cmd.append(arg.replace("{dir}", stage))
        rc, out, err = module.run_command(cmd)
        if rc != 0:
            module.fail_json(msg=f"validation failed ({' '.join(argv)}): nothing was changed", rc=rc, stdout=out, stderr=err)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            files=dict(type="dict", required=True),
            owner=dict(type="str", default="root"),
            group=dict(type="str", default="root"),
            mode=dict(type="str", default="0644"),
            prune=dict(type="list", elements="str", default=[]),
            validate=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    dest = p["dest"]
    files = {}
    for name, content in p["files"].items():
        if "/" in name or name in ("", ".", ".."):
            module.fail_json(msg=f"file name {name!r} must not contain a directory part")
        text = str(content)
        files[name] = (text if text.endswith("\n") else text + "\n").encode()
    try:
        uid, gid = pwd.getpwnam(p["owner"]).pw_uid, grp.getgrnam(p["group"]).gr_gid
        mode = int(p["mode"], 8)
    except (KeyError, ValueError) as exc:
        module.fail_json(msg=f"bad owner, group or mode: {exc}")
    if not os.path.isdir(dest):
        module.fail_json(msg=f"{dest} is not a directory")

    write = sorted(n for n, c in files.items() if _differs(os.path.join(dest, n), c, uid, gid, mode))
    remove = sorted(
        n for n in os.listdir(dest)
        if n not in files and any(fnmatch.fnmatch(n, pat) for pat in p["prune"]) and os.path.isfile(os.path.join(dest, n))
    )
    result = dict(changed=bool(write or remove), written=[os.path.join(dest, n) for n in write],
                  created=[os.path.join(dest, n) for n in write if not os.path.lexists(os.path.join(dest, n))],
                  removed=[os.path.join(dest, n) for n in remove])
    if not result["changed"] or module.check_mode:
        module.exit_json(**result)

    if p["validate"] and files:
        _validate(module, p["validate"], files)
    for name in write:
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(files[name])
        os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, os.path.join(dest, name))
    for name in remove:
        os.unlink(os.path.join(dest, name))
    module.exit_json(**result)


if __name__ == "__main__":
    main()

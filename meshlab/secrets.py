"""The lab's secrets, generated once on the controller and kept there (never in git, never printed).

Each secret is one file under the lab's secrets directory (mesh_secrets_dir, by default
`<inventory dir>/.secrets`: git-ignored; Molecule's inventory lives in its ephemeral
directory, Vagrant's under .vagrant/), mode 0600 in a 0700 directory. The first run
writes it, later runs read it back: re-runs neither rotate a key nor change a config. Only a rotation
(`make rotate`) replaces one: it stages the successor as `<name>.next`, puts it into service, then
promotes it over the old one (promote).

Kinds:
    token   a random UUID (Consul ACL token secrets: the management token, agent, DNS,
            intentions and per-instance service tokens, Nomad's bootstrap token)
    gossip  32 random bytes, base64 (Consul's `encrypt` key, as `consul keygen` makes)
"""

import base64
import os
import re
import uuid

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")
KINDS = ("token", "gossip")


def _new(kind):
    if kind == "token":
        return str(uuid.uuid4())
    return base64.b64encode(os.urandom(32)).decode()


def _staged_new(path, kind):
    """A new secret of `kind` written to a private temporary file beside `path` (0600); returns its path, for the
    caller to link or rename into place."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(_new(kind) + "\n")
    return tmp


def ensure(directory, name, kind="token"):
    """The secret `name` (e.g. "consul/management") under `directory`, created on first use."""
    if kind not in KINDS:
        raise ValueError(f"secret kind {kind!r}: use one of {', '.join(KINDS)}")
    if not NAME_RE.match(name):
        raise ValueError(f"secret name {name!r}: lowercase path segments of letters, digits, '.', '_', '-'")
    path = os.path.join(directory, name)
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    tmp = _staged_new(path, kind)
    try:
        os.link(tmp, path)  # never replaces a secret another process wrote first
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip()


def next_name(name):
    """The staged successor of secret `name` during a rotation (make rotate): made like any secret, promoted after."""
    return f"{name}.next"


def promote(directory, name):
    """End a rotation: the staged successor replaces `name` (one atomic rename). True if it did, False when
    nothing was staged (an earlier run promoted it already)."""
    staged = os.path.join(directory, next_name(name))
    if not os.path.exists(staged):
        return False
    os.replace(staged, os.path.join(directory, name))
    return True


def renew(directory, name, kind="token"):
    """Replace the existing secret `name` with a new one (one atomic rename; a rotation that does not need the old
    and the new side by side, e.g. the workloads' tokens: Consul keeps the old token until the run that uses the new
    one deletes it). FileNotFoundError if there is none."""
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no secret {name} under {directory}: nothing to renew")
    os.replace(_staged_new(path, kind), path)


def names(directory, prefix):
    """The names of the existing secrets under `directory` that start with `prefix` (e.g. consul/instance-), sorted;
    staged successors (<name>.next) left out."""
    head, _, start = prefix.rpartition("/")
    where = os.path.join(directory, head)
    if not os.path.isdir(where):
        return []
    return sorted(f"{head}/{n}" if head else n for n in os.listdir(where)
                  if n.startswith(start) and not n.endswith((".next", ".tmp")) and os.path.isfile(os.path.join(where, n)))


def read(directory, name):
    """The existing secret `name` (tests and tools read; only the playbooks create). FileNotFoundError if missing."""
    with open(os.path.join(directory, name), encoding="utf-8") as fh:
        return fh.read().strip()

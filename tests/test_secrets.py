"""meshlab/secrets.py: made once, kept, and replaced only by a rotation's promote (make rotate)."""

import os
import subprocess
import sys

from meshlab import secrets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_secret_is_made_once_and_kept(tmp_path):
    first = secrets.ensure(str(tmp_path), "consul/gossip", "gossip")
    assert secrets.ensure(str(tmp_path), "consul/gossip", "gossip") == first
    assert os.stat(tmp_path / "consul" / "gossip").st_mode & 0o777 == 0o600


def test_a_rotation_stages_then_promotes(tmp_path):
    d = str(tmp_path)
    old = secrets.ensure(d, "consul/gossip", "gossip")
    staged = secrets.ensure(d, secrets.next_name("consul/gossip"), "gossip")
    assert staged != old
    assert secrets.ensure(d, secrets.next_name("consul/gossip"), "gossip") == staged  # a re-run takes it up again
    assert secrets.promote(d, "consul/gossip") is True
    assert secrets.read(d, "consul/gossip") == staged
    assert not os.path.exists(tmp_path / "consul" / "gossip.next")
    assert secrets.promote(d, "consul/gossip") is False  # nothing staged: nothing changes
    assert secrets.read(d, "consul/gossip") == staged


def test_the_cli_promotes(tmp_path):
    d = str(tmp_path)
    secrets.ensure(d, "consul/gossip", "gossip")
    staged = secrets.ensure(d, secrets.next_name("consul/gossip"), "gossip")
    out = subprocess.run([sys.executable, "-m", "meshlab", "secret-promote", d, "consul/gossip"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "promoted" and secrets.read(d, "consul/gossip") == staged


def test_renew_replaces_only_the_named_secrets_and_lists_by_prefix(tmp_path):
    from meshlab import secrets

    old = {n: secrets.ensure(str(tmp_path), n) for n in ("consul/instance-add-svc-1", "consul/instance-add-svc-2",
                                                          "consul/management")}
    (tmp_path / "consul" / "instance-add-svc-1.next").write_text("staged\n")
    names = secrets.names(str(tmp_path), "consul/instance-")
    assert names == ["consul/instance-add-svc-1", "consul/instance-add-svc-2"]
    for name in names:
        secrets.renew(str(tmp_path), name)
    for name, value in old.items():
        assert (secrets.read(str(tmp_path), name) != value) == name.startswith("consul/instance-")
    assert oct((tmp_path / "consul" / "instance-add-svc-1").stat().st_mode & 0o777) == "0o600"
    assert secrets.names(str(tmp_path), "consul/nothing-") == [] and secrets.names(str(tmp_path / "none"), "a/b") == []

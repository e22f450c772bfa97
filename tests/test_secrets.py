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

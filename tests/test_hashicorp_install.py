"""Role hashicorp_install's input checks, for both products (its assert.yml, which preflight runs too).

The installs themselves run in Molecule: debian (default, cluster), archive (consul-archive);
hashicorp_apt and release need HashiCorp's servers (the nomad scenario, where they answer).
"""

import hashlib

import pytest
import yaml

from testkit.lab import run_playbook


def _check(tmp_path, inventory, product, **variables):
    playbook = tmp_path / "check.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Check", "hosts": "mesh-1", "gather_facts": False,
        "tasks": [{"name": "Check the input", "ansible.builtin.include_role": {
            "name": "hashicorp_install", "tasks_from": "assert.yml"},
            "vars": {"hashicorp_install_product": product, **{f"hashicorp_install_{k}": v for k, v in variables.items()}}}],
    }]))
    return run_playbook(inventory, str(playbook))


@pytest.fixture
def release(tmp_path):
    """A zip in HashiCorp's layout (content irrelevant: only its checksum is read) and its SHA256SUMS."""
    zip_path = tmp_path / "nomad_1.10.3_linux_amd64.zip"
    zip_path.write_bytes(b"not really a zip")
    sums = tmp_path / "nomad_1.10.3_SHA256SUMS"
    sums.write_text(f"{hashlib.sha256(zip_path.read_bytes()).hexdigest()}  {zip_path.name}\n"
                    f"{'1' * 64}  nomad_1.10.3_linux_arm64.zip\n")
    return zip_path, sums


@pytest.mark.parametrize("product, variables, names", [
    ("nomad", {"method": "zip"}, ["(got 'zip')", "hashicorp_apt, release, archive"]),
    ("nomad", {"method": "debian"}, ["(got 'debian')"]),  # Debian has no nomad package
    ("consul", {"method": "debian", "version": "1.8"}, ["(got '1.8')"]),
    ("nomad", {"version": "1.9.7", "min_version": "1.10.0"}, ["(got '1.9.7')", "at least 1.10.0"]),
    ("nomad", {"method": "release", "version": ""}, ["release and archive need a version"]),
    ("consul", {"method": "archive", "version": "1.8.7"}, ["the archive path and its SHA256SUMS"]),
])
def test_bad_input_is_refused_naming_it(tmp_path, inventory, product, variables, names):
    rc, out = _check(tmp_path, inventory, product, **variables)
    assert rc != 0
    for name in names:
        assert name in out, (name, out[-2000:])


@pytest.mark.parametrize("product, variables", [
    ("consul", {"method": "debian", "version": "1.8.7"}),
    ("consul", {"method": "hashicorp_apt", "version": ""}),
    ("nomad", {"method": "release", "version": "1.10.3", "min_version": "1.10.0"}),
])
def test_good_input_passes(tmp_path, inventory, product, variables):
    rc, out = _check(tmp_path, inventory, product, **variables)
    assert rc == 0, out[-2000:]


def test_archive_is_checked_against_its_sha256sums(tmp_path, inventory, release):
    zip_path, sums = release
    ok = {"method": "archive", "version": "1.10.3", "archive_path": str(zip_path), "archive_sha256sums": str(sums)}
    rc, out = _check(tmp_path, inventory, "nomad", **ok)
    assert rc == 0, out[-2000:]

    sums.write_text(f"{'0' * 64}  {zip_path.name}\n")
    rc, out = _check(tmp_path, inventory, "nomad", **ok)
    assert rc != 0
    assert f"{zip_path.name}: SHA256 {hashlib.sha256(zip_path.read_bytes()).hexdigest()} does not match its line" in out

    rc, out = _check(tmp_path, inventory, "nomad", **{**ok, "archive_path": f"{tmp_path}/missing.zip"})
    assert rc != 0
    assert "missing.zip' does not exist on the controller" in out

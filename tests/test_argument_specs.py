"""Each role's meta/argument_specs.yml mirrors its defaults/main.yml (names and literal defaults)."""

import pathlib

import pytest
import yaml

ROLES = pathlib.Path(__file__).resolve().parent.parent / "roles"
ROLE_DIRS = sorted(p for p in ROLES.iterdir() if (p / "defaults" / "main.yml").exists())


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_argument_specs_mirror_defaults(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    spec_file = role / "meta" / "argument_specs.yml"
    assert spec_file.exists(), f"{role.name} has defaults but no meta/argument_specs.yml"
    options = yaml.safe_load(spec_file.read_text())["argument_specs"]["main"]["options"]
    assert sorted(options) == sorted(defaults), f"{role.name}: specs and defaults name different variables"
    for name, value in defaults.items():
        spec = options[name]
        assert spec.get("description"), f"{role.name}: {name} has no description"
        templated = isinstance(value, str) and "{{" in value
        if "default" in spec and not templated:
            assert spec["default"] == value, f"{role.name}: {name} default differs: spec {spec['default']!r}, defaults {value!r}"
        if "choices" in spec and not templated:
            assert value in spec["choices"], f"{role.name}: default of {name} is not among its choices"


@pytest.mark.parametrize("role", ROLE_DIRS, ids=lambda p: p.name)
def test_role_variables_are_prefixed(role):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    prefix = role.name + "_"
    for name in defaults:
        assert name.startswith(prefix), f"{role.name}: variable {name} lacks the role prefix {prefix}"

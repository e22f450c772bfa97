"""The consul_intentions module's reconciliation plan (the HTTP calls are exercised in Molecule)."""

import importlib.util
import pathlib

# An Ansible module is a script, not a package: load it from its file.
_SPEC = importlib.util.spec_from_file_location(
    "consul_intentions", pathlib.Path(__file__).resolve().parent.parent / "plugins" / "modules" / "consul_intentions.py")
_MODULE = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_MODULE)
plan = _MODULE.plan


def intention(ident, source, destination, action):
    return {"ID": ident, "SourceName": source, "DestinationName": destination, "Action": action}


def test_empty_consul_creates_everything():
    create, update, delete = plan([], {("*", "*"): "deny", ("a", "b"): "allow"})
    assert sorted(create) == [("*", "*", "deny"), ("a", "b", "allow")]
    assert update == [] and delete == []


def test_matching_state_changes_nothing():
    current = [intention("1", "*", "*", "deny"), intention("2", "a", "b", "allow")]
    assert plan(current, {("*", "*"): "deny", ("a", "b"): "allow"}) == ([], [], [])


def test_changed_action_is_updated_in_place():
    current = [intention("1", "*", "*", "allow")]
    assert plan(current, {("*", "*"): "deny"}) == ([], [("1", "*", "*", "deny")], [])


def test_undeclared_and_duplicate_intentions_are_deleted():
    current = [intention("1", "a", "b", "allow"), intention("2", "a", "b", "allow"), intention("3", "x", "b", "allow")]
    create, update, delete = plan(current, {("a", "b"): "allow"})
    assert create == [] and update == []
    assert sorted(delete) == [("2", "a", "b"), ("3", "x", "b")]

"""Unit tests' shared fixtures: the lab model as Ansible resolves it for a three-node test inventory.

tests/inventory/ has three workload nodes with fixed addresses and links the lab's
group_vars, so `model` is exactly what the playbooks would compute for such a lab.
"""

import os

import pytest

from meshlab import model as lab_model
from testkit.lab import ROOT, resolved_model

INVENTORY = os.path.join(ROOT, "tests", "inventory")


@pytest.fixture(scope="session")
def inventory():
    return INVENTORY


@pytest.fixture(scope="session")
def model():
    """The three-node lab model (playbooks/model.yml against tests/inventory)."""
    return resolved_model(INVENTORY)


@pytest.fixture(scope="session")
def catalog(model):
    return model["catalog"]


@pytest.fixture(scope="session")
def settings(model):
    return model["settings"]


@pytest.fixture(scope="session")
def one_node(catalog, settings):
    """The same catalog on a single node (the default Molecule scenario's shape)."""
    return lab_model.build(catalog, [{"name": "mesh-1", "address": "10.0.0.11"}], settings)

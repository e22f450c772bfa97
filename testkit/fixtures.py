"""pytest fixtures every Molecule scenario's testinfra tests share; a scenario's conftest imports them.

They read the scenario's inventory (MOLECULE_INVENTORY_FILE), so they only work under `molecule verify`.
"""

import pytest

from meshlab import acl, secrets
from .lab import molecule_inventory, resolved_model, secrets_dir


@pytest.fixture(scope="session")
def inventory():
    """The Molecule inventory, for tests that run the project's playbooks against the nodes."""
    return molecule_inventory()


@pytest.fixture(scope="session")
def model(inventory):
    """The lab model (meshlab.model.build) as the scenario's inventory resolves it."""
    return resolved_model(inventory)


@pytest.fixture(scope="session")
def management_token(inventory):
    """The lab's management token, from the controller's secrets (the tests' own calls use it)."""
    return secrets.read(secrets_dir(inventory), acl.secret_name("management"))

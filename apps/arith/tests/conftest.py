import pytest

from arith_svc.app import create_app


@pytest.fixture
def add_client():
    return create_app("add", "add-test-1").test_client()


@pytest.fixture
def sub_client():
    return create_app("sub", "sub-test-1").test_client()

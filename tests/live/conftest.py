"""Fixtures of the live-capture tests: root check, a fresh netns + veth pair per test."""
import os
import shutil

import pytest

from .netns import VethPair


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/live/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.live)


@pytest.fixture
def veth():
    if os.geteuid() != 0:
        pytest.skip("live capture tests need root (network namespaces, veth pairs, AF_PACKET)")
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/test.sh installs it)")
    pair = VethPair()
    try:
        pair.create()
        yield pair
    finally:
        pair.destroy()

"""Shared pytest configuration: skip root-only tests when not running as root; the testbed guard."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from helpers.testbed import BusyTestbedError
from helpers.testbed import testbed_guard as _guard


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, Open vSwitch)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def testbed_guard() -> Iterator[None]:
    """Refuse to run over a user's testbed; afterwards stop + clean, then prove nothing is left."""
    try:
        with _guard():
            yield
    except BusyTestbedError as exc:  # raised before the test ran: nothing of it to clean
        pytest.fail(str(exc))

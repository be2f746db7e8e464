"""The OAI build the `oai` tests run against: skipped without one, a failure instead when CI said it
built OAI first (EMULAB_REQUIRE_OAI=1), so a missing build can never pass CI as a skip."""

from __future__ import annotations

import os

import pytest

from radio import oai_install


def need_oai(*, built_here: bool = False) -> oai_install.OaiInstall:
    """The installed OAI softmodems (``built_here``: only a build of ``make oai``, not softmodems on the
    PATH); skips the test without them, or fails it when they are required."""
    inst = oai_install.find_install()
    if inst is None or (built_here and inst.prefix is None):
        msg = "needs an OAI build (make oai)"
        if os.environ.get("EMULAB_REQUIRE_OAI") == "1":
            pytest.fail(msg + ": EMULAB_REQUIRE_OAI=1 but none was found")
        pytest.skip(msg)
    return inst

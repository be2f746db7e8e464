"""Fixtures of the real-kernel tests: the RSPLIB interoperability lab (helpers.rsplib_lab)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.rsplib_lab import Lab


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    lb = Lab(tmp_path, str(abs(hash(request.node.name)) % 1000))
    try:
        yield lb
    finally:
        lb.close()
        # Keep the logs next to the junit file when running in the lane.
        keep = os.environ.get("EMULAB_RK_ARTIFACTS")
        if keep:
            dst = Path(keep) / re.sub(r"[^\w.-]", "_", request.node.name)
            shutil.copytree(tmp_path, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.vec"))

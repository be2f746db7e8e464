"""Helpers for the tests that drive the `emulab` command as a user would.

``run_emulab`` runs the command line in a child process; ``testbed_guard`` refuses to start over a
testbed somebody else is running and, however the body ends, stops and cleans the testbed and then
proves that nothing emulab created is left; ``real_kernel`` tells the real-kernel lane (sch_netem,
SCTP and the openvswitch datapath loaded) from the fallback paths.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from emulab.cleanup import find_leftovers
from emulab.runstate import read_state

EMULAB = [sys.executable, "-m", "emulab"]
"""The command line of this interpreter's emulab (works in a venv and in the real-kernel guest)."""

REAL_KERNEL_MODULES = ("sctp", "sch_netem", "openvswitch")
REAL_KERNEL_NEEDS = "needs a kernel with SCTP, sch_netem and the openvswitch datapath"


def run_emulab(*args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
    """``emulab ARGS…`` with its output captured as text."""
    return subprocess.run([*EMULAB, *args], capture_output=True, text=True, timeout=timeout, check=check)


def real_kernel() -> bool:
    """True inside the real-kernel VM, or where sctp, sch_netem and openvswitch are loaded."""
    if os.environ.get("EMULAB_REALKERNEL") == "1":
        return True
    return all(Path("/sys/module", m).exists() for m in REAL_KERNEL_MODULES)


class BusyTestbedError(RuntimeError):
    """A testbed is already running (or a crashed one is left): the guard will not touch it."""


@contextmanager
def testbed_guard(stop_timeout: float = 60) -> Iterator[None]:
    """Run the body only when no testbed is running; afterwards stop + clean, then assert nothing is left."""
    if read_state() is not None:
        raise BusyTestbedError("a testbed is already running (or crashed): run `emulab stop` / `emulab clean` first")
    try:
        yield
    finally:
        run_emulab("stop", timeout=stop_timeout)
        run_emulab("clean", timeout=stop_timeout)
    left = find_leftovers()
    assert left == [], f"left behind: {left}"

"""A testbed start over a broken Open vSwitch: a killed ovs-vswitchd is started again, a hung one
makes the start fail within seconds, saying which daemon and how to fix it, leaving nothing behind.

These tests stop or kill the system's ovs-vswitchd, so they refuse to run while any bridge exists
(another testbed would lose its switches), and they bring OVS back however they end. Run them under
the testbed lock like every root test.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from emulab import ovs
from emulab.cleanup import find_leftovers

from helpers.testbed import run_emulab

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]


@pytest.fixture
def system_ovs(testbed_guard: None) -> Iterator[ovs.OvsPaths]:
    """The system OVS, usable and bridgeless before the test and usable again after it."""
    ovs.ensure_running()
    if bridges := ovs.vsctl("list-br").stdout.split():
        pytest.fail(f"Open vSwitch has bridges ({', '.join(bridges)}): another testbed runs on it")
    paths = ovs.OvsPaths.from_env()
    try:
        yield paths
    finally:
        pid = ovs._daemon_pid(paths, "ovs-vswitchd")
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        ovs.ensure_running()
        ovs.check_answering(paths)


def test_start_over_a_killed_vswitchd_starts_it_again(system_ovs: ovs.OvsPaths) -> None:
    old = ovs._daemon_pid(system_ovs, "ovs-vswitchd")
    assert old is not None
    os.kill(old, signal.SIGKILL)
    while ovs._daemon_alive(system_ovs, "ovs-vswitchd"):  # dead, or a zombie nobody reaped yet
        time.sleep(0.01)
    res = run_emulab("start", "small", "--detach", timeout=200)
    assert res.returncode == 0, res.stdout + res.stderr
    assert ovs._daemon_pid(system_ovs, "ovs-vswitchd") not in (None, old)
    stop = run_emulab("stop", timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr


def test_start_over_a_hung_vswitchd_fails_fast_and_says_why(system_ovs: ovs.OvsPaths) -> None:
    pid = ovs._daemon_pid(system_ovs, "ovs-vswitchd")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = run_emulab("start", "small", "--detach", timeout=200)
        took = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "phase ovs" in res.stderr, res.stderr
    assert f"ovs-vswitchd (pid {pid}) does not answer" in res.stderr, res.stderr
    assert "restart Open vSwitch" in res.stderr, res.stderr
    # a start over a working OVS takes longer than this on its own (the cold imports alone)
    assert took < 20, f"the start took {took:.1f} s to fail"
    assert find_leftovers() == []

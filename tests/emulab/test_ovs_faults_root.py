"""A testbed start over a broken Open vSwitch: a killed ovs-vswitchd is started again, a hung one
makes the start fail within seconds, saying which daemon and how to fix it, leaving nothing behind.

These tests stop or kill the system's ovs-vswitchd, which every testbed and every other user of
Open vSwitch on the machine depends on, so they run only when asked: EMULAB_OVS_FAULTS=1 (as the
long teardown variant runs only with EMULAB_TEARDOWN_SEEDS=all). They refuse to run while any bridge
exists (another testbed would lose its switches), and they bring OVS back however they end. Run them
under the testbed lock like every root test:
``EMULAB_OVS_FAULTS=1 flock /tmp/emulab-dev.lock .venv/bin/python -m pytest tests/emulab/test_ovs_faults_root.py``.
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

pytestmark = [
    pytest.mark.root,
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.environ.get("EMULAB_OVS_FAULTS") != "1",
                       reason="stops and kills the system's ovs-vswitchd: EMULAB_OVS_FAULTS=1 runs it"),
]


def _wait_until_dead(paths: ovs.OvsPaths, daemon: str, timeout: float = 5.0) -> None:
    """Until the daemon is dead or a zombie nobody reaped yet (SIGKILL takes effect asynchronously)."""
    deadline = time.monotonic() + timeout
    while ovs._daemon_alive(paths, daemon):
        assert time.monotonic() < deadline, f"the killed {daemon} still runs after {timeout:.0f} s"
        time.sleep(0.01)


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
        assert ovs.check_answering(paths)


def test_start_over_a_killed_vswitchd_starts_it_again(system_ovs: ovs.OvsPaths) -> None:
    old = ovs._daemon_pid(system_ovs, "ovs-vswitchd")
    assert old is not None
    os.kill(old, signal.SIGKILL)
    _wait_until_dead(system_ovs, "ovs-vswitchd")
    res = run_emulab("start", "small", "--detach", timeout=200)
    assert res.returncode == 0, res.stdout + res.stderr
    assert ovs._daemon_pid(system_ovs, "ovs-vswitchd") not in (None, old)
    stop = run_emulab("stop", timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr


def test_start_over_a_hung_vswitchd_fails_fast_and_says_why(system_ovs: ovs.OvsPaths,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pid = ovs._daemon_pid(system_ovs, "ovs-vswitchd")
    assert pid is not None
    monkeypatch.setenv(ovs.ANSWER_TIMEOUT_ENV, "3")  # the start inherits it
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = run_emulab("start", "small", "--detach", timeout=200)
        took = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "phase ovs" in res.stderr, res.stderr
    assert f"ovs-vswitchd (pid {pid}) is hung: its process is stopped" in res.stderr, res.stderr
    assert "restart Open vSwitch" in res.stderr, res.stderr
    # a start over a working OVS takes longer than this on its own (the cold imports alone)
    assert took < 20, f"the start took {took:.1f} s to fail"
    assert find_leftovers() == []


def test_clean_with_nothing_to_remove_does_not_wait_on_a_hung_vswitchd(system_ovs: ovs.OvsPaths) -> None:
    # Listing bridges is ovsdb-server's work; ovs-vswitchd is asked only when there are bridges to remove.
    pid = ovs._daemon_pid(system_ovs, "ovs-vswitchd")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = run_emulab("clean", timeout=60)
        took = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "clean: nothing left behind" in res.stdout, res.stdout
    assert took < ovs.ANSWER_TIMEOUT, f"the clean took {took:.1f} s"

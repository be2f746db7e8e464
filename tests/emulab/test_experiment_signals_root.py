"""An experiment that is stopped half-way leaves nothing behind: SIGTERM tears its testbed down by
itself; after SIGKILL, `emulab clean` finds every process it started by emulab's run marker."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from emulab import control
from emulab.cleanup import find_leftovers, marked_processes

from helpers.testbed import EMULAB

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(300)]


def _start_experiment(out: Path) -> subprocess.Popen[str]:
    if control.read_state() is not None:
        pytest.fail("a testbed is already running: `emulab stop` / `emulab clean` first")
    return subprocess.Popen([*EMULAB, "experiment", "paper", "--pus", "2", "--runs", "1", "--duration", "120",
                             "--no-pcaps", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_pool_users(exp: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until the pool users run (registrars, PEs and PUs all up), i.e. the most there is to leave behind."""
    deadline = time.monotonic() + timeout
    while not any("calcapp-pu" in _cmdline(pid) for pid, _ in marked_processes()):
        if exp.poll() is not None:
            pytest.fail(f"experiment ended early ({exp.returncode}): {exp.stderr.read() if exp.stderr else ''}")
        if time.monotonic() > deadline:
            pytest.fail("the pool users never started")
        time.sleep(0.5)


def _cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _cleanup(exp: subprocess.Popen[str]) -> None:
    if exp.poll() is None:
        exp.kill()
        exp.wait()
    subprocess.run([*EMULAB, "clean"], capture_output=True, timeout=60)


def test_sigterm_tears_the_experiment_down(tmp_path: Path) -> None:
    exp = _start_experiment(tmp_path)
    try:
        _wait_for_pool_users(exp)
        exp.send_signal(signal.SIGTERM)
        _, err = exp.communicate(timeout=90)
        assert exp.returncode == 2 and "stopped by signal" in err, err
        assert marked_processes() == [] and find_leftovers() == []
        assert control.read_state() is None
    finally:
        _cleanup(exp)
    assert find_leftovers() == []


def test_clean_after_sigkill_finds_every_process(tmp_path: Path) -> None:
    exp = _start_experiment(tmp_path)
    try:
        _wait_for_pool_users(exp)
        started = {pid for pid, _ in marked_processes()}
        assert len(started) >= 10  # controller, shaper, 3 registrars, 7 PEs, the PUs
        os.kill(exp.pid, signal.SIGKILL)
        exp.wait(timeout=10)
        assert find_leftovers(), "a SIGKILLed experiment leaves its testbed for `emulab clean`"
        cleaned = subprocess.run([*EMULAB, "clean"], capture_output=True, text=True, timeout=60)
        assert cleaned.returncode == 0, cleaned.stderr
        alive = [pid for pid in started if os.path.exists(f"/proc/{pid}") and _cmdline(pid)]
        assert alive == [] and marked_processes() == [] and find_leftovers() == []
    finally:
        _cleanup(exp)
    assert find_leftovers() == []

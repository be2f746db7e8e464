"""Coverage loss and return on a real testbed (paper-topology, emulated radio): `emulab coverage lose`
cuts the UE off at once, the radio reports RLF ("detached") after N310 x 10 ms + T310, and after
`emulab coverage restore` the UE pings the eNodeB again once re-attached. Needs root; stops and
cleans everything in `finally`, then checks nothing is left."""

from __future__ import annotations

import json
import time

import pytest

from emulab import control
from emulab.cleanup import find_leftovers

from helpers.testbed import run_emulab as emulab

pytestmark = [pytest.mark.root, pytest.mark.slow]

ENB_RADIO_ADDR = "10.0.0.2"  # paper-topology: the eNB end of the radio link
MEC_ADDR = "10.2.0.2"  # paper-topology: mec-pr, beyond the eNodeB
RLF_S = 1.2  # OAI defaults: N310 (20) x 10 ms + T310 (1000 ms)
ATTACH_S = 1.0


def radio_state() -> dict:
    return json.loads(emulab("radio", "status", "--json", check=True).stdout)


def ping_ok(count: int = 1, wait_s: float = 1.0) -> bool:
    r = emulab("exec", "ue", "--", "ping", "-n", "-q", "-c", str(count), "-W", str(wait_s), ENB_RADIO_ADDR, timeout=30)
    return r.returncode == 0


def wait_for(pred, timeout: float, step: float = 0.05) -> float:
    """Seconds until ``pred()`` is true (fails the test after ``timeout``)."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - t0


def wait_until_free(timeout: float = 300) -> None:
    """Other sessions share this machine's single testbed slot: wait for them rather than clash."""
    deadline = time.monotonic() + timeout
    while find_leftovers():
        if time.monotonic() > deadline:
            pytest.fail(f"another testbed is using this machine: {find_leftovers()[:3]} (`emulab stop`/`clean`)")
        time.sleep(2)


@pytest.fixture
def paper_testbed():
    """paper-topology, no services; stopped and cleaned afterwards, but only if this test started it."""
    wait_until_free()
    runner = None
    try:
        emulab("start", "paper-topology", "--detach", "--no-services", "--timeout", "120", timeout=180, check=True)
        runner = (control.read_state() or {}).get("runner_pid")
        yield
    finally:
        state = control.read_state()
        if runner is not None and (state is None or state.get("runner_pid") == runner):
            emulab("stop", timeout=60)
            emulab("clean", timeout=60)
    if runner is not None:
        assert find_leftovers() == []


def test_coverage_loss_rlf_and_reattach(paper_testbed):
    st = radio_state()
    assert st["backend"] == "emulated" and st["attach"] == "attached" and st["cqi"] == 15
    assert "SNR" in emulab("radio", "status", check=True).stdout
    assert ping_ok(count=3)

    t_lose = time.monotonic()
    emulab("coverage", "lose", check=True)
    assert not ping_ok()  # no packets from the moment coverage is lost
    wait_for(lambda: radio_state()["attach"] == "detached", timeout=5)
    rlf_s = time.monotonic() - t_lose
    assert RLF_S - 0.1 <= rlf_s <= RLF_S + 1.5, rlf_s  # + CLI round trips on a shared 2-core machine
    st = radio_state()
    assert st["attached"] is False and st["coverage"] == "lost" and st["params"]["loss_pct"] == 100.0
    assert st["bearer"] == "down"
    assert not ping_ok(count=2)
    # detached, the UE has no bearer: beyond its own link nothing is routed, and it fails at once
    t0 = time.monotonic()
    far = emulab("exec", "ue", "--", "ping", "-n", "-c", "1", "-W", "3", MEC_ADDR, timeout=30)
    assert far.returncode != 0 and "unreachable" in (far.stdout + far.stderr).lower(), far.stdout + far.stderr
    assert time.monotonic() - t0 < 2.5  # no 3 s wait for a reply: the kernel refuses at once

    t_restore = time.monotonic()
    emulab("coverage", "restore", check=True)
    assert radio_state()["attach"] == "attaching"
    wait_for(lambda: ping_ok(wait_s=0.5), timeout=10, step=0.0)
    back_s = time.monotonic() - t_restore
    assert ATTACH_S - 0.1 <= back_s <= ATTACH_S + 3.0, back_s
    st = radio_state()
    assert st["attach"] == "attached" and st["coverage"] == "ok" and st["params"]["loss_pct"] == 0.0
    assert st["bearer"] == "up"
    assert emulab("exec", "ue", "--", "ping", "-n", "-c", "1", "-W", "3", MEC_ADDR, timeout=30).returncode == 0

    # a dip shorter than N310 x 10 ms + T310 costs packets but no RLF
    emulab("coverage", "lose", "--for", "0.5", check=True)
    time.sleep(1.5)
    st = radio_state()
    assert st["attach"] == "attached" and st["coverage"] == "ok"
    assert ping_ok()

"""Teardown under faults: SIGKILL of the runner, the os-ken controller, the link shaper, ovs-vswitchd or
ovsdb-server while a testbed starts, runs or stops, then `emulab clean` — nothing may be left.

Each seed picks the victim, the moment (``start``: during `emulab start`; ``running``; ``stop``:
during `emulab stop`) and the delay before the kill; ten seeds cover every victim at two moments,
the ``slow`` variant 30 more. "Nothing left" is a snapshot of the machine before the seed against
one after `emulab clean`: no network namespace, root-namespace link (veth, tap/tun), OVS bridge,
testbed process (the runner, controller, shaper, services, host shells: emulab's run marker or
their command line) or state file in the run directory that was not there before — and Open vSwitch
usable afterwards (both daemons up, the database answering), since killing it is one of the faults
and `emulab clean` brings it back.

The topology is ``small`` (a 10 ms link, so the link shaper runs when the kernel has no netem).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from emulab import ovs, paths
from emulab.cleanup import find_leftovers, marked_processes
from emulab.runstate import read_state

from helpers.testbed import EMULAB, run_emulab

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]

VICTIMS = ("runner", "controller", "shaper", "ovs-vswitchd", "ovsdb-server")
MOMENTS = ("start", "running", "stop")
TOPOLOGY = "small"
# the modules of the processes a testbed starts beside its hosts (found by command line as well)
TESTBED_MODULES = (b"emulab.runner", b"emulab.shaper", b"emulab.controller")


def plan(seed: int) -> tuple[str, str, float]:
    """(victim, moment, delay in s before the kill) of one seed: the victims in turn, each seed a
    different moment, the delay drawn from the seed."""
    rng = random.Random(seed)
    victim = VICTIMS[seed % len(VICTIMS)]
    moment = MOMENTS[(seed // len(VICTIMS) + seed % len(VICTIMS)) % len(MOMENTS)]
    delay = rng.uniform(0.2, 4.0) if moment == "start" else rng.uniform(0.0, 1.5)
    return victim, moment, round(delay, 2)


# ----------------------------------------------------------------------------- the machine's state


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def live_testbed_processes() -> set[str]:
    """The testbed's processes: those with emulab's run marker, and the runner, shaper and
    controller by command line (a process that lost its marker would still be found)."""
    found = {f"{pid} {comm}" for pid, comm in marked_processes()}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            argv = _cmdline(int(entry.name))
            if any(m in argv for m in TESTBED_MODULES) and not _zombie(int(entry.name)):
                found.add(f"{entry.name} {b' '.join(argv[:4]).decode(errors='replace')}")
    return found


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def snapshot() -> dict[str, set[str]]:
    """What a testbed could leave behind, as it is now."""
    netns = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    links, tuns = set(), set()
    for dev in Path("/sys/class/net").iterdir():
        links.add(dev.name)
        if (dev / "tun_flags").exists():
            tuns.add(dev.name)
    run_files = {p.name for p in paths.run_dir().iterdir()} - {"logs", "capabilities.json"} \
        if paths.run_dir().is_dir() else set()
    return {"namespaces": netns, "links": links, "tun devices": tuns,
            "bridges": set(ovs.vsctl("list-br").stdout.split()), "processes": live_testbed_processes(),
            "state files": run_files}


def new_since(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, list[str]]:
    return {k: sorted(after[k] - before[k]) for k in after if after[k] - before[k]}


def ovs_usable() -> str | None:
    """None when both OVS daemons run and the database answers; else what is wrong."""
    if not ovs.is_running():
        return "Open vSwitch is not running"
    try:
        ovs.vsctl("show", timeout=5)
    except ovs.OvsError as exc:
        return str(exc)
    return None


# ----------------------------------------------------------------------------- the faults


def victim_pids(victim: str) -> list[int]:
    if victim in ("ovs-vswitchd", "ovsdb-server"):
        try:
            return [int(ovs.OvsPaths.from_env().pidfile(victim).read_text().strip())]
        except (OSError, ValueError):
            return []
    module = {"runner": b"emulab.runner", "shaper": b"emulab.shaper", "controller": b"emulab.controller"}[victim]
    return [int(e.name) for e in Path("/proc").iterdir()
            if e.name.isdigit() and module in _cmdline(int(e.name)) and not _zombie(int(e.name))]


def kill_when_there(victim: str, deadline: float, still: subprocess.Popen[str] | None = None) -> list[int]:
    """SIGKILL the victim as soon as it exists (it may not yet, during a start); the pids killed."""
    while time.monotonic() < deadline:
        pids = victim_pids(victim)
        if pids:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return pids
        if still is not None and still.poll() is not None:
            return []  # the command ended before the victim appeared (e.g. no shaper in this build)
        time.sleep(0.02)
    return []


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int | None, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, out
    return proc.returncode, out


def run_seed(seed: int) -> None:
    victim, moment, delay = plan(seed)
    if read_state() is not None:
        pytest.fail("a testbed is already running: `emulab stop` / `emulab clean` first")
    problem = ovs_usable()
    if problem:  # the seed must start from a usable machine, or its result means nothing
        pytest.fail(f"before the seed: {problem}")
    before = snapshot()
    killed: list[int] = []
    outputs: list[str] = []
    try:
        start = subprocess.Popen([*EMULAB, "start", TOPOLOGY, "--detach"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, errors="replace")
        if moment == "start":
            time.sleep(delay)
            killed = kill_when_there(victim, time.monotonic() + 60, start)
            _, out = _finish(start, 180)
            outputs.append(out)
        else:
            code, out = _finish(start, 180)
            outputs.append(out)
            assert code == 0, f"seed {seed}: start failed before any fault:\n{out}"
            if moment == "running":
                time.sleep(delay)
                killed = kill_when_there(victim, time.monotonic() + 5)
            else:
                stop = subprocess.Popen([*EMULAB, "stop", "--timeout", "30"], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, errors="replace")
                time.sleep(delay)
                killed = kill_when_there(victim, time.monotonic() + 0.5, stop)
                outputs.append(_finish(stop, 120)[1])
        for text in outputs:  # whatever the fault, the command's own output must stay readable
            assert "codec can't decode" not in text and "Traceback" not in text, text
    finally:
        # a testbed still running (the fault hit something it survives) is stopped first, as a user would
        if read_state() is not None:
            run_emulab("stop", "--timeout", "30", timeout=120)
        clean = run_emulab("clean", timeout=180)
    assert clean.returncode == 0, f"seed {seed} ({victim} at {moment}): clean failed:\n{clean.stdout}{clean.stderr}"
    left = new_since(before, snapshot())
    assert not left, f"seed {seed}: SIGKILL {victim} ({killed}) at {moment} +{delay} s: left behind {left}"
    assert find_leftovers() == []
    assert ovs_usable() is None, f"seed {seed}: after clean: {ovs_usable()}"
    assert read_state() is None


@pytest.mark.parametrize("seed", range(10))
def test_teardown_under_faults(seed: int) -> None:
    run_seed(seed)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("EMULAB_TEARDOWN_SEEDS") != "all",
                    reason="the long variant (30 more seeds, about 10 min): EMULAB_TEARDOWN_SEEDS=all runs it")
@pytest.mark.parametrize("seed", range(10, 40))
def test_teardown_under_faults_more_seeds(seed: int) -> None:
    run_seed(seed)


def test_plan_covers_every_victim_and_moment() -> None:
    combos = {plan(s)[:2] for s in range(10)}
    assert {v for v, _ in combos} == set(VICTIMS)
    assert {m for _, m in combos} == set(MOMENTS)
    assert len({plan(s)[:2] for s in range(10, 40)}) == len(VICTIMS) * len(MOMENTS)

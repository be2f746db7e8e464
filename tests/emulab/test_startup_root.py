"""Start-up of real testbeds: the phases `emulab status --json` reports, services registered when the
start returns, and starts that fail saying where and why, leave nothing behind, and do not fail
because the machine is busy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulab import paths
from emulab.cleanup import find_leftovers
from emulab.topology import load

from helpers.testbed import run_emulab as emulab

pytestmark = [pytest.mark.root, pytest.mark.slow]

PHASES = {"probe", "ovs", "controller", "namespaces", "links", "switches", "addresses/routes",
          "controller connect", "radio", "services/registration"}


def test_paper_topology_reports_its_phases_and_is_registered_when_ready(testbed_guard):
    start = emulab("start", "paper-topology", "--detach", check=True)
    assert "is up in" in start.stdout
    st = json.loads(emulab("status", "--json", check=True).stdout)
    names = [p["phase"] for p in st["phases"]]
    assert PHASES <= set(names), names
    assert all(p["s"] >= 0 for p in st["phases"])
    # the phases cover the whole start (the runner's own start-up and the probe come before ready_s)
    assert sum(p["s"] for p in st["phases"]) >= st["ready_s"] - 0.05
    spec = load("paper-topology")
    pes = [n for n, node in spec.nodes.items() for s in node.services if s.kind == "pe"]
    assert pes
    for svc in st["services"]:
        assert svc["alive"], svc
    for node in pes:  # registered before `start` returned, not some time later
        assert b" registered in pool " in (paths.log_dir() / f"{node}-pe.log").read_bytes(), node
    # and the text view shows them too
    assert "services/registration" in emulab("status", check=True).stdout


def _topology_with_a_broken_pe(tmp_path: Path) -> Path:
    text = load("small").source.read_text()
    broken = text.replace("options: {pool: Processing Pool, capacity: 1000000}",
                          "options: {pool: Processing Pool, capacity: 1000000, policy: NoSuchPolicy}", 1)
    assert broken != text
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    return path


def test_a_failed_start_says_which_phase_and_why_and_leaves_nothing(testbed_guard, tmp_path):
    res = emulab("start", str(_topology_with_a_broken_pe(tmp_path)), "--detach")
    assert res.returncode == 2
    assert "phase services/registration" in res.stderr, res.stderr
    assert "exited at start-up" in res.stderr and "-pe.log" in res.stderr, res.stderr
    assert find_leftovers() == []


def test_a_start_given_up_is_aborted_and_leaves_nothing(testbed_guard):
    res = emulab("start", "paper-topology", "--detach", "--timeout", "0.7")
    assert res.returncode == 2
    assert "not ready within" in res.stderr, res.stderr
    assert "start failed in phase" in res.stderr or "runner" in res.stderr, res.stderr
    assert find_leftovers() == []


def test_starts_succeed_while_every_cpu_is_busy(testbed_guard):
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    failures = []
    try:
        for _ in range(3):
            res = emulab("start", "paper-topology", "--detach", timeout=300)
            if res.returncode != 0:
                failures.append(res.stderr.strip())
            emulab("stop", timeout=120)
            left = find_leftovers()
            assert left == [], left
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert failures == []


def test_hosts_reach_each_other_across_a_chain_of_switches(testbed_guard):
    """A link between two switches: both its ends must be up (no node's configuration brings up a
    switch's port), so h1 (on s1) reaches h2 (on s2) and, through r1, h3."""
    path = Path(__file__).parent / "data" / "good-switch-chain.yaml"
    spec = load(str(path))
    emulab("start", str(path), "--detach", "--no-services", check=True)
    for target in ("h2", "h3"):
        address = str(spec.primary_address(target))
        ping = emulab("exec", "h1", "--", "ping", "-n", "-c", "1", "-W", "5", address, timeout=60)
        assert ping.returncode == 0, (target, ping.stdout, ping.stderr)

"""`emulab experiment chaos` end to end (root): a short seeded schedule of crashes, link flaps and coverage
losses on paper-topology, and nothing lost or done twice.

8 CalcApp PUs on the UE for 75 s with a fault every 5 s on average (SIGKILL and restart of pool
elements and registrars, a link's delay or loss raised or the link down, the UE's coverage lost and
back), none after 60 s, then a drain of 90 s. Seed 13's schedule has every kind of fault (13 in all:
the UE's registrar killed, the UE out of coverage three times, the SGi link down among them). It runs
with whatever the kernel offers (the userspace shaper and TCP on the host) and tears its testbed
down itself, also on failure.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from emulab.cleanup import find_leftovers
from emulab.experiments.chaos import KINDS, chaos_schedule
from emulab.results import load_results
from emulab.scenario import Scenario, run_seed

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(900)]

SCENARIO = Scenario(pus=(8,), runs=1, duration=75.0, seed=13)
MEAN_GAP, SETTLE, DRAIN = 5.0, 15.0, 90.0
LATE_S = 3.0  # a fault or restore may be done this much after its planned time (poll, kill, spawn)


@pytest.fixture(scope="module")
def chaos_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emulab import control
    from emulab.experiments.chaos import ChaosExperiment

    if control.read_state():
        pytest.fail("a testbed is already running: `emulab stop` / `emulab clean` first")
    out = tmp_path_factory.mktemp("chaos")
    return ChaosExperiment(replace(SCENARIO, out=out), mean_gap=MEAN_GAP, settle=SETTLE, drain=DRAIN, pcaps=False,
                           progress=False).run()


def test_every_request_completes_exactly_once(chaos_run: Path) -> None:
    chaos = json.loads((chaos_run / "summary.json").read_text())["chaos"]
    assert chaos["issued"] > 50, chaos
    assert chaos["completed_twice"] == 0 and chaos["recorded_twice"] == 0, chaos
    assert chaos["completed"] + chaos["lost"] == chaos["issued"], chaos
    assert sum(chaos["lost_by_reason"].values()) == chaos["lost"], chaos
    # faults stop 15 s before the end and the drain is 90 s: everything issued must get done
    assert chaos["lost"] == 0, chaos
    reqs = list(load_results(chaos_run).requests)
    assert len(reqs) == chaos["issued"] and all(r.status == "completed" for r in reqs)
    assert chaos["restarted"] is not None  # the PUs recorded their restarts from scratch


def test_every_kind_of_fault_was_done_and_undone_on_time(chaos_run: Path) -> None:
    chaos = json.loads((chaos_run / "summary.json").read_text())["chaos"]
    assert all(chaos["faults"][k] >= 1 for k in KINDS), chaos["faults"]
    assert chaos["faults_failed"] == 0 and chaos["restores_failed"] == 0, chaos
    assert chaos["services_restarted"] == chaos["faults"]["pe"] + chaos["faults"]["registrar"]
    manifest = json.loads((chaos_run / "manifest.json").read_text())["chaos"]
    planned = manifest["schedules"]["8pus-run1"]
    with open(chaos_run / "chaos.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * len(planned)
    for f in planned:
        done = {r["action"]: r for r in rows if r["kind"] == f["kind"] and r["target"] == f["target"]
                and float(r["planned_s"]) in (f["at"], round(f["at"] + f["down"], 2), f["at"] + f["down"])}
        assert set(done) == {"fault", "restore"}, (f, done)
        for action, at in (("fault", f["at"]), ("restore", f["at"] + f["down"])):
            assert done[action]["ok"] == "True", done[action]
            assert at - 0.01 <= float(done[action]["done_s"]) <= at + LATE_S, (f, done[action])


def test_schedule_is_the_seeds(chaos_run: Path) -> None:
    manifest = json.loads((chaos_run / "manifest.json").read_text())["chaos"]
    again = chaos_schedule(run_seed(SCENARIO.seed, 8, 1), SCENARIO.duration, SETTLE, MEAN_GAP, manifest["targets"])
    assert [dict(at=f.at, kind=f.kind, target=f.target, down=f.down, detail=f.detail) for f in again] == \
        manifest["schedules"]["8pus-run1"]


def test_nothing_left_behind(chaos_run: Path) -> None:
    assert find_leftovers() == []

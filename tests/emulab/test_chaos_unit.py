"""`emulab experiment chaos` without a testbed: the seeded schedule and the exactly-once accounting."""

from __future__ import annotations

import pytest

from emulab.experiments.chaos import (
    DOWN_S,
    KINDS,
    WARMUP_S,
    ChaosExperiment,
    chaos_schedule,
    chaos_summary,
    flapped,
    request_counts,
)
from emulab.experiments.records import ExperimentError
from emulab.linkparams import LinkParams
from emulab.results import RequestRecord
from emulab.scenario import Scenario

TARGETS = {"pe": ["ue", "mec-pe1", "mec-pe2", "pmc-essen"], "registrar": ["ue", "mec-pr", "pr-stavanger"],
           "link": ["ue--enb", "mec--haikou"], "coverage": ["ue"]}


@pytest.mark.parametrize("seed", [1, 7, 300_801, 2**31])
def test_schedule_is_seeded_bounded_and_one_fault_per_target_at_a_time(seed: int) -> None:
    duration, settle = 300.0, 20.0
    faults = chaos_schedule(seed, duration, settle, 4.0, TARGETS)
    assert faults == chaos_schedule(seed, duration, settle, 4.0, TARGETS)  # the seed alone decides
    assert faults != chaos_schedule(seed + 1, duration, settle, 4.0, TARGETS)
    assert len(faults) >= 20  # about (300 - 25) / 4 drawn; some skipped (target busy, too late)
    assert {f.kind for f in faults} == set(KINDS)
    for f in faults:
        assert WARMUP_S <= f.at and f.until <= duration - settle
        assert f.target in TARGETS[f.kind]
        lo, hi = DOWN_S[f.kind]
        assert lo <= f.down <= hi
    for a in faults:
        for b in faults:
            if a is not b and (a.kind, a.target) == (b.kind, b.target):
                assert a.until < b.at or b.until < a.at, (a, b)
    links = [f for f in faults if f.kind == "link"]
    assert links and all(f.detail == "down" or f.detail.split(":")[0] in ("delay", "loss") for f in links)


def test_schedule_uses_only_the_kinds_with_targets() -> None:
    faults = chaos_schedule(5, 200.0, 10.0, 3.0, {"pe": ["a"], "link": []})
    assert faults and {f.kind for f in faults} == {"pe"}
    assert chaos_schedule(5, 200.0, 10.0, 3.0, {}) == []


def test_link_flaps() -> None:
    p = LinkParams(delay_ms=10.0, loss_pct=1.0, rate_mbit=100.0)
    assert flapped(p, "down").loss_pct == 100.0 and flapped(p, "down").delay_ms == 10.0
    assert flapped(p, "delay:+120").delay_ms == 130.0
    assert flapped(p, "loss:20").loss_pct == 21.0 and flapped(p, "loss:20").rate_mbit == 100.0
    with pytest.raises(ExperimentError):
        flapped(p, "sideways")


def _req(pu: str, rid: int, *, started: float | None = 1.0, accepted: float | None = 1.5,
         completed: float | None = 3.0, restarts: int = 0, failovers: int = 0) -> RequestRecord:
    status = "completed" if completed is not None else "unfinished"
    return RequestRecord(8, 1, pu, rid, 1e6, 0.5, started, accepted, completed, "mec-pe1" if completed else None,
                         "mec" if completed else None, failovers=failovers, status=status, restarts=restarts)


def test_request_counts_every_request_completed_once_or_lost_with_a_reason() -> None:
    reqs = [_req("pu0", 1), _req("pu0", 2, restarts=1, failovers=2), _req("pu1", 1),
            _req("pu1", 2, started=None, accepted=None, completed=None),
            _req("pu1", 3, accepted=None, completed=None),
            _req("pu2", 1, completed=None)]
    c = request_counts(reqs, [], {"completes": 3})
    assert (c["issued"], c["completed"], c["lost"], c["completed_twice"]) == (6, 3, 3, 0)
    assert c["lost_by_reason"] == {"queued_at_end": 1, "never_accepted": 1, "unfinished_after_accept": 1}
    assert c["restarted"] == 1 and c["failed_over"] == 1


def test_request_counts_see_a_request_completed_twice() -> None:
    twice = [_req("pu0", 1), _req("pu0", 1)]
    c = request_counts(twice, [], {})
    assert c["completed_twice"] == 1 and c["issued"] == 1 and c["lost"] == 0
    # the PUs received more Completes than they have completed requests
    assert request_counts([_req("pu0", 1)], [], {"completes": 2})["completed_twice"] == 1


def test_summary_sums_the_runs() -> None:
    run = {"issued": 5, "completed": 4, "completed_twice": 0, "recorded_twice": 0, "lost": 1, "failed_over": 2,
           "faults_failed": 0, "restores_failed": 0, "services_restarted": 3, "restarted": 1,
           "lost_by_reason": {"queued_at_end": 1}, "faults": {"pe": 2, "registrar": 1, "link": 0, "coverage": 1}}
    s = chaos_summary([run, dict(run, restarted=None)])
    assert s["issued"] == 10 and s["lost"] == 2 and s["lost_by_reason"] == {"queued_at_end": 2}
    assert s["restarted"] is None  # one run did not record restarts: no total pretending it did
    assert s["faults"]["pe"] == 4 and s["services_restarted"] == 6 and len(s["runs"]) == 2


def test_bad_options_are_refused() -> None:
    sc = Scenario(pus=(8,), runs=1, duration=60.0)
    with pytest.raises(ExperimentError):
        ChaosExperiment(sc, settle=58.0, progress=False)
    with pytest.raises(ExperimentError):
        ChaosExperiment(sc, kinds=("pe", "meteor"), progress=False)
    with pytest.raises(ExperimentError):
        ChaosExperiment(sc, mean_gap=0.0, progress=False)


class _Proc:
    def __init__(self, pid: int) -> None:
        self.pid = pid


class _Services:
    """ServiceManager's kill/restart as the experiment uses them, recording the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.procs: list[tuple[str, str, _Proc, list[str]]] = []

    def kill(self, node: str, kind: str) -> dict:
        self.calls.append(("kill", node, kind))
        return {"alive": False}

    def restart(self, node: str, kind: str) -> dict:
        self.calls.append(("restart", node, kind))
        proc = _Proc(1000 + len(self.calls))
        self.procs.append((node, kind, proc, []))
        return {"pid": proc.pid, "alive": True}


def test_hooks_inject_and_undo_the_schedule_on_time(tmp_path) -> None:
    from types import SimpleNamespace

    from emulab.experiments.base import RunContext
    from emulab.experiments.records import Element

    links = {"a--b": SimpleNamespace(backend="shaper", hop=True, params=LinkParams(delay_ms=5.0)),
             "c--d": SimpleNamespace(backend="shaper", hop=False, params=LinkParams())}
    applied: list[tuple[str, LinkParams]] = []
    radio = SimpleNamespace(log=[])
    radio.detach = lambda: radio.log.append("detach")
    radio.attach = lambda: radio.log.append("attach")
    spec = SimpleNamespace(
        links=[SimpleNamespace(name="a--b", radio=False), SimpleNamespace(name="c--d", radio=False),
               SimpleNamespace(name="ue--enb", radio=True)],
        nodes={"ue": SimpleNamespace(services=[SimpleNamespace(kind="registrar")]),
               "pe1": SimpleNamespace(services=[])})
    exp = ChaosExperiment(Scenario(pus=(8,), runs=1, duration=120.0, seed=3), mean_gap=3.0, settle=10.0,
                          progress=False)
    exp.testbed = SimpleNamespace(spec=spec, links=links, radio=radio, link=lambda n: links[n],
                                  set_link_params=lambda n, p: applied.append((n, p)))
    exp.svc = _Services()
    exp.elements = [Element("pe1", "mec", {})]
    exp.ue = "ue"
    exp.results_path = tmp_path
    extra = exp.manifest_extra()["chaos"]
    assert extra["targets"] == {"pe": ["pe1"], "registrar": ["ue"], "link": ["a--b"], "coverage": ["ue"]}
    plan = exp.schedules["8pus-run1"]
    assert extra["schedules"]["8pus-run1"] == [f.__dict__ for f in plan] and len(plan) > 10
    ctx = RunContext(1, 1, 8, 1, 3)
    exp.before_run(ctx)
    t = 0.0
    while t < 121.0:
        exp.during_run(ctx, t)
        t += 0.2
    exp.end_run(ctx)
    faults = [a for a in exp.actions if a["action"] == "fault"]
    restores = [a for a in exp.actions if a["action"] == "restore"]
    assert len(faults) == len(restores) == len(plan) and all(a["ok"] for a in exp.actions)
    assert all(0 <= a["done_s"] - a["planned_s"] < 0.21 for a in exp.actions)
    kills = [c for c in exp.svc.calls if c[0] == "kill"]
    assert len(kills) == sum(1 for f in plan if f.kind in ("pe", "registrar"))
    assert exp.pes == {"pe1": exp.svc.procs[-1][2]} or not any(f.kind == "pe" for f in plan)
    assert radio.log == ["detach", "attach"] * sum(1 for f in plan if f.kind == "coverage")
    # every flap is undone with the parameters from before it
    flaps = [f for f in plan if f.kind == "link"]
    assert len(applied) == 2 * len(flaps) and all(p == LinkParams(delay_ms=5.0) for _, p in applied[1::2])
    rows = (tmp_path / "chaos.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * len(plan) and rows[0].startswith("setting,run,planned_s,done_s,kind")

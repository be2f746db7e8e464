"""`emulab.experiments` without a testbed: PE list with scenario overrides, record conversion, the
coverage-loss metrics, the hooks and events of a sweep."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from emulab import paths
from emulab.experiments.base import EmulatedSweep, RunContext
from emulab.experiments.coverage import coverage_metrics
from emulab.experiments.events import ExperimentEvent, ProgressBar
from emulab.experiments.records import (
    ExperimentError,
    RunOutput,
    address_map,
    pool_elements,
    read_pu_output,
    request_events,
    to_records,
)
from emulab.results import EventRecord, load_events, load_results
from emulab.scenario import Scenario
from emulab.services import READY_LINES
from emulab.topology import load


def test_pool_elements_take_the_scenario_per_class_values() -> None:
    spec = load("paper-topology")
    sc = replace(Scenario(), capacity={"ue": 1.0, "mec": 2.0, "pmc": 3.0}, max_requests=7,
                 increments={"ue": 0.9, "mec": 0.2, "pmc": 0.4})
    els = pool_elements(spec, sc)
    by_class: dict[str, list[str]] = {}
    for e in els:
        by_class.setdefault(e.element_class, []).append(e.node)
        assert e.options["application"] == "calcapp" and e.options["max_requests"] == 7
        assert e.options["capacity"] == {"ue": 1.0, "mec": 2.0, "pmc": 3.0}[e.element_class]
        assert e.options["load_increment"] == {"ue": 0.9, "mec": 0.2, "pmc": 0.4}[e.element_class]
    assert len(by_class["ue"]) == 1 and len(by_class["mec"]) == 2 and len(by_class["pmc"]) == 4


def test_records_map_addresses_to_nodes_and_classes(tmp_path: Path) -> None:
    spec = load("paper-topology")
    addrs = address_map(spec)
    mec = str(spec.primary_address("mec-pe1"))
    pmc = str(spec.primary_address("pmc-haikou"))
    lines = [
        {"pu": "pu0", "request_id": 1, "size": 10.0, "queued_at": 0.0, "started_at": 0.1, "accepted_at": 0.2,
         "completed_at": 0.3, "element": mec, "element_id": 5, "rejected_by": [pmc], "failovers": 0,
         "status": "completed"},
        {"pu": "pu0", "request_id": 2, "size": 10.0, "queued_at": 1.0, "started_at": None, "accepted_at": None,
         "completed_at": None, "element": None, "element_id": None, "rejected_by": [], "failovers": 0,
         "status": "unfinished"},
    ]
    f = tmp_path / "pus.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines) + json.dumps({"summary": {"pus": 1}}) + "\n")
    got, summary = read_pu_output(f)
    assert summary == {"pus": 1} and len(got) == 2
    recs = to_records(got, 1, 2, addrs, {"mec-pe1": "mec", "pmc-haikou": "pmc"})
    assert recs[0].element == "mec-pe1" and recs[0].element_class == "mec" and recs[0].rejected_by == ("pmc-haikou",)
    assert recs[0].setting == 1 and recs[0].run == 2 and recs[0].processing_time is not None
    assert recs[1].element is None and recs[1].status == "unfinished"


def _line(pu: str, rid: int, accepts: list[list], completed_at: float | None, element: str | None) -> dict:
    return {"pu": pu, "request_id": rid, "size": 1.0, "queued_at": 0.0, "started_at": 0.0,
            "accepted_at": accepts[0][0] if accepts else None, "completed_at": completed_at, "element": element,
            "element_id": 1, "rejected_by": [], "failovers": max(0, len(accepts) - 1),
            "status": "completed" if completed_at is not None else "unfinished", "accepts": accepts}


def test_coverage_metrics_time_failover_and_recovery_from_accepts() -> None:
    spec = load("paper-topology")
    addrs = address_map(spec)
    ue, mec, pmc = (str(spec.primary_address(n)) for n in ("ue", "mec-pe1", "pmc-gjovik"))
    classes = {"ue": "ue", "mec-pe1": "mec", "pmc-gjovik": "pmc"}
    lines = [
        _line("pu0", 1, [[5.0, mec]], 6.0, mec),                  # before the loss
        _line("pu0", 2, [[9.0, mec], [16.5, ue]], 30.0, ue),      # in flight at the loss: failed over to the UE
        _line("pu1", 1, [[13.0, ue]], 25.0, ue),                  # new during the loss
        _line("pu1", 2, [[31.0, pmc], [33.5, mec]], 35.0, mec),   # after the restore
        _line("pu2", 1, [], None, None),                          # never finished
    ]
    events = request_events(lines, 8, 1, addrs, classes)
    assert sorted(e.event for e in events) == ["accept"] * 6 + ["complete"] * 4
    assert {e.element for e in events if e.event == "accept"} == {"mec-pe1", "ue", "pmc-gjovik"}
    recs = to_records(lines, 8, 1, addrs, classes)
    m = coverage_metrics(events, recs, lost_at=10.0, restored_at=30.0)
    assert m["failover_s"] == 3.0 and m["recovery_s"] == 3.5  # first UE Accept after 10, first MEC after 30
    assert m["accepts_during_loss"] == {"ue": 2, "mec": 0, "pmc": 0}
    assert (m["requests_issued"], m["requests_completed"], m["requests_lost"]) == (5, 4, 1)
    assert m["requests_duplicated"] == 0 and m["requests_failed_over"] == 2
    none = coverage_metrics(events, recs + [recs[0]], lost_at=40.0, restored_at=None)
    assert none["failover_s"] is None and none["recovery_s"] is None and none["requests_duplicated"] == 1
    # a request completed twice does not make up for one that never completed
    assert none["requests_completed"] == 4 and none["requests_lost"] == 1


def test_restarts_become_records_and_events_naming_the_element_left() -> None:
    spec = load("paper-topology")
    addrs = address_map(spec)
    ue, mec = (str(spec.primary_address(n)) for n in ("ue", "mec-pe1"))
    classes = {"ue": "ue", "mec-pe1": "mec"}
    line = _line("pu0", 1, [[1.0, mec], [4.0, ue]], 9.0, ue)
    line["restarts"] = [[2.5, "no_cookie", mec, 0], [6.0, "session_lost", ue, 2_000_000]]
    rec = to_records([line, _line("pu0", 2, [[5.0, mec]], 6.0, mec)], 8, 1, addrs, classes)
    assert (rec[0].restarts, rec[1].restarts) == (2, 0)
    restarts = [e for e in request_events([line], 8, 1, addrs, classes) if e.event == "restart"]
    assert [(e.t, e.pu, e.request_id, e.element, e.element_class) for e in restarts] == \
        [(2.5, "pu0", 1, "mec-pe1", "mec"), (6.0, "pu0", 1, "ue", "ue")]


def test_events_round_trip_through_the_results_directory(tmp_path: Path) -> None:
    from emulab.results import EventRecord, ResultsError, ResultsWriter, load_events

    w = ResultsWriter(tmp_path, "ev", {"scenario": {}})
    evs = [EventRecord(8, 1, 12.5, "coverage_lost"), EventRecord(8, 1, 3.25, "accept", "pu0", 4, "mec-pe1", "mec")]
    w.add_events(evs)
    path = w.finish()
    assert load_events(path) == sorted(evs, key=lambda e: e.t)
    assert load_events(ResultsWriter(tmp_path, "none", {}).finish()) == []  # no faults, no events.csv
    bad = path / "events.csv"
    bad.write_text(bad.read_text().replace("coverage_lost", "coverage_gone"))
    with pytest.raises(ResultsError, match="unknown event 'coverage_gone'"):
        load_events(path)


# --------------------------------------------------------------------------- the sweep's hooks and events
# EmulatedSweep's own code (elements, registration, the poll loop, records, results directory) runs
# against a stand-in for the testbed's processes: PEs that write their statistics when stopped, a
# registrar query that lists every element, pool users that run for a few polls and write two requests.


class _Proc:
    """A process of the stand-in: ``polls`` polls alive, then exited with ``code``."""

    def __init__(self, polls: int, code: int = 0, on_stop: Callable[[], None] | None = None) -> None:
        self.polls, self.code, self.on_stop = polls, code, on_stop
        self.returncode: int | None = None
        self.pid = 0  # no process behind it: the registration wait reads its CPU time as 0

    def poll(self) -> int | None:
        if self.returncode is None and self.polls <= 0:
            self.returncode = self.code
        self.polls -= 1
        return self.returncode

    def stop(self) -> None:
        if self.returncode is None:
            self.returncode = -15
        if self.on_stop:
            self.on_stop()


@pytest.fixture(autouse=True)
def _own_run_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in elements' logs go to a run directory of the test's, never a real testbed's."""
    monkeypatch.setenv("EMULAB_RUN_DIR", str(tmp_path_factory.mktemp("run")))


class _Services:
    """What the sweep asks of ``emulab.services.ServiceManager``, without namespaces."""

    def __init__(self, spec: Any, pu_code: int) -> None:
        self.spec, self.pu_code = spec, pu_code
        self.spawned: list[tuple[str, str]] = []
        self.live: list[_Proc] = []

    def command(self, node: str, kind: str, options: dict[str, Any]) -> list[str]:
        return ["rserpool", kind, node]

    def spawn(self, node: str, kind: str, cmd: list[str], *, env: dict[str, str] | None = None) -> _Proc:
        self.spawned.append((node, kind))
        if kind == "pe":
            log = paths.log_dir() / f"{node}-pe.log"  # as the real element logs its registration
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as f:
                f.write(b"pe: " + READY_LINES["pe"] + b"'Processing Pool'\n")
            stats = Path(next(iter((env or {}).values())))
            proc = _Proc(10**9, on_stop=lambda: stats.write_text(json.dumps(
                {"used_calculations": 5.0, "accepted": 1, "rejected": 0, "series": [[100.5, 5.0, 0]]})))
        else:
            out = Path(cmd[cmd.index("-o") + 1])
            mec = str(self.spec.primary_address("mec-pe1"))
            lines = [{"pu": "pu0", "request_id": i, "size": 1.0, "queued_at": 0.0, "started_at": 0.1,
                      "accepted_at": 0.2, "completed_at": 0.3, "element": mec, "rejected_by": [], "failovers": 0,
                      "status": "completed", "accepts": [[0.2, mec]]} for i in (1, 2)]
            out.write_text("".join(json.dumps(x) + "\n" for x in lines)
                           + json.dumps({"summary": {"t0_epoch": 100.0, "elapsed": 1.0}}) + "\n")
            proc = _Proc(3, self.pu_code)
        self.live.append(proc)
        return proc

    def output(self, node: str, cmd: list[str], timeout: float = 10.0) -> str:
        return json.dumps({"element_count": 7})

    def stop(self, procs: list[_Proc] | None = None, timeout: float = 5.0) -> None:
        for p in list(self.live if procs is None else procs):
            p.stop()
            if p in self.live:
                self.live.remove(p)


class _Recorder(EmulatedSweep):
    """An experiment that notes every hook call."""

    name = "recorder"
    results_prefix = "rec"
    poll_s = 0.0

    def __init__(self, scenario: Scenario, pu_code: int = 0) -> None:
        super().__init__(scenario, pcaps=False, progress=False, log=lambda _m: None)
        self.pu_code = pu_code
        self.calls: list[tuple[str, str]] = []

    def _start_testbed(self, run_id: str) -> None:  # the stand-in instead of runner.build
        self.spec = load(self.scenario.target)
        self.elements = pool_elements(self.spec, self.scenario)
        self.ue = "ue"
        self.testbed = SimpleNamespace(caps=SimpleNamespace(to_json=dict), link_backend="tc", datapath="kernel",
                                       radio_name="emulated")
        self.svc = _Services(self.spec, self.pu_code)

    def manifest_extra(self) -> dict[str, Any]:
        return {"recorder": True}

    def before_run(self, ctx: RunContext) -> None:
        self.calls.append(("before", ctx.tag))

    def during_run(self, ctx: RunContext, elapsed: float) -> None:
        if not self.calls or self.calls[-1] != ("during", ctx.tag):
            self.calls.append(("during", ctx.tag))

    def end_run(self, ctx: RunContext) -> None:
        self.calls.append(("end", ctx.tag))

    def after_run(self, ctx: RunContext, out: RunOutput) -> None:
        self.calls.append(("after", ctx.tag))
        out.events.append(EventRecord(ctx.setting, ctx.run, 0.5, "coverage_lost"))

    def summarise(self) -> dict[str, Any]:
        return {"recorded_runs": sum(1 for c in self.calls if c[0] == "after")}


@pytest.fixture
def no_teardown(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """runner.teardown would forget a real testbed's state file: record the call instead."""
    torn: list[Any] = []
    monkeypatch.setattr("emulab.runner.teardown", lambda testbed, progress, server=None: torn.append(testbed))
    return torn


def test_sweep_calls_the_hooks_in_order_and_writes_their_results(tmp_path: Path, no_teardown: list[Any]) -> None:
    exp = _Recorder(replace(Scenario(), pus=(1, 2), runs=1, duration=1.0, out=tmp_path))
    events: list[ExperimentEvent] = []
    exp.subscribe(events.append)
    path = exp.run()
    assert exp.calls == [(h, tag) for tag in ("1pus-run1", "2pus-run1") for h in ("before", "during", "end", "after")]
    kinds = [e.kind for e in events]
    assert kinds[0] == "testbed_ready" and kinds[1] == "sweep_started" and kinds[-2:] == ["sweep_ended", "testbed_stopped"]
    assert kinds.count("run_started") == kinds.count("run_finished") == 2 and "run_progress" in kinds
    assert events[-2].data == {"ok": True, "results": str(path)} and all(e.experiment == "recorder" for e in events)
    finished = [e.data for e in events if e.kind == "run_finished"]
    assert [(d["tag"], d["requests"], d["completed"]) for d in finished] == [("1pus-run1", 2, 2), ("2pus-run1", 2, 2)]
    # PEs afresh per run, PUs once per run; every process stopped, the testbed torn down
    assert exp.svc.spawned.count(("ue", "calcapp-pu")) == 2 and exp.svc.live == [] and len(no_teardown) == 1
    summary = json.loads((path / "summary.json").read_text())
    manifest = json.loads((path / "manifest.json").read_text())
    assert summary["recorded_runs"] == 2 and summary["settings"]["2"]["counts"]["completed"] == 2
    assert manifest["recorder"] is True and manifest["tool"] == "emulab experiment recorder"
    assert manifest["seeds"] == {"1pus-run1": 100101, "2pus-run1": 100201} and manifest["pe_registrar"] == "topology"
    assert path.name.endswith("-rec-paper-topology") and len(load_events(path)) == 2 * (2 + 2 + 1)
    usage = load_results(path).usage
    assert len(usage) == 2 * 7 and all(u.used_calculations == 5.0 for u in usage)


def test_a_failed_run_still_ends_the_run_and_marks_the_results_aborted(tmp_path: Path,
                                                                       no_teardown: list[Any]) -> None:
    exp = _Recorder(replace(Scenario(), pus=(1,), runs=1, duration=1.0, out=tmp_path), pu_code=3)
    events: list[ExperimentEvent] = []
    exp.subscribe(events.append)
    with pytest.raises(ExperimentError, match="calcapp-pu exited with code 3"):
        exp.run()
    assert exp.calls[-1] == ("end", "1pus-run1") and exp.svc.live == [] and len(no_teardown) == 1
    assert [e.data for e in events if e.kind == "sweep_ended"] == [{"ok": False, "results": None}]
    (path,) = tmp_path.iterdir()
    assert json.loads((path / "manifest.json").read_text())["aborted"] is True


def test_a_failing_listener_is_dropped_and_the_others_still_hear(tmp_path: Path, no_teardown: list[Any]) -> None:
    exp = _Recorder(replace(Scenario(), pus=(1,), runs=1, duration=1.0, out=tmp_path))
    heard: list[str] = []

    def broken(_event: ExperimentEvent) -> None:
        raise RuntimeError("dashboard bug")

    exp.subscribe(broken)
    unsubscribe = exp.subscribe(lambda e: heard.append(e.kind))
    exp.run()
    assert heard[-1] == "testbed_stopped" and broken not in exp._listeners
    unsubscribe()
    exp.emit("log", message="after")
    assert heard[-1] == "testbed_stopped"


def test_progress_bar_without_a_terminal_prints_one_line_per_run(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar(show=False)
    bar(ExperimentEvent("sweep_started", "paper", {"runs": 2, "total_s": 120.0, "results": "x"}))
    bar(ExperimentEvent("run_started", "paper", {"index": 1, "total": 2, "setting": 4, "run": 1, "seed": 1,
                                                  "tag": "4pus-run1"}))
    bar(ExperimentEvent("run_progress", "paper", {"tag": "4pus-run1", "elapsed": 30.0, "duration": 60.0}))
    assert capsys.readouterr().err == "emulab: run 1/2: 4 PUs, run 1\n"


def test_experiment_commands_share_the_sweep_options() -> None:
    """`emulab experiment paper`, `coverage-loss` and `emulab simulate` take the sweep's options from
    one decorator; both experiments the emulated ones from another."""
    from emulab.cli import main

    commands = {"paper": main.commands["experiment"].commands["paper"],  # type: ignore[attr-defined]
                "coverage-loss": main.commands["experiment"].commands["coverage-loss"],  # type: ignore[attr-defined]
                "simulate": main.commands["simulate"]}
    names = {k: {p.name for p in c.params} for k, c in commands.items()}
    sweep = {"target", "pus", "runs", "duration", "seed", "policy", "increments", "capacity", "max_requests",
             "size_mean", "size_dist", "interval_mean", "interval_dist", "jobs", "out"}
    assert all(sweep <= n for n in names.values())
    assert {"pe_registrar", "pcaps"} <= names["paper"] & names["coverage-loss"]
    assert "quick" in names["paper"] and "quick" in names["simulate"] and "quick" not in names["coverage-loss"]


def test_the_paper_sweep_logs_the_work_a_run_threw_away(tmp_path: Path) -> None:
    import shutil

    from emulab.experiments.paper import PaperExperiment
    from emulab.results import RequestRecord

    said: list[str] = []
    exp = PaperExperiment(Scenario(out=tmp_path), progress=False, pcaps=False, log=said.append)
    try:
        rec = RequestRecord(16, 1, "pu0", 1, 1e6, 0.0, 0.0, 0.1, 3.0, "mec-pe1", "mec", (), 1)
        out = RunOutput([rec, replace(rec, request_id=2, restarts=2)], [], [], [], {})
        exp.after_run(RunContext(1, 1, 16, 1, 7), out)
        exp.after_run(RunContext(1, 1, 16, 2, 7), RunOutput([rec], [], [], [], {}))
    finally:
        shutil.rmtree(exp.work, ignore_errors=True)
    assert said == ["16pus-run1: 1 request(s) restarted from scratch after an Accept (2 restarts)"]

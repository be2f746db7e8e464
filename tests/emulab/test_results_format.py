"""The shared results format: round trip, summary statistics, RSPLIB-style .sca files, directory names."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from emulab.experiments.coverage import coverage_metrics, coverage_summary, distribution, job_failovers
from emulab.results import (
    ElementUsage,
    EventRecord,
    RequestRecord,
    ResultsError,
    ResultsWriter,
    load_results,
    parse_sca,
    sca_text,
    summarize,
)

CAPTURES = Path(__file__).resolve().parents[1] / "data" / "captures"
# RSPLIB 3.4.4's scalar names (calcappclient.cc, calcappservice.cc), as in the reference captures
PU_SCALARS = {
    "CalcAppPU Total Queuing Time", "CalcAppPU Total Startup Time", "CalcAppPU Total Processing Time",
    "CalcAppPU Total Handling Time", "CalcAppPU Average Processing Speed", "CalcAppPU Average Handling Speed",
    "CalcAppPU Total Jobs Queued", "CalcAppPU Total Jobs Started", "CalcAppPU Total Jobs Completed",
    "CalcAppPU Total Job Size Queued", "CalcAppPU Total Job Size Started", "CalcAppPU Total Job Size Completed",
    "CalcAppPU Total CalcAppRequests", "CalcAppPU Total CalcAppAccepts", "CalcAppPU Total CalcAppRejects",
    "CalcAppPU Total CalcAppCompletes", "CalcAppPU Total CalcAppKeepAlives", "CalcAppPU Total CalcAppKeepAliveAcks",
}
PE_SCALARS = {
    "CalcAppPE Service Uptime", "CalcAppPE Service Capacity", "CalcAppPE Service Max Jobs",
    "CalcAppPE Total Used Capacity", "CalcAppPE Total Wasted Capacity", "CalcAppPE Total Jobs Accepted",
    "CalcAppPE Total Jobs Rejected", "CalcAppPE Utilization",
}
MANIFEST = {"kind": "test", "scenario": {"size_mean": 1e6, "interval_mean": 10.0}}


def _records() -> tuple[list[RequestRecord], list[ElementUsage]]:
    reqs = [
        # pu1: queuing 0 and 1.5 -> per-PU total 1.5
        RequestRecord(2, 1, "pu1", 1, 1e6, 1.0, 1.0, 1.1, 2.1, "mec-pe1", "mec"),
        RequestRecord(2, 1, "pu1", 2, 5e5, 1.6, 3.1, 4.2, 4.8, "pmc-haikou", "pmc",
                      rejected_by=("mec-pe1", "mec-pe2"), failovers=1),
        # pu2: one completed (queuing 0), one unfinished
        RequestRecord(2, 1, "pu2", 3, 2e6, 0.5, 0.5, 0.52, 2.52, "mec-pe2", "mec"),
        RequestRecord(2, 1, "pu2", 4, 1e6, 299.0, None, None, None, None, None, status="unfinished"),
        RequestRecord(2, 2, "pu1", 1, 1e6, 0.1, 0.1, 0.2, 1.2, "ue", "ue", status="completed"),
    ]
    usage = [
        ElementUsage(2, 1, "mec-pe1", "mec", 1e6, 300.0, 1e6, 4, 1, 1),
        ElementUsage(2, 1, "mec-pe2", "mec", 1e6, 300.0, 2e6, 4, 1, 1),
        ElementUsage(2, 1, "pmc-haikou", "pmc", 1e6, 300.0, 5e5, 4, 1, 0),
        ElementUsage(2, 1, "ue", "ue", 2e5, 300.0, 0.0, 4, 0, 0),
        ElementUsage(2, 2, "mec-pe1", "mec", 1e6, 300.0, 0.0, 4, 0, 0),
        ElementUsage(2, 2, "mec-pe2", "mec", 1e6, 300.0, 0.0, 4, 0, 0),
        ElementUsage(2, 2, "pmc-haikou", "pmc", 1e6, 300.0, 0.0, 4, 0, 0),
        ElementUsage(2, 2, "ue", "ue", 2e5, 300.0, 1e6, 4, 1, 0),
    ]
    return reqs, usage


def _write(tmp_path: Path) -> Path:
    reqs, usage = _records()
    w = ResultsWriter(tmp_path, "unit test", MANIFEST)
    w.add_requests(reqs[:2])
    w.add_requests(reqs[2:])
    w.add_usage(usage)
    return w.finish({"extra": {"x": 1}})


def test_round_trip_gives_the_same_records(tmp_path: Path) -> None:
    path = _write(tmp_path)
    reqs, usage = _records()
    res = load_results(path)
    assert res.requests == reqs
    assert res.usage == usage
    assert res.manifest["kind"] == "test"
    assert res.summary["extra"] == {"x": 1}
    # summary.json equals a fresh summarize() of what was read back
    fresh = summarize(res.requests, res.usage, res.manifest)
    assert res.summary["settings"] == fresh["settings"]


def test_summary_statistics(tmp_path: Path) -> None:
    reqs, usage = _records()
    s = summarize(reqs, usage, MANIFEST)["settings"]["2"]
    assert s["runs"] == 2
    c = s["counts"]
    assert (c["issued"], c["completed"], c["unfinished"], c["lost"]) == (5, 4, 1, 0)
    assert (c["rejections"], c["failed_over"], c["failovers"]) == (2, 1, 1)
    q = s["times"]["queuing"]
    assert q["n"] == 4 and q["max"] == pytest.approx(1.5) and q["min"] == 0.0
    assert q["mean"] == pytest.approx(1.5 / 4)
    st = s["times"]["startup"]
    assert st["max"] == pytest.approx(1.1)  # dequeue -> accept, rejections included
    h = s["times"]["handling"]
    assert h["max"] == pytest.approx(4.8 - 1.6)
    # Table 1: per-PU total queuing over a run: (run1,pu1)=1.5, (run1,pu2)=0, (run2,pu1)=0
    t1 = s["table1"]
    assert t1["n"] == 3 and t1["mean"] == pytest.approx(0.5) and t1["max"] == pytest.approx(1.5)
    # shares: 4.5e6 calculations in total, MEC did 3e6
    assert s["classes"]["mec"]["work_share"] == pytest.approx(3e6 / 4.5e6)
    assert s["classes"]["mec"]["utilisation"] == pytest.approx(3e6 / (2 * 2 * 1e6 * 300))
    assert s["elements"]["ue"]["utilisation"] == pytest.approx(1e6 / (2 * 2e5 * 300))
    assert s["pool_utilisation"] == pytest.approx(4.5e6 / (2 * 3.2e6 * 300))
    # offered load: 2 PUs x 1e6 / 10 s over 3.2e6 calc/s; the papers' basis leaves the UE out
    assert s["offered_load"] == pytest.approx(2e5 / 3.2e6)
    assert s["offered_load_papers"] == pytest.approx(2e5 / 3e6)


def test_sca_files_use_rsplib_scalar_names(tmp_path: Path) -> None:
    path = _write(tmp_path)
    files = sorted((path / "sca").glob("*.sca"))
    assert [f.name for f in files] == ["2pus-run1.sca", "2pus-run2.sca"]
    text = files[0].read_text()
    lines = text.splitlines()
    assert lines[0] == 'run 1 "scenario"'
    pattern = re.compile(r'^scalar "scenario\.calcapppool(user|element)\[\d+\]" "([^"]+)" -?[0-9.]+$')
    names = set()
    for line in lines[1:]:
        m = pattern.match(line)
        assert m, line
        names.add(m.group(2))
    assert names == PU_SCALARS | PE_SCALARS
    # the very names RSPLIB wrote in the reference captures (shipped in tests/data)
    ref = set()
    for f in CAPTURES.glob("*.sca"):
        ref |= {name for (_obj, name) in parse_sca(f.read_text())}
    assert ref and names == ref
    values = parse_sca(text)
    assert values[("scenario.calcapppooluser[0]", "CalcAppPU Total Queuing Time")] == pytest.approx(1.5)
    assert values[("scenario.calcapppooluser[0]", "CalcAppPU Total CalcAppRejects")] == 2
    assert values[("scenario.calcapppooluser[1]", "CalcAppPU Total Jobs Queued")] == 2
    assert values[("scenario.calcapppooluser[1]", "CalcAppPU Total Jobs Completed")] == 1


def test_sca_files_take_the_pus_own_counters(tmp_path: Path) -> None:
    reqs, usage = _records()
    w = ResultsWriter(tmp_path, "counters", MANIFEST)
    w.add_requests(reqs)
    w.add_usage(usage)
    w.set_pu_counters(2, 1, {"pu1": {"requests": 5, "accepts": 2, "rejects": 3, "keepalives": 7, "keepalive_acks": 4}})
    path = w.finish()
    run1 = parse_sca((path / "sca" / "2pus-run1.sca").read_text())
    pu1 = "scenario.calcapppooluser[0]"
    assert [run1[(pu1, f"CalcAppPU Total CalcApp{k}")] for k in ("Requests", "Accepts", "Rejects", "KeepAlives",
                                                                 "KeepAliveAcks")] == [5, 2, 3, 7, 4]
    # pu2 has no counters: estimated from its records (one completed request of 2 s processing)
    pu2 = "scenario.calcapppooluser[1]"
    assert run1[(pu2, "CalcAppPU Total CalcAppRequests")] == 1 and run1[(pu2, "CalcAppPU Total CalcAppKeepAlives")] == 0
    run2 = parse_sca((path / "sca" / "2pus-run2.sca").read_text())  # counters of run 1 only
    assert run2[(pu1, "CalcAppPU Total CalcAppRequests")] == 1


def test_sca_text_pe_values() -> None:
    _reqs, usage = _records()
    text, objects = sca_text(1, [], [u for u in usage if u.run == 1])
    v = parse_sca(text)
    obj = next(o for o, name in objects.items() if name == "mec-pe2")
    assert v[(obj, "CalcAppPE Total Used Capacity")] == 2e6
    assert v[(obj, "CalcAppPE Utilization")] == pytest.approx(2e6 / 3e8, abs=1e-6)
    assert v[(obj, "CalcAppPE Total Wasted Capacity")] == 3e8 - 2e6


def test_directories_are_unique_within_one_second(tmp_path: Path) -> None:
    a = ResultsWriter(tmp_path, "same", {})
    b = ResultsWriter(tmp_path, "same", {})
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()
    assert re.fullmatch(r"\d{8}-\d{6}-same(-\d+)?", a.path.name)
    a.finish()
    b.finish()


def test_add_file_and_errors(tmp_path: Path) -> None:
    src = tmp_path / "x.pcap"
    src.write_bytes(b"\xd4\xc3\xb2\xa1")
    w = ResultsWriter(tmp_path / "out", "files", {})
    w.add_file(src)
    path = w.finish()
    assert (path / "pcaps" / "x.pcap").read_bytes() == b"\xd4\xc3\xb2\xa1"
    with pytest.raises(ResultsError):
        load_results(tmp_path / "missing")
    with pytest.raises(ResultsError):
        load_results(tmp_path)  # a directory, but not a results directory


def test_coverage_metrics_and_summary_from_records() -> None:
    """The fail-over figures both `emulab experiment coverage-loss` and `emulab simulate
    --coverage-loss` put in summary.json, from Accept events and request records."""
    def req(pu: str, rid: int, status: str = "completed", failovers: int = 0) -> RequestRecord:
        return RequestRecord(8, 1, pu, rid, 1.0, 0.0, 0.0, 0.5, 1.0 if status == "completed" else None,
                             None, None, (), failovers, status)

    def acc(t: float, cls: str) -> EventRecord:
        return EventRecord(8, 1, t, "accept", "pu0", 1, cls + "-pe", cls)

    events = [acc(5.0, "mec"), acc(12.5, "ue"), acc(14.0, "ue"), acc(31.0, "pmc"), acc(32.25, "mec"),
              EventRecord(8, 1, 10.0, "coverage_lost")]
    reqs = [req("pu0", 1, failovers=1), req("pu0", 2), req("pu1", 1, "unfinished"), req("pu1", 1)]
    m = coverage_metrics(events, reqs, 10.0, 30.0)
    assert (m["failover_s"], m["recovery_s"]) == (2.5, 2.25)
    assert m["accepts_during_loss"] == {"ue": 2, "mec": 0, "pmc": 0}
    assert (m["requests_issued"], m["requests_completed"], m["requests_lost"]) == (3, 3, 0)
    assert (m["requests_duplicated"], m["requests_failed_over"]) == (1, 1)
    late = coverage_metrics(events, reqs[:3], 40.0, None)
    assert late["failover_s"] is None and late["recovery_s"] is None and late["requests_lost"] == 1
    s = coverage_summary([{"setting": 8, "run": 1, **m}, {"setting": 8, "run": 2, **m, "failover_s": 4.0}])
    assert (s["failover_s"], s["recovery_s"], s["requests_issued"]) == (4.0, 2.25, 6)
    assert [r["run"] for r in s["coverage_runs"]] == [1, 2]
    assert coverage_summary([{**m, "recovery_s": None}])["recovery_s"] is None  # one run never recovered


def _req(pu: str, rid: int, started: float | None, completed: float | None, *, queued: float = 0.0,
         restarts: int | None = 0) -> RequestRecord:
    return RequestRecord(8, 1, pu, rid, 1e6, queued, started, None if started is None else started + 0.1, completed,
                         None, None, (), 0, "completed" if completed is not None else "unfinished",
                         restarts=restarts)


def _acc(pu: str, rid: int, t: float, cls: str) -> EventRecord:
    return EventRecord(8, 1, t, "accept", pu, rid, f"{cls}-pe1", cls)


def test_every_job_cut_off_by_the_loss_is_timed_to_its_first_accept_after_the_cut() -> None:
    lost, restored = 10.0, 30.0
    reqs = [
        _req("pu0", 1, 2.0, 4.0),            # done before the loss: not cut off
        _req("pu0", 2, 9.0, 14.0),           # in flight on the MEC: resumes on the UE 1.25 s after the loss
        _req("pu1", 1, 9.5, 11.0),           # in flight on the UE element: not cut off, never counted
        _req("pu2", 1, 10.5, 13.0),          # started during the loss: its first Accept 0.9 s later
        _req("pu3", 1, 12.0, 35.0, queued=8.0),  # queued before, served during: counted from its start
        _req("pu4", 1, 9.8, None),           # in flight (start-up) and never accepted again
        _req("pu5", 1, 31.0, 32.0),          # started after coverage came back: not cut off
    ]
    events = [_acc("pu0", 1, 2.1, "mec"), _acc("pu0", 2, 9.1, "mec"), _acc("pu0", 2, 11.25, "ue"),
              _acc("pu1", 1, 9.6, "ue"), _acc("pu2", 1, 11.4, "ue"), _acc("pu3", 1, 31.5, "mec"),
              _acc("pu5", 1, 31.1, "mec")]
    jobs = job_failovers(events, reqs, lost, restored)
    by = {(j["pu"], j["request_id"]): j for j in jobs}
    assert set(by) == {("pu0", 2), ("pu1", 1), ("pu2", 1), ("pu3", 1), ("pu4", 1)}
    assert by["pu0", 2] == {"pu": "pu0", "request_id": 2, "kind": "in_flight", "cut_at": 10.0,
                            "from_element": "mec-pe1", "from_class": "mec", "resumed_at": 11.25, "failover_s": 1.25,
                            "element": "ue-pe1", "element_class": "ue", "completed": True, "rejections": 0}
    assert by["pu1", 1]["from_class"] == "ue"
    assert (by["pu2", 1]["kind"], by["pu2", 1]["cut_at"], by["pu2", 1]["failover_s"]) == ("started_during", 10.5, 0.9)
    assert (by["pu3", 1]["cut_at"], by["pu3", 1]["failover_s"], by["pu3", 1]["element_class"]) == (12.0, 19.5, "mec")
    assert by["pu4", 1]["resumed_at"] is None and by["pu4", 1]["from_class"] is None
    m = coverage_metrics(events, reqs, lost, restored)
    assert m["failover_s"] == 1.25  # the first UE Accept after the loss, of any request
    # the UE-hosted job is not a fail-over; the one never accepted again has no time
    assert m["failover_job_s"] == {"n": 3, "p50": 1.25, "p90": 15.85, "max": 19.5}
    assert m["jobs_not_resumed"] == 1
    # pu4's job was in flight at the loss and never resumed on the UE: the run did not fail over
    assert not m["failed_over"] and "pu4#1" in m["failover_problem"]
    ok = coverage_metrics(events, [r for r in reqs if r.pu != "pu4"], lost, restored)
    assert ok["failed_over"] and ok["failover_problem"] is None
    none = coverage_metrics([e for e in events if e.element_class != "ue"], reqs, lost, restored)
    assert none["failover_problem"] == "no Accept by a UE element during the loss"
    # in flight at the loss, back on the MEC only after the restore: turned away by the full UE
    # element it waited for capacity (a fail-over that found no room); never turned away, it did not move
    late = [*[r for r in reqs if r.pu != "pu4"], _req("pu6", 1, 9.0, 33.0)]
    waited = coverage_metrics([*events, _acc("pu6", 1, 9.2, "mec"), _acc("pu6", 1, 31.0, "mec")],
                              [*late[:-1], replace(late[-1], rejected_by=("ue",))], lost, restored)
    assert waited["failed_over"]
    stayed = coverage_metrics([*events, _acc("pu6", 1, 9.2, "mec"), _acc("pu6", 1, 31.0, "mec")], late, lost, restored)
    assert not stayed["failed_over"] and "pu6#1" in stayed["failover_problem"]
    assert job_failovers(events, reqs, None, None) == []


def test_coverage_summary_gives_the_per_job_distribution_and_the_runs_without_failover() -> None:
    lost, restored = 10.0, 30.0
    # pu3's job found the UE element full and waited for capacity until coverage came back
    reqs = [_req("pu0", 2, 9.0, 14.0), _req("pu2", 1, 10.5, 13.0),
            replace(_req("pu3", 1, 12.0, 35.0), rejected_by=("ue", "ue"))]
    events = [_acc("pu0", 2, 9.1, "mec"), _acc("pu0", 2, 11.25, "ue"), _acc("pu2", 1, 11.4, "ue"),
              _acc("pu3", 1, 31.0, "mec")]
    good = {"setting": 8, "run": 1, **coverage_metrics(events, reqs, lost, restored)}
    bad = {"setting": 8, "run": 2, **coverage_metrics(events[:1], reqs, lost, restored)}
    s = coverage_summary([good, bad])
    assert s["runs_without_failover"] == 1 and s["failover_s"] is None
    # the second run resumed nothing
    assert s["failover_job_s"] == {"n": 3, "p50": 1.25, "p90": 15.45, "max": 19.0}
    assert s["failover_job_in_flight_s"] == {"n": 1, "p50": 1.25, "p90": 1.25, "max": 1.25}
    assert s["failover_job_unrejected_s"] == {"n": 2, "p50": 1.075, "p90": 1.215, "max": 1.25}
    assert s["jobs_not_resumed"] == 3
    assert coverage_summary([good])["runs_without_failover"] == 0
    assert distribution([]) == {"n": 0, "p50": None, "p90": None, "max": None}


def test_restarts_are_counted_per_setting_and_survive_the_round_trip(tmp_path: Path) -> None:
    reqs = [_req("pu0", 1, 1.0, 5.0, restarts=2), _req("pu1", 1, 1.0, 5.0), _req("pu2", 1, 1.0, 6.0, restarts=1)]
    # 3 requests of 10^6 completed, 3.3 x 10^6 calculations done: 300,000 went into no result
    usage = [ElementUsage(8, 1, "mec-pe1", "mec", 1e6, 10.0, 2.5e6, 4, 3, 0),
             ElementUsage(8, 1, "ue", "ue", 2e5, 10.0, 8e5, 4, 2, 0)]
    w = ResultsWriter(tmp_path, "restarts", MANIFEST)
    w.add_requests(reqs)
    w.add_usage(usage)
    w.add_events([EventRecord(8, 1, 2.0, "restart", "pu0", 1, "mec-pe1", "mec")])
    path = w.finish()
    res = load_results(path)
    assert list(res.requests) == reqs
    counts = res.summary["settings"]["8"]["counts"]
    assert (counts["restarted"], counts["restarts"], counts["calculations_discarded"]) == (2, 3, 3e5)
    assert (res.summary["requests_restarted"], res.summary["calculations_discarded"]) == (2, 3e5)
    assert coverage_metrics([], reqs, 1.5, 3.0)["requests_restarted"] == 2
    # records that do not say (the simulator's) give null, never a reassuring 0
    blind = summarize([*reqs, replace(reqs[1], pu="pu9", restarts=None)], usage)
    assert blind["requests_restarted"] is None and blind["settings"]["8"]["counts"]["restarts"] is None
    assert coverage_metrics([], [replace(reqs[0], restarts=None)], 1.5, 3.0)["requests_restarted"] is None
    # with a request unfinished, its partial work cannot be told from work thrown away: null, not a guess
    open_end = summarize([*reqs, _req("pu3", 1, 9.0, None)], usage)
    assert open_end["settings"]["8"]["counts"]["calculations_discarded"] is None
    assert open_end["calculations_discarded"] is None

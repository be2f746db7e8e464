"""The shared results format: round trip, summary statistics, RSPLIB-style .sca files, directory names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from emulab.experiments.coverage import coverage_metrics, coverage_summary
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

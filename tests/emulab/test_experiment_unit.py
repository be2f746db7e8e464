"""`emulab.experiment` helpers without a testbed: PE list with scenario overrides, record conversion."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from emulab.experiment import (
    address_map,
    pool_elements,
    read_pu_output,
    request_events,
    to_records,
)
from emulab.results import coverage_metrics
from emulab.scenario import Scenario
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

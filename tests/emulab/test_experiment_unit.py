"""`emulab.experiment` helpers without a testbed: PE list with scenario overrides, record conversion."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from emulab.experiment import address_map, pool_elements, read_pu_output, to_records
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

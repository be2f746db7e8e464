"""docs/results-format.md names every column of the results CSVs and every key of summary.json."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulab.results import (
    EVENT_FIELDS,
    EVENTS,
    REQUEST_FIELDS,
    SAMPLE_FIELDS,
    STATUSES,
    USAGE_FIELDS,
    ElementUsage,
    RequestRecord,
    summarize,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "results-format.md"
# keys of these mappings are data (PU counts, element and class names), not names to document
DATA_KEYED = {"settings", "elements", "classes"}


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield key
            if key in DATA_KEYED:
                for item in sub.values():
                    yield from _keys(item)
            else:
                yield from _keys(sub)


@pytest.mark.parametrize("name", sorted({*REQUEST_FIELDS, *USAGE_FIELDS, *EVENT_FIELDS, *SAMPLE_FIELDS,
                                         *EVENTS, *STATUSES}))
def test_every_column_and_value_is_documented(name: str) -> None:
    assert f"`{name}`" in DOC.read_text()


def test_every_summary_key_is_documented() -> None:
    requests = [RequestRecord(1, 1, "pu1", 1, 1e6, 0.0, 0.5, 0.6, 1.6, "mec-pe1", "mec", ("ue",), 1)]
    usage = [ElementUsage(1, 1, "mec-pe1", "mec", 1e6, 60.0, 1e6, 4, 1, 0)]
    summary = summarize(requests, usage, {"scenario": {"size_mean": 1e6, "interval_mean": 10.0}})
    keys = set(_keys(summary))
    assert {"pus", "times", "table1", "counts", "utilisation_runs", "p90"} <= keys
    text = DOC.read_text()
    assert sorted(k for k in keys if f"`{k}`" not in text and f'"{k}"' not in text) == []


def test_every_coverage_loss_key_is_documented() -> None:
    from emulab.experiments.coverage import coverage_metrics, coverage_summary
    from emulab.results import EventRecord

    reqs = [RequestRecord(8, 1, "pu0", 1, 1e6, 9.0, 9.0, 9.1, 14.0, "ue", "ue", (), 1, restarts=1)]
    events = [EventRecord(8, 1, 9.1, "accept", "pu0", 1, "mec-pe1", "mec"),
              EventRecord(8, 1, 11.25, "accept", "pu0", 1, "ue", "ue")]
    run = {"setting": 8, "run": 1, **coverage_metrics(events, reqs, 10.0, 30.0)}
    def walk(value: Any) -> Iterator[str]:  # coverage_runs and failover_jobs are lists of objects
        if isinstance(value, list):
            for item in value:
                yield from walk(item)
        elif isinstance(value, dict):
            for key, sub in value.items():
                yield key
                if key != "accepts_during_loss":  # keyed by class
                    yield from walk(sub)

    keys = set(walk(coverage_summary([run])))
    assert {"failover_job_s", "runs_without_failover", "failover_jobs", "resumed_at", "p50"} <= keys
    text = DOC.read_text()
    assert sorted(k for k in keys if f"`{k}`" not in text) == []

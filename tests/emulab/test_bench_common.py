"""benchmarks/_common.py: the self-check figures the cluster and instances benchmarks report are read
from the self-check's own report (emulab.selfcheck.run_self_check, driven here with made-up pair
results), and the load average is the machine's."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from emulab import selfcheck
from emulab.selfcheck import PairResult

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def common() -> Any:
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "benchmarks" / "_common.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _pair(src: str, dst: str, measured: float | None, expected: float = 10.0) -> PairResult:
    breakdown = {"n": 20, "configured_ms": expected, "serialisation_ms": 0.0, "emulation_ms": 0.0,
                 "shaped_hops": 1, "forwarding_ms": 0.0, "switch_crossings": 1, "fifo_bias_ms": 0.0,
                 "se_ms": 0.1, "se_config_ms": 0.1, "unexplained_sd_ms": 0.1, "spread_ms": 0.2}
    return PairResult(src, dst, reachable=measured is not None, expected_ms=expected, measured_ms=measured,
                      tolerance=1.25, breakdown=breakdown, cause="made up")


def _report(monkeypatch: pytest.MonkeyPatch, results: list[PairResult]) -> str:
    monkeypatch.setattr(selfcheck, "all_pairs", lambda _spec: [(r.src, r.dst) for r in results])
    monkeypatch.setattr(selfcheck, "check", lambda *_a, **_k: results)
    lines: list[str] = []
    selfcheck.run_self_check(SimpleNamespace(spec=None), lines.append)
    return "\n".join(lines)


def test_a_passed_self_check(common: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _report(monkeypatch, [_pair("h1", "h2", 10.4), _pair("h2", "h1", 9.7)])
    assert common.self_check_figures(text) == {
        "passed": True, "reachable": "2/2", "paths": 2, "largest_error_ms": 0.4, "tolerance_ms": 1.25,
        "failures": []}


def test_a_failed_self_check_lists_its_failures(common: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _report(monkeypatch, [_pair("h1", "h2", 13.0), _pair("h1", "h3", None), _pair("h2", "h1", 9.5)])
    fig = common.self_check_figures(text)
    assert not fig["passed"] and "self-check: FAILED" in text
    assert fig["reachable"] == "2/3" and fig["paths"] == 2
    assert fig["largest_error_ms"] == 3.0 and fig["tolerance_ms"] == 1.25
    # one pair unreachable, one path off; the closing FAILED line is neither
    assert [("cannot reach" in f) for f in fig["failures"]] == [True, False]


def test_an_empty_report_has_no_figures(common: Any) -> None:
    assert common.self_check_figures("emulab: error: no testbed") == {
        "passed": False, "reachable": None, "paths": None, "largest_error_ms": None, "tolerance_ms": None,
        "failures": []}


def test_load_average_is_the_machines_rounded(common: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def getloadavg() -> tuple[float, float, float]:
        calls.append(1)
        return (0.126, 1.5, 2.344)

    monkeypatch.setattr(os, "getloadavg", getloadavg)
    assert common.loadavg() == [0.13, 1.5, 2.34]
    assert common.load_1m() == 0.13
    assert len(calls) == 2  # one reading each, never mixed from two moments

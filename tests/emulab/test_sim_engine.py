"""The discrete-event twin: queueing theory, the papers' policy behaviour, determinism, faults, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulab.cli import main
from emulab.results import summarize
from emulab.scenario import Scenario
from emulab.sim import (
    CoverageLoss,
    ElementModel,
    Failure,
    PoolModel,
    RunParams,
    build_model,
    make_tasks,
    run_tasks,
    simulate,
    simulate_run,
)
from emulab.sim.sweep import request_records, usage_records
from rserpool.policy import PolicyInfo
from rserpool.policytypes import PolicyType


def _summary(model: PoolModel, scenario: Scenario, jobs: int = 1, **kw: object) -> dict:
    results = run_tasks(model, make_tasks(scenario, **kw), jobs)  # type: ignore[arg-type]
    reqs = [r for res in results for r in request_records(model, res)]
    usage = [u for res in results for u in usage_records(model, res)]
    return summarize(reqs, usage, {"scenario": scenario.to_dict()})


def _single_element(capacity: float = 1e6, max_requests: int = 100_000) -> PoolModel:
    el = ElementModel(
        name="pe", element_class="mec", capacity=capacity, max_requests=max_requests,
        policy=PolicyInfo.make(PolicyType.PRIORITY_LEAST_USED, load_degradation=0.1),
        one_way_s=0.0, rtt_s=0.0, load_update_delay_s=0.0, on_ue=True,
    )
    return PoolModel(name="mm1", elements=(el,), policy_type=int(PolicyType.PRIORITY_LEAST_USED))


# ---------------------------------------------------------------- queueing theory


def test_mm1_processor_sharing_matches_the_closed_form() -> None:
    """One PS element, no rejection, Poisson arrivals: E[T] = 1 / (mu - lambda), utilisation = rho.

    500 PUs at one request per 1,000 s each are a Poisson stream of lambda = 0.5/s (a PU almost never
    has two requests at once: P ~ lambda_pu x E[T] = 0.2 %, so its FIFO adds nothing measurable);
    sizes exp(1e6) at 1e6 calc/s give mu = 1/s, rho = 0.5 and E[T] = 2 s. With ~20,000 requests
    the standard error of the mean response is about 2 %; the tolerance is 8 % (4 sigma).
    """
    model = _single_element()
    params = RunParams(setting=500, run=1, duration=40_000.0, seed=7, size_mean=1e6, interval_mean=1000.0)
    res = simulate_run(model, params)
    proc = [c - a for (_pu, _s, _q, _st, a, c, _e, _rej, _fo, status) in res.requests if status == 0]
    assert len(proc) > 15_000
    mean_t = sum(proc) / len(proc)
    assert mean_t == pytest.approx(2.0, rel=0.08)
    used, _acc, rej = res.usage[0]
    assert rej == 0
    # utilisation = offered load (0.5), tolerance 3 points (sampling noise of the offered work ~1 %)
    assert used / (1e6 * params.duration) == pytest.approx(0.5, abs=0.03)


def test_mm1_ps_mean_response_is_proportional_to_size() -> None:
    """M/M/1-PS: E[T | size x] = x / (mu_rate (1 - rho)): small and large jobs slow down alike."""
    model = _single_element()
    res = simulate_run(model, RunParams(setting=500, run=1, duration=40_000.0, seed=3, interval_mean=1000.0))
    small = [(c - a) / s for (_pu, s, _q, _st, a, c, _e, _r, _f, st) in res.requests if st == 0 and s < 5e5]
    large = [(c - a) / s for (_pu, s, _q, _st, a, c, _e, _r, _f, st) in res.requests if st == 0 and s > 2e6]
    # slowdown per calculation = 1 / (1e6 x (1 - 0.5)) = 2e-6 s for both classes (±15 %: fewer samples)
    assert sum(small) / len(small) == pytest.approx(2e-6, rel=0.15)
    assert sum(large) / len(large) == pytest.approx(2e-6, rel=0.15)


def test_rejection_when_full_and_retry_after_one_second() -> None:
    model = _single_element(max_requests=1)
    res = simulate_run(model, RunParams(setting=20, run=1, duration=300.0, seed=1))
    rejected = [r for r in res.requests if r[7]]
    assert rejected, "a 1-job element must reject under 20 PUs"
    for (_pu, _s, _q, st, a, _c, _e, rej, _f, status) in rejected:
        if status == 0:
            # every reject costs RSPLIB's 1 s back-off before the next try
            assert a - st >= len(rej) * 1.0 - 1e-9
    _used, acc, n_rej = res.usage[0]
    assert n_rej == sum(len(r[7]) for r in res.requests)


# ---------------------------------------------------------------- the papers' behaviour


@pytest.fixture(scope="module")
def paper_summary() -> dict:
    sc = Scenario(pus=(1, 4, 16, 32, 48, 64), runs=3, duration=300.0, seed=11)
    return _summary(build_model(sc), sc, jobs=2)


def _share(s: dict, pus: int, cls: str) -> float:
    return s["settings"][str(pus)]["classes"].get(cls, {}).get("work_share", 0.0)


def test_plu_uses_mec_first_then_pmc_then_ue(paper_summary: dict) -> None:
    s = paper_summary
    # low load: MEC only (PLU key 0.1 + 0.25 per job stays below PMC's 0.5 until a MEC PE holds 2 jobs)
    assert _share(s, 1, "mec") == pytest.approx(1.0)
    assert _share(s, 4, "mec") > 0.99
    # from 16 PUs the PMC takes a share, growing with the load
    assert 0.03 < _share(s, 16, "pmc") < 0.4
    assert _share(s, 32, "pmc") > _share(s, 16, "pmc") + 0.15
    assert _share(s, 48, "pmc") > _share(s, 32, "pmc")
    # the UE's own PE: unused up to 32 PUs, marginal at 48, clearly used in overload (64 PUs)
    for pus in (1, 4, 16, 32):
        assert _share(s, pus, "ue") == 0.0
    assert _share(s, 48, "ue") < 0.02
    assert _share(s, 64, "ue") > 0.015
    assert s["settings"]["64"]["classes"]["ue"]["utilisation"] > 0.5
    # rejections only appear when the pool is (nearly) full
    assert s["settings"]["16"]["counts"]["rejections"] == 0
    assert s["settings"]["64"]["counts"]["rejections"] > 1000


def test_pool_utilisation_is_1_67_percent_per_pu(paper_summary: dict) -> None:
    """The papers' offered load: PUs x 100,000 calc/s over the six 1,000,000 calc/s PEs = 1.67 %/PU.

    The used capacity relative to those six PEs must follow it while the pool is not overloaded;
    tolerance 15 % relative (1 PU: 35 %; only ~90 requests of exponential size per setting).
    """
    for pus, rel in ((1, 0.35), (4, 0.15), (16, 0.1), (32, 0.1), (48, 0.1)):
        st = paper_summary["settings"][str(pus)]
        assert st["offered_load_papers"] == pytest.approx(pus * 0.016667, rel=1e-3)
        used_vs_six = st["pool_utilisation"] * 6.2 / 6.0  # pool_utilisation counts the UE's 0.2M too
        assert used_vs_six == pytest.approx(pus / 60.0, rel=rel), pus
    # in overload the pool saturates below the offered 107 %
    assert paper_summary["settings"]["64"]["pool_utilisation"] > 0.9


def test_table1_grows_with_load(paper_summary: dict) -> None:
    t = {p: paper_summary["settings"][str(p)]["table1"]["mean"] for p in (4, 16, 32, 48, 64)}
    assert t[4] < t[32] < t[64]
    assert t[64] > 50.0  # overload: queues build up (the papers: 174 s)


# ---------------------------------------------------------------- determinism and selector


def test_same_seed_same_results_any_process_count() -> None:
    sc = Scenario(pus=(2, 48), runs=2, duration=120.0, seed=5)
    model = build_model(sc)
    a = _summary(model, sc, jobs=1)
    b = _summary(model, sc, jobs=2)
    assert a == b
    c = _summary(model, replace(sc, seed=6), jobs=1)
    assert c != a


def test_c_and_python_selectors_give_identical_runs() -> None:
    sc = Scenario(pus=(48,), runs=1, duration=120.0, seed=9)
    model = build_model(sc)
    base = make_tasks(sc)[0]
    a = simulate_run(model, base)
    b = simulate_run(model, replace(base, force_python_selector=True))
    assert a.requests == b.requests and a.usage == b.usage


# ---------------------------------------------------------------- faults


def test_element_failure_fails_over_and_resumes() -> None:
    sc = Scenario(pus=(16,), runs=1, duration=300.0, seed=2)
    model = build_model(sc)
    res = run_tasks(model, make_tasks(sc, failures=[Failure("mec-pe1", 100.0, 50.0)]))[0]
    recs = list(request_records(model, res))
    failed_over = [r for r in recs if r.failovers]
    assert failed_over, "jobs on the crashed MEC PE must fail over"
    assert all(r.status == "completed" for r in failed_over if r.queued_at < 250)
    # nothing completes on the crashed element while it is down (+ the keep-alive detection)
    done_on_pe1 = [r.completed_at for r in recs if r.element == "mec-pe1" and r.completed_at is not None]
    assert not any(100.0 + 0.01 < t < 150.0 for t in done_on_pe1)


def test_coverage_loss_leaves_only_the_ue() -> None:
    sc = Scenario(pus=(8,), runs=1, duration=200.0, seed=4)
    model = build_model(sc)
    res = run_tasks(model, make_tasks(sc, coverage_losses=[CoverageLoss(60.0, 60.0)]))[0]
    recs = list(request_records(model, res))
    # requests accepted during the cut ran on the UE's own PE
    during = [r for r in recs if r.accepted_at is not None and 61.0 < r.accepted_at < 119.0]
    assert during and all(r.element in (None, "ue") for r in during)
    assert any(r.failovers for r in recs)
    # after the cut the MEC is used again
    assert any(r.element_class == "mec" and r.accepted_at and r.accepted_at > 125.0 for r in recs)


# ---------------------------------------------------------------- simulate() and the CLI


def test_simulate_writes_results(tmp_path: Path) -> None:
    sc = Scenario(pus=(1, 8), runs=1, duration=60.0, out=tmp_path, jobs=1)
    path, timing = simulate(sc, progress=False)
    summary = json.loads((path / "summary.json").read_text())
    assert set(summary["settings"]) == {"1", "8"}
    assert summary["simulator"]["events"] == timing["events"] > 0
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["kind"] == "simulation" and manifest["scenario"]["pus"] == [1, 8]


def test_cli_simulate_prints_the_path_last(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["simulate", "paper-topology", "--quick", "--duration", "30", "--jobs", "1",
                                  "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    last = r.stdout.strip().splitlines()[-1]
    assert Path(last).is_dir() and (Path(last) / "summary.json").is_file()
    assert json.loads((Path(last) / "manifest.json").read_text())["scenario"]["quick"] is True


@pytest.mark.parametrize(
    "args",
    [["no-such-topology"], ["paper-topology", "--pus", "x"], ["paper-topology", "--capacity", "gpu=1"],
     ["paper-topology", "--fail", "nope@10"], ["paper-topology", "--policy", "Bogus"]],
)
def test_cli_simulate_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str]) -> None:
    r = CliRunner().invoke(main, ["simulate", *args, "--duration", "10", "--out", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output

"""The discrete-event twin: queueing theory, the papers' policy behaviour, determinism, faults, CLI,
and that it runs on the emulated code's timers and selection rules (reject exclusion, coverage loss)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulab.cli import main
from emulab.experiments.coverage import coverage_summary
from emulab.results import load_events, load_results, load_usage_samples, summarize
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
from emulab.sim.model import RadioTimers
from emulab.sim.sweep import (
    COVERAGE_DRAIN_S,
    SAMPLED_ELEMENTS_MAX,
    event_records,
    request_records,
    usage_records,
)
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


def test_rejection_when_full_and_retry_after_the_retry_delay() -> None:
    """A one-element pool: after a reject the PU waits RETRY_DELAY and selects without the element
    that said no; nothing else is left, so (PoolSession.open: NoPoolElementError) it waits once
    more and then takes the element again: 2 x 1 s per reject, as calcapp_pu does."""
    model = _single_element(max_requests=1)
    res = simulate_run(model, RunParams(setting=20, run=1, duration=300.0, seed=1))
    rejected = [r for r in res.requests if r[7]]
    assert rejected, "a 1-job element must reject under 20 PUs"
    for (_pu, _s, _q, st, a, _c, _e, rej, _f, status) in rejected:
        if status == 0:
            assert a - st >= len(rej) * 2.0 - 1e-9
    _used, acc, n_rej = res.usage[0]
    assert n_rej == sum(len(r[7]) for r in res.requests)


def _two_elements(lud: float) -> PoolModel:
    """"a" always first by PLU (increment 0 vs 0.9) and full after one job; "b" with room for many.
    ``lud``: how late the registrar hears of a's load (late: the PUs keep being sent to a)."""
    def el(name: str, inc: float, max_requests: int) -> ElementModel:
        return ElementModel(
            name=name, element_class="mec", capacity=1e6, max_requests=max_requests,
            policy=PolicyInfo.make(PolicyType.PRIORITY_LEAST_USED, load_degradation=inc),
            one_way_s=0.005, rtt_s=0.01, load_update_delay_s=lud, on_ue=False,
        )
    return PoolModel(name="ab", elements=(el("a", 0.0, 1), el("b", 0.9, 100)),
                     policy_type=int(PolicyType.PRIORITY_LEAST_USED))


def test_reject_excludes_the_rejecting_element_on_the_next_selection() -> None:
    """calcapp_pu: after a reject the next selection skips the element that rejected. The registrar
    still ranks "a" first (its load reaches it 30 s late), so without the exclusion a rejected
    request would be sent to "a" again and again; with it, the retry goes to "b"."""
    model = _two_elements(lud=30.0)
    res = simulate_run(model, RunParams(setting=10, run=1, duration=200.0, seed=3, size_mean=3e6))
    recs = list(request_records(model, res))
    rejected = [r for r in recs if r.rejected_by]
    assert len(rejected) > 20
    for r in rejected:
        assert r.rejected_by == ("a",), r  # one reject, never a second one by the same element
        if r.status == "completed":
            assert r.element == "b"
            # reject, RETRY_DELAY, then select (without "a") and send
            assert r.startup_time is not None and r.startup_time >= 1.0


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


def _busy_moment(model: PoolModel, sc: Scenario, element: str) -> tuple[float, list]:
    """A time at which ``element`` runs jobs accepted at least a second earlier (a fault-free run
    is the same as the faulty one up to the fault), and those jobs."""
    recs = list(request_records(model, run_tasks(model, make_tasks(sc))[0]))
    on = [r for r in recs if r.element == element and r.completed_at and r.completed_at - r.accepted_at > 4.0]
    assert on, f"no long job on {element}"
    t = on[len(on) // 2].accepted_at + 1.0
    return t, [r for r in on if r.accepted_at < t < r.completed_at]


def test_element_failure_fails_over_by_keepalive_and_resumes() -> None:
    sc = Scenario(pus=(16,), runs=1, duration=300.0, seed=2)
    model = build_model(sc)
    t_crash, running = _busy_moment(model, sc, "mec-pe1")
    res = run_tasks(model, make_tasks(sc, failures=[Failure("mec-pe1", t_crash, 50.0)]))[0]
    recs = {(r.pu, r.request_id): r for r in request_records(model, res)}
    accepts = {(e.pu, e.request_id): [] for e in event_records(model, res)}
    for e in event_records(model, res):
        if e.event == "accept":
            accepts[(e.pu, e.request_id)].append((e.t, e.element))
    rtt = {e.name: e.rtt_s for e in model.elements}
    p = make_tasks(sc)[0]
    checked = 0
    for old in running:
        r = recs[(old.pu, old.request_id)]
        assert r.failovers == 1 and r.status == "completed" and r.element != "mec-pe1"
        (t1, e1), (t2, e2) = accepts[(r.pu, r.request_id)][:2]
        assert e1 == "mec-pe1" and e2 != "mec-pe1" and r.accepted_at == t1  # accepted_at: the first
        # keep-alive: messages every interval + RTT from the Accept; after the last one before the
        # crash a quiet interval, a keep-alive and its timeout (2.5 s + 2.5 s), then the fail-over:
        # a new association to the next element, Cookie Echo, Accept (2 RTTs)
        period = p.keepalive_interval_s + rtt["mec-pe1"]
        last = t1 + ((t_crash - t1) // period) * period
        detect = last + p.keepalive_interval_s + p.keepalive_timeout_s
        assert t2 >= detect
        if not r.rejected_by:  # (a reject of the Cookie Echo adds RETRY_DELAY)
            assert t2 == pytest.approx(detect + 2 * rtt[e2], abs=1e-6)
            checked += 1
    assert checked
    # nothing completes on the crashed element while it is down
    done_on_pe1 = [r.completed_at for r in recs.values() if r.element == "mec-pe1" and r.completed_at is not None]
    assert not any(t_crash + 0.01 < t < t_crash + 50.0 for t in done_on_pe1)


def test_timers_are_the_emulated_codes() -> None:
    """One source of truth: the simulator's defaults are the constants the emulated PE, PU, session
    layer, registrar and radio use."""
    from emulab.experiments.coverage import run_coverage_loss
    from radio.lte import FRAME_S, LteConfig
    from rserpool.pu import PUConfig
    from rserpool.registrar import RegistrarConfig
    from rserpool.services import calcapp, calcapp_pu

    p = RunParams(setting=1, run=1, duration=1.0, seed=1)
    reg = RegistrarConfig()
    assert (p.keepalive_interval_s, p.keepalive_timeout_s) == (calcapp.KEEPALIVE_INTERVAL, calcapp.KEEPALIVE_TIMEOUT)
    assert (p.keepalive_interval_s, p.keepalive_timeout_s) == (calcapp_pu.PUParams().keepalive_interval,
                                                               calcapp_pu.PUParams().keepalive_timeout)
    assert (p.cookie_interval_s, p.cookie_calculations) == (calcapp.COOKIE_MAX_TIME, calcapp.COOKIE_MAX_CALCULATIONS)
    assert p.reject_retry_s == calcapp_pu.RETRY_DELAY
    assert p.max_failovers == calcapp_pu.PUParams().max_failovers
    assert (p.connect_timeout_s, p.watch_routes) == (PUConfig().connect_timeout, PUConfig().watch_routes)
    assert p.max_bad_reports == reg.max_bad_pe_reports and p.handle_resolution_items == reg.max_hr_items
    assert p.registrar_detect_s == reg.keepalive_interval / 2 + reg.keepalive_timeout
    assert p.partition_detect_s == reg.peer_max_time_last_heard + reg.peer_max_time_no_response + reg.keepalive_timeout
    assert COVERAGE_DRAIN_S == run_coverage_loss.__kwdefaults__["drain"]
    lte = LteConfig()
    radio = build_model(Scenario()).radio
    assert radio.rlf_s == pytest.approx(lte.n310 * FRAME_S + lte.t310_ms / 1000) == pytest.approx(1.2)
    assert radio.reattach_s(30.0) == pytest.approx(FRAME_S + lte.attach_time_s)
    # a topology's radio options change them as they change the emulated radio
    assert RadioTimers.from_options({"n310": 10, "t310_ms": 500}).rlf_s == pytest.approx(0.6)


def test_coverage_loss_leaves_only_the_ue() -> None:
    # constant load, so that jobs are certainly running on remote elements when coverage goes: every
    # PU sends 2e6 calculations (2 s alone on a MEC PE) every 2.5 s, the cut starts mid-job
    sc = Scenario(pus=(4,), runs=1, duration=200.0, seed=4, size_dist="const", size_mean=2e6,
                  interval_dist="const", interval_mean=2.5)
    model = build_model(sc)
    res = run_tasks(model, make_tasks(sc, coverage_losses=[CoverageLoss(61.0, 60.0)]))[0]
    recs = list(request_records(model, res))
    # requests accepted during the cut ran on the UE's own PE
    during = [r for r in recs if r.accepted_at is not None and 62.0 < r.accepted_at < 120.0]
    assert during and all(r.element in (None, "ue") for r in during)
    # every job running beyond the UE when coverage went failed over and finished on the UE
    in_flight = [r for r in recs if r.accepted_at is not None and r.accepted_at < 61.0
                 and (r.completed_at is None or r.completed_at > 61.0)]
    assert in_flight and all(r.failovers >= 1 and r.element == "ue" for r in in_flight), in_flight
    # after the cut the MEC is used again
    assert any(r.element_class == "mec" and r.accepted_at and r.accepted_at > 125.0 for r in recs)


@pytest.mark.parametrize("watch_routes", [False, True])
def test_coverage_loss_follows_the_emulated_timeline(watch_routes: bool) -> None:
    """radio.emulated + calcapp_pu: packets lost from L, routes withdrawn at the RLF (L + 1.2 s), jobs
    in flight failed over to the UE — found by keep-alive, or at the RLF by the PU's route watcher
    (``PUConfig.watch_routes``) —; remote elements back only after the re-attach (R + 1.01 s) and
    the UE's registrar has heard of them again (within one ENRP heartbeat cycle)."""
    L, R = 60.0, 100.0
    sc = Scenario(pus=(16,), runs=3, duration=160.0, seed=8)
    model = build_model(sc)
    tasks = make_tasks(sc, coverage_losses=[CoverageLoss(L, R - L)], drain_s=COVERAGE_DRAIN_S,
                       watch_routes=watch_routes)
    p = tasks[0]
    rlf = L + model.radio.rlf_s
    reach = R + model.radio.reattach_s(R - rlf)
    max_rtt = max(e.rtt_s for e in model.elements)
    silence = p.keepalive_interval_s + p.keepalive_timeout_s
    for res in run_tasks(model, tasks):
        recs = list(request_records(model, res))
        events = event_records(model, res, p.coverage_losses)
        remote = [e for e in events if e.event == "accept" and e.element_class != "ue"]
        # nothing reaches a remote element from the loss until the UE is attached again
        assert not any(L <= e.t < reach for e in remote)
        first_back = min(e.t for e in remote if e.t >= R)
        assert reach <= first_back <= reach + p.resync_max_s + 0.5
        # jobs running remotely at L: failed over to the UE and resumed there
        in_flight = [r for r in recs if r.accepted_at is not None and r.accepted_at < L
                     and (r.completed_at is None or r.completed_at > L) and r.failovers]
        assert in_flight
        for r in in_flight:
            accepts = [e for e in events if e.event == "accept" and (e.pu, e.request_id) == (r.pu, r.request_id)]
            after = next(e for e in accepts if e.t > L)
            if watch_routes:  # the route goes at the RLF, and the session with it
                earliest, latest = rlf, rlf + 0.01
            else:  # the last message before L, a quiet interval, a keep-alive and its timeout
                earliest, latest = L + silence - p.keepalive_interval_s - max_rtt, L + silence
            assert after.t >= earliest
            if not r.rejected_by:  # (the UE's element may be full: reject, RETRY_DELAY, again)
                assert after.element == "ue" and after.t <= latest
        # every request issued completes once after the drain, which the run's length includes
        assert all(r.status == "completed" for r in recs)
        assert res.duration > sc.duration


def test_simulated_coverage_loss_has_the_experiments_summary_and_events(tmp_path: Path) -> None:
    """`emulab simulate --coverage-loss` writes what `emulab experiment coverage-loss` writes: the
    same summary keys (computed by the same emulab.results functions) and events.csv, so `emulab
    plot` draws the coverage timeline."""
    sc = Scenario(pus=(16,), runs=2, duration=90.0, seed=3, out=tmp_path, jobs=1)
    path, _timing = simulate(sc, coverage_losses=[CoverageLoss(30.0, 30.0)], progress=False)
    summary = json.loads((path / "summary.json").read_text())
    expected = set(coverage_summary([])) | {"timers"}  # the experiment: coverage_summary + its timers
    assert expected <= set(summary)
    assert summary["requests_lost"] == 0 and summary["requests_duplicated"] == 0  # drained, as the experiment
    assert summary["requests_completed"] == summary["requests_issued"] > 0
    assert 0.0 < summary["failover_s"] < 6.0 and 1.0 < summary["recovery_s"] < 5.0
    assert [(r["setting"], r["run"]) for r in summary["coverage_runs"]] == [(16, 1), (16, 2)]
    assert summary["requests_failed_over"] > 0
    assert summary["timers"]["calcapp_keepalive_interval_s"] == 2.5
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["coverage_loss"] == {"lose_at": 30.0, "restore_at": 60.0}
    assert manifest["drain_s"] == COVERAGE_DRAIN_S
    events = load_events(path)
    kinds = {e.event for e in events}
    assert kinds == {"accept", "complete", "coverage_lost", "coverage_restored"}
    assert [e.t for e in events if e.event == "coverage_lost"] == [30.0, 30.0]
    completes = [e for e in events if e.event == "complete"]
    assert len(completes) == summary["requests_completed"]
    assert len({(e.setting, e.run, e.pu, e.request_id) for e in completes}) == len(completes)
    # the failed-over requests have two Accepts or more: the first remote, a later one on the UE
    multi = {}
    for e in events:
        if e.event == "accept":
            multi.setdefault((e.run, e.pu, e.request_id), []).append(e.element_class)
    assert any(len(v) > 1 and v[0] != "ue" and "ue" in v[1:] for v in multi.values())
    from emulab.plots import plot_results

    pngs = [p for p in plot_results(path, out=tmp_path / "plots") if p.name.startswith("coverage-")]
    assert [p.name for p in pngs] == ["coverage-16pus-run1.png", "coverage-16pus-run2.png"]
    assert all(p.stat().st_size > 10_000 for p in pngs)


@pytest.mark.parametrize("losses", [(), (CoverageLoss(30.0, 30.0),)], ids=["plain", "coverage-loss"])
def test_elements_are_sampled_each_second_like_the_emulated_pes(tmp_path: Path, losses: tuple) -> None:
    """elements_timeline.csv as the emulated PEs write it: a sample per element per second, cumulative
    used calculations that never fall and end at elements.csv's figure, and `emulab plot` draws the
    heat map from it."""
    sc = Scenario(pus=(16,), runs=1, duration=90.0, seed=3, out=tmp_path, jobs=1)
    path, _ = simulate(sc, coverage_losses=losses, progress=False)
    samples = load_usage_samples(path)
    usage = {u.element: u for u in load_results(path).usage}
    assert set(usage) == {x.element for x in samples}
    for name, u in usage.items():
        mine = [x for x in samples if x.element == name]
        ts = [x.t for x in mine]
        assert ts[:91] == [float(t) for t in range(91)]  # 0 … 90 s (+ the drain's seconds)
        used = [x.used_calculations for x in mine]
        assert all(b >= a - 1e-6 for a, b in zip(used, used[1:], strict=False)), name
        assert used[-1] == pytest.approx(u.used_calculations, rel=1e-9, abs=1e-6), name
        assert max(x.jobs for x in mine) <= u.max_requests
        # a second's work never exceeds the element's capacity (processor sharing)
        assert all(b.used_calculations - a.used_calculations <= u.capacity * (b.t - a.t) * (1 + 1e-9) + 1e-6
                   for a, b in zip(mine, mine[1:], strict=False))
    assert sum(usage[n].used_calculations for n in ("mec-pe1", "mec-pe2")) > 0
    from emulab.plots import plot_results

    pngs = [p for p in plot_results(path, out=tmp_path / "plots") if p.name.startswith("utilisation-")]
    assert [p.name for p in pngs] == ["utilisation-16pus-run1.png"] and pngs[0].stat().st_size > 10_000


def test_large_pools_are_not_sampled_over_time(tmp_path: Path) -> None:
    sc = Scenario(target=f"synthetic:{SAMPLED_ELEMENTS_MAX + 1}", pus=(4,), runs=1, duration=20.0, out=tmp_path,
                  jobs=1)
    path, _ = simulate(sc, progress=False)
    assert load_usage_samples(path) == [] and load_results(path).usage


def test_faulty_runs_are_deterministic_at_any_process_count(tmp_path: Path) -> None:
    sc = Scenario(pus=(4, 16), runs=2, duration=120.0, seed=6, jobs=1)
    model = build_model(sc)
    kw = {"failures": [Failure("mec-pe2", 50.0, 20.0)], "coverage_losses": [CoverageLoss(70.0, 25.0)],
          "drain_s": 30.0}
    a = run_tasks(model, make_tasks(sc, **kw), jobs=1)
    b = run_tasks(model, make_tasks(sc, **kw), jobs=2)
    assert [(x.requests, x.usage, x.accepts, x.duration) for x in a] == \
        [(x.requests, x.usage, x.accepts, x.duration) for x in b]
    c = run_tasks(model, make_tasks(replace(sc, seed=7), **kw), jobs=1)
    assert [x.requests for x in c] != [x.requests for x in a]
    # and the written summaries (coverage keys included) agree too
    p1, _ = simulate(replace(sc, out=tmp_path / "a"), kw["failures"], kw["coverage_losses"], progress=False)
    p2, _ = simulate(replace(sc, out=tmp_path / "b", jobs=2), kw["failures"], kw["coverage_losses"], progress=False)
    s1, s2 = (json.loads((p / "summary.json").read_text()) for p in (p1, p2))
    for s in (s1, s2):
        del s["simulator"]  # wall-clock figures
    assert s1 == s2 and s1["coverage_runs"]


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


@pytest.mark.parametrize(("drain", "expect"), [(None, 0.0), ("200", 200.0)])
def test_cli_simulate_drain(tmp_path: Path, drain: str | None, expect: float) -> None:
    """--drain as `emulab experiment coverage-loss --drain`: no new requests after --duration, and the
    queued ones finish (none left unfinished); without it, none (as `emulab experiment paper`)."""
    args = ["simulate", "--pus", "64", "--runs", "1", "--duration", "30", "--jobs", "1", "--out", str(tmp_path)]
    r = CliRunner().invoke(main, args + (["--drain", drain] if drain else []))
    assert r.exit_code == 0, r.output
    path = Path(r.stdout.strip().splitlines()[-1])
    assert json.loads((path / "manifest.json").read_text())["drain_s"] == expect
    reqs = load_results(path).requests
    assert reqs and all(q.queued_at < 30.0 for q in reqs)
    unfinished = [q for q in reqs if q.status == "unfinished"]
    assert (unfinished == []) if drain else unfinished  # 64 PUs overload the pool: a queue at 30 s


@pytest.mark.parametrize(
    "args",
    [["no-such-topology"], ["paper-topology", "--pus", "x"], ["paper-topology", "--capacity", "gpu=1"],
     ["paper-topology", "--fail", "nope@10"], ["paper-topology", "--policy", "Bogus"]],
)
def test_cli_simulate_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str]) -> None:
    r = CliRunner().invoke(main, ["simulate", *args, "--duration", "10", "--out", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output


# ---------------------------------------------------------------- the engine's parts


def test_fault_schedule_follows_the_radio_timers() -> None:
    """A loss longer than N310 x 10 ms + T310 fails the radio link and re-attaches after coverage
    is back; a shorter one goes unnoticed by the UE. Crashes unregister after the registrar's
    detection time and recover after their duration."""
    from emulab.sim import faults

    model = build_model(Scenario())
    radio = model.radio
    p = RunParams(setting=1, run=1, duration=100.0, seed=1,
                  failures=(Failure("mec-pe2", 10.0, 5.0), Failure("ue", 20.0)),
                  coverage_losses=(CoverageLoss(30.0, 10.0), CoverageLoss(60.0, 0.5)))
    mec2 = [e.name for e in model.elements].index("mec-pe2")
    steps = faults.fault_schedule(model, p)
    assert steps == [
        (10.0, faults.CRASH, mec2), (10.0 + p.registrar_detect_s, faults.UNREGISTER, mec2),
        (15.0, faults.RECOVER, mec2),
        (20.0, faults.CRASH, 0), (20.0 + p.registrar_detect_s, faults.UNREGISTER, 0),
        (30.0, faults.CUT, -1), (30.0 + radio.rlf_s, faults.RADIO_LINK_FAILURE, -1),
        (40.0 + radio.reattach_s(10.0 - radio.rlf_s), faults.REACH, -1),
        (30.0 + p.partition_detect_s, faults.PARTITION, -1),
        (60.0, faults.CUT, -1), (60.5, faults.REACH, -1), (60.0 + p.partition_detect_s, faults.PARTITION, -1),
    ]
    with pytest.raises(ValueError, match="unknown element 'nope'"):
        faults.fault_schedule(model, replace(p, failures=(Failure("nope", 1.0),)))


def test_orphan_work_is_processor_sharing_until_the_keepalive_drops() -> None:
    """A cut-off PE (1e6 calculations/s) works on alone: two jobs of 1e6 and 3e6 share it until the
    first is done (2 s), then the second has it to itself until its keep-alive drops it."""
    from emulab.sim.faults import orphan_work

    cap = 1e6
    assert orphan_work(cap, [1e6, 3e6], [100.0, 100.0], 0.0, 100.0) == pytest.approx(4e6)
    assert orphan_work(cap, [1e6, 3e6], [100.0, 3.0], 0.0, 100.0) == pytest.approx(3e6)  # dropped at 3 s
    assert orphan_work(cap, [1e6, 3e6], [100.0, 100.0], 0.0, 1.0) == pytest.approx(1e6)  # up to t_end
    assert orphan_work(cap, [1e6], [100.0], 5.0, 100.0) == pytest.approx(1e6)  # from t0
    assert orphan_work(cap, [1e6], [4.0], 5.0, 100.0) == 0.0  # dropped before the cut


def test_simulation_has_one_handler_per_event_kind() -> None:
    """The loop dispatches on an event's kind to its own ``on_…`` method; ``simulate_run`` is the
    class's run."""
    from emulab.sim import engine

    model = build_model(Scenario())
    params = RunParams(setting=4, run=1, duration=60.0, seed=2, coverage_losses=(CoverageLoss(20.0, 10.0),),
                       drain_s=30.0)
    sim = engine.Simulation(model, params)
    kinds = ("ARRIVAL", "AT_ELEMENT", "ELEMENT_DONE", "COMPLETE", "LOAD_REPORT", "REJECT", "RETRY", "ACCEPT",
             "KEEPALIVE_TIMEOUT", "CONNECT_FAILED", "FAULT")
    assert [getattr(engine, k) for k in kinds] == list(range(len(sim.handlers)))
    assert all(h.__name__.startswith("on_") for h in sim.handlers)
    assert len({h.__name__ for h in sim.handlers}) == len(kinds)
    res = sim.run()
    again = simulate_run(model, params)
    assert (res.requests, res.usage, res.samples, res.accepts, res.events) == (
        again.requests, again.usage, again.samples, again.accepts, again.events)
    assert res.events > 0 and res.accepts

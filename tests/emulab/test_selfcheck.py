"""Unit tests of the self-check's statistics: the tolerance rule, the expected RTT of a path, the
probing schedule and how a failure is attributed (no root: the testbed is replaced by its spec)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from emulab.linkparams import LinkParams
from emulab.selfcheck import DIRECTIONS, LinkView, PairResult, all_pairs, evaluate, probe_rates, schedule
from emulab.selfcheck_paths import expected_rtt_ms
from emulab.selfcheck_stats import (
    Lateness,
    Noise,
    fifo_bias_ms,
    lateness_between,
    median_se_ms,
    ping_resolution_ms,
)
from emulab.shaper import LATE_EDGES
from emulab.topology import load

DATA = Path(__file__).parent / "data"
EDGES_MS = [e * 1e3 for e in LATE_EDGES]


@pytest.fixture(scope="module")
def spec():  # type: ignore[no-untyped-def]
    return load(DATA / "good-jitter-loss.yaml")


def _views(spec, shaped: bool = True, applied: dict[str, dict[str, LinkParams]] | None = None):  # type: ignore[no-untyped-def]
    views = {}
    for lk in spec.links:
        expected = {d: lk.params for d in DIRECTIONS}
        got = (applied or {}).get(lk.name, expected)
        views[lk.name] = LinkView(lk.name, expected, got, shaped and not lk.params.is_neutral, lk.radio)
    return views


def _late(center_ms: float, n: int = 100) -> Lateness:
    """A lateness histogram with all ``n`` releases in the bucket holding ``center_ms``."""
    counts = [0] * (len(EDGES_MS) + 1)
    i = next((k for k, e in enumerate(EDGES_MS) if center_ms <= e), len(EDGES_MS))
    counts[i] = n
    return Lateness(list(EDGES_MS), counts, center_ms * n)


def _pair(src: str, dst: str, median: float, n: int = 15) -> PairResult:
    return PairResult(src, dst, True, 0.0, median, [median] * n)


def test_median_se_closed_form() -> None:
    # one uniform ±J: density 1/(2J) at the centre, SE = J / sqrt(n)
    assert median_se_ms([2.0], 0.0, 16) == pytest.approx(0.5)
    # many hops: the normal limit 1.2533 sigma / sqrt(n)
    js = [0.5] * 40
    sigma = math.sqrt(sum(j * j / 3 for j in js))
    assert median_se_ms(js, 0.0, 25) == pytest.approx(1.2533 * sigma / 5, rel=1e-3)
    assert median_se_ms([], 0.0, 15) == 0.0
    assert median_se_ms([1.0], 0.0, 0) == math.inf


@pytest.mark.parametrize("jitters", [[2.0, 2.0], [1.0, 1.0, 0.5, 0.5], [3.0]])
def test_monte_carlo_agrees_with_the_closed_form(jitters: list[float]) -> None:
    _mean, se = Noise(jitters).median_stats(15, seed=7, replicas=4000)
    assert se == pytest.approx(median_se_ms(jitters, 0.02, 15), rel=0.2)
    assert abs(_mean) < 0.1  # symmetric jitter does not move the median


def test_loss_means_fewer_samples_and_a_wider_tolerance(spec) -> None:  # type: ignore[no-untyped-def]
    full = evaluate(spec, _pair("h1", "h2", 74.0, n=15), _views(spec, shaped=False), {}, {})
    fewer = evaluate(spec, _pair("h1", "h2", 74.0, n=6), _views(spec, shaped=False), {}, {})
    assert fewer.tolerance > full.tolerance


def test_resolution_and_fifo_bias() -> None:
    assert [ping_resolution_ms(x) for x in (0.5, 5, 50, 320)] == [0.001, 0.01, 0.1, 1.0]
    # 100 probes/s over a hop with ±2 ms: 100 * (2e-3)^2 / 6 s = 0.0667 ms
    assert fifo_bias_ms(100.0, 2.0) == pytest.approx(0.0667, abs=1e-4)


def test_expected_rtt_and_tolerance_follow_the_configuration(spec) -> None:  # type: ignore[no-untyped-def]
    assert expected_rtt_ms(spec, "h1", "h2") == 74.0
    r = evaluate(spec, _pair("h1", "h2", 74.0), _views(spec, shaped=False), {}, {})
    b = r.breakdown
    assert b["configured_ms"] == 74.0
    assert b["serialisation_ms"] == pytest.approx(2 * 98 * 8 / 100e3)  # the 100 Mbit/s WAN link, both ways
    # jitter: 2 ms twice and 0.5 ms twice; n = 15 -> SE ~0.6 ms, tolerance ~2.6 ms (was a flat 2 ms)
    assert 0.5 < b["se_ms"] < 0.75
    assert r.tolerance == pytest.approx(4 * b["se_ms"] + 0.05 + 0.1, abs=1e-6)
    # a path without jitter gets a tight tolerance
    tight = evaluate(spec, _pair("h1", "r1", 2.0), _views(spec, shaped=False), {}, {})
    assert tight.tolerance < 0.25


def test_the_busy_example_passes_with_the_shapers_lateness_counted(spec) -> None:  # type: ignore[no-untyped-def]
    # h1 -> h2, 2 ms jitter + 1 % loss on the WAN link two shaped hops away: 76.45 ms against 74
    # configured, with the shaper releasing ~0.15 ms late on each of the six shaped hops (busy machine)
    late = {(lk.name, d): _late(0.15) for lk in spec.links for d in DIRECTIONS}
    r = evaluate(spec, _pair("h1", "h2", 76.45, n=14), _views(spec), late, {})
    assert r.breakdown["shaped_hops"] == 6
    assert r.breakdown["emulation_ms"] == pytest.approx(6 * 0.15, abs=0.1)
    assert r.within_tolerance, (r.error_ms, r.tolerance)


def test_misapplied_delay_fails_and_says_configuration(spec) -> None:  # type: ignore[no-untyped-def]
    forced = {"h1--r1": {"1to2": LinkParams(delay_ms=4.0), "2to1": LinkParams(delay_ms=1.0)}}
    late = {(lk.name, d): _late(0.01) for lk in spec.links for d in DIRECTIONS}
    r = evaluate(spec, _pair("h1", "r1", 5.03), _views(spec, applied=forced), late, {})
    assert not r.within_tolerance
    assert r.cause is not None and r.cause.startswith("configuration") and "h1--r1" in r.cause
    # without the read-back telling, an on-time emulation still points at the configuration
    r = evaluate(spec, _pair("h1", "r1", 5.03), _views(spec), late, {})
    assert not r.within_tolerance and r.cause is not None and r.cause.startswith("configuration")


def test_late_emulation_is_called_load(spec) -> None:  # type: ignore[no-untyped-def]
    # the shaper's histogram says most releases were 0.2-0.5 ms late, with a tail up to 5 ms
    counts = [0] * (len(EDGES_MS) + 1)
    counts[EDGES_MS.index(0.5)] = 50
    counts[EDGES_MS.index(5.0)] = 50
    late = {(lk.name, d): Lateness(list(EDGES_MS), counts, 50 * 0.35 + 50 * 3.5) for lk in spec.links
            for d in DIRECTIONS}
    r = evaluate(spec, _pair("h1", "r1", 30.0), _views(spec), late, {})
    assert not r.within_tolerance
    assert r.cause is not None and r.cause.startswith("load")


def test_lateness_between_two_stats_answers() -> None:
    zero = [0] * (len(EDGES_MS) + 1)
    hist = list(zero)
    hist[EDGES_MS.index(0.05)] = 10
    before = {"l": {"ab": {"late_sum_ms": 1.0, "late_hist": list(zero)}, "ba": {"late_sum_ms": 0.0, "late_hist": list(zero)}}}
    after = {"l": {"ab": {"late_sum_ms": 1.4, "late_hist": hist}, "ba": {"late_sum_ms": 0.0, "late_hist": list(zero)}}}
    got = lateness_between(before, after, EDGES_MS)
    assert got[("l", "1to2")].n == 10 and got[("l", "1to2")].mean_ms == pytest.approx(0.04)
    assert got[("l", "2to1")].n == 0
    import numpy as np

    draws = got[("l", "1to2")].sample(np.random.default_rng(1), (1000,))
    assert 0.02 <= draws.min() and draws.max() <= 0.05  # uniform within the bucket (0.02, 0.05]


def test_schedule_probes_every_pair_once_each_source_once_per_round(spec) -> None:  # type: ignore[no-untyped-def]
    pairs = all_pairs(spec)
    rounds = schedule(pairs)
    assert sorted(p for batch in rounds for p in batch) == sorted(pairs)
    for batch in rounds:
        srcs = [s for s, _ in batch]
        assert len(srcs) == len(set(srcs))
        assert len({d for _, d in batch}) == len(batch)  # staggered: no node is everyone's target at once
    rates = probe_rates(spec, rounds[0], interval=0.07)
    assert all(r >= 1 / 0.07 - 1e-9 for r in rates.values())


def test_forwarding_cost_is_calibrated_on_unshaped_paths() -> None:
    from emulab.selfcheck import calibrate
    from emulab.selfcheck_paths import switch_crossings

    spec = load(DATA / "good-switch-chain.yaml")
    assert switch_crossings(spec, "h1", "h2") == 4  # s1 and s2, there and back
    assert switch_crossings(spec, "h2", "r1") == 2
    views = _views(spec)
    # unshaped paths measure 0.05 ms base + 0.1 ms per crossing; h3's path carries a delay: not used
    results = [_pair("h1", "h2", 0.45), _pair("h2", "r1", 0.25), _pair("r1", "h1", 0.45), _pair("h1", "h3", 9.0)]
    cal = calibrate(spec, results, views)
    assert cal.base_paths == 0 and cal.base_ms == pytest.approx(0.05)  # assumed: no switch-free unshaped path
    assert cal.switch_paths == 3 and cal.switch_ms == pytest.approx(0.1)
    r = evaluate(spec, _pair("h1", "h3", 2 + 0.05 + 4 * 0.1 + 0.0), views, {}, {}, cal)
    assert r.breakdown["forwarding_ms"] == pytest.approx(0.05 + 4 * 0.1)
    assert r.within_tolerance


def test_unexplained_spread_is_robust_to_a_wrong_path() -> None:
    from emulab.selfcheck import unexplained_sd

    def done(err: float, jittered: int = 0) -> PairResult:
        r = PairResult("a", "b", True, 10.0, 10.0 + err, [10.0 + err] * 15)
        r.breakdown = {"jittered_hops": jittered}
        return r

    paths = [done(e) for e in (0.1, -0.1, 0.1, 0.1, -0.1)] + [done(3.0), done(5.0, jittered=2)]
    assert unexplained_sd(paths) == pytest.approx(1.4826 * 0.1)  # the 3 ms path does not widen it
    assert unexplained_sd(paths[:4]) == 0.0  # too few paths without jitter to say

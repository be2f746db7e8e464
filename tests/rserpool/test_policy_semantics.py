"""Each selection policy behaves as RSPLIB 3.4.4's poolpolicy-template_impl.h defines it."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from rserpool.policy import (
    DEFAULT_MAX_HANDLE_RESOLUTION_ITEMS,
    POLICIES,
    PolicyElement,
    PolicyInfo,
    SelectionPool,
    policies_compatible,
)
from rserpool.policytypes import MAX_LOAD, MAX_WEIGHT, PolicyType, fraction_to_u32

T = PolicyType


@pytest.fixture(params=[False, True], ids=["c", "python"])
def force_python(request: pytest.FixtureRequest) -> bool:
    return request.param


def make_pool(ptype: PolicyType, infos: list[PolicyInfo], force_python: bool, seed: int = 1) -> SelectionPool:
    pool = SelectionPool(ptype, force_python=force_python, rng=random.Random(seed))
    for i, info in enumerate(infos, start=1):
        pool.add(PolicyElement(i, info))
    return pool


def ids(elements: list[PolicyElement]) -> list[int]:
    return [e.identifier for e in elements]


def test_round_robin_cycles(force_python: bool) -> None:
    pool = make_pool(T.ROUND_ROBIN, [PolicyInfo(T.ROUND_ROBIN)] * 4, force_python)
    assert [ids(pool.select(1))[0] for _ in range(9)] == [1, 2, 3, 4, 1, 2, 3, 4, 1]


def test_round_robin_moves_only_max_increment_elements(force_python: bool) -> None:
    pool = make_pool(T.ROUND_ROBIN, [PolicyInfo(T.ROUND_ROBIN)] * 5, force_python)
    assert ids(pool.select(3)) == [1, 2, 3]
    assert ids(pool.select(3)) == [2, 3, 4]  # default max increment 1: only PE 1 went to the back
    assert ids(pool.select(3, max_increment=3)) == [3, 4, 5]
    assert ids(pool.select(3)) == [1, 2, 3]


def test_default_handle_resolution_returns_three(force_python: bool) -> None:
    pool = make_pool(T.LEAST_USED, [PolicyInfo(T.LEAST_USED)] * 10, force_python)
    assert DEFAULT_MAX_HANDLE_RESOLUTION_ITEMS == 3
    assert len(pool.select()) == 3
    small = make_pool(T.LEAST_USED, [PolicyInfo(T.LEAST_USED)] * 2, force_python)
    assert len(small.select(5)) == 2
    assert small.select(0) == []


def test_weighted_round_robin_proportions(force_python: bool) -> None:
    weights = [1, 2, 4]
    pool = make_pool(T.WEIGHTED_ROUND_ROBIN, [PolicyInfo(T.WEIGHTED_ROUND_ROBIN, weight=w) for w in weights], force_python)
    counts = Counter(ids(pool.select(1))[0] for _ in range(7000))
    # selections per PE are proportional to the weight
    assert counts[2] / counts[1] == pytest.approx(2.0, rel=0.05)
    assert counts[3] / counts[1] == pytest.approx(4.0, rel=0.05)


def test_random_returns_distinct_elements_and_covers_pool(force_python: bool) -> None:
    pool = make_pool(T.RANDOM, [PolicyInfo(T.RANDOM)] * 6, force_python, seed=3)
    seen: set[int] = set()
    for _ in range(50):
        chosen = ids(pool.select(3))
        assert len(set(chosen)) == 3
        seen.update(chosen)
    assert seen == {1, 2, 3, 4, 5, 6}
    pool.check_invariants()


def test_weighted_random_proportions_and_zero_weight(force_python: bool) -> None:
    weights = [0, 1, 3]
    pool = make_pool(T.WEIGHTED_RANDOM, [PolicyInfo(T.WEIGHTED_RANDOM, weight=w) for w in weights], force_python, seed=7)
    counts = Counter(ids(pool.select(1))[0] for _ in range(20000))
    assert counts[1] == 0
    assert counts[3] / counts[2] == pytest.approx(3.0, rel=0.08)


def test_priority_prefers_highest_and_rotates_ties(force_python: bool) -> None:
    infos = [PolicyInfo(T.PRIORITY, weight=w) for w in (5, 9, 9, 1)]
    pool = make_pool(T.PRIORITY, infos, force_python)
    assert ids(pool.select(4)) == [2, 3, 1, 4]
    assert ids(pool.select(1)) == [3]  # PE 2 got a new sequence number: its tie partner is first
    assert ids(pool.select(1)) == [2]


def test_least_used_picks_least_loaded_ties_by_sequence(force_python: bool) -> None:
    infos = [PolicyInfo.make(T.LEAST_USED, load=x) for x in (0.5, 0.2, 0.2, 0.9)]
    pool = make_pool(T.LEAST_USED, infos, force_python)
    assert ids(pool.select(3)) == [2, 3, 1]
    assert ids(pool.select(3)) == [3, 2, 1]  # equal load: PE 2 moved behind PE 3
    pool.update_policy(pool.elements[4], PolicyInfo.make(T.LEAST_USED, load=0.1))
    assert ids(pool.select(1)) == [4]


def test_least_used_degradation_accumulates_and_resets(force_python: bool) -> None:
    inc = fraction_to_u32(0.1)
    infos = [PolicyInfo.make(T.LEAST_USED_DEGRADATION, load=0.0, load_degradation=0.1) for _ in range(2)]
    pool = make_pool(T.LEAST_USED_DEGRADATION, infos, force_python)
    e1, e2 = pool.elements[1], pool.elements[2]
    # RSPLIB's link step applies the update hook once on registration ...
    assert e1.degradation == inc and e2.degradation == inc
    assert ids(pool.select(1)) == [1]
    # ... and a selection applies it twice (explicit update + re-link)
    assert e1.degradation == 3 * inc
    assert ids(pool.select(1)) == [2]
    assert ids(pool.select(1)) == [1]  # equal degradation again, PE 1 has the older seq
    assert e1.degradation == 5 * inc
    # re-registration with unchanged values but non-zero degradation resets it (then +1 step)
    assert pool.update_policy(e1, PolicyInfo.make(T.LEAST_USED_DEGRADATION, load=0.0, load_degradation=0.1))
    assert e1.degradation == inc
    # a re-registration that changes the load resets as well
    pool.update_policy(e2, PolicyInfo.make(T.LEAST_USED_DEGRADATION, load=0.3, load_degradation=0.1))
    assert e2.degradation == inc
    assert pool.selector.key(2)[0] == fraction_to_u32(0.3) + inc
    pool.check_invariants()


def test_least_used_degradation_saturates(force_python: bool) -> None:
    pool = make_pool(T.LEAST_USED_DEGRADATION, [PolicyInfo.make(T.LEAST_USED_DEGRADATION, load=0.9, load_degradation=0.6)], force_python)
    pool.select(1)
    pool.select(1)
    assert pool.elements[1].degradation == MAX_LOAD
    assert pool.selector.key(1)[0] == MAX_LOAD


UE, MEC, PMC = 1.0, 0.1, 0.5  # PLU load increments: user equipment, mobile edge, public multi-cloud


def plu_pool(force_python: bool) -> SelectionPool:
    infos = [
        PolicyInfo.make(T.PRIORITY_LEAST_USED, load_degradation=UE),  # id 1
        PolicyInfo.make(T.PRIORITY_LEAST_USED, load_degradation=PMC),  # id 2
        PolicyInfo.make(T.PRIORITY_LEAST_USED, load_degradation=MEC),  # id 3
        PolicyInfo.make(T.PRIORITY_LEAST_USED, load_degradation=MEC),  # id 4
    ]
    return make_pool(T.PRIORITY_LEAST_USED, infos, force_python)


def test_priority_least_used_prefers_mec_then_pmc_then_ue(force_python: bool) -> None:
    pool = plu_pool(force_python)
    sel = pool.selector
    assert sel.key(3)[0] == fraction_to_u32(0.1)
    assert sel.key(2)[0] == fraction_to_u32(0.5)
    assert sel.key(1)[0] == MAX_LOAD
    assert ids(pool.select(4)) == [3, 4, 2, 1]
    # PLU has no per-selection state: keys stay load + increment
    assert sel.key(3)[0] == fraction_to_u32(0.1)


def test_priority_least_used_switches_to_pmc_when_mec_loaded(force_python: bool) -> None:
    pool = plu_pool(force_python)
    for ident in (3, 4):
        pool.update_policy(pool.elements[ident], PolicyInfo.make(T.PRIORITY_LEAST_USED, load=0.45, load_degradation=MEC))
    assert ids(pool.select(1)) == [2]  # MEC 0.55 > PMC 0.5
    pool.update_policy(pool.elements[2], PolicyInfo.make(T.PRIORITY_LEAST_USED, load=0.25, load_degradation=PMC))
    assert ids(pool.select(4)) == [3, 4, 2, 1]  # PMC 0.75 > MEC 0.55
    for ident in (2, 3, 4):
        pool.update_policy(pool.elements[ident], PolicyInfo.make(T.PRIORITY_LEAST_USED, load=0.99, load_degradation=MEC))
    assert ids(pool.select(1)) == [1]  # everything else saturated at 100 %: UE (1.0) has the oldest seq


def test_priority_least_used_tie_goes_to_older_sequence(force_python: bool) -> None:
    pool = plu_pool(force_python)
    # MEC at 0.4 + 0.1 equals PMC at 0 + 0.5
    pool.update_policy(pool.elements[3], PolicyInfo.make(T.PRIORITY_LEAST_USED, load=0.4, load_degradation=MEC))
    pool.update_policy(pool.elements[4], PolicyInfo.make(T.PRIORITY_LEAST_USED, load=0.4, load_degradation=MEC))
    assert pool.selector.key(2)[0] == pool.selector.key(3)[0]  # 0.4 + 0.1 == 0.5 in u32 fixed point
    assert ids(pool.select(3)) == [2, 3, 4]  # equal keys: the PMC element has the oldest seq
    assert ids(pool.select(3)) == [3, 4, 2]


def test_priority_least_used_degradation_accumulates(force_python: bool) -> None:
    inc = fraction_to_u32(0.1)
    infos = [PolicyInfo.make(T.PRIORITY_LEAST_USED_DEGRADATION, load_degradation=0.1) for _ in range(2)]
    pool = make_pool(T.PRIORITY_LEAST_USED_DEGRADATION, infos, force_python)
    pool.select(1)
    assert pool.elements[1].degradation == 3 * inc
    assert pool.selector.key(1)[0] == 4 * inc  # load 0 + increment + degradation


def test_least_used_dpf_penalises_distance(force_python: bool) -> None:
    near = PolicyInfo.make(T.LEAST_USED_DPF, load=0.30, load_dpf=0.001, distance=50)
    far = PolicyInfo.make(T.LEAST_USED_DPF, load=0.20, load_dpf=0.001, distance=150)
    pool = make_pool(T.LEAST_USED_DPF, [far, near], force_python)
    # far: 0.20 + 150 ms * 0.1 %/ms = 0.35; near: 0.30 + 50 ms * 0.1 %/ms = 0.35 -> tie, far is older
    assert ids(pool.select(1)) == [1]
    pool.update_policy(pool.elements[2], PolicyInfo.make(T.LEAST_USED_DPF, load=0.25, load_dpf=0.001, distance=50))
    assert ids(pool.select(2)) == [2, 1]
    no_dpf = make_pool(T.LEAST_USED_DPF, [PolicyInfo.make(T.LEAST_USED_DPF, load=0.2, distance=150), near], force_python)
    assert ids(no_dpf.select(1)) == [1]


def test_weighted_random_dpf_value(force_python: bool) -> None:
    info = PolicyInfo.make(T.WEIGHTED_RANDOM_DPF, weight=1000, weight_dpf=0.002, distance=100)
    pool = make_pool(T.WEIGHTED_RANDOM_DPF, [info], force_python)
    assert pool.selector.key(1)[3] == 800  # 1000 - rint(1000 * 100 * 0.002)


def test_randomized_least_used_values(force_python: bool) -> None:
    infos = [PolicyInfo.make(T.RANDOMIZED_LEAST_USED, load=x) for x in (0.0, 0.75, 1.0)]
    pool = make_pool(T.RANDOMIZED_LEAST_USED, infos, force_python, seed=11)
    assert pool.selector.key(1)[3] == MAX_LOAD
    assert pool.selector.key(2)[3] == MAX_LOAD - fraction_to_u32(0.75)
    assert pool.selector.key(3)[3] == 1  # a full PE stays selectable, barely
    counts = Counter(ids(pool.select(1))[0] for _ in range(8000))
    assert counts[1] / counts[2] == pytest.approx(4.0, rel=0.1)
    assert counts[3] == 0


def test_randomized_plu_value_uses_increment(force_python: bool) -> None:
    pool = make_pool(T.RANDOMIZED_PRIORITY_LEAST_USED, [PolicyInfo.make(T.RANDOMIZED_PRIORITY_LEAST_USED, load=0.25, load_degradation=0.5)], force_python)
    assert pool.selector.key(1)[3] == MAX_LOAD - fraction_to_u32(0.25) - fraction_to_u32(0.5)


def test_selection_counter_counts_updated_elements(force_python: bool) -> None:
    pool = make_pool(T.LEAST_USED, [PolicyInfo(T.LEAST_USED)] * 3, force_python)
    for _ in range(6):
        pool.select(3)
    assert [pool.elements[i].selection_counter for i in (1, 2, 3)] == [2, 2, 2]


def test_compatibility_is_type_equality() -> None:
    assert policies_compatible(T.LEAST_USED, T.LEAST_USED)
    assert not policies_compatible(T.LEAST_USED, T.LEAST_USED_DEGRADATION)
    assert not policies_compatible(T.PRIORITY_LEAST_USED, T.PRIORITY_LEAST_USED_DEGRADATION)


def test_every_policy_has_a_complete_definition() -> None:
    assert set(POLICIES) == set(PolicyType) - {PolicyType.UNDEFINED}
    for pol in POLICIES.values():
        assert pol.default_max_increment in (0, 1)
        assert pol.by_value == (pol.policy_type in {
            T.RANDOM, T.WEIGHTED_RANDOM, T.WEIGHTED_RANDOM_DPF, T.RANDOMIZED_LEAST_USED,
            T.RANDOMIZED_LEAST_USED_DEGRADATION, T.RANDOMIZED_PRIORITY_LEAST_USED,
            T.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION,
        })


def test_policy_info_validation_and_helpers() -> None:
    info = PolicyInfo.make(T.LEAST_USED, load=0.25)
    assert info.load == fraction_to_u32(0.25)
    assert info.load_fraction == pytest.approx(0.25)
    assert info.with_load(0.5).load == fraction_to_u32(0.5)
    with pytest.raises(ValueError):
        PolicyInfo(T.LEAST_USED, load=MAX_LOAD + 1)
    with pytest.raises(ValueError):
        PolicyInfo(T.WEIGHTED_RANDOM, weight=-1)
    assert PolicyInfo(0x12345678).policy_type == 0x12345678  # unknown codes survive for error reporting
    assert PolicyInfo(T.PRIORITY, weight=MAX_WEIGHT).weight == MAX_WEIGHT


def test_policy_info_parse() -> None:
    plu = PolicyInfo.parse("PriorityLeastUsed:0.1")
    assert plu.policy_type == T.PRIORITY_LEAST_USED
    assert plu.load_degradation == fraction_to_u32(0.1)
    assert PolicyInfo.parse("WRR:3") == PolicyInfo(T.WEIGHTED_ROUND_ROBIN, weight=3)
    assert PolicyInfo.parse("LeastUsed").policy_type == T.LEAST_USED
    with pytest.raises(ValueError):
        PolicyInfo.parse("NoSuchPolicy")
    with pytest.raises(ValueError):
        PolicyInfo.parse("RoundRobin:2")

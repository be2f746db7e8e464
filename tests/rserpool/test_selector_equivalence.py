"""The C selector and the pure-Python reference make identical choices, and the C one does not leak."""

from __future__ import annotations

import gc
import random
import resource

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rserpool import selector
from rserpool.policy import POLICIES, PolicyElement, PolicyInfo, SelectionPool
from rserpool.policytypes import MAX_LOAD, PolicyType
from rserpool.selector import (
    ALLOW_PURE_PYTHON_ENV,
    HAVE_C_SELECTOR,
    CSelector,
    PySelector,
    accelerated,
    acceleration_reason,
    make_selector,
    pure_python_allowed,
)


@pytest.fixture(autouse=True, scope="module")
def c_selector_built() -> None:
    """Without the C extension these tests fail (the registrar would silently run slower), unless
    the environment says that pure Python is intended."""
    if HAVE_C_SELECTOR:
        return
    if pure_python_allowed():
        pytest.skip(f"{ALLOW_PURE_PYTHON_ENV} is set: pure Python intended, nothing to compare")
    pytest.fail(f"{acceleration_reason()}; or set {ALLOW_PURE_PYTHON_ENV}=1 if pure Python is intended",
                pytrace=False)


small = st.integers(min_value=0, max_value=20)
u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["insert", "update", "remove", "first", "find"]),
        st.integers(min_value=0, max_value=40),  # item
        st.one_of(small, u64),  # k0
        small,  # k1
        st.integers(min_value=0, max_value=1000),  # seq
        st.integers(min_value=0, max_value=1 << 40),  # value
    ),
    max_size=200,
)


def apply(sel: object, op: tuple[str, int, int, int, int, int]) -> object:
    name, item, k0, k1, seq, value = op
    try:
        if name == "insert":
            return sel.insert(item, k0, k1, seq, value)  # type: ignore[attr-defined]
        if name == "update":
            return sel.update(item, k0, k1, seq, value)  # type: ignore[attr-defined]
        if name == "remove":
            return sel.remove(item)  # type: ignore[attr-defined]
        if name == "first":
            return sel.first(item)  # type: ignore[attr-defined]
        total = sel.total_value()  # type: ignore[attr-defined]
        return sel.find_by_value(value % total) if total else ("empty", total)  # type: ignore[attr-defined]
    except (KeyError, ValueError) as exc:
        return type(exc).__name__


@settings(max_examples=300, deadline=None)
@given(ops_strategy)
def test_random_operation_sequences_agree(ops: list[tuple[str, int, int, int, int, int]]) -> None:
    c, py = CSelector(), PySelector()
    for op in ops:
        assert apply(c, op) == apply(py, op), op
        assert len(c) == len(py)
    assert c.ordered() == py.ordered()
    assert c.total_value() == py.total_value()
    for item in py.ordered():
        assert c.key(item) == py.key(item)
        assert item in c
    assert 999 not in c and -1 not in c


def test_argument_errors_agree() -> None:
    for sel in (CSelector(), PySelector()):
        with pytest.raises(OverflowError):
            sel.insert(1, -1, 0, 0)
        with pytest.raises(TypeError):
            sel.insert(1, 0.5, 0, 0)
        with pytest.raises(KeyError):
            sel.remove(7)
        with pytest.raises(KeyError):
            sel.update(7, 0, 0, 0)
        with pytest.raises(ValueError):
            sel.find_by_value(0)


def test_make_selector_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RSERPOOL_PURE_PYTHON_SELECTOR", raising=False)
    assert isinstance(make_selector(), CSelector)
    assert accelerated() and acceleration_reason() == "C extension rserpool._selector"
    assert isinstance(make_selector(force_python=True), PySelector)
    monkeypatch.setenv("RSERPOOL_PURE_PYTHON_SELECTOR", "1")
    assert isinstance(make_selector(), PySelector)
    assert not accelerated() and "RSERPOOL_PURE_PYTHON_SELECTOR is set" in acceleration_reason()
    assert isinstance(make_selector(force_python=False), CSelector)


def test_missing_extension_is_reported(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Without the extension the fall-back is said (once in the log, in the reason doctor prints)."""
    monkeypatch.delenv("RSERPOOL_PURE_PYTHON_SELECTOR", raising=False)
    monkeypatch.setattr(selector, "HAVE_C_SELECTOR", False)
    monkeypatch.setattr(selector, "_C_MISSING_BECAUSE", "No module named 'rserpool._selector'")
    monkeypatch.setattr(selector, "_warned_fallback", False)
    with caplog.at_level("WARNING", logger="rserpool.selector"):
        assert isinstance(make_selector(), PySelector)
        assert isinstance(make_selector(), PySelector)
    assert not accelerated()
    assert [r.getMessage() for r in caplog.records] == [acceleration_reason()]
    assert "not built" in acceleration_reason() and "pip install -e ." in acceleration_reason()


def random_info(rnd: random.Random, ptype: PolicyType) -> PolicyInfo:
    # few distinct loads so ties (and therefore sequence numbers) matter
    return PolicyInfo(
        ptype,
        weight=rnd.choice([0, 1, 2, 5, 1000]),
        load=rnd.choice([0, MAX_LOAD // 4, MAX_LOAD // 2, MAX_LOAD - 5, MAX_LOAD]),
        load_degradation=rnd.choice([0, MAX_LOAD // 10, MAX_LOAD // 2]),
        load_dpf=rnd.choice([0, MAX_LOAD // 1000]),
        weight_dpf=rnd.choice([0, MAX_LOAD // 1000]),
        distance=rnd.choice([0, 50, 150]),
    )


def run_scenario(ptype: PolicyType, seed: int, force_python: bool) -> list[object]:
    rnd = random.Random(seed)
    pool = SelectionPool(ptype, force_python=force_python, rng=random.Random(seed * 7 + 1))
    trace: list[object] = []
    next_id = 1
    for _ in range(rnd.randrange(1, 30)):
        pool.add(PolicyElement(next_id, random_info(rnd, ptype)))
        next_id += 1
    for _ in range(300):
        r = rnd.random()
        if r < 0.5:
            chosen = pool.select(rnd.randrange(1, 5), rnd.choice([0, 0, 1, 3]))
            trace.append([e.identifier for e in chosen])
        elif r < 0.8 and pool.elements:
            ident = rnd.choice(sorted(pool.elements))
            trace.append(("upd", pool.update_policy(pool.elements[ident], random_info(rnd, ptype))))
        elif r < 0.9 and pool.elements:
            pool.remove(rnd.choice(sorted(pool.elements)))
        else:
            pool.add(PolicyElement(next_id, random_info(rnd, ptype)))
            next_id += 1
    pool.check_invariants()
    trace.append([(e.identifier, e.seq, e.degradation, e.selection_counter) for e in pool.ordered()])
    return trace


@pytest.mark.parametrize("ptype", sorted(POLICIES), ids=lambda t: PolicyType(t).name)
@pytest.mark.parametrize("seed", range(8))
def test_policy_choices_identical_for_c_and_python(ptype: PolicyType, seed: int) -> None:
    assert run_scenario(ptype, seed, force_python=False) == run_scenario(ptype, seed, force_python=True)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def test_no_leak_on_remove_update_and_dealloc() -> None:
    def churn() -> None:
        sel = CSelector()
        for i in range(20000):
            sel.insert(i, i % 97, 0, i, i)
        for i in range(20000):
            sel.update(i, (i * 7) % 101, 1, i + 1, 1)
        for i in range(0, 20000, 2):
            sel.remove(i)
        sel.clear()
        for i in range(5000):
            sel.insert(i, 0, 0, i)
        del sel  # dealloc with 5000 nodes still linked

    churn()
    gc.collect()
    before = _rss_kib()
    for _ in range(30):
        churn()
    gc.collect()
    growth = _rss_kib() - before
    # 30 rounds allocate ~30 x 20000 nodes (~45 MiB); a per-node leak would show up clearly
    assert growth < 4096, f"RSS grew by {growth} KiB"


@pytest.mark.parametrize("seed", range(4))
def test_deep_trees_agree_through_growth_and_shrinkage(seed: int) -> None:
    """Thousands of items, so the C tree splits, merges and redistributes nodes at every level."""
    rnd = random.Random(seed)
    c, py = CSelector(), PySelector()
    k0_range = rnd.choice([3, 50, 1 << 32])  # few distinct k0: long runs of ties ordered by seq
    seq = 0
    live: list[int] = []
    next_item = rnd.choice([0, 1, 1 << 63])

    def check() -> None:
        assert len(c) == len(py)
        assert c.ordered() == py.ordered()
        assert c.total_value() == py.total_value()
        total = py.total_value()
        for _ in range(20):
            if total:
                v = rnd.randrange(total)
                assert c.find_by_value(v) == py.find_by_value(v)
        for item in rnd.sample(live, min(len(live), 20)):
            assert c.key(item) == py.key(item)

    for phase_target in (3000, 40, 2500, 0, 600):
        while len(live) != phase_target:
            grow = len(live) < phase_target
            for _ in range(rnd.randrange(1, 60)):
                r = rnd.random()
                if grow and r < 0.6 or not live:
                    item, next_item = next_item, next_item + 1
                    args = (item, rnd.randrange(k0_range), rnd.randrange(2), seq, rnd.randrange(1000))
                    c.insert(*args)
                    py.insert(*args)
                    live.append(item)
                elif not grow and r < 0.6:
                    item = live.pop(rnd.randrange(len(live)))
                    c.remove(item)
                    py.remove(item)
                elif r < 0.8:
                    # a selection: the first item only gets a new seq (usually keeps its place)
                    n = rnd.randrange(1, 5)
                    first = py.first(n)
                    assert c.first(n) == first
                    k0, k1, _, value = py.key(first[0])
                    c.update(first[0], k0, k1, seq, value)
                    py.update(first[0], k0, k1, seq, value)
                else:
                    item = rnd.choice(live)
                    args = (item, rnd.randrange(k0_range), rnd.randrange(2), seq, rnd.randrange(1000))
                    c.update(*args)
                    py.update(*args)
                seq += 1
                if len(live) == phase_target:
                    break
            if rnd.random() < 0.05:
                check()
        check()
    c.clear()
    py.clear()
    live.clear()
    check()

"""Benchmark: cost of one handle resolution + the load update that follows, C vs pure-Python selector.

The operation mix is what a registrar does under CalcApp load with the Least Used policy:
select 3 PEs (the first gets a new sequence number), then the chosen PE re-registers with a new
load (re-key); every 50th operation one PE deregisters and a new one registers. Pools of 10,
1,000 and 100,000 PEs, for ``rserpool._selector`` (C: B+-tree with per-child value sums plus an
item hash table) and ``PySelector`` (bisect on a list). The last line is one JSON object (``speedup_100k`` etc.).

Usage: python benchmarks/selector.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from rserpool.policy import PolicyElement, PolicyInfo, SelectionPool
from rserpool.policytypes import MAX_LOAD, PolicyType

SIZES = (10, 1_000, 100_000)


def build_pool(size: int, force_python: bool, seed: int) -> tuple[SelectionPool, random.Random]:
    rnd = random.Random(seed)
    pool = SelectionPool(PolicyType.LEAST_USED, force_python=force_python, rng=random.Random(seed))
    for ident in range(1, size + 1):
        pool.add(PolicyElement(ident, PolicyInfo(PolicyType.LEAST_USED, load=rnd.randrange(MAX_LOAD))))
    return pool, rnd


def run_mix(pool: SelectionPool, rnd: random.Random, ops: int, next_id: int) -> float:
    """Run ``ops`` operations; returns seconds elapsed."""
    lu = PolicyType.LEAST_USED
    # the codec builds PolicyInfo objects from the wire before the handlespace sees them
    infos = [PolicyInfo(lu, load=rnd.randrange(MAX_LOAD)) for _ in range(ops)]
    victims = [rnd.randrange(1, next_id) for _ in range(ops // 50 + 1)]
    t0 = time.perf_counter()
    for i in range(ops):
        chosen = pool.select(3)
        pool.update_policy(chosen[0], infos[i])
        if i % 50 == 49:
            victim = victims[i // 50]
            if victim in pool.elements:
                pool.remove(victim)
            pool.add(PolicyElement(next_id, infos[i]))
            next_id += 1
    return time.perf_counter() - t0


def measure(size: int, force_python: bool, ops: int, repeats: int) -> float:
    """Best-of-``repeats`` nanoseconds per operation."""
    pool, rnd = build_pool(size, force_python, seed=size)
    run_mix(pool, rnd, min(ops, 200), size + 1)  # warm-up
    best = min(run_mix(pool, rnd, ops, size + 1 + 10 * ops * (r + 1)) for r in range(repeats))
    pool.check_invariants()
    return best / ops * 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer operations (CI smoke run)")
    args = ap.parse_args(argv)
    ops = {10: 20_000, 1_000: 20_000, 100_000: 5_000}
    if args.quick:
        ops = {10: 2_000, 1_000: 2_000, 100_000: 300}
    repeats = 2 if args.quick else 3

    result: dict[str, float] = {}
    print(f"{'pool size':>10} {'C ns/op':>12} {'Python ns/op':>14} {'speedup':>9}")
    for size in SIZES:
        c_ns = measure(size, False, ops[size], repeats)
        py_ns = measure(size, True, ops[size], repeats)
        ratio = py_ns / c_ns
        result[f"c_ns_{size}"] = round(c_ns, 1)
        result[f"py_ns_{size}"] = round(py_ns, 1)
        result[f"speedup_{size}"] = round(ratio, 2)
        print(f"{size:>10} {c_ns:>12.0f} {py_ns:>14.0f} {ratio:>9.1f}")
    # log2(100000)/log2(1000) = 1.67: a tree should grow about that much, a list shift ~100x
    result["c_growth_1k_to_100k"] = round(result["c_ns_100000"] / result["c_ns_1000"], 2)
    result["py_growth_1k_to_100k"] = round(result["py_ns_100000"] / result["py_ns_1000"], 2)
    result["speedup_100k"] = result["speedup_100000"]
    result["ops_mix"] = "select(3) + re-key chosen PE + 1/50 deregister/register, LU policy"  # type: ignore[assignment]
    print(
        f"per-op growth 1k -> 100k: C x{result['c_growth_1k_to_100k']}, "
        f"Python x{result['py_growth_1k_to_100k']} (log2 ratio would be x1.67)"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: how fast `emulab simulate` is (issue 7's speed targets).

1. The papers' full sweep on paper-topology: 8 PU settings × 5 runs × 300 s, in parallel processes
   (all cores); target ≤ 30 s on a 2-core machine.
2. A large scenario: 1,000 pool elements (synthetic: 1 on the UE, 100 MEC, 899 PMC), 10,000 PUs,
   3,600 s, one run in one process; requests of mean 1,000,000 calculations every 20 s per PU, i.e.
   an offered load of about 50 % of the pool (at the papers' 10 s the pool would be overloaded and
   the run would mostly measure RSPLIB's 1 s reject back-off). Target: a few minutes.

3. The papers' sweep again with a coverage loss (the middle third of each run, drained as
   `emulab experiment coverage-loss`): the fault path (keep-alives, connect timeouts, cookies).

Prints events per second and the ratio of simulated to wall-clock time for each; the last line is
one JSON object: {"sweep_s", "events_per_s", "realtime_ratio", "large_s", "large_events_per_s",
"coverage_sweep_s", ...}. ``--quick`` shortens them (sweeps: 60 s runs; large: 360 s) for CI.

Usage: python benchmarks/simulator.py [--quick] [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from emulab.scenario import Scenario
from emulab.sim import CoverageLoss, build_model, make_tasks, run_tasks, simulate_run
from emulab.sim.sweep import COVERAGE_DRAIN_S, sample_interval


def bench_sweep(duration: float, jobs: int) -> dict[str, float]:
    sc = Scenario(duration=duration, jobs=jobs)
    model = build_model(sc)
    tasks = make_tasks(sc, sample_interval_s=sample_interval(model))  # as `emulab simulate`
    t0 = time.perf_counter()
    results = run_tasks(model, tasks, jobs)
    wall = time.perf_counter() - t0
    events = sum(r.events for r in results)
    simulated = sum(r.duration for r in results)
    return {
        "sweep_s": wall, "sweep_runs": len(tasks), "sweep_events": events,
        "events_per_s": events / wall, "realtime_ratio": simulated / wall,
    }


def bench_coverage(duration: float, jobs: int) -> dict[str, float]:
    sc = Scenario(duration=duration, jobs=jobs)
    model = build_model(sc)
    tasks = make_tasks(sc, coverage_losses=[CoverageLoss(duration / 3, duration / 3)], drain_s=COVERAGE_DRAIN_S,
                       sample_interval_s=sample_interval(model))
    t0 = time.perf_counter()
    results = run_tasks(model, tasks, jobs)
    wall = time.perf_counter() - t0
    events = sum(r.events for r in results)
    return {"coverage_sweep_s": wall, "coverage_events": events, "coverage_events_per_s": events / wall,
            "coverage_realtime_ratio": sum(r.duration for r in results) / wall}


def bench_large(duration: float) -> dict[str, float]:
    sc = Scenario(target="large", pus=(10_000,), runs=1, duration=duration, interval_mean=20.0, jobs=1)
    model = build_model(sc)
    task = make_tasks(sc, sample_interval_s=sample_interval(model))[0]  # 0: no samples of 1,000 PEs
    t0 = time.perf_counter()
    res = simulate_run(model, task)
    wall = time.perf_counter() - t0
    return {
        "large_s": wall, "large_duration_s": duration, "large_events": res.events,
        "large_events_per_s": res.events / wall, "large_realtime_ratio": duration / wall,
        "large_requests": len(res.requests),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (sweep 60 s, large 360 s)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    out: dict[str, float | int | bool] = {"quick": args.quick, "jobs": args.jobs}

    sweep = bench_sweep(60.0 if args.quick else 300.0, args.jobs)
    out.update(sweep)
    print(f"papers' sweep ({sweep['sweep_runs']} runs): {sweep['sweep_s']:.2f} s wall, "
          f"{sweep['sweep_events']:,} events, {sweep['events_per_s']:,.0f} events/s, "
          f"{sweep['realtime_ratio']:,.0f}x real time ({args.jobs} processes)")

    cov = bench_coverage(60.0 if args.quick else 300.0, args.jobs)
    out.update(cov)
    print(f"papers' sweep with a coverage loss: {cov['coverage_sweep_s']:.2f} s wall, "
          f"{cov['coverage_events']:,} events, {cov['coverage_events_per_s']:,.0f} events/s, "
          f"{cov['coverage_realtime_ratio']:,.0f}x real time")

    large = bench_large(360.0 if args.quick else 3600.0)
    out.update(large)
    print(f"large (1,000 PEs, 10,000 PUs, {large['large_duration_s']:.0f} s): {large['large_s']:.1f} s wall, "
          f"{large['large_events']:,} events, {large['large_events_per_s']:,.0f} events/s, "
          f"{large['large_realtime_ratio']:.1f}x real time, {large['large_requests']:,} requests")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

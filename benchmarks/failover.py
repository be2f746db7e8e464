"""Benchmark: fail-over to the UE's own pool element when the UE loses coverage, and recovery.

Runs `emulab experiment coverage-loss` (paper-topology, emulated radio, CalcApp PUs on the UE) a few
times and prints, per run and summarised,

* fail-over: coverage lost → the first request accepted by the UE's element;
* recovery: coverage back → the first request accepted by a MEC element;
* whether every request issued completed exactly once,

with the timers that bound them (from the run's summary.json). What bounds fail-over: the UE only
learns it is offline at radio link failure, N310 × 10 ms + T310 = 1.2 s after the loss (its bearer
and routes go then); the PUs' route watcher then ends every session and connect beyond the radio
at once. Without it (PUConfig.watch_routes off) a connect begun while T310 ran would wait the PU's
connect timeout (3 s) and a job in flight the CalcApp keep-alive (2.5 s + 2.5 s). Recovery:
re-attach (1 s), then ENRP reconnects the UE's registrar to its peers and downloads their tables.

    .venv/bin/python benchmarks/failover.py [--quick] [--runs N] [--pus N]

Needs root and no other testbed running; every run builds and tears down its own. The last line
is JSON with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from emulab.experiments.coverage import run_coverage_loss
from emulab.scenario import Scenario


def summarise(values: list[float | None]) -> dict[str, float | int | None]:
    got = [v for v in values if v is not None]
    if not got:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(got), "median": round(statistics.median(got), 3), "min": min(got), "max": max(got)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 runs of 45 s instead of 5 of 60 s")
    ap.add_argument("--runs", type=int, default=None, help="repetitions (default 5, --quick 2)")
    ap.add_argument("--pus", type=int, default=16, help="CalcApp PUs on the UE (default 16: 1.6 requests/s)")
    ap.add_argument("--topology", default="paper-topology")
    args = ap.parse_args()
    runs = args.runs or (2 if args.quick else 5)
    duration, lose_at, restore_at = (45.0, 12.0, 27.0) if args.quick else (60.0, 15.0, 35.0)

    out_dir = Path(tempfile.mkdtemp(prefix="emulab-bench-failover-"))
    per_run, timers = [], {}
    t_start = time.monotonic()
    for i in range(runs):
        sc = Scenario(target=args.topology, pus=(args.pus,), runs=1, duration=duration, seed=1000 + i, out=out_dir)
        path = run_coverage_loss(sc, lose_at, restore_at, drain=90.0, pcaps=False, progress=False)
        s = json.loads((path / "summary.json").read_text())
        timers = s["timers"]
        r = s["coverage_runs"][0]
        row = {k: r[k] for k in ("failover_s", "recovery_s", "requests_issued", "requests_completed",
                                 "requests_lost", "requests_duplicated", "requests_failed_over")}
        per_run.append(row)
        print(f"run {i + 1}/{runs}: fail-over {row['failover_s']} s, recovery {row['recovery_s']} s, "
              f"{row['requests_completed']}/{row['requests_issued']} completed ({path})", file=sys.stderr)

    fo = summarise([r["failover_s"] for r in per_run])
    rc = summarise([r["recovery_s"] for r in per_run])
    radio = timers.get("radio", {})
    rlf_s = round(radio.get("n310", 0) * 0.01 + radio.get("t310_ms", 0) / 1000.0, 3)
    print(f"fail-over: median {fo['median']} s, max {fo['max']} s (goal <= 3 s; RLF alone is {rlf_s} s)")
    print(f"recovery:  median {rc['median']} s, max {rc['max']} s (attach time {radio.get('attach_time_s')} s)")
    print(f"requests: {sum(r['requests_completed'] for r in per_run)}/{sum(r['requests_issued'] for r in per_run)} "
          f"completed, {sum(r['requests_lost'] for r in per_run)} lost, "
          f"{sum(r['requests_duplicated'] for r in per_run)} duplicated; {time.monotonic() - t_start:.0f} s wall")
    print(json.dumps({
        "benchmark": "failover", "topology": args.topology, "pus": args.pus, "runs": runs,
        "duration_s": duration, "lose_at_s": lose_at, "restore_at_s": restore_at,
        "failover_s": fo, "recovery_s": rc, "goal_failover_s": 3.0,
        "goal_met_median": fo["median"] is not None and fo["median"] <= 3.0,
        "rlf_s": rlf_s, "timers": timers, "per_run": per_run, "results_dir": str(out_dir),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: fail-over to the UE's own pool element when the UE loses coverage, and recovery.

Runs `emulab experiment coverage-loss` (paper-topology, emulated radio, CalcApp PUs on the UE) a few
times and prints, per run and summarised,

* fail-over per job: for every job the loss cut off (in flight at the loss, or started while the UE
  had no coverage), its cut → its first Accept after it (n, p50, p90, max over all runs), and the
  same over the jobs no element turned away (the full UE element makes the others wait for
  capacity, often until coverage is back: the tail of the first figure);
* ``failover_s``: coverage lost → the first request accepted by the UE's element (any request);
* recovery: coverage back → the first request accepted by a MEC element;
* whether every request issued completed exactly once, and the requests restarted from scratch
  (with the calculations that gave up),

which runs it could not use, and why (the run failed, or nothing failed over: no UE Accept during
the loss), and which runs did not fail over (a job in flight at the loss that did not move to the
UE). "goal met" only when every run was used and failed over and every job no element turned away
failed over within the goal.

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
from typing import Any

from _common import loadavg

from emulab.errors import EmulabError
from emulab.experiments.coverage import distribution, run_coverage_loss
from emulab.scenario import Scenario

GOAL_FAILOVER_S = 3.0
RUN_KEYS = ("failover_s", "recovery_s", "failed_over", "failover_problem", "failover_job_s", "jobs_not_resumed",
            "requests_issued", "requests_completed", "requests_lost", "requests_duplicated", "requests_failed_over",
            "requests_restarted")


def one_run(args: argparse.Namespace, i: int, duration: float, lose_at: float, restore_at: float,
            out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """One coverage-loss run: its row (``RUN_KEYS``, the per-job fail-over times, ``error`` if it failed)
    and the timers it ran with."""
    sc = Scenario(target=args.topology, pus=(args.pus,), runs=1, duration=duration, seed=1000 + i, out=out_dir)
    load_before = loadavg()  # the machine's load: OAI's timing follows it
    try:
        path = run_coverage_loss(sc, lose_at, restore_at, drain=90.0, pcaps=False, progress=False, radio=args.radio)
    except EmulabError as exc:
        return {"run": i + 1, "error": f"{type(exc).__name__}: {exc}", "load_before": load_before,
                "load_after": loadavg()}, {}
    s = json.loads((path / "summary.json").read_text())
    r = s["coverage_runs"][0]
    row = {"run": i + 1, **{k: r.get(k) for k in RUN_KEYS}, "calculations_discarded": s["calculations_discarded"],
           "job_failover_s": [[j["failover_s"], j["rejections"]] for j in r.get("failover_jobs", ())
                              if j["failover_s"] is not None and j["from_class"] != "ue"],
           "reattach_s": r.get("radio", {}).get("reattach_s"), "ue_restarts": r.get("radio", {}).get("ue_restarts"),
           "load_before": load_before, "load_after": loadavg(), "results": str(path)}
    return row, s.get("timers", {})


def spread(values: list[float]) -> dict[str, float | int | None]:
    """n, min, mean, standard deviation and max of ``values`` (sd None below two)."""
    if not values:
        return {"n": 0, "min": None, "mean": None, "sd": None, "max": None}
    return {"n": len(values), "min": round(min(values), 3), "mean": round(statistics.fmean(values), 3),
            "sd": round(statistics.stdev(values), 3) if len(values) > 1 else None, "max": round(max(values), 3)}


def unusable(row: dict[str, Any]) -> str | None:
    """Why a run gives no fail-over figures (None: it does)."""
    if "error" in row:
        return row["error"]
    if row["failover_s"] is None:
        return row["failover_problem"] or "no fail-over"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 runs of 45 s instead of 5 of 60 s")
    ap.add_argument("--runs", type=int, default=None, help="repetitions (default 5, --quick 2)")
    ap.add_argument("--pus", type=int, default=16, help="CalcApp PUs on the UE (default 16: 1.6 requests/s)")
    ap.add_argument("--topology", default="paper-topology")
    ap.add_argument("--radio", default=None, help="radio backend (default: the topology's, emulated); oai: "
                    "OpenAirInterface's RF simulator, whose re-attach is measured (reattach_s)")
    args = ap.parse_args()
    runs = args.runs or (2 if args.quick else 5)
    duration, lose_at, restore_at = (45.0, 12.0, 27.0) if args.quick else (60.0, 15.0, 35.0)

    out_dir = Path(tempfile.mkdtemp(prefix="emulab-bench-failover-"))
    per_run: list[dict[str, Any]] = []
    timers: dict[str, Any] = {}
    t_start = time.monotonic()
    for i in range(runs):
        row, t = one_run(args, i, duration, lose_at, restore_at, out_dir)
        timers = t or timers
        per_run.append(row)
        if "error" in row:
            print(f"run {i + 1}/{runs}: FAILED: {row['error']}", file=sys.stderr)
            continue
        jobs = row["failover_job_s"]
        print(f"run {i + 1}/{runs}: fail-over per job n {jobs['n']} p50 {jobs['p50']} s max {jobs['max']} s, "
              f"first UE Accept {row['failover_s']} s, recovery {row['recovery_s']} s, "
              f"{row['requests_completed']}/{row['requests_issued']} completed, "
              f"{row['requests_restarted']} restarted, re-attach {row['reattach_s']} s, load {row['load_before'][0]} -> "
              f"{row['load_after'][0]} ({row['results']})", file=sys.stderr)

    skipped = {r["run"]: why for r in per_run if (why := unusable(r)) is not None}
    used = [r for r in per_run if r["run"] not in skipped]
    jobs = distribution(v for r in used for v, _ in r["job_failover_s"])
    unrejected = distribution(v for r in used for v, rejects in r["job_failover_s"] if not rejects)
    first = distribution(r["failover_s"] for r in used)
    rc = distribution(r["recovery_s"] for r in used if r["recovery_s"] is not None)
    done = [r for r in per_run if "error" not in r]
    radio = timers.get("radio", {})
    rlf_s = round(radio.get("n310", 0) * 0.01 + radio.get("t310_ms", 0) / 1000.0, 3)
    stuck = {r["run"]: r["failover_problem"] for r in used if not r["failed_over"]}
    goal_met = (bool(per_run) and not skipped and not stuck and unrejected["n"] > 0
                and unrejected["max"] <= GOAL_FAILOVER_S)
    print(f"runs: {len(used)} of {runs} used" + "".join(f"; run {k} not used: {v}" for k, v in skipped.items()))
    print(f"runs that failed over: {len(used) - len(stuck)} of {len(used)}"
          + "".join(f"; run {k} did not: {v}" for k, v in stuck.items()))
    print(f"fail-over per job: n {jobs['n']}, p50 {jobs['p50']} s, p90 {jobs['p90']} s, max {jobs['max']} s "
          f"(every cut-off job, waits for the full UE element included)")
    print(f"fail-over per job, not turned away: n {unrejected['n']}, p50 {unrejected['p50']} s, "
          f"p90 {unrejected['p90']} s, max {unrejected['max']} s (goal <= {GOAL_FAILOVER_S:g} s and every run "
          f"failed over; RLF alone is {rlf_s} s): {'goal met' if goal_met else 'goal NOT met'}")
    print(f"first UE Accept after the loss: p50 {first['p50']} s, max {first['max']} s")
    print(f"recovery: p50 {rc['p50']} s, max {rc['max']} s (attach time {radio.get('attach_time_s')} s)")
    ra = distribution(r["reattach_s"] for r in used if r.get("reattach_s") is not None)
    if ra["n"]:
        print(f"re-attach (cell back -> RRC attached again, measured by the radio): p50 {ra['p50']} s, max {ra['max']} s")
    restarted = [r["requests_restarted"] for r in done if r["requests_restarted"] is not None]
    print(f"requests: {sum(r['requests_completed'] for r in done)}/{sum(r['requests_issued'] for r in done)} "
          f"completed, {sum(r['requests_lost'] for r in done)} lost, "
          f"{sum(r['requests_duplicated'] for r in done)} duplicated, {sum(restarted)} restarted from scratch "
          f"({sum(r['calculations_discarded'] or 0.0 for r in done):.0f} calculations done in no result); "
          f"{time.monotonic() - t_start:.0f} s wall")
    print(json.dumps({
        "benchmark": "failover", "topology": args.topology, "radio": args.radio or "topology's", "pus": args.pus,
        "runs": runs, "reattach_s": ra,
        "spread": {k: spread([r[k] for r in used if r.get(k) is not None])
                   for k in ("failover_s", "recovery_s", "reattach_s")},
        "runs_used": len(used), "runs_not_used": {str(k): v for k, v in skipped.items()},
        "runs_without_failover": {str(k): v for k, v in stuck.items()},
        "duration_s": duration, "lose_at_s": lose_at, "restore_at_s": restore_at,
        "failover_job_s": jobs, "failover_job_unrejected_s": unrejected, "failover_s": first, "recovery_s": rc, "goal_failover_s": GOAL_FAILOVER_S,
        "goal_met": goal_met, "rlf_s": rlf_s, "timers": timers, "per_run": per_run, "results_dir": str(out_dir),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

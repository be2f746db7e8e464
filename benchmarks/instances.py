"""Benchmark: several testbed instances on one machine — what a second testbed costs the first.

    .venv/bin/python benchmarks/instances.py [--topology paper-topology] [--runs 3] [--instances 97,98]

1. alone: `emulab --instance A start TOPOLOGY --detach`, --runs times, each stopped and cleaned (wall
   time to ready, and the runner's own ready_s);
2. beside: the same while instance B runs the same topology (started once, kept running);
3. both up: each instance's self-check (`emulab --instance N self-check`): passed, largest RTT error
   and its tolerance, time taken;
4. isolation: A stopped and cleaned while B runs: B's processes, namespaces, bridges and links must be
   unchanged and its self-check must still pass.

With ``--density K1,K2,…`` it measures instead how many testbeds one machine holds: for each K, K
instances (91, 92, …) are started one after the other and then all self-check at the same time; the
JSON gives per K how many started and passed, the worst |RTT error| against its tolerance, and K per
CPU. Every instance is stopped and cleaned before the next K.

Runs as root; stops and cleans every instance it starts, however it ends. A failed start or check is
reported with its message and never counted as a time. `uptime` before and after is in the JSON.
The last line is JSON with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import self_check_figures

EMULAB = [sys.executable, "-m", "emulab"]


def emulab(instance: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EMULAB, "--instance", instance, *args], capture_output=True, text=True, timeout=timeout)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def start(instance: str, topology: str) -> dict[str, Any]:
    t0 = time.monotonic()
    r = emulab(instance, "start", topology, "--detach")
    out: dict[str, Any] = {"wall_s": round(time.monotonic() - t0, 3)}
    if r.returncode != 0:
        out["error"] = (r.stderr.strip() or r.stdout.strip() or "no message").splitlines()[-1]
        return out
    st = emulab(instance, "status", "--json", timeout=60)
    out["ready_s"] = json.loads(st.stdout).get("ready_s") if st.returncode == 0 else None
    return out


def stop_clean(instance: str) -> list[str]:
    """Stop and clean; what `emulab clean` still had to remove (empty after an orderly stop)."""
    emulab(instance, "stop", timeout=120)
    r = emulab(instance, "clean", timeout=120)
    return [ln for ln in r.stdout.splitlines() if ln.startswith("removed ")]


def self_check(instance: str) -> dict[str, Any]:
    t0 = time.monotonic()
    r = emulab(instance, "self-check")
    fig = self_check_figures(r.stdout)
    out: dict[str, Any] = {"passed": r.returncode == 0 and fig["passed"], "check_s": round(time.monotonic() - t0, 1)}
    out |= {k: fig[k] for k in ("paths", "largest_error_ms", "tolerance_ms", "reachable") if fig[k] is not None}
    if not out["passed"]:
        out["failures"] = fig["failures"][:10] or (r.stderr.strip()[-500:],)
    return out


def series(instance: str, topology: str, runs: int) -> dict[str, Any]:
    rows = []
    for _ in range(runs):
        row = start(instance, topology)
        row["cleaned"] = stop_clean(instance)
        rows.append(row)
    ok = [r["wall_s"] for r in rows if "error" not in r]
    ready = [r["ready_s"] for r in rows if r.get("ready_s") is not None]
    return {"runs": rows, "median_wall_s": statistics.median(ok) if ok else None,
            "median_ready_s": statistics.median(ready) if ready else None,
            "failures": [r["error"] for r in rows if "error" in r]}


def density(topology: str, counts: list[int]) -> dict[str, Any]:
    """K testbeds up at once, self-checking together, for each K in ``counts``."""
    from concurrent.futures import ThreadPoolExecutor

    from emulab.cleanup import find_leftovers

    out: dict[str, Any] = {}
    for k in counts:
        names = [str(91 + i) for i in range(k)]
        row: dict[str, Any] = {"instances": k, "per_cpu": round(k / (os.cpu_count() or 1), 2),
                               "uptime_before": uptime()}
        try:
            starts = {n: start(n, topology) for n in names}
            row["start_errors"] = {n: r["error"] for n, r in starts.items() if "error" in r}
            up = [n for n in names if "error" not in starts[n]]
            with ThreadPoolExecutor(max_workers=len(up) or 1) as pool:
                checks = dict(zip(up, pool.map(self_check, up), strict=True))
            row["checks"] = checks
            row["started"], row["passed"] = len(up), sum(c["passed"] for c in checks.values())
            margins = [abs(c["largest_error_ms"]) / c["tolerance_ms"] for c in checks.values()
                       if c.get("tolerance_ms")]
            row["worst_error_over_tolerance"] = round(max(margins), 2) if margins else None
            row["all_within_tolerance"] = row["passed"] == k
        except Exception as exc:  # reported, never counted as a figure
            row["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            for n in names:
                stop_clean(n)
            row["left_behind"] = {n: left for n in names if (left := find_leftovers(n))}
            row["uptime_after"] = uptime()
        print(f"{k} testbeds: {row.get('started')} started, {row.get('passed')} passed their self-check, worst "
              f"|error|/tolerance {row.get('worst_error_over_tolerance')} {row.get('error', '')}", flush=True)
        out[str(k)] = row
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topology", default="paper-topology")
    ap.add_argument("--runs", type=int, default=3, help="starts of instance A, alone and beside B")
    ap.add_argument("--instances", default="97,98", help="the two instances A,B to use")
    ap.add_argument("--density", default=None, metavar="K1,K2,…",
                    help="instead: K testbeds up at once (instances 91…), all self-checking together, per K")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("instances benchmark: needs root", file=sys.stderr)
        return 2
    if args.density:
        counts = [int(k) for k in args.density.split(",")]
        if not all(1 <= k <= 9 for k in counts):
            print("--density: counts from 1 to 9", file=sys.stderr)
            return 2
        rows = density(args.topology, counts)
        ok = all(not r["left_behind"] and not r.get("start_errors") and "error" not in r for r in rows.values())
        print(json.dumps({"topology": args.topology, "cpus": os.cpu_count(), "density": rows, "ok": ok}))
        return 0 if ok else 1
    from emulab.cleanup import find_leftovers
    from emulab.instances import footprint
    from emulab.runstate import read_state

    a, b = args.instances.split(",")
    for name in (a, b):
        if read_state(name) is not None or find_leftovers(name):
            print(f"instance {name} is in use: {find_leftovers(name)}", file=sys.stderr)
            return 2
    result: dict[str, Any] = {"topology": args.topology, "instances": [a, b], "cpus": os.cpu_count(),
                              "uptime_before": uptime()}
    ok = True
    try:
        result["alone"] = series(a, args.topology, args.runs)
        print(f"alone: {result['alone']['median_wall_s']} s wall, ready_s {result['alone']['median_ready_s']}", flush=True)
        first = start(b, args.topology)
        result["b_start"] = first
        if "error" in first:
            raise RuntimeError(f"instance {b} did not start: {first['error']}")
        result["beside"] = series(a, args.topology, args.runs)
        print(f"beside a running instance: {result['beside']['median_wall_s']} s wall, "
              f"ready_s {result['beside']['median_ready_s']}", flush=True)
        a_start = start(a, args.topology)
        if "error" in a_start:
            raise RuntimeError(f"instance {a} did not start beside {b}: {a_start['error']}")
        result["both_up"] = {a: self_check(a), b: self_check(b)}
        print(f"both up, self-checks: {result['both_up']}", flush=True)
        before = footprint(b)
        result["a_cleaned"] = stop_clean(a)
        after = footprint(b)
        result["isolation"] = {"b_unchanged": before == after, "a_left": find_leftovers(a),
                               "b_check_after": self_check(b),
                               "b_processes": len(before["processes"]), "b_bridges": len(before["bridges"])}
        print(f"isolation: {result['isolation']}", flush=True)
        ok = (not result["alone"]["failures"] and not result["beside"]["failures"]
              and all(c["passed"] for c in result["both_up"].values())
              and result["isolation"]["b_unchanged"] and not result["isolation"]["a_left"]
              and result["isolation"]["b_check_after"]["passed"])
    except Exception as exc:  # reported, never counted as a figure
        result["error"] = str(exc)
        ok = False
    finally:
        for name in (a, b):
            stop_clean(name)
        result["left_behind"] = {n: find_leftovers(n) for n in (a, b)}
        result["uptime_after"] = uptime()
    ok &= not any(result["left_behind"].values())
    result["ok"] = ok
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

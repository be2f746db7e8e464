"""Benchmark: sweeps on a Dask cluster (emulab.cluster) on this machine.

1. Simulation (no root): a large sweep — 200 PU settings (1 … 200 PUs on paper-topology) × 5 runs
   × 300 s, i.e. 1,000 runs, about a minute on one worker — in this process (``emulab simulate``
   with one process: the baseline), then with ``--cluster local:1`` and ``local:2``; reports each
   wall time (the runs alone, submitted to gathered, and with the cluster's start and stop), the
   speed-up of two workers over one and per worker, Dask's cost over the in-process run, and whether the cluster's results equal the local run's (summary.json without timings).
2. Emulation (``--emulation``; root, testbed instances; run it under the testbed lock:
   ``flock /tmp/emulab-dev.lock python benchmarks/cluster.py --emulation``):
   * the paper topology's self-check alone on instance 1, then on instances 1 and 2 at once:
     pairs reachable, paths outside their tolerance, the largest RTT error (what two testbeds
     cost each other's timing);
   * the quick paper sweep (``emulab experiment paper --quick``: 1, 16, 64 PUs, 1 run of 60 s)
     with ``--cluster local:1`` and ``local:2``: wall times, and per setting the MEC/PMC/UE work
     shares and mean handling time of the two (what parallel testbeds cost each other's results).

The last line is one JSON object with every figure. ``--quick``: the simulated sweep has 40 settings.

Usage: python benchmarks/cluster.py [--quick] [--emulation] [--no-simulation]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import load_1m, self_check_figures

from emulab.cluster import parse_address
from emulab.cluster.options import ClusterRun
from emulab.cluster.sweeps import simulate_on_cluster
from emulab.scenario import Scenario
from emulab.sim import simulate

EMULAB = str(Path(sys.executable).with_name("emulab"))


def _summary(path: Path) -> dict[str, Any]:
    s = json.loads((path / "summary.json").read_text())
    s.pop("simulator", None)
    return s


def bench_simulation(settings: int, tmp: Path) -> dict[str, Any]:
    sc = Scenario(pus=tuple(range(1, settings + 1)), runs=5, duration=300.0, jobs=1)
    out: dict[str, Any] = {"sim_runs": len(sc.pus) * sc.runs, "sim_settings": len(sc.pus)}
    t0, cpu0 = time.perf_counter(), time.process_time()
    base, timing = simulate(replace(sc, out=tmp / "inprocess"), progress=False)
    out["sim_inprocess_s"] = round(time.perf_counter() - t0, 2)
    out["sim_inprocess_run_s"] = round(timing["wall_s"], 2)
    out["sim_inprocess_cpu_s"] = round(time.process_time() - cpu0, 2)
    for n in (1, 2):
        t0, cpu0 = time.perf_counter(), time.process_time()
        path, timing = simulate_on_cluster(replace(sc, out=tmp / f"local{n}"),
                                           cluster=ClusterRun(parse_address(f"local:{n}")), progress=False,
                                           log=lambda _m: None)
        out[f"sim_local{n}_s"] = round(time.perf_counter() - t0, 2)  # with the cluster's start and stop
        # this process: the client, the scheduler of the local cluster, and writing the results
        out[f"sim_local{n}_client_cpu_s"] = round(time.process_time() - cpu0, 2)
        out[f"sim_local{n}_run_s"] = round(timing["wall_s"], 2)  # the runs only (submitted to gathered)
        out[f"sim_local{n}_identical"] = _summary(path) == _summary(base)
    out["sim_speedup_2_over_1"] = round(out["sim_local1_run_s"] / out["sim_local2_run_s"], 3)
    out["sim_speedup_per_worker"] = round(out["sim_speedup_2_over_1"] / 2, 3)
    out["sim_dask_cost_local1_vs_inprocess"] = round(out["sim_local1_run_s"] / out["sim_inprocess_run_s"], 3)
    out["sim_ms_per_run_local1"] = round(1000 * out["sim_local1_run_s"] / out["sim_runs"], 2)
    return out


# --------------------------------------------------------------------------- emulation

def self_check(instance: str) -> dict[str, Any]:
    """`emulab start paper-topology --self-check` on ``instance``: what it printed, in figures."""
    env = {**os.environ, "EMULAB_INSTANCE": instance}
    t0 = time.perf_counter()
    r = subprocess.run([EMULAB, "start", "paper-topology", "--self-check"], env=env, capture_output=True,
                       text=True, timeout=900)
    text = r.stdout + r.stderr
    fig = self_check_figures(text)
    return {
        "instance": instance, "ok": r.returncode == 0, "wall_s": round(time.perf_counter() - t0, 1),
        "reachable": fig["reachable"],
        "paths_off": sum("cannot reach" not in f for f in fig["failures"]),
        "largest_error_ms": fig["largest_error_ms"],
        "largest_error_tolerance_ms": fig["tolerance_ms"],
        "tail": text.strip().splitlines()[-3:],
    }


def self_checks_at_once(instances: list[str]) -> list[dict[str, Any]]:
    got: dict[str, dict[str, Any]] = {}
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, self_check(i))) for i in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [got[i] for i in instances]


def paper_sweep(n: int, tmp: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    r = subprocess.run([EMULAB, "experiment", "paper", "--quick", "--cluster", f"local:{n}", "--out", str(tmp / f"paper{n}")],
                       capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {"ok": r.returncode == 0, "wall_s": round(wall, 1)}
    if r.returncode != 0:
        out["error"] = r.stderr.strip().splitlines()[-3:]
        return out
    path = Path(r.stdout.strip().splitlines()[-1])
    s = json.loads((path / "summary.json").read_text())
    m = json.loads((path / "manifest.json").read_text())
    out["runs"] = {tag: {k: v for k, v in run.items() if k in ("instance", "wall_s", "attempts")}
                   for tag, run in m["cluster"]["runs"].items()}
    out["settings"] = {pus: {"work_share": {c: round(v["work_share"], 3) for c, v in st["classes"].items()},
                             "handling_mean_s": round(st["times"]["handling"]["mean"], 3)
                             if st["times"].get("handling", {}).get("mean") is not None else None,
                             "completed": st["counts"]["completed"]}
                       for pus, st in s["settings"].items()}
    return out


def bench_emulation(tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    print("self-check alone on instance 1 …", file=sys.stderr, flush=True)
    out["selfcheck_alone"] = self_check("1")
    print("self-check on instances 1 and 2 at once …", file=sys.stderr, flush=True)
    out["selfcheck_two_at_once"] = self_checks_at_once(["1", "2"])
    for n in (1, 2):
        print(f"quick paper sweep on local:{n} …", file=sys.stderr, flush=True)
        out[f"paper_local{n}"] = paper_sweep(n, tmp)
    a, b = out["paper_local1"], out["paper_local2"]
    if a.get("ok") and b.get("ok"):
        out["paper_speedup_2_over_1"] = round(a["wall_s"] / b["wall_s"], 3)
        out["paper_difference_local2_vs_local1"] = {
            pus: {"work_share": {c: round(b["settings"][pus]["work_share"][c] - v, 3)
                                 for c, v in a["settings"][pus]["work_share"].items()},
                  "handling_mean_s": (None if a["settings"][pus]["handling_mean_s"] is None
                                      or b["settings"][pus]["handling_mean_s"] is None else
                                      round(b["settings"][pus]["handling_mean_s"] - a["settings"][pus]["handling_mean_s"], 3))}
            for pus in a["settings"] if pus in b["settings"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 simulated settings instead of 200")
    ap.add_argument("--emulation", action="store_true", help="also the emulated part (root, testbed instances)")
    ap.add_argument("--no-simulation", action="store_true", help="skip the simulated part")
    args = ap.parse_args()
    out: dict[str, Any] = {"quick": args.quick, "cpus": os.cpu_count(), "load_before": load_1m()}
    tmp = Path(tempfile.mkdtemp(prefix="emulab-bench-cluster-"))
    try:
        if not args.no_simulation:
            sim = bench_simulation(40 if args.quick else 200, tmp)
            out.update(sim)
            print(f"simulated sweep, {sim['sim_runs']} runs (runs only; with start-up): in-process "
                  f"{sim['sim_inprocess_run_s']} s ({sim['sim_inprocess_s']}), local:1 {sim['sim_local1_run_s']} s "
                  f"({sim['sim_local1_s']}), local:2 {sim['sim_local2_run_s']} s ({sim['sim_local2_s']}): "
                  f"speed-up {sim['sim_speedup_2_over_1']}x "
                  f"({sim['sim_speedup_per_worker']} per worker), identical results: "
                  f"{sim['sim_local1_identical'] and sim['sim_local2_identical']}")
        if args.emulation:
            if os.geteuid() != 0:
                raise SystemExit("--emulation needs root")
            emu = bench_emulation(tmp)
            out.update(emu)
            for k in ("selfcheck_alone",):
                c = emu[k]
                print(f"self-check alone: ok {c['ok']}, {c['reachable']} reachable, {c['paths_off']} paths off, "
                      f"largest error {c['largest_error_ms']} ms (±{c['largest_error_tolerance_ms']})")
            for c in emu["selfcheck_two_at_once"]:
                print(f"self-check instance {c['instance']} beside the other: ok {c['ok']}, {c['reachable']} reachable, "
                      f"{c['paths_off']} paths off, largest error {c['largest_error_ms']} ms "
                      f"(±{c['largest_error_tolerance_ms']})")
            for n in (1, 2):
                p = emu[f"paper_local{n}"]
                print(f"quick paper sweep local:{n}: ok {p['ok']}, {p['wall_s']} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["load_after"] = load_1m()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

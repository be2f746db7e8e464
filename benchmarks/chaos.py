"""Benchmark: a long chaos run — CalcApp pool users on the UE while pool elements and registrars are
SIGKILLed and restarted, links flap and the UE loses coverage, by a seeded schedule — and the count
of requests issued, completed, completed twice (must be 0) and lost, by reason.

One `emulab experiment chaos` run (``emulab.experiments.chaos``) of ``--minutes`` minutes (default
30; ``--quick``: 2) with ``--pus`` pool users on paper-topology, then a drain so every request issued
can finish. Needs root and the testbed to itself (run it under the shared lock on a shared machine).

    .venv/bin/python benchmarks/chaos.py [--quick] [--minutes M] [--seed S] [--pus N] [--mean-gap S]

The last line is JSON: the chaos counts of summary.json (issued, completed, completed_twice, lost,
lost_by_reason, restarted, failed_over, faults by kind, services restarted, failed faults/restores),
the run's parameters and wall time, and the results directory (chaos.csv has every action).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from emulab.experiments.chaos import DRAIN_S, run_chaos
from emulab.scenario import Scenario


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="Length of the chaos run (default 30).")
    ap.add_argument("--quick", action="store_true", help="A 2-minute run.")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--pus", type=int, default=8)
    ap.add_argument("--mean-gap", type=float, default=8.0, help="Mean seconds between faults.")
    ap.add_argument("--settle", type=float, default=20.0, help="No fault in force in the last SETTLE s.")
    ap.add_argument("--drain", type=float, default=DRAIN_S)
    ap.add_argument("--topology", default="paper-topology")
    ap.add_argument("--out", type=Path, default=None, help="Results base directory (default: a temporary one).")
    args = ap.parse_args()
    minutes = 2.0 if args.quick else args.minutes
    out = args.out or Path(tempfile.mkdtemp(prefix="emulab-chaos-bench-"))
    scenario = Scenario(target=args.topology, pus=(args.pus,), runs=1, duration=minutes * 60.0, seed=args.seed,
                        out=out)
    t0 = time.monotonic()
    path = run_chaos(scenario, mean_gap=args.mean_gap, settle=args.settle, drain=args.drain, pcaps=False,
                     progress=False)
    wall = time.monotonic() - t0
    chaos = json.loads((path / "summary.json").read_text())["chaos"]
    counts = {k: v for k, v in chaos.items() if k != "runs"}
    print(f"chaos: {counts['completed']}/{counts['issued']} completed, {counts['completed_twice']} twice, "
          f"{counts['lost']} lost {counts['lost_by_reason']}, faults {counts['faults']}", file=sys.stderr)
    print(json.dumps({"benchmark": "chaos", "minutes": minutes, "seed": args.seed, "pus": args.pus,
                      "mean_gap_s": args.mean_gap, "settle_s": args.settle, "drain_s": args.drain,
                      "topology": args.topology, "wall_s": round(wall, 1), **counts, "results": str(path)}))
    return 0 if counts["completed_twice"] == 0 and counts["recorded_twice"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Coverage-guided fuzzing (atheris + libFuzzer) of every decoder: ASAP, ENRP, CalcApp, Fractal Generator
and the capture reader, each from its committed corpus (tests/data/fuzz-corpus, seeded from the RSPLIB
3.4.4 reference capture). Anything a decoder raises other than its own error (CodecError; CaptureError
for the capture reader) is an escape and fails the run. Reports per target: inputs, coverage
(libFuzzer's instrumented edges and features; the rserpool/ source lines the resulting corpus covers,
out of the executable lines of the functions it enters),
escapes, inputs/s; the last line is one JSON object.

    .venv/bin/python benchmarks/fuzz_codec.py [--quick] [--inputs N] [--seed S] [--jobs J] [--targets a,b]
                                              [--merge] [--keep DIR]

Default 1,000,000 inputs per target (--quick: 50,000), targets in parallel on --jobs processes.
--merge adds the new inputs that reach new coverage to the committed corpus (libFuzzer -merge=1).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "fuzz-corpus"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
CHILD = [sys.executable, "-m", "fuzz.atheris_child"]


def _targets() -> list[str]:
    out = subprocess.run([sys.executable, "-c", "from fuzz.targets import available_targets as a; "
                          "print(' '.join(t.name for t in a()))"], env=ENV, cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


def _stat(log: str, name: str) -> int | None:
    m = re.search(rf"^stat::{name}:\s+(\d+)", log, re.M)
    return int(m.group(1)) if m else None


def fuzz_one(target: str, inputs: int, seed: int, work: Path, merge: bool, guided: bool = True) -> dict:
    new, escapes = work / target / "new", work / target / "escapes"
    new.mkdir(parents=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*CHILD, "fuzz", target, "--escapes", str(escapes), *([] if guided else ["--unguided"]), "--",
         f"-runs={inputs}", f"-seed={seed}", "-print_final_stats=1", f"-artifact_prefix={work / target}/",
         str(new), str(CORPUS / target)],  # new inputs go to the first directory, the corpus is only read
        env=ENV, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    log = proc.stderr
    (work / target / "libfuzzer.log").write_text(log)
    done = re.findall(r"^#\d+\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/", log, re.M)
    executed = _stat(log, "number_of_executed_units") or 0
    escape_lines = (escapes / "escapes.log").read_text().splitlines() if (escapes / "escapes.log").exists() else []
    crashed = proc.returncode != 0  # timeout, out-of-memory or a crash inside libFuzzer: also a failure
    if crashed:
        print(f"[{target}] libFuzzer exited {proc.returncode}:\n{log[-3000:]}", file=sys.stderr)
    replay = subprocess.run([*CHILD, "replay", target, str(CORPUS / target), str(new)], env=ENV, cwd=ROOT,
                            capture_output=True, text=True)
    lines = json.loads(replay.stdout.splitlines()[-1]) if replay.stdout.strip() else {}
    merged = 0
    if merge and not crashed and not escape_lines:
        before = len(list((CORPUS / target).iterdir()))
        subprocess.run([*CHILD, "fuzz", target, "--escapes", str(escapes), "--", "-merge=1",
                        str(CORPUS / target), str(new)], env=ENV, cwd=ROOT, capture_output=True, check=True)
        merged = len(list((CORPUS / target).iterdir())) - before
    result = {
        "inputs": executed,
        "edges": int(done[-1][0]) if done else None,
        "features": int(done[-1][1]) if done else None,
        "corpus": int(done[-1][2]) if done else None,
        "new_units": _stat(log, "new_units_added"),
        "lines_covered": lines.get("lines_covered"),
        "lines_in_functions_reached": lines.get("lines_in_functions_reached"),
        # escaping inputs met while fuzzing (the corpus replay re-runs inputs libFuzzer already ran), and
        # a libFuzzer crash, timeout or out-of-memory stop
        "escapes": len(escape_lines) + (1 if crashed else 0),
        "distinct_escaping_inputs": len({line.split()[0] for line in escape_lines}),
        "seconds": round(elapsed, 1),
        "inputs_per_s": round(executed / elapsed) if elapsed else 0,
    }
    if merge:
        result["merged_into_corpus"] = merged
    for line in escape_lines[:5]:
        print(f"[{target}] ESCAPE {line}  (input and traceback in {escapes})", file=sys.stderr)
    print(f"[{target}] {executed:,} inputs in {elapsed:.1f} s ({result['inputs_per_s']:,}/s), edges "
          f"{result['edges']}, features {result['features']}, corpus {result['corpus']}, lines "
          f"{result['lines_covered']}/{result['lines_in_functions_reached']}, escapes {result['escapes']}",
          file=sys.stderr)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50,000 inputs per target instead of 1,000,000")
    ap.add_argument("--inputs", type=int, default=None, help="inputs per target")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="targets fuzzed at once")
    ap.add_argument("--targets", default=None, help="comma-separated (default: every available one)")
    ap.add_argument("--merge", action="store_true", help="add coverage-increasing inputs to the corpus")
    ap.add_argument("--unguided", action="store_true", help="no dictionary, no value profile (to compare)")
    ap.add_argument("--keep", type=Path, default=None, help="keep logs, new inputs and escapes here")
    args = ap.parse_args()
    inputs = args.inputs or (50_000 if args.quick else 1_000_000)
    if importlib.util.find_spec("atheris") is None:
        ap.error("atheris is not installed: .venv/bin/pip install -e '.[test]'")
    available = _targets()
    targets = args.targets.split(",") if args.targets else available
    missing = sorted(set(targets) - set(available))
    if missing:
        ap.error(f"unknown or unavailable target(s) {missing}; available: {available}")
    work = Path(tempfile.mkdtemp(prefix="fuzz-codec-"))
    print(f"fuzzing {', '.join(targets)}: {inputs:,} inputs each, seed {args.seed}, {args.jobs} job(s); "
          f"work dir {work}", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {t: pool.submit(fuzz_one, t, inputs, args.seed, work, args.merge, not args.unguided)
                       for t in targets}
            results = {t: f.result() for t, f in futures.items()}
    finally:
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        escaped = any((work / t / "escapes" / "escapes.log").exists() for t in targets)
        if escaped and not args.keep:
            print(f"escapes kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - t0
    total_inputs = sum(r["inputs"] for r in results.values())
    escapes = sum(r["escapes"] for r in results.values())
    print(f"total: {total_inputs:,} inputs in {wall:.1f} s wall, escapes {escapes}", file=sys.stderr)
    print(json.dumps({"engine": "atheris/libFuzzer", "seed": args.seed, "jobs": args.jobs,
                      "guided": not args.unguided,
                      "inputs_per_target": inputs, "targets": results, "inputs_total": total_inputs,
                      "escapes": escapes, "wall_s": round(wall, 1)}))
    return 1 if escapes or any(r["inputs"] < inputs for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

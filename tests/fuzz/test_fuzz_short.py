"""A short coverage-guided fuzzing run (atheris + libFuzzer, fixed seed) of every decoder from the
committed corpus: no escape, and libFuzzer ran every input it was asked for. The long run is
benchmarks/fuzz_codec.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz.targets import ROOT, TARGETS, available_targets

RUNS = 50_000  # one to three seconds per target on one core
SEED = 1


@pytest.mark.parametrize("name", [t.name for t in available_targets()])
def test_short_fuzz_run_has_no_escape(name: str, tmp_path: Path) -> None:
    target = TARGETS[name]
    new, escapes = tmp_path / "new", tmp_path / "escapes"
    new.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    # new inputs go to the first (temporary) directory; the committed corpus is only read
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.atheris_child", "fuzz", name, "--escapes", str(escapes), "--",
         f"-runs={RUNS}", f"-seed={SEED}", "-print_final_stats=1", f"-artifact_prefix={tmp_path}/",
         str(new), str(target.corpus)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    log = proc.stderr
    found = sorted(escapes.glob("escape-*.txt")) if escapes.exists() else []
    assert not found, "escapes (input next to each traceback):\n" + "\n".join(p.read_text() for p in found[:3])
    assert proc.returncode == 0, f"libFuzzer exited {proc.returncode}:\n{log[-4000:]}"
    executed = re.search(r"^stat::number_of_executed_units:\s+(\d+)", log, re.M)
    assert executed and int(executed.group(1)) == RUNS, log[-2000:]
    assert re.search(r"^#\d+\s+DONE\s+cov: [1-9]", log, re.M), "no instrumented coverage reported:\n" + log[-2000:]

"""An emulated sweep on `--cluster local:2`: two testbed instances on this machine at once, one
worker process SIGKILLed in the middle of a run — its run is done again (the restarted worker
cleans the dead one's testbed and builds its own), the results are complete, nothing twice, and
both instances are gone afterwards. Root, under the testbed lock (`flock /tmp/emulab-dev.lock`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from emulab import paths
from emulab.cluster import parse_address
from emulab.cluster.connect import free_instances
from emulab.cluster.options import ClusterRun
from emulab.experiments.paper import run_paper
from emulab.scenario import Scenario

from helpers.cluster_lab import wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(300)]


def _netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_a_sweep_on_two_instances_survives_a_worker_killed_mid_run(tmp_path: Path) -> None:
    from emulab import cleanup, runstate

    instances = free_instances(2)  # what local:2 will take
    prefixes = tuple(paths.prefix(i) for i in instances)
    sc = Scenario(pus=(1, 2), runs=2, duration=8.0, jobs=1, out=tmp_path)
    result: dict[str, Any] = {}

    def sweep() -> None:
        try:
            result["path"] = run_paper(sc, pcaps=False, progress=False,
                                       cluster=ClusterRun(parse_address("local:2")))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            result["error"] = exc

    thread = threading.Thread(target=sweep)
    thread.start()
    try:
        def ready() -> dict[str, Any] | None:
            for i in instances:
                st = runstate.read_state(i)
                if st and st.get("phase") == "ready":
                    return st
            return None

        state = wait_until(ready, 120, "a worker's testbed to be up")
        time.sleep(4.0)  # into its first run
        os.kill(int(state["runner_pid"]), signal.SIGKILL)  # the worker process builds its testbed in-process
        thread.join(timeout=240)
        assert not thread.is_alive() and "error" not in result, result.get("error")
        path = result["path"]
        manifest = json.loads((path / "manifest.json").read_text())
        runs = manifest["cluster"]["runs"]
        assert "partial" not in manifest and sorted(runs) == ["1pus-run1", "1pus-run2", "2pus-run1", "2pus-run2"]
        assert {r["instance"] for r in runs.values()} <= set(instances)
        assert any(r["attempts"] >= 2 for r in runs.values()), runs
        summary = json.loads((path / "summary.json").read_text())
        assert set(summary["settings"]) == {"1", "2"}
        keys = [line.split(",")[:4] for line in (path / "requests.csv").read_text().splitlines()[1:]]
        assert len(keys) == len({tuple(k) for k in keys}) > 0  # nothing counted twice
    finally:
        thread.join(timeout=60)
        left = {i: runstate.read_state(i) for i in instances}
        stray = [n for n in _netns() if n.startswith(prefixes)]
        for i in instances:  # whatever the test left, also after a failure
            with contextlib.suppress(Exception):
                cleanup.clean(i)
    assert left == {i: None for i in instances} and stray == [], (left, stray)

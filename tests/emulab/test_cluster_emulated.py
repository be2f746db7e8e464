"""An emulated sweep on a cluster (emulab.cluster) with a stand-in for the testbed
(helpers.cluster_standin): the results directory is the local run's, file for file (pcaps included),
with each run's worker and machine in the manifest; a worker process killed mid-run has its run done
again and nothing counted twice. The real testbed on two instances at once: test_cluster_root.py.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from emulab.cluster import parse_address
from emulab.cluster.connect import local_cluster
from emulab.cluster.options import ClusterRun
from emulab.cluster.sweeps import run_emulated_on_cluster
from emulab.experiments.records import ExperimentError
from emulab.results import IncompleteSweep
from emulab.scenario import Scenario

from helpers.cluster_lab import wait_until
from helpers.cluster_standin import StandInPaper

pytestmark = pytest.mark.timeout(90)

SWEEP = Scenario(pus=(1, 2, 4), runs=2, duration=10.0, jobs=1)
VOLATILE = ("created_at", "finished_at", "cluster")


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json",)}


def _same_as_local(local: Path, remote: Path) -> dict[str, Any]:
    a, b = _files(local), _files(remote)
    assert sorted(a) == sorted(b) and any(k.startswith("pcaps/") for k in a)
    for name in a:
        assert a[name] == b[name], name
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (local, remote))
    cluster = mb["cluster"]
    for k in VOLATILE:
        ma.pop(k, None), mb.pop(k, None)
    assert ma["scenario"].pop("out") != mb["scenario"].pop("out")  # the two went to different places
    assert ma == mb
    return cluster


@pytest.fixture
def cluster2() -> Any:
    """Two worker processes with a testbed slot each (their scheduler in this process); closed after."""
    cl = local_cluster(2)
    try:
        yield cl
    finally:
        cl.close(timeout=30)


def test_an_emulated_sweep_on_a_cluster_is_the_local_run_file_for_file(tmp_path: Path, cluster2: Any) -> None:
    local = StandInPaper(replace(SWEEP, out=tmp_path / "local"), progress=False).run()
    make = functools.partial(StandInPaper, replace(SWEEP, out=tmp_path / "cluster"))
    path = run_emulated_on_cluster(make, ClusterRun(parse_address(cluster2.scheduler_address)), progress=False)
    cluster = _same_as_local(local, path)
    runs = cluster["runs"]
    assert sorted(runs) == sorted(f"{s}pus-run{r}" for s in SWEEP.pus for r in (1, 2))
    assert {r["instance"] for r in runs.values()} <= {w["name"].removeprefix("instance-")
                                                       for w in cluster["workers"].values()}
    assert all(r["host"] and r["worker"] in cluster["workers"] and r["attempts"] == 1 for r in runs.values())


def test_a_worker_process_killed_mid_run_has_its_run_redone_and_nothing_twice(tmp_path: Path, cluster2: Any) -> None:
    from distributed import Client

    local = StandInPaper(replace(SWEEP, out=tmp_path / "local"), progress=False).run()
    make = functools.partial(StandInPaper, replace(SWEEP, out=tmp_path / "cluster"), run_s=2.0)
    result: dict[str, Any] = {}

    def sweep() -> None:
        try:
            result["path"] = run_emulated_on_cluster(make, ClusterRun(parse_address(cluster2.scheduler_address)),
                                                     progress=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            result["error"] = exc

    thread = threading.Thread(target=sweep)
    thread.start()
    with Client(cluster2.scheduler_address, set_as_default=False) as c:
        def executing() -> list[str]:  # a run going on (not only queued there)
            return [w for w, n in c.run(lambda dask_worker: len(dask_worker.state.executing)).items() if n]

        busy = wait_until(executing, 40, "a run on a worker")
        time.sleep(1.0)  # past the worker's set-up for the sweep (a task killed before its run began is no attempt)
        pids = c.run(os.getpid, workers=busy[:1])
        os.kill(pids[busy[0]], signal.SIGKILL)  # the worker process dies; its Nanny starts another
        thread.join(timeout=70)
    assert not thread.is_alive() and "error" not in result, result.get("error")
    cluster = _same_as_local(local, result["path"])
    assert any(r["attempts"] >= 2 for r in cluster["runs"].values()), cluster["runs"]
    assert all(r["worker"] != busy[0] for r in cluster["runs"].values())


def test_a_run_failing_on_its_worker_is_reported_and_the_rest_written_as_partial(tmp_path: Path,
                                                                               cluster2: Any) -> None:
    make = functools.partial(StandInPaper, replace(SWEEP, out=tmp_path), fail_setting=2)
    with pytest.raises(IncompleteSweep) as info:
        run_emulated_on_cluster(make, ClusterRun(parse_address(cluster2.scheduler_address)), progress=False)
    exc = info.value
    assert set(exc.missing) == {(2, 1), (2, 2)} and "2 of 6 run(s) missing" in str(exc)
    assert all("ExperimentError: 2pus-run" in why and "calcapp-pu exited with code 3" in why
               for why in exc.missing.values())
    manifest = json.loads((exc.path / "manifest.json").read_text())
    summary = json.loads((exc.path / "summary.json").read_text())
    assert manifest["partial"] is True and summary["partial"] is True and set(summary["settings"]) == {"1", "4"}
    assert sorted(manifest["cluster"]["runs"]) == ["1pus-run1", "1pus-run2", "4pus-run1", "4pus-run2"]
    assert manifest["tool"] == "emulab experiment paper" and manifest["testbed"]["radio"] == "emulated"


class _NeedsRoot(StandInPaper):
    needs_root = True


def test_a_local_sweep_without_root_fails_at_once_and_leaves_nothing(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    made: list[Any] = []
    events: list[Any] = []

    def make(progress: bool) -> Any:
        exp = _NeedsRoot(replace(SWEEP, out=tmp_path / "out"), progress=progress)
        exp.subscribe(events.append)
        made.append(exp)
        return exp

    with pytest.raises(ExperimentError, match=r"emulab experiment --cluster local:2 needs root"):
        run_emulated_on_cluster(make, ClusterRun(parse_address("local:2")), progress=False)
    assert [e.kind for e in events] == ["sweep_ended"] and events[0].data["ok"] is False
    assert not made[0].work.exists() and not (tmp_path / "out").exists()  # no worker, no results directory

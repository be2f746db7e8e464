"""Sweeps on a Dask cluster (emulab.cluster), simulated: the same results as a local run, and the
faults — a worker killed mid-run, the scheduler restarted, a run timing out, no worker, a bad or
unreachable address — each ending complete or with a clear list of what is missing.

Every cluster here is local processes; a test's processes are killed when it ends (helpers.cluster_lab,
the local cluster's context manager), passed or failed.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from emulab.cluster import ClusterError, parse_address
from emulab.cluster.options import ClusterRun
from emulab.cluster.sweeps import simulate_on_cluster
from emulab.results import IncompleteSweep
from emulab.scenario import Scenario
from emulab.sim import simulate

from helpers.cluster_lab import EMULAB, free_port, lab, processing, wait_until

pytestmark = pytest.mark.timeout(90)

QUICK = Scenario(pus=(1, 16, 64), runs=2, duration=60.0, jobs=1)
SLOW = Scenario(pus=(64,), runs=4, duration=8_000.0, jobs=1)
"""Runs of about 1.5 s each on this machine: long enough to kill a worker or the scheduler mid-run."""


def _one(path: Path) -> Path:
    (d,) = [p for p in path.iterdir() if p.is_dir()]
    return d


def _same_results(a: Path, b: Path) -> None:
    """Two results directories hold the same runs: identical CSVs and scalar files, the same summary."""
    for name in ("requests.csv", "elements.csv", "elements_timeline.csv"):
        assert (a / name).exists() == (b / name).exists(), name
        if (a / name).exists():
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert sorted(p.name for p in (a / "sca").iterdir()) == sorted(p.name for p in (b / "sca").iterdir())
    for p in (a / "sca").iterdir():
        assert p.read_text() == (b / "sca" / p.name).read_text()
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    sa.pop("simulator"), sb.pop("simulator")
    assert sa == sb


def _rows(path: Path) -> list[tuple[str, ...]]:
    """(setting, run, pu, request id) of every row of requests.csv."""
    with open(path / "requests.csv", newline="") as fh:
        reader = csv.reader(fh)
        head = next(reader)
        cols = [head.index(c) for c in ("setting", "run", "pu", "request_id")]
        return [tuple(row[c] for c in cols) for row in reader]


def test_addresses_parse_or_say_what_is_expected() -> None:
    assert parse_address("local:3").local == 3
    assert parse_address("tcp://pc1:8786").scheduler == "tcp://pc1:8786"
    assert parse_address("pc1").scheduler == "tcp://pc1:8786"
    for bad in ("local:0", "local:x", "http://pc1:8786", "tcp://pc1:99999", ""):
        with pytest.raises(ClusterError, match="local:N|range|1 … 99"):
            parse_address(bad)
    with pytest.raises(ClusterError, match="not a local cluster"):
        parse_address("local:2", allow_local=False)


def test_a_simulated_sweep_on_a_local_cluster_is_the_local_run(tmp_path: Path) -> None:
    sc = replace(QUICK, out=tmp_path / "local")
    simulate(sc, progress=False)
    path, timing = simulate_on_cluster(replace(QUICK, out=tmp_path / "cluster"), cluster=ClusterRun(
        parse_address("local:2")), progress=False)
    _same_results(_one(tmp_path / "local"), path)
    manifest = json.loads((path / "manifest.json").read_text())
    runs = manifest["cluster"]["runs"]
    assert sorted(runs) == sorted(f"{s}pus-run{r}" for s in QUICK.pus for r in (1, 2))
    assert all(r["worker"].startswith("tcp://127.0.0.1:") and r["host"] and r["attempts"] == 1 for r in runs.values())
    assert {r["instance"] for r in runs.values()} <= {"1", "2", "3", "4"} and "partial" not in manifest
    assert manifest["cluster"]["address"] == "local:2" and len(manifest["cluster"]["workers"]) == 2


def test_a_worker_killed_mid_run_has_its_runs_redone_elsewhere_and_nothing_twice(tmp_path: Path) -> None:
    port = free_port()
    with lab(tmp_path) as cl:
        cl.scheduler(port)
        first = cl.worker(port, "--slots", "0", name="first")
        client = subprocess.Popen([EMULAB, "simulate", "--cluster", f"tcp://127.0.0.1:{port}",
                                   "--pus", "64", "--runs", "4", "--duration", "8000", "--out", str(tmp_path / "c")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cl.procs.append(client)  # type: ignore[arg-type]
        busy = wait_until(lambda: {w: n for w, n in processing(port).items() if n}, 40, "a run on the first worker")
        cl.worker(port, "--slots", "0", name="second")
        wait_until(lambda: len(processing(port)) == 2, 30, "the second worker")
        cl.kill(first)  # with the runs it was doing
        out, err = client.communicate(timeout=60)
        assert client.returncode == 0, err
    path = Path(out.strip().splitlines()[-1])
    manifest = json.loads((path / "manifest.json").read_text())
    runs = manifest["cluster"]["runs"]
    killed = next(iter(busy))
    assert "partial" not in manifest and len(runs) == 4
    assert all(r["worker"] != killed for r in runs.values())  # every run's result came from the survivor
    assert any(r["attempts"] >= 2 for r in runs.values()), runs  # and the killed worker's ones ran again
    simulate(replace(SLOW, out=tmp_path / "local"), progress=False)
    local = _one(tmp_path / "local")
    rows = _rows(path)
    assert len(rows) == len(set(rows)) == len(_rows(local))  # nothing counted twice, nothing lost
    _same_results(local, path)


def test_a_restarted_scheduler_ends_in_a_list_of_the_missing_runs_and_a_partial_directory(tmp_path: Path) -> None:
    port = free_port()
    with lab(tmp_path) as cl:
        sched = cl.scheduler(port)
        cl.worker(port, "--slots", "0", "--connect-timeout", "60")
        client = subprocess.Popen([EMULAB, "simulate", "--cluster", f"tcp://127.0.0.1:{port}",
                                   "--pus", "64", "--runs", "4", "--duration", "8000", "--out", str(tmp_path / "c")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cl.procs.append(client)  # type: ignore[arg-type]
        wait_until(lambda: any(processing(port).values()), 40, "a run on the worker")
        cl.kill(sched)
        time.sleep(1.0)
        cl.scheduler(port)  # back on the same address, knowing nothing of the sweep
        out, err = client.communicate(timeout=60)
    assert client.returncode == 2, (out, err)
    assert "the sweep is incomplete" in err and "lost" in err and "64 PUs run" in err
    path = _one(tmp_path / "c")
    manifest = json.loads((path / "manifest.json").read_text())
    summary = json.loads((path / "summary.json").read_text())
    assert manifest["partial"] is True and summary["partial"] is True
    missing = {(m["setting"], m["run"]) for m in manifest["missing_runs"]}
    done = set(manifest["cluster"]["runs"])
    assert missing and {f"{s}pus-run{r}" for s, r in missing}.isdisjoint(done)
    assert len(missing) + len(done) == 4 and summary["missing_runs"] == manifest["missing_runs"]


def test_a_run_that_times_out_is_named_as_missing(tmp_path: Path) -> None:
    sc = replace(SLOW, runs=1, pus=(1, 64), out=tmp_path)  # 1 PU: done at once; 64 PUs: about 1.5 s
    with pytest.raises(IncompleteSweep) as info:
        simulate_on_cluster(sc, cluster=ClusterRun(parse_address("local:1"), task_timeout=0.5), progress=False)
    exc = info.value
    assert set(exc.missing) == {(64, 1)} and "timed out" in exc.missing[(64, 1)]
    assert "1 of 2 run(s) missing (64 PUs run 1: timed out: still running after 0.5 s" in str(exc)
    manifest = json.loads((exc.path / "manifest.json").read_text())
    assert manifest["partial"] is True and manifest["missing_runs"][0]["setting"] == 64
    assert list(manifest["cluster"]["runs"]) == ["1pus-run1"]
    assert {r[0] for r in _rows(exc.path)} == {"1"}  # only the run that finished


def test_an_unreachable_scheduler_and_a_cluster_without_workers_are_clear_errors(tmp_path: Path) -> None:
    port = free_port()
    r = subprocess.run([EMULAB, "simulate", "--quick", "--cluster", f"tcp://127.0.0.1:{port}", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:" in r.stderr, r.stderr
    r = subprocess.run([EMULAB, "worker", "--scheduler", f"tcp://127.0.0.1:{port}", "--slots", "0",
                        "--connect-timeout", "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"cannot join the Dask scheduler at tcp://127.0.0.1:{port} within 2 s" in r.stderr
    r = subprocess.run([EMULAB, "simulate", "--quick", "--cluster", "ftp://x", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "bad cluster address 'ftp://x'" in r.stderr
    with lab(tmp_path) as cl:
        cl.scheduler(port)
        t0 = time.monotonic()
        r = subprocess.run([EMULAB, "simulate", "--quick", "--cluster", f"tcp://127.0.0.1:{port}", "--wait-workers",
                            "2", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "no worker joined the scheduler within 2 s" in r.stderr, r.stderr
        cl.worker(port, "--slots", "0")  # a worker, but no testbed slot: an emulated sweep says so
        wait_until(lambda: processing(port), 30, "the worker")
        r = subprocess.run([EMULAB, "experiment", "paper", "--quick", "--cluster", f"tcp://127.0.0.1:{port}",
                            "--wait-workers", "2", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "no worker with a testbed slot joined the scheduler within 2 s" in r.stderr, \
            r.stderr
        assert time.monotonic() - t0 < 45
    assert not list(tmp_path.glob("*/manifest.json"))  # nothing half-written


def test_a_worker_with_testbed_slots_needs_root(tmp_path: Path) -> None:
    import os
    import shutil

    cmd = [EMULAB, "worker", "--scheduler", "tcp://127.0.0.1:1", "--slots", "2"]
    if os.geteuid() == 0:  # as root here: ask as nobody
        if shutil.which("setpriv") is None:
            pytest.skip("runs as root and setpriv (util-linux) is missing: cannot ask as another user")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 2 and "emulab worker --slots 2 needs root" in r.stderr, r.stderr

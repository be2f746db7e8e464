"""The sweeps on a cluster: `emulab simulate --cluster` and `emulab experiment paper|coverage-loss
--cluster`. Both write one results directory exactly as their local run does — the same writer, the
same per-run code (``emulab.sim.sweep.simulate`` with a cluster ``execute``; ``EmulatedSweep``'s
``write_run`` and ``finish``) — in task order, plus the manifest's ``cluster`` key (the scheduler,
its workers, and the worker, machine and instance of each run). A sweep with runs missing is
written marked partial and ends in ``IncompleteSweep`` (exit code 2 on the command line).
"""

from __future__ import annotations

import functools
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from emulab.cluster.connect import connect, wait_for_slots
from emulab.cluster.gather import Gathered, Key, Task, gather, placement
from emulab.cluster.options import ClusterRun
from emulab.cluster.tasks import (
    SLOT_RESOURCE,
    EmulatedRun,
    EmulationJob,
    Finished,
    TestbedPlugin,
    emulate_task,
    simulate_task,
)
from emulab.results import IncompleteSweep, ResultsWriter

EMULATION_SLACK_S = 600.0
"""A run's default timeout beyond its duration and drain: the testbed's build on the worker's first
run, the elements' registration and the pool users' grace."""


def _log(message: str) -> None:
    print(f"emulab: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- simulation


def simulate_on_cluster(scenario: Any, failures: Iterable[Any] = (), coverage_losses: Iterable[Any] = (), *,
                        cluster: ClusterRun, progress: bool = True, drain: float | None = None,
                        log: Callable[[str], None] = _log) -> tuple[Path, dict[str, Any]]:
    """`emulab simulate` with every (setting, run) a task on the cluster; as ``emulab.sim.simulate``."""
    from emulab.sim.sweep import Executed, simulate

    sweep = uuid.uuid4().hex
    with connect(cluster.address, log=log) as client:
        wait_for_slots(client, cluster.slot_wait, log, slot=False)

        def execute(model: Any, tasks: list[Any], on_done: Callable[[Any], None] | None) -> Executed:
            jobs = [Task((p.setting, p.run), simulate_task, (sweep, model, p), priority=p.setting) for p in tasks]
            got = gather(client, sweep, jobs, task_timeout=cluster.task_timeout,
                         on_finished=None if on_done is None else lambda _k, fin: on_done(fin.value))
            results = [got.finished[(p.setting, p.run)].value for p in tasks if (p.setting, p.run) in got.finished]
            return Executed(results, got.missing, placement(client, str(cluster.address), got))

        return simulate(scenario, failures, coverage_losses, progress=progress, drain=drain, execute=execute)


# --------------------------------------------------------------------------- emulation


def run_emulated_on_cluster(make: Callable[..., Any], cluster: ClusterRun, *, progress: bool = True) -> Path:
    """An emulated sweep with every (setting, run) on a worker's testbed; returns the results directory.

    ``make(progress=...)`` builds the experiment (an ``EmulatedSweep``, no testbed): here it keeps the
    manifest, the progress bar and the summary; each worker builds its own from the same ``make``.
    """
    exp = make(progress=progress)
    sc = exp.scenario
    sweep = uuid.uuid4().hex
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    keys: list[Key] = list(exp.tasks())
    timeout = cluster.task_timeout or sc.duration + exp.drain + EMULATION_SLACK_S
    writer: ResultsWriter | None = None
    path: Path | None = None
    try:
        if cluster.address.local:  # its workers build their testbeds on this machine
            exp.check_root(f"emulab experiment --cluster {cluster.address}")
        exp.describe()
        with connect(cluster.address, log=exp.log) as client:
            slots = wait_for_slots(client, cluster.slot_wait, exp.log, slot=True)
            exp.log(f"{len(keys)} run(s) on {slots} testbed slot(s)")
            client.register_plugin(TestbedPlugin())
            # the testbed's facts come with the first run (from the worker that built it)
            writer = ResultsWriter(sc.out, exp.results_name(), exp.manifest(started, {}))
            state = _Writing(exp, writer, keys, echo_logs=not cluster.address.local)
            exp.sweep_started(writer, len(keys))
            worker_make = functools.partial(make, progress=False)
            jobs = [Task(key, emulate_task, (EmulationJob(sweep, worker_make, key[0], key[1], i, len(keys)),),
                         resources={SLOT_RESOURCE: 1}, retries=1) for i, key in enumerate(keys, 1)]
            try:
                got = gather(client, sweep, jobs, on_event=state.heard, on_finished=state.arrived,
                             task_timeout=timeout, slot_wait=cluster.slot_wait)
            finally:
                try:
                    client.run(_close_sessions, sweep)  # every worker's testbed of this sweep goes down now
                except Exception as exc:  # noqa: BLE001 - a worker gone or the scheduler lost: the plugin cleans up
                    exp.log(f"warning: could not ask every worker to tear its testbed down: {exc}")
            state.flush(final=True)
            writer.manifest.update(placement(client, str(cluster.address), got))
        path = _finish(exp, writer, state, got)
        return path
    finally:
        exp.end_sweep(writer, path)


def _close_sessions(sweep: str) -> bool:
    from emulab.cluster.tasks import close_session

    return close_session(sweep)


def _finish(exp: Any, writer: ResultsWriter, state: _Writing, got: Gathered) -> Path:
    writer.manifest["seeds"] = state.seeds
    registrars = set(state.pe_registrars.values())
    writer.manifest["pe_registrar"] = next(iter(registrars)) if len(registrars) == 1 else (
        "mixed" if registrars else exp.pe_registrar)
    if len(registrars) > 1:
        writer.manifest["pe_registrar_by_run"] = state.pe_registrars
    if got.missing:
        writer.mark_partial(got.missing)
    path = exp.finish(writer)
    if got.missing:
        raise IncompleteSweep(path, got.missing, len(state.keys))
    return path


class _Writing:
    """Writes the runs in the sweep's order as they arrive (a run waits for the ones before it), so
    the files are the local sweep's, row for row; relays the workers' progress to the experiment's
    listeners (its progress bar)."""

    def __init__(self, exp: Any, writer: ResultsWriter, keys: list[Key], echo_logs: bool) -> None:
        self.exp, self.writer, self.keys = exp, writer, keys
        self.echo_logs = echo_logs  # local workers print to this terminal themselves: no second copy
        self.waiting: dict[Key, Finished] = {}
        self.next = 0
        self.arrived_count = 0
        self.seeds: dict[str, int] = {}
        self.pe_registrars: dict[str, str] = {}
        self.described = False

    def heard(self, msg: dict[str, Any]) -> None:
        kind = msg.get("kind")
        data = {k: v for k, v in msg.items() if k not in ("kind", "sweep")}
        if kind in ("run_started", "run_progress"):
            self.exp.emit(kind, **data)
        elif kind == "log" and self.echo_logs:
            self.exp.log(str(data.get("message")))

    def arrived(self, key: Key, fin: Finished) -> None:
        self.arrived_count += 1
        self.exp.run_finished(self.arrived_count, len(self.keys), f"{key[0]}pus-run{key[1]}", fin.value.out)
        self.waiting[key] = fin
        self.flush()

    def flush(self, final: bool = False) -> None:
        while self.next < len(self.keys):
            key = self.keys[self.next]
            if key in self.waiting:
                self._write(key, self.waiting.pop(key))
            elif not final:
                return
            self.next += 1

    def _write(self, key: Key, fin: Finished) -> None:
        exp, run = self.exp, fin.value
        assert isinstance(run, EmulatedRun)
        if not self.described:  # the manifest as the local sweep's, with the testbed the workers built
            self.writer.manifest.update(run.facts)
            exp.want_pcaps = run.pcaps
            self.described = True
        ctx = exp.context(self.next + 1, len(self.keys), *key)
        out = run.out
        out.pcaps = []
        for name, data in run.pcap_data.items():  # through the files, as the local sweep hands them over
            local = exp.work / name
            local.write_bytes(data)
            out.pcaps.append(local)
        exp.write_run(self.writer, ctx, out)
        for p in out.pcaps:
            p.unlink(missing_ok=True)
        exp.notes.extend(n for n in out.notes if n not in exp.notes)
        self.seeds[ctx.tag] = run.seed
        self.pe_registrars[ctx.tag] = run.pe_registrar

"""What a cluster worker runs for one (PU setting, run) of a sweep, and what it sends back.

``simulate_task`` simulates one run (``emulab.sim.simulate_run``, as the local sweep's processes).
``emulate_task`` runs one run on the worker's testbed through ``EmulatedSweep.run_one``, exactly
what the local sweep does for each run; the testbed (of the worker's instance, ``EMULAB_INSTANCE``)
is built by the first task of a sweep and kept for the next ones of the same sweep, so a run costs
what it costs locally. It is torn down when another sweep's task comes, when the gathering client
asks (``close_session``, at the end of every sweep), or when the worker closes (``TestbedPlugin``).
Runs on one worker go one after the other (one testbed per worker process).

Every task tells the gathering client when it starts and, for emulated runs, how far it is (Dask
events on ``TOPIC``); its result names the worker and machine that ran it (``Finished.where``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from distributed import WorkerPlugin

from emulab import paths

SLOT_RESOURCE = "testbed"
"""The worker resource an emulation task asks for: one per testbed instance the worker runs."""
TOPIC = "emulab-sweep"
"""The Dask event topic of the runs' progress (``run_started``, ``run_progress``)."""
PROGRESS_EVERY_S = 1.0


@dataclass
class Finished:
    """A task's result: its run's output (``value``) and where it ran (the sweep keys it by its
    (setting, run))."""

    value: Any
    where: dict[str, str]
    """worker (address), host (machine), instance (testbed instance)."""
    wall_s: float


@dataclass
class EmulatedRun:
    """One emulated run's output as the worker sends it back: the records, the pcaps' contents, and
    what the manifest needs of the worker's testbed."""

    out: Any
    """``RunOutput`` (its ``pcaps`` emptied: the files are in ``pcap_data``)."""
    pcap_data: dict[str, bytes]
    facts: dict[str, Any]
    pe_registrar: str
    seed: int
    pcaps: bool
    """The worker captures (dumpcap installed and pcaps asked for)."""


@dataclass(frozen=True)
class EmulationJob:
    """One emulated (setting, run): ``make`` builds the sweep's experiment (without a testbed), the same
    on every worker; ``sweep`` tells the runs of one sweep from another's."""

    sweep: str
    make: Callable[[], Any]
    setting: int
    run: int
    index: int
    total: int


def where() -> dict[str, str]:
    """This worker's address, machine and testbed instance."""
    try:
        from distributed import get_worker

        address = get_worker().address
    except ValueError:  # not in a worker (a test calling the task directly)
        address = "local"
    return {"worker": address, "host": socket.gethostname(), "instance": paths.instance()}


def tell(sweep: str, kind: str, **data: Any) -> None:
    """An event for the gathering client (dropped outside a worker)."""
    try:
        from distributed import get_worker

        get_worker().log_event(TOPIC, {"sweep": sweep, "kind": kind, **data})
    except ValueError:
        pass


# --------------------------------------------------------------------------- simulation


def simulate_task(sweep: str, model: Any, params: Any) -> Finished:
    """One simulated run."""
    from emulab.sim import simulate_run

    here = where()
    tell(sweep, "run_started", setting=params.setting, run=params.run, **here)
    t0 = time.monotonic()
    res = simulate_run(model, params)
    return Finished(res, here, time.monotonic() - t0)


# --------------------------------------------------------------------------- emulation


@dataclass
class _Session:
    sweep: str
    experiment: Any
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)


_lock = threading.Lock()  # one testbed per worker process: its runs go one after the other
_session: _Session | None = None
_closing: set[str] = set()  # sweeps whose testbed goes down when the run still going on ends


def _open(job: EmulationJob) -> Any:
    global _session
    from emulab.network import marked

    if _session is not None and _session.sweep == job.sweep:
        return _session.experiment
    _close()
    _clean_after_a_dead_worker()
    exp = job.make()
    session = _Session(job.sweep, exp)
    try:
        run_id = session.stack.enter_context(marked(f"worker-{os.getpid()}-{job.sweep[:8]}"))
        exp.build(run_id)
    except BaseException:
        with contextlib.suppress(Exception):
            exp.close()
        session.stack.close()
        raise
    _session = session
    return exp


def _clean_after_a_dead_worker() -> None:
    """This slot's instance still has a testbed whose process is gone: the worker before this one
    died with it (a Nanny restarts a killed worker on the same instance). Clean it, so this worker
    can build; a testbed whose process lives is left alone (the build then refuses, clearly)."""
    from emulab import cleanup, runstate

    if paths.is_default():  # a slot always has its own instance; the default one may be a user's
        return
    state = runstate.read_state()
    if state is not None and not runstate.pid_alive(state.get("runner_pid")):
        removed = cleanup.clean()
        print(f"emulab worker: instance {paths.instance()}: removed {len(removed)} leftover(s) of a dead worker's "
              "testbed", flush=True)


def _close(sweep: str | None = None) -> bool:
    global _session
    s = _session
    if s is None or (sweep is not None and s.sweep != sweep):
        return False
    _session = None
    try:
        s.experiment.close()
    finally:
        s.stack.close()
    return True


def close_session(sweep: str | None = None) -> bool:
    """Tear down this worker's testbed (only if it belongs to ``sweep``); True if it went down now.
    A run still going on (one the client gave up on: timed out) keeps it until it ends, then takes it
    down: this is called in the worker's event loop, which must not wait for a run."""
    if not _lock.acquire(blocking=False):
        if sweep is not None:
            _closing.add(sweep)
        return False
    try:
        closed = _close(sweep)
        if _session is None:
            _clean_after_a_dead_worker()
        return closed
    finally:
        _lock.release()


def emulate_task(job: EmulationJob) -> Finished:
    """One emulated run on this worker's testbed (built for the sweep's first run here)."""
    with _lock:
        exp = _open(job)
        here = where()
        ctx = exp.context(job.index, job.total, job.setting, job.run)
        tell(job.sweep, "run_started", index=job.index, total=job.total, setting=job.setting, run=job.run,
             tag=ctx.tag, seed=ctx.seed, **here)
        last = [0.0]

        def forward(event: Any) -> None:
            if event.kind == "run_progress" and time.monotonic() - last[0] >= PROGRESS_EVERY_S:
                last[0] = time.monotonic()
                tell(job.sweep, "run_progress", **event.data)
            elif event.kind == "log":
                tell(job.sweep, "log", message=f"{here['host']}/{here['instance']}: {event.data['message']}")

        unsubscribe = exp.subscribe(forward)
        t0 = time.monotonic()
        try:
            out = exp.run_one(ctx)
            facts = exp.testbed_facts()
            data = {}
            for pcap in out.pcaps:  # sent back as bytes; the files go (the testbed may go next)
                with contextlib.suppress(OSError):
                    data[pcap.name] = pcap.read_bytes()
                    pcap.unlink()
        except BaseException:
            _close()  # a run that failed half-way may leave the testbed in any state: the next one rebuilds
            raise
        finally:
            unsubscribe()
            if job.sweep in _closing:  # the sweep ended while this run went on
                _closing.discard(job.sweep)
                _close(job.sweep)
        out.pcaps = []
        run = EmulatedRun(out, data, facts, exp.pe_registrar, ctx.seed, exp.want_pcaps)
        return Finished(run, here, time.monotonic() - t0)


class TestbedPlugin(WorkerPlugin):
    """A Dask worker plugin: the worker's testbed is torn down when the worker closes."""

    name = "emulab-testbed"

    def setup(self, worker: Any) -> None:
        # a worker started again by its Nanny after it was killed: its predecessor's testbed goes now
        if worker.state.total_resources.get(SLOT_RESOURCE):
            with _lock:
                _clean_after_a_dead_worker()

    def teardown(self, worker: Any) -> None:
        close_session()

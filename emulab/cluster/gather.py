"""Submit a sweep's tasks to a Dask scheduler and gather their results keyed by (setting, run).

Each (setting, run) is one Dask future, so it yields at most one result: when a worker dies
mid-run the scheduler runs the task again elsewhere (up to its ``allowed-failures``) and that run's
result is the only one — nothing is counted twice. A run that cannot finish ends in ``missing``
with the reason, never silently:

* the task raised (after its retries) or its workers kept dying (``KilledWorker``);
* it ran longer than ``task_timeout`` (from its start on a worker, as the worker reported it);
* the connection to the scheduler was lost (it stopped or restarted: Dask's futures are gone);
* no worker could take it for ``slot_wait`` s (no worker with a testbed slot left);
* the user interrupted the sweep (Ctrl-C).
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emulab.cluster.connect import slot_count, workers
from emulab.cluster.tasks import TOPIC, Finished

Key = tuple[int, int]
LOST_SCHEDULER_S = 20.0
"""How long the client may be cut off from the scheduler before the sweep gives up."""


@dataclass
class Task:
    """One (setting, run): the function a worker calls, and the worker resources it needs."""

    key: Key
    func: Callable[..., Any]
    args: tuple[Any, ...]
    resources: dict[str, int] | None = None
    retries: int = 0
    priority: int = 0


@dataclass
class Gathered:
    finished: dict[Key, Finished] = field(default_factory=dict)
    missing: dict[Key, str] = field(default_factory=dict)
    attempts: dict[Key, int] = field(default_factory=dict)
    """How often a worker started each run (more than 1: re-run after its worker died)."""


def _why(exc: BaseException | None) -> str:
    if exc is None:
        return "failed"
    if type(exc).__name__ == "KilledWorker":
        return "its workers died while running it, too often (Dask's allowed-failures)"
    return f"failed on the worker: {type(exc).__name__}: {exc}"


def gather(client: Any, sweep: str, tasks: list[Task], *,
           on_event: Callable[[dict[str, Any]], None] | None = None,
           on_finished: Callable[[Key, Finished], None] | None = None,
           task_timeout: float | None = None, slot_wait: float | None = None,
           poll_s: float = 0.2) -> Gathered:
    """Run ``tasks`` on the cluster; returns what finished and what is missing (with why).

    ``on_event`` gets the workers' events of this sweep (``tasks.TOPIC``), ``on_finished`` each run as
    it arrives (first result per key only). ``slot_wait``: give up on the remaining runs after that
    many seconds without a worker holding a testbed slot (None: the tasks need no slot).
    """
    got = Gathered()
    events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def heard(event: Any) -> None:  # in the client's event-loop thread: hand over, handle below
        msg = event[1] if isinstance(event, tuple) else event
        if isinstance(msg, dict) and msg.get("sweep") == sweep:
            events.put(msg)

    client.subscribe_topic(TOPIC, heard)
    futures: dict[Any, Key] = {}
    for t in tasks:
        f = client.submit(t.func, *t.args, key=f"emulab-{sweep}-{t.key[0]}pus-run{t.key[1]}",
                          resources=t.resources, retries=t.retries, priority=t.priority, pure=False)
        futures[f] = t.key
    pending = set(futures)
    started: dict[Key, tuple[float, dict[str, Any]]] = {}
    cut_off_since: float | None = None
    no_slot_since: float | None = None
    next_slot_check = 0.0

    def give_up(fs: set[Any], reason: str | Callable[[Key], str]) -> None:
        for f in fs:
            got.missing.setdefault(futures[f], reason if isinstance(reason, str) else reason(futures[f]))
        pending.difference_update(fs)
        with contextlib.suppress(Exception):
            client.cancel(list(fs), force=True)

    try:
        while pending:
            while not events.empty():
                msg = events.get()
                if msg.get("kind") == "run_started":
                    key = (int(msg["setting"]), int(msg["run"]))
                    got.attempts[key] = got.attempts.get(key, 0) + 1
                    started[key] = (time.monotonic(), msg)
                if on_event is not None:
                    on_event(msg)
            for f in [f for f in pending if f.status != "pending"]:
                key = futures[f]
                pending.discard(f)
                if f.status == "finished":
                    try:
                        fin = f.result(timeout=60)
                    except Exception as exc:  # noqa: BLE001 - the result was lost on the way: say so
                        got.missing[key] = f"its result could not be fetched: {type(exc).__name__}: {exc}"
                        continue
                    if key not in got.finished:  # one result per (setting, run), whatever happened before
                        got.finished[key] = fin
                        if on_finished is not None:
                            on_finished(key, fin)
                elif f.status == "error":
                    exc = None
                    with contextlib.suppress(Exception):
                        exc = f.exception(timeout=30)
                    got.missing[key] = _why(exc)
                else:  # cancelled / lost: the scheduler forgot it (it stopped or restarted)
                    got.missing[key] = ("lost: the connection to the Dask scheduler broke (it stopped or "
                                        "restarted) before the run's result arrived")
            now = time.monotonic()
            if task_timeout is not None:
                late = {f for f in pending if futures[f] in started and now - started[futures[f]][0] > task_timeout}
                if late:
                    give_up(late, lambda k: (f"timed out: still running after {task_timeout:g} s on "
                                             f"{started[k][1].get('worker')} ({started[k][1].get('host')})"))
            if client.status != "running":
                cut_off_since = cut_off_since or now
                if now - cut_off_since > LOST_SCHEDULER_S:
                    give_up(set(pending), f"lost: no connection to the Dask scheduler for {LOST_SCHEDULER_S:g} s")
            else:
                cut_off_since = None
            if pending and now >= next_slot_check and client.status == "running":
                next_slot_check = now + 2.0
                present = slot_count(client) if slot_wait is not None else len(workers(client))
                no_slot_since = None if present else (no_slot_since or now)
                wait = slot_wait if slot_wait is not None else 60.0
                if no_slot_since is not None and now - no_slot_since > wait:
                    what = "with a testbed slot" if slot_wait is not None else "at all"
                    give_up(set(pending), f"not run: no worker {what} for {wait:g} s")
            time.sleep(poll_s if pending else 0)
    except KeyboardInterrupt:
        give_up(set(pending), "not run: the sweep was interrupted (Ctrl-C)")
    finally:
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(TOPIC)
    return got


def placement(client: Any, address: str, got: Gathered) -> dict[str, Any]:
    """The manifest's ``cluster`` key: the scheduler, its workers, and where each run ran."""
    from emulab.cluster.connect import dashboard

    ws = workers(client)
    return {"cluster": {
        "address": address,
        "scheduler": getattr(client.scheduler, "address", None),
        "dashboard": dashboard(client) if client.status == "running" else None,
        "workers": {a: {"name": w.get("name"), "host": w.get("host"), "resources": w.get("resources") or {},
                        "nthreads": w.get("nthreads")} for a, w in sorted(ws.items())},
        "runs": {f"{s}pus-run{r}": {**fin.where, "attempts": max(1, got.attempts.get((s, r), 1)),
                                    "wall_s": round(fin.wall_s, 3)}
                 for (s, r), fin in sorted(got.finished.items())},
        "missing_runs": len(got.missing),
    }}

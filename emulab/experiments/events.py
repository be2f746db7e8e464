"""What a running experiment tells its subscribers, and the progress bar that is one of them.

``EmulatedSweep.subscribe(listener)`` hands every ``ExperimentEvent`` to ``listener`` as it happens
(in the experiment's thread: a listener returns quickly, and one that raises is logged and dropped,
so a broken dashboard cannot stop a sweep). The kinds every sweep emits, with their ``data``:

* ``testbed_ready`` — topology, pu_node, elements (node -> class);
* ``sweep_started`` — runs, total_s (emulated seconds of all runs), results (the directory);
* ``run_started`` — index, total, setting, run, seed, tag;
* ``run_progress`` — tag, elapsed, duration (every ``poll_s`` while the pool users run);
* ``run_finished`` — index, total, tag, requests, completed;
* ``sweep_ended`` — ok, results (also when the sweep failed; results None then): the results
  directory is complete (or marked aborted), the testbed is torn down next;
* ``testbed_stopped`` — (no data) the testbed is gone: the last event;
* ``log`` — message (what the experiment also prints).

An experiment adds its own kinds (``coverage-loss``: ``coverage_lost`` and ``coverage_restored``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExperimentEvent:
    """One thing that happened in a running experiment."""

    kind: str
    experiment: str
    """The experiment's name, as in `emulab experiment NAME`."""
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    """Wall-clock time (epoch seconds)."""


Listener = Callable[[ExperimentEvent], None]


class ProgressBar:
    """A rich progress bar over the sweep's emulated seconds, fed by the experiment's events; when
    ``show`` is false (not a terminal) it prints one line per run instead. Runs may overlap (a sweep
    on a cluster runs many at once): each run's progress counts until it finishes, and a run started
    again (its worker died) counts from its new start."""

    def __init__(self, show: bool) -> None:
        self.show = show
        self.progress: Any = None
        self.task: Any = None
        self.done = 0.0  # emulated seconds of the runs already finished
        self.running: dict[str, float] = {}  # tag -> emulated seconds so far, of the runs going on

    def __call__(self, event: ExperimentEvent) -> None:
        d = event.data
        if event.kind == "sweep_started":
            self._open(float(d["total_s"]))
        elif event.kind == "run_started":
            text = f"run {d['index']}/{d['total']}: {d['setting']} PUs, run {d['run']}"
            if d.get("host"):  # on a cluster: where it runs
                text += f" on {d['host']}/{d.get('instance')}"
            if d.get("tag"):
                self.running[str(d["tag"])] = 0.0
            if self.progress is not None:
                self.progress.update(self.task, description=text)
            else:
                print(f"emulab: {text}", file=sys.stderr, flush=True)
        elif event.kind == "run_progress":
            self.running[str(d["tag"])] = float(d["elapsed"])
            if self.progress is not None:
                self.progress.update(self.task, completed=self.done + sum(self.running.values()))
        elif event.kind == "run_finished":
            self.running.pop(str(d.get("tag")), None)
            self.done += float(d.get("duration", 0.0))
            if self.progress is not None:
                self.progress.update(self.task, completed=self.done + sum(self.running.values()))
            if d.get("index") == d.get("total"):
                self._close()
        elif event.kind == "sweep_ended":
            self._close()

    def _open(self, total: float) -> None:
        if not self.show:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(), transient=True)
        self.task = self.progress.add_task("starting", total=total)
        self.progress.start()

    def _close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

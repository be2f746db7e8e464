"""An experiment's progress for the dashboard, across processes: an event listener that writes a feed
file, and the reader that turns the feed into a progress summary.

An experiment runs in its own process (``EmulatedSweep.subscribe`` hands events to listeners in that
process); ``EventFeed`` is such a listener and appends every event as one JSON line to
``<run dir>/experiment-events.jsonl``, which the dashboard reads. The file is removed when the
experiment's testbed stops.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from emulab import paths


def feed_path() -> Path:
    return paths.run_dir() / "experiment-events.jsonl"


class EventFeed:
    """``EmulatedSweep.subscribe(EventFeed())``: every event to the feed file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or feed_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def __call__(self, event: Any) -> None:
        if event.kind == "testbed_stopped":
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        line = json.dumps({"kind": event.kind, "experiment": event.experiment, "data": event.data, "at": event.at},
                          default=str)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def read_progress(path: Path | None = None) -> dict[str, Any] | None:
    """The experiment's progress from its feed (None when no experiment writes one)."""
    path = path or feed_path()
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    out: dict[str, Any] = {"experiment": None, "runs": None, "total_s": None, "done_runs": 0, "run": None,
                           "run_elapsed": None, "run_duration": None, "ended": False, "results": None,
                           "recent": []}
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        d, kind = ev.get("data", {}), ev.get("kind")
        out["experiment"] = ev.get("experiment")
        if kind == "sweep_started":
            out.update(runs=d.get("runs"), total_s=d.get("total_s"), results=d.get("results"))
        elif kind == "run_started":
            out.update(run=d.get("tag"), run_elapsed=0.0, run_duration=None)
        elif kind == "run_progress":
            out.update(run=d.get("tag"), run_elapsed=d.get("elapsed"), run_duration=d.get("duration"))
        elif kind == "run_finished":
            out["done_runs"] = int(out["done_runs"]) + 1
        elif kind == "sweep_ended":
            out.update(ended=True, results=d.get("results"))
        if kind not in ("run_progress",):
            out["recent"] = ([*out["recent"], {"kind": kind, "at": ev.get("at"), "data": d}])[-8:]
    return out

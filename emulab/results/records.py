"""The records of a results directory: one dataclass per kind of CSV row, and the column names.

``RequestRecord`` (requests.csv), ``ElementUsage`` (elements.csv), ``EventRecord`` (events.csv) and
``UsageSample`` (elements_timeline.csv) are what producers (``emulab experiment``, ``emulab
simulate``) hand to ``ResultsWriter`` and what ``load_results`` gives back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulab.errors import EmulabError

FORMAT_VERSION = 1
STATUSES: tuple[str, ...] = ("completed", "lost", "unfinished")
CLASSES: tuple[str, ...] = ("ue", "mec", "pmc")

REQUEST_FIELDS: tuple[str, ...] = (
    "setting", "run", "pu", "request_id", "size", "queued_at", "started_at", "accepted_at", "completed_at",
    "element", "element_class", "rejected_by", "failovers", "status", "restarts",
)
USAGE_FIELDS: tuple[str, ...] = (
    "setting", "run", "element", "element_class", "capacity", "duration_s", "used_calculations",
    "max_requests", "accepted", "rejected",
)
EVENT_FIELDS: tuple[str, ...] = ("setting", "run", "t", "event", "pu", "request_id", "element", "element_class")
SAMPLE_FIELDS: tuple[str, ...] = ("setting", "run", "t", "element", "element_class", "used_calculations", "jobs")
EVENTS: tuple[str, ...] = ("accept", "complete", "restart", "coverage_lost", "coverage_restored")


class ResultsError(EmulabError):
    """A results directory is missing or malformed."""


class IncompleteSweep(ResultsError):
    """A sweep ended without some of its (setting, run)s; its results directory is marked partial."""

    def __init__(self, path: Any, missing: dict[tuple[int, int], str], total: int) -> None:
        self.path, self.missing, self.total = path, dict(missing), total
        listed = "; ".join(f"{s} PUs run {r}: {why}" for (s, r), why in sorted(self.missing.items())[:10])
        more = f"; … {len(self.missing) - 10} more" if len(self.missing) > 10 else ""
        super().__init__(f"the sweep is incomplete: {len(self.missing)} of {total} run(s) missing ({listed}{more}); "
                         f"the partial results, marked partial in manifest.json and summary.json, are in {path}")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One CalcApp request, as a pool user saw it. Times are seconds since the run's start."""

    setting: int
    """The PU setting = number of PUs in this run."""
    run: int
    pu: str
    request_id: int
    size: float
    queued_at: float
    started_at: float | None
    """Dequeued: RSPLIB's "startup" begins (handle resolution, connect, request)."""
    accepted_at: float | None
    """The (first) accept acknowledgement was received."""
    completed_at: float | None
    element: str | None
    """The element that completed the request (node name, e.g. "mec-pe1")."""
    element_class: str | None
    """"ue" | "mec" | "pmc"."""
    rejected_by: tuple[str, ...] = ()
    failovers: int = 0
    status: str = "completed"
    """completed | lost | unfinished (still queued or running when the run ended)."""
    restarts: int | None = None
    """How often the request started again from scratch after a PE had accepted it (None: not recorded)."""

    @property
    def queuing_time(self) -> float | None:
        return None if self.started_at is None else self.started_at - self.queued_at

    @property
    def startup_time(self) -> float | None:
        if self.started_at is None or self.accepted_at is None:
            return None
        return self.accepted_at - self.started_at

    @property
    def processing_time(self) -> float | None:
        if self.accepted_at is None or self.completed_at is None:
            return None
        return self.completed_at - self.accepted_at

    @property
    def handling_time(self) -> float | None:
        return None if self.completed_at is None else self.completed_at - self.queued_at


@dataclass(frozen=True, slots=True)
class ElementUsage:
    """Used capacity of one pool element over one run."""

    setting: int
    run: int
    element: str
    element_class: str
    capacity: float
    """Calculations per second."""
    duration_s: float
    used_calculations: float
    max_requests: int = 0
    """RSPLIB "Service Max Jobs" (0 = unknown)."""
    accepted: int = 0
    rejected: int = 0

    @property
    def utilisation(self) -> float:
        avail = self.capacity * self.duration_s
        return self.used_calculations / avail if avail > 0 else 0.0


@dataclass(frozen=True, slots=True)
class EventRecord:
    """Something that happened at time ``t`` (seconds since the run's start) of one run."""

    setting: int
    run: int
    t: float
    event: str
    """One of EVENTS: an Accept (first or after a fail-over), a completion, a restart from scratch of
    an accepted request (``element``: the PE it left), coverage lost/restored."""
    pu: str | None = None
    request_id: int | None = None
    element: str | None = None
    element_class: str | None = None


@dataclass(frozen=True, slots=True)
class UsageSample:
    """An element's cumulative used calculations and running jobs at time ``t`` of one run."""

    setting: int
    run: int
    t: float
    element: str
    element_class: str
    used_calculations: float
    jobs: int

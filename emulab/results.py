"""The one results format of emulab: what an emulated or a simulated CalcApp sweep leaves behind.

A results directory ``<base>/<YYYYmmdd-HHMMSS>-<name>/`` holds

* ``requests.csv`` — one row per CalcApp request as its pool user saw it (``RequestRecord``);
* ``elements.csv`` — the used capacity of every pool element in every run (``ElementUsage``);
* ``manifest.json`` — what was run (the scenario, the topology, versions …), given by the producer;
* ``summary.json`` — ``summarize()``'s statistics per PU setting (the papers' figures and Table 1);
* ``sca/<PUs>pus-run<N>.sca`` — RSPLIB-style OMNeT++ scalar files, one per run, with exactly the
  scalar names RSPLIB's ``calcappclient`` and ``rspserver -calcapp`` write;
* ``events.csv`` (optional) — time-stamped events of runs with faults (``EventRecord``): every Accept,
  completion and coverage change, for the fail-over timeline;
* ``elements_timeline.csv`` (optional) — every element's cumulative used calculations and job count
  sampled over each run (``UsageSample``, 1 s apart on emulated runs): the used capacity over time;
* optional extra files (``pcaps/`` …) added by the producer.

Definitions follow RSPLIB's calcappclient (and the papers): queuing = queued → dequeued (a PU serves
one request at a time, FIFO); start-up = dequeued → accept received (handle resolution, rejections
and re-selections included); processing = accept → complete; handling = the sum; handling speed =
size / handling time. Like RSPLIB, the times are taken over *completed* requests only.

Rows are written as they arrive (``add_requests`` streams to the CSV) and the statistics are
accumulated in compact arrays, so a run with millions of requests does not hold millions of objects.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import time
from array import array
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emulab.errors import EmulabError
from rserpool.services.calcapp import KEEPALIVE_INTERVAL

FORMAT_VERSION = 1
STATUSES: tuple[str, ...] = ("completed", "lost", "unfinished")
CLASSES: tuple[str, ...] = ("ue", "mec", "pmc")

REQUEST_FIELDS: tuple[str, ...] = (
    "setting", "run", "pu", "request_id", "size", "queued_at", "started_at", "accepted_at", "completed_at",
    "element", "element_class", "rejected_by", "failovers", "status",
)
USAGE_FIELDS: tuple[str, ...] = (
    "setting", "run", "element", "element_class", "capacity", "duration_s", "used_calculations",
    "max_requests", "accepted", "rejected",
)
EVENT_FIELDS: tuple[str, ...] = ("setting", "run", "t", "event", "pu", "request_id", "element", "element_class")
SAMPLE_FIELDS: tuple[str, ...] = ("setting", "run", "t", "element", "element_class", "used_calculations", "jobs")
EVENTS: tuple[str, ...] = ("accept", "complete", "coverage_lost", "coverage_restored")


class ResultsError(EmulabError):
    """A results directory is missing or malformed."""


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
    """One of EVENTS: an Accept (first or after a fail-over), a completion, coverage lost/restored."""
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


# --------------------------------------------------------------------------- statistics


def stats(values: Iterable[float] | np.ndarray) -> dict[str, float | int | None]:
    """mean, min, max, 10 % and 90 % quantiles (linear interpolation) and the count."""
    a = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float)
    if a.size == 0:
        return {"n": 0, "mean": None, "min": None, "max": None, "p10": None, "p90": None}
    p10, p90 = np.quantile(a, [0.1, 0.9])
    return {
        "n": int(a.size), "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()),
        "p10": float(p10), "p90": float(p90),
    }


@dataclass
class _Setting:
    """Compact per-setting accumulators (arrays of doubles instead of record objects)."""

    queuing: array = field(default_factory=lambda: array("d"))
    startup: array = field(default_factory=lambda: array("d"))
    processing: array = field(default_factory=lambda: array("d"))
    handling: array = field(default_factory=lambda: array("d"))
    speed: array = field(default_factory=lambda: array("d"))
    # per (run, pu): [total queuing, total handling, size completed]
    per_pu: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    runs: set[int] = field(default_factory=set)
    issued: int = 0
    completed: int = 0
    lost: int = 0
    unfinished: int = 0
    failed_over: int = 0
    failovers: int = 0
    rejections: int = 0
    usage: list[ElementUsage] = field(default_factory=list)


class _Aggregator:
    """Feeds on records, yields the summary dict; shared by ``summarize`` and ``ResultsWriter``."""

    def __init__(self) -> None:
        self.settings: dict[int, _Setting] = defaultdict(_Setting)

    def add_request(self, r: RequestRecord) -> None:
        s = self.settings[r.setting]
        s.runs.add(r.run)
        s.issued += 1
        key = (r.run, r.pu)
        pu = s.per_pu.get(key)
        if pu is None:
            pu = s.per_pu[key] = [0.0, 0.0, 0.0]
        if r.rejected_by:
            s.rejections += len(r.rejected_by)
        if r.failovers:
            s.failed_over += 1
            s.failovers += r.failovers
        if r.status == "completed" and r.completed_at is not None and r.accepted_at is not None \
                and r.started_at is not None:
            s.completed += 1
            q = r.started_at - r.queued_at
            st = r.accepted_at - r.started_at
            p = r.completed_at - r.accepted_at
            h = q + st + p
            s.queuing.append(q)
            s.startup.append(st)
            s.processing.append(p)
            s.handling.append(h)
            s.speed.append(r.size / h if h > 0 else math.inf)
            pu[0] += q
            pu[1] += h
            pu[2] += r.size
        elif r.status == "lost":
            s.lost += 1
        else:
            s.unfinished += 1

    def add_usage(self, u: ElementUsage) -> None:
        s = self.settings[u.setting]
        s.runs.add(u.run)
        s.usage.append(u)

    def summary(self, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
        scen = (manifest or {}).get("scenario", {})
        size_mean = scen.get("size_mean")
        interval_mean = scen.get("interval_mean")
        out: dict[str, Any] = {"format": FORMAT_VERSION, "settings": {}}
        for setting in sorted(self.settings):
            s = self.settings[setting]
            out["settings"][str(setting)] = self._setting_summary(setting, s, size_mean, interval_mean)
        return out

    @staticmethod
    def _setting_summary(setting: int, s: _Setting, size_mean: Any, interval_mean: Any) -> dict[str, Any]:
        # element capacity over the setting (capacity x duration summed over runs)
        by_elem: dict[str, list[ElementUsage]] = defaultdict(list)
        for u in s.usage:
            by_elem[u.element].append(u)
        total_used = sum(u.used_calculations for u in s.usage)
        total_avail = sum(u.capacity * u.duration_s for u in s.usage)
        elements: dict[str, Any] = {}
        classes: dict[str, dict[str, float]] = {}
        cls_used: dict[str, float] = defaultdict(float)
        cls_avail: dict[str, float] = defaultdict(float)
        cls_cap: dict[str, float] = defaultdict(float)
        for name, us in by_elem.items():
            cls = us[0].element_class
            used = sum(u.used_calculations for u in us)
            avail = sum(u.capacity * u.duration_s for u in us)
            cls_used[cls] += used
            cls_avail[cls] += avail
            cls_cap[cls] += us[0].capacity
            elements[name] = {
                "class": cls,
                "capacity": us[0].capacity,
                "utilisation": used / avail if avail > 0 else 0.0,
                "utilisation_runs": stats([u.utilisation for u in us]),
                "work_share": used / total_used if total_used > 0 else 0.0,
                "accepted": sum(u.accepted for u in us),
                "rejected": sum(u.rejected for u in us),
            }
        for cls in sorted(cls_used, key=lambda c: (CLASSES.index(c) if c in CLASSES else 99, c)):
            classes[cls] = {
                "capacity": cls_cap[cls],
                "utilisation": cls_used[cls] / cls_avail[cls] if cls_avail[cls] > 0 else 0.0,
                "work_share": cls_used[cls] / total_used if total_used > 0 else 0.0,
            }
        total_cap = sum(cls_cap.values())
        offered = offered_papers = None
        if size_mean and interval_mean and total_cap > 0:
            demand = setting * float(size_mean) / float(interval_mean)
            offered = demand / total_cap
            # the papers quote the offered load relative to the six MEC + PMC PEs (1 PU = 1.67 %)
            remote = total_cap - cls_cap.get("ue", 0.0)
            offered_papers = demand / remote if remote > 0 else None
        per_pu = list(s.per_pu.values())
        return {
            "pus": setting,
            "runs": len(s.runs),
            "offered_load": offered,
            "offered_load_papers": offered_papers,
            "pool_utilisation": total_used / total_avail if total_avail > 0 else 0.0,
            "classes": classes,
            "elements": elements,
            "times": {
                "queuing": stats(np.frombuffer(s.queuing, dtype=float) if s.queuing else []),
                "startup": stats(np.frombuffer(s.startup, dtype=float) if s.startup else []),
                "processing": stats(np.frombuffer(s.processing, dtype=float) if s.processing else []),
                "handling": stats(np.frombuffer(s.handling, dtype=float) if s.handling else []),
                "handling_speed": stats(np.frombuffer(s.speed, dtype=float) if s.speed else []),
            },
            # the papers' Table 1: per-PU TOTAL queuing time over a run, over all PUs x runs
            "table1": stats([p[0] for p in per_pu]),
            # RSPLIB's "CalcAppPU Average Handling Speed": size completed / total handling time per PU
            "pu_handling_speed": stats([p[2] / p[1] for p in per_pu if p[1] > 0]),
            "counts": {
                "issued": s.issued, "completed": s.completed, "lost": s.lost, "unfinished": s.unfinished,
                "failed_over": s.failed_over, "failovers": s.failovers, "rejections": s.rejections,
            },
        }


def summarize(
    requests: Iterable[RequestRecord],
    usage: Iterable[ElementUsage],
    manifest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What summary.json holds (``manifest["scenario"]`` supplies size/interval means for the offered load)."""
    agg = _Aggregator()
    for r in requests:
        agg.add_request(r)
    for u in usage:
        agg.add_usage(u)
    return agg.summary(manifest)


# --------------------------------------------------------------------------- coverage loss
# Shared by `emulab experiment coverage-loss` and `emulab simulate --coverage-loss`, so that both
# put the same numbers, computed the same way, under the same keys of summary.json.


def coverage_metrics(events: Iterable[EventRecord], requests: Iterable[RequestRecord], lost_at: float | None,
                     restored_at: float | None) -> dict[str, Any]:
    """One coverage-loss run: fail-over and recovery times, and whether every request finished once.

    ``failover_s``: coverage lost → the first Accept by a UE element after it; ``recovery_s``:
    coverage back → the first Accept by a MEC element after it (None when it never happened).
    ``requests_lost`` counts every request issued that did not complete (after the drain), and
    ``requests_duplicated`` every request recorded more than once (both must be 0).
    """
    accepts = [e for e in events if e.event == "accept"]
    reqs = list(requests)

    def first_after(t0: float | None, cls: str) -> float | None:
        if t0 is None:
            return None
        ts = [e.t for e in accepts if e.element_class == cls and e.t >= t0]
        return round(min(ts) - t0, 3) if ts else None

    keys = [(r.pu, r.request_id) for r in reqs]
    issued = len(set(keys))
    # distinct requests: a request recorded twice as completed must not hide one that never was
    completed = len({(r.pu, r.request_id) for r in reqs if r.status == "completed"})
    during = [e for e in accepts if lost_at is not None and e.t >= lost_at
              and (restored_at is None or e.t < restored_at)]
    return {
        "lost_at_s": None if lost_at is None else round(lost_at, 3),
        "restored_at_s": None if restored_at is None else round(restored_at, 3),
        "failover_s": first_after(lost_at, "ue"),
        "recovery_s": first_after(restored_at, "mec"),
        "requests_issued": issued,
        "requests_completed": completed,
        "requests_lost": issued - completed,
        "requests_duplicated": len(keys) - issued,
        "requests_failed_over": sum(1 for r in reqs if r.failovers),
        "accepts_during_loss": {cls: sum(1 for e in during if e.element_class == cls) for cls in CLASSES},
    }


def coverage_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json's coverage-loss keys over ``coverage_metrics`` of every run: the worst fail-over
    and recovery times (None if any run had none), the summed request counts, and the runs themselves."""

    def worst(key: str) -> float | None:
        vals = [r[key] for r in runs]
        return None if not vals or any(v is None for v in vals) else max(vals)

    return {
        "failover_s": worst("failover_s"),
        "recovery_s": worst("recovery_s"),
        **{k: sum(r[k] for r in runs) for k in ("requests_issued", "requests_completed", "requests_lost",
                                                 "requests_duplicated", "requests_failed_over")},
        "coverage_runs": runs,
    }


# --------------------------------------------------------------------------- CSV rows


def _f(v: float | None) -> str:
    # repr round-trips a float exactly, so load_results gives back the very same numbers
    return "" if v is None else repr(float(v))


def _request_row(r: RequestRecord) -> list[Any]:
    return [
        r.setting, r.run, r.pu, r.request_id, _f(r.size), _f(r.queued_at), _f(r.started_at),
        _f(r.accepted_at), _f(r.completed_at), r.element or "", r.element_class or "",
        ";".join(r.rejected_by), r.failovers, r.status,
    ]


def _opt(s: str) -> float | None:
    return None if s == "" else float(s)


def _request_from_row(row: dict[str, str]) -> RequestRecord:
    return RequestRecord(
        setting=int(row["setting"]), run=int(row["run"]), pu=row["pu"], request_id=int(row["request_id"]),
        size=float(row["size"]), queued_at=float(row["queued_at"]), started_at=_opt(row["started_at"]),
        accepted_at=_opt(row["accepted_at"]), completed_at=_opt(row["completed_at"]),
        element=row["element"] or None, element_class=row["element_class"] or None,
        rejected_by=tuple(x for x in row["rejected_by"].split(";") if x), failovers=int(row["failovers"]),
        status=row["status"],
    )


def _event_row(e: EventRecord) -> list[Any]:
    return [e.setting, e.run, _f(e.t), e.event, e.pu or "", "" if e.request_id is None else e.request_id,
            e.element or "", e.element_class or ""]


def _event_from_row(row: dict[str, str]) -> EventRecord:
    if row["event"] not in EVENTS:
        raise ResultsError(f"events.csv: unknown event {row['event']!r} (one of {', '.join(EVENTS)})")
    return EventRecord(setting=int(row["setting"]), run=int(row["run"]), t=float(row["t"]), event=row["event"],
                       pu=row["pu"] or None, request_id=int(row["request_id"]) if row["request_id"] else None,
                       element=row["element"] or None, element_class=row["element_class"] or None)


def _sample_row(u: UsageSample) -> list[Any]:
    return [u.setting, u.run, _f(u.t), u.element, u.element_class, _f(u.used_calculations), u.jobs]


def _sample_from_row(row: dict[str, str]) -> UsageSample:
    return UsageSample(setting=int(row["setting"]), run=int(row["run"]), t=float(row["t"]), element=row["element"],
                       element_class=row["element_class"], used_calculations=float(row["used_calculations"]),
                       jobs=int(row["jobs"]))


def _usage_row(u: ElementUsage) -> list[Any]:
    return [u.setting, u.run, u.element, u.element_class, _f(u.capacity), _f(u.duration_s),
            _f(u.used_calculations), u.max_requests, u.accepted, u.rejected]


def _usage_from_row(row: dict[str, str]) -> ElementUsage:
    return ElementUsage(
        setting=int(row["setting"]), run=int(row["run"]), element=row["element"],
        element_class=row["element_class"], capacity=float(row["capacity"]), duration_s=float(row["duration_s"]),
        used_calculations=float(row["used_calculations"]), max_requests=int(row.get("max_requests") or 0),
        accepted=int(row.get("accepted") or 0), rejected=int(row.get("rejected") or 0),
    )


# --------------------------------------------------------------------------- .sca (RSPLIB / OMNeT++)

_PU_OBJ = "scenario.calcapppooluser[{}]"
_PE_OBJ = "scenario.calcapppoolelement[{}]"


def _natural(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _scalar(lines: list[str], obj: str, name: str, value: str) -> None:
    lines.append(f'scalar "{obj}" "{name}" {value}')


@dataclass
class _PUScalars:
    queuing: float = 0.0
    startup: float = 0.0
    processing: float = 0.0
    handling: float = 0.0
    queued: int = 0
    started: int = 0
    completed: int = 0
    size_queued: float = 0.0
    size_started: float = 0.0
    size_completed: float = 0.0
    requests: int = 0
    accepts: int = 0
    rejects: int = 0
    keepalives: int = 0  # sent by the PU
    keepalive_acks: int = 0  # sent by the PU, answering the PE's keep-alives


def _tally(pus: dict[str, _PUScalars], r: RequestRecord) -> None:
    p = pus.get(r.pu)
    if p is None:
        p = pus[r.pu] = _PUScalars()
    p.queued += 1
    p.size_queued += r.size
    if r.started_at is not None:
        p.started += 1
        p.size_started += r.size
        p.requests += 1 + len(r.rejected_by) + r.failovers
        p.rejects += len(r.rejected_by)
    if r.accepted_at is not None:
        p.accepts += 1 + r.failovers
    if r.status == "completed" and r.completed_at is not None and r.accepted_at is not None \
            and r.started_at is not None:
        p.completed += 1
        p.size_completed += r.size
        p.queuing += r.started_at - r.queued_at
        p.startup += r.accepted_at - r.started_at
        proc = r.completed_at - r.accepted_at
        p.processing += proc
        p.handling += r.completed_at - r.queued_at
        # estimates for producers without the PUs' counters (see set_pu_counters): calcappclient sends a
        # Keep-Alive, and the PE one the PU acknowledges, every KeepAliveTransmissionInterval of a job
        p.keepalives += int(proc // KEEPALIVE_INTERVAL)
        p.keepalive_acks += int(proc // KEEPALIVE_INTERVAL)


def _apply_counters(pus: dict[str, _PUScalars], counters: Mapping[str, Mapping[str, int]]) -> None:
    """The PUs' own message counters replace what the records can only estimate."""
    for name, c in counters.items():
        p = pus.setdefault(name, _PUScalars())
        p.requests, p.accepts, p.rejects = c.get("requests", p.requests), c.get("accepts", p.accepts), \
            c.get("rejects", p.rejects)
        p.keepalives, p.keepalive_acks = c.get("keepalives", p.keepalives), c.get("keepalive_acks", p.keepalive_acks)


def sca_text(run: int, requests: Iterable[RequestRecord], usage: Iterable[ElementUsage]) -> tuple[str, dict[str, str]]:
    """One run's scalars in RSPLIB's format; also returns object name -> PU/element name.

    The message counts come from the records here, keep-alives estimated (one each way every
    KeepAliveTransmissionInterval of processing); ``ResultsWriter.set_pu_counters`` gives the
    PUs' real counters instead where the producer has them (emulated runs).
    """
    pus: dict[str, _PUScalars] = {}
    for r in requests:
        _tally(pus, r)
    return _sca_from_tallies(run, pus, usage)


def _sca_from_tallies(
    run: int, pus: dict[str, _PUScalars], usage: Iterable[ElementUsage]
) -> tuple[str, dict[str, str]]:
    lines = [f'run {run} "scenario"']
    objects: dict[str, str] = {}
    for i, name in enumerate(sorted(pus, key=_natural)):
        p = pus[name]
        obj = _PU_OBJ.format(i)
        objects[obj] = name
        rows = [
            ("CalcAppPU Total Queuing Time", f"{p.queuing:.6f}"),
            ("CalcAppPU Total Startup Time", f"{p.startup:.6f}"),
            ("CalcAppPU Total Processing Time", f"{p.processing:.6f}"),
            ("CalcAppPU Total Handling Time", f"{p.handling:.6f}"),
            ("CalcAppPU Average Processing Speed",
             f"{(p.size_completed / p.processing) if p.processing > 0 else 0.0:.0f}"),
            ("CalcAppPU Average Handling Speed", f"{(p.size_completed / p.handling) if p.handling > 0 else 0.0:.0f}"),
            ("CalcAppPU Total Jobs Queued", str(p.queued)),
            ("CalcAppPU Total Jobs Started", str(p.started)),
            ("CalcAppPU Total Jobs Completed", str(p.completed)),
            ("CalcAppPU Total Job Size Queued", f"{p.size_queued:.0f}"),
            ("CalcAppPU Total Job Size Started", f"{p.size_started:.0f}"),
            ("CalcAppPU Total Job Size Completed", f"{p.size_completed:.0f}"),
            ("CalcAppPU Total CalcAppRequests", str(p.requests)),
            ("CalcAppPU Total CalcAppAccepts", str(p.accepts)),
            ("CalcAppPU Total CalcAppRejects", str(p.rejects)),
            ("CalcAppPU Total CalcAppCompletes", str(p.completed)),
            ("CalcAppPU Total CalcAppKeepAlives", str(p.keepalives)),
            ("CalcAppPU Total CalcAppKeepAliveAcks", str(p.keepalive_acks)),
        ]
        for scalar_name, value in rows:
            _scalar(lines, obj, scalar_name, value)
    for j, u in enumerate(sorted(usage, key=lambda u: _natural(u.element))):
        obj = _PE_OBJ.format(j)
        objects[obj] = u.element
        avail = u.capacity * u.duration_s
        rows = [
            ("CalcAppPE Service Uptime", f"{u.duration_s:.6f}"),
            ("CalcAppPE Service Capacity", f"{u.capacity:.0f}"),
            ("CalcAppPE Service Max Jobs", str(u.max_requests)),
            ("CalcAppPE Total Used Capacity", f"{u.used_calculations:.0f}"),
            ("CalcAppPE Total Wasted Capacity", f"{max(0.0, avail - u.used_calculations):.0f}"),
            ("CalcAppPE Total Jobs Accepted", str(u.accepted)),
            ("CalcAppPE Total Jobs Rejected", str(u.rejected)),
            ("CalcAppPE Utilization", f"{u.utilisation:.6f}"),
        ]
        for scalar_name, value in rows:
            _scalar(lines, obj, scalar_name, value)
    return "\n".join(lines) + "\n", objects


def parse_sca(text: str) -> dict[tuple[str, str], float]:
    """(object, scalar name) -> value, for tests and comparisons."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = re.match(r'scalar\s+"([^"]*)"\s+"([^"]*)"\s+(\S+)', line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


# --------------------------------------------------------------------------- writer / reader


def _make_run_dir(base: Path, name: str) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1, 10_000):
        path = base / (f"{stamp}-{safe}" if i == 1 else f"{stamp}-{safe}-{i}")
        try:
            path.mkdir()  # atomic: two writers starting in the same second get different dirs
            return path
        except FileExistsError:
            continue
    raise ResultsError(f"cannot create a results directory under {base}")


class ResultsWriter:
    """Writes one results directory; rows stream to disk, ``finish()`` adds summary and scalars."""

    def __init__(self, base_dir: Path, name: str, manifest: dict[str, Any]) -> None:
        self.path: Path = _make_run_dir(Path(base_dir), name)
        self.manifest = dict(manifest)
        self._agg = _Aggregator()
        self._req_fh = open(self.path / "requests.csv", "w", newline="")  # noqa: SIM115 - closed in finish()
        self._req = csv.writer(self._req_fh)
        self._req.writerow(REQUEST_FIELDS)
        self._usage: list[ElementUsage] = []
        self._events: list[EventRecord] = []
        self._samples: list[UsageSample] = []
        self._pu_counters: dict[tuple[int, int], Mapping[str, Mapping[str, int]]] = {}
        # per-run, per-PU tallies for the .sca files: small even when the records are millions
        self._tallies: dict[tuple[int, int], dict[str, _PUScalars]] = defaultdict(dict)
        self._finished = False

    def add_requests(self, records: Iterable[RequestRecord]) -> None:
        writerow = self._req.writerow
        add = self._agg.add_request
        tallies = self._tallies
        for r in records:
            writerow(_request_row(r))
            add(r)
            _tally(tallies[(r.setting, r.run)], r)

    def add_usage(self, records: Iterable[ElementUsage]) -> None:
        for u in records:
            self._usage.append(u)
            self._agg.add_usage(u)

    def add_events(self, records: Iterable[EventRecord]) -> None:
        self._events.extend(records)

    def add_usage_samples(self, samples: Iterable[UsageSample]) -> None:
        self._samples.extend(samples)

    def set_pu_counters(self, setting: int, run: int, counters: Mapping[str, Mapping[str, int]]) -> None:
        """Each PU's own message counters for one run (name -> requests/accepts/rejects/keepalives/...)."""
        self._pu_counters[(setting, run)] = counters

    def add_file(self, src: Path, subdir: str = "pcaps") -> None:
        dest = self.path / subdir
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / Path(src).name)

    def finish(self, extra_summary: dict[str, Any] | None = None) -> Path:
        if self._finished:
            return self.path
        self._finished = True
        self._req_fh.close()
        # elements.csv always (in arrival order); the optional files only when there is something
        for name, fields, rows, row_of in (
            ("elements.csv", USAGE_FIELDS, self._usage, _usage_row),
            ("events.csv", EVENT_FIELDS, sorted(self._events, key=lambda r: (r.setting, r.run, r.t)), _event_row),
            ("elements_timeline.csv", SAMPLE_FIELDS, sorted(self._samples, key=lambda r: (r.setting, r.run, r.t)),
             _sample_row),
        ):
            if rows or name == "elements.csv":
                with open(self.path / name, "w", newline="") as fh:
                    w = csv.writer(fh)
                    w.writerow(fields)
                    w.writerows(row_of(r) for r in rows)
        self.manifest.setdefault("format", FORMAT_VERSION)
        self.manifest.setdefault("finished_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        _write_json(self.path / "manifest.json", self.manifest)
        summary = self._agg.summary(self.manifest)
        summary["sca_objects"] = self._write_sca()
        if extra_summary:
            summary.update(extra_summary)
        _write_json(self.path / "summary.json", summary)
        return self.path

    def _write_sca(self) -> dict[str, dict[str, str]]:
        usage_by_run: dict[tuple[int, int], list[ElementUsage]] = defaultdict(list)
        for u in self._usage:
            usage_by_run[(u.setting, u.run)].append(u)
        keys = sorted(set(self._tallies) | set(usage_by_run))
        if not keys:
            return {}
        sca_dir = self.path / "sca"
        sca_dir.mkdir(exist_ok=True)
        objects: dict[str, dict[str, str]] = {}
        for setting, run in keys:
            tallies = self._tallies.get((setting, run), {})
            _apply_counters(tallies, self._pu_counters.get((setting, run), {}))
            text, objs = _sca_from_tallies(run, tallies, usage_by_run.get((setting, run), []))
            fname = f"{setting}pus-run{run}.sca"
            (sca_dir / fname).write_text(text)
            objects[fname] = objs
        return objects


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


@dataclass
class Results:
    """A results directory read back."""

    path: Path
    manifest: dict[str, Any]
    summary: dict[str, Any]
    requests: list[RequestRecord]
    usage: list[ElementUsage]

    @property
    def settings(self) -> list[int]:
        return sorted(int(k) for k in self.summary.get("settings", {}))

    def setting(self, pus: int) -> dict[str, Any]:
        return self.summary["settings"][str(pus)]

    @property
    def label(self) -> str:
        return str(self.manifest.get("label") or self.manifest.get("kind") or self.path.name)


def iter_requests(path: Path) -> Iterable[RequestRecord]:
    with open(Path(path) / "requests.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            yield _request_from_row(row)


def _load_optional_csv(path: Path, name: str, row_to: Any) -> list[Any]:
    f = Path(path) / name
    if not f.is_file():
        return []
    with open(f, newline="") as fh:
        return [row_to(row) for row in csv.DictReader(fh)]


def load_events(path: Path) -> list[EventRecord]:
    """A results directory's events.csv ([] when the runs had no faults)."""
    return _load_optional_csv(path, "events.csv", _event_from_row)


def load_usage_samples(path: Path) -> list[UsageSample]:
    """A results directory's elements_timeline.csv ([] when the producer sampled nothing)."""
    return _load_optional_csv(path, "elements_timeline.csv", _sample_from_row)


def load_results(path: Path, *, with_requests: bool = True) -> Results:
    """Read a results directory (``with_requests=False`` skips the possibly huge requests.csv)."""
    path = Path(path)
    if not path.is_dir():
        raise ResultsError(f"{path}: no such results directory")
    for name in ("manifest.json", "summary.json", "elements.csv", "requests.csv"):
        if not (path / name).is_file():
            raise ResultsError(f"{path}: not a results directory (no {name})")
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        summary = json.loads((path / "summary.json").read_text())
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: bad JSON: {exc}") from None
    with open(path / "elements.csv", newline="") as fh:
        usage = [_usage_from_row(row) for row in csv.DictReader(fh)]
    requests = list(iter_requests(path)) if with_requests else []
    return Results(path=path, manifest=manifest, summary=summary, requests=requests, usage=usage)

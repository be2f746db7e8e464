"""RSPLIB-style OMNeT++ scalar files (``sca/<PUs>pus-run<N>.sca``), with exactly the scalar names
RSPLIB's ``calcappclient`` and ``rspserver -calcapp`` write, and a reader for tests and comparisons.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from emulab.results.records import ElementUsage, RequestRecord

_PU_OBJ = "scenario.calcapppooluser[{}]"
_PE_OBJ = "scenario.calcapppoolelement[{}]"


def _natural(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _scalar(lines: list[str], obj: str, name: str, value: str) -> None:
    lines.append(f'scalar "{obj}" "{name}" {value}')


@dataclass
class PUScalars:
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


def keepalive_interval() -> float:
    """calcappclient's KeepAliveTransmissionInterval (imported when needed: rserpool's CalcApp module
    is slow to import, and the command line imports this package)."""
    from rserpool.services.calcapp import KEEPALIVE_INTERVAL

    return KEEPALIVE_INTERVAL


def tally(pus: dict[str, PUScalars], r: RequestRecord, keepalive_s: float) -> None:
    p = pus.get(r.pu)
    if p is None:
        p = pus[r.pu] = PUScalars()
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
        p.keepalives += int(proc // keepalive_s)
        p.keepalive_acks += int(proc // keepalive_s)


def apply_counters(pus: dict[str, PUScalars], counters: Mapping[str, Mapping[str, int]]) -> None:
    """The PUs' own message counters replace what the records can only estimate."""
    for name, c in counters.items():
        p = pus.setdefault(name, PUScalars())
        p.requests, p.accepts, p.rejects = c.get("requests", p.requests), c.get("accepts", p.accepts), \
            c.get("rejects", p.rejects)
        p.keepalives, p.keepalive_acks = c.get("keepalives", p.keepalives), c.get("keepalive_acks", p.keepalive_acks)


def sca_text(run: int, requests: Iterable[RequestRecord], usage: Iterable[ElementUsage]) -> tuple[str, dict[str, str]]:
    """One run's scalars in RSPLIB's format; also returns object name -> PU/element name.

    The message counts come from the records here, keep-alives estimated (one each way every
    KeepAliveTransmissionInterval of processing); ``ResultsWriter.set_pu_counters`` gives the
    PUs' real counters instead where the producer has them (emulated runs).
    """
    pus: dict[str, PUScalars] = {}
    keepalive_s = keepalive_interval()
    for r in requests:
        tally(pus, r, keepalive_s)
    return sca_from_tallies(run, pus, usage)


def sca_from_tallies(
    run: int, pus: dict[str, PUScalars], usage: Iterable[ElementUsage]
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

"""From a topology and the processes' output to emulab.results' records, for every emulated sweep.

``pool_elements`` lists the topology's CalcApp PEs with the scenario's per-class values applied;
``read_pu_output`` reads what ``rserpool calcapp-pu -o`` wrote (one JSON line per request, then a
summary line); ``to_records`` and ``request_events`` turn those lines into ``RequestRecord`` and
``EventRecord`` rows, naming elements by node (the PUs record the element's address).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulab.errors import EmulabError
from emulab.results import ElementUsage, EventRecord, RequestRecord, UsageSample
from emulab.scenario import Scenario


class ExperimentError(EmulabError):
    """The experiment cannot run (not root, a testbed already running, a service failed …)."""


@dataclass(frozen=True)
class Element:
    """One pool element of the sweep: its node, class (ue/mec/pmc) and `rserpool pe` options."""

    node: str
    element_class: str
    options: dict[str, Any]


@dataclass
class RunOutput:
    """What one run leaves for the results directory (``after_run`` may add to it)."""

    requests: list[RequestRecord]
    usage: list[ElementUsage]
    events: list[EventRecord]
    samples: list[UsageSample]
    summary: dict[str, Any]  # the pool users' summary line (counters, t0_epoch, elapsed)
    pcaps: list[Path] = field(default_factory=list)
    """The run's captures (``pcaps/`` of the results directory)."""
    notes: list[str] = field(default_factory=list)
    """What the run added to the manifest's notes."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """The experiment's per-run metrics (``after_run`` computes them, ``collect`` folds them in)."""


def pool_elements(spec: Any, scenario: Scenario) -> list[Element]:
    """The topology's CalcApp PEs with the scenario's per-class values applied."""
    from emulab.sim.model import element_class

    out = []
    for name, node in spec.nodes.items():
        for svc in node.services:
            if svc.kind != "pe":
                continue
            cls = element_class(node.role, node.site, name)
            opts = dict(svc.options)
            opts["application"] = "calcapp"
            opts["capacity"] = scenario.capacity.get(cls, opts.get("capacity", 1e6))
            opts["max_requests"] = scenario.max_requests
            opts["policy"] = scenario.policy
            if cls in scenario.increments:
                opts["load_increment"] = scenario.increments[cls]
            out.append(Element(name, cls, opts))
    if not out:
        raise ExperimentError(f"{spec.name}: no pool elements (services of kind pe)")
    return out


def address_map(spec: Any) -> dict[str, str]:
    """Every interface address -> its node (PUs record the element's address)."""
    return {str(a.ip): name for name in spec.nodes for a in spec.addresses(name)}


def to_records(lines: list[dict[str, Any]], setting: int, run: int, addrs: dict[str, str],
               classes: dict[str, str]) -> list[RequestRecord]:
    """The pool users' request lines as requests.csv rows."""
    out = []
    for d in lines:
        elem = addrs.get(d["element"], d["element"]) if d.get("element") else None
        out.append(RequestRecord(
            setting=setting, run=run, pu=d["pu"], request_id=int(d["request_id"]), size=float(d["size"]),
            queued_at=d["queued_at"], started_at=d["started_at"], accepted_at=d["accepted_at"],
            completed_at=d["completed_at"], element=elem, element_class=classes.get(elem) if elem else None,
            rejected_by=tuple(addrs.get(x, x) for x in d.get("rejected_by", ())), failovers=int(d.get("failovers", 0)),
            status=d["status"], restarts=len(d.get("restarts", ()))))
    return out


def request_events(lines: list[dict[str, Any]], setting: int, run: int, addrs: dict[str, str],
                   classes: dict[str, str]) -> list[EventRecord]:
    """Every Accept (first and after fail-overs), every restart from scratch (the element it left)
    and every completion, on the PUs' clock."""
    out = []
    for d in lines:
        for t, host in d.get("accepts", ()):
            elem = addrs.get(host, host)
            out.append(EventRecord(setting, run, float(t), "accept", d["pu"], int(d["request_id"]), elem,
                                   classes.get(elem)))
        for t, _why, host, _done in d.get("restarts", ()):
            left = addrs.get(host, host) if host else None
            out.append(EventRecord(setting, run, float(t), "restart", d["pu"], int(d["request_id"]), left,
                                   classes.get(left) if left else None))
        if d.get("status") == "completed" and d.get("completed_at") is not None:
            elem = addrs.get(d["element"], d["element"]) if d.get("element") else None
            out.append(EventRecord(setting, run, float(d["completed_at"]), "complete", d["pu"],
                                   int(d["request_id"]), elem, classes.get(elem) if elem else None))
    return out


def read_pu_output(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The request lines and the summary line ``rserpool calcapp-pu -o`` wrote (none if it wrote nothing)."""
    records, summary = [], {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                if "summary" in d:
                    summary = d["summary"]
                else:
                    records.append(d)
    return records, summary


def element_usage(stats: dict[str, Any], element: Element, setting: int, run: int, duration: float,
                  t0_epoch: float | None) -> tuple[ElementUsage, list[UsageSample]]:
    """A PE's statistics file (written on SIGTERM): its totals, and its used capacity over time on
    the PUs' clock (``t0_epoch``: when the PUs' clock started; None: no samples)."""
    usage = ElementUsage(
        setting=setting, run=run, element=element.node, element_class=element.element_class,
        capacity=float(element.options["capacity"]), duration_s=duration,
        used_calculations=float(stats.get("used_calculations", 0.0)),
        max_requests=int(element.options["max_requests"]),
        accepted=int(stats.get("accepted", 0)), rejected=int(stats.get("rejected", 0)))
    samples = [] if t0_epoch is None else [
        UsageSample(setting, run, round(t - t0_epoch, 3), element.node, element.element_class, float(used), int(jobs))
        for t, used, jobs in stats.get("series", ())]
    return usage, samples

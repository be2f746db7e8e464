"""summary.json's statistics: per PU setting, the papers' figures and Table 1 from the records.

``summarize`` computes them from records in memory; ``ResultsWriter`` feeds the same ``Aggregator``
row by row, so a run with millions of requests does not hold millions of objects.
"""

from __future__ import annotations

import math
from array import array
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emulab.results.records import CLASSES, FORMAT_VERSION, ElementUsage, RequestRecord

if TYPE_CHECKING:
    import numpy as np


def stats(values: Iterable[float] | np.ndarray) -> dict[str, float | int | None]:
    """mean, min, max, 10 % and 90 % quantiles (linear interpolation) and the count."""
    import numpy as np  # here, not atop: the CLI imports the results package, numpy costs 0.1 s

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
    # restarts from scratch after an Accept; None once a record did not say (the simulator's)
    restarted: int | None = 0
    restarts: int | None = 0
    completed_size: float = 0.0
    usage: list[ElementUsage] = field(default_factory=list)


class Aggregator:
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
        if r.restarts is None or s.restarts is None:
            s.restarted = s.restarts = None
        else:
            s.restarted = (s.restarted or 0) + (r.restarts > 0)
            s.restarts += r.restarts
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
            s.completed_size += r.size
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
        # the work thrown away over the whole sweep (per setting under "counts"); null if not known
        counts = [st["counts"] for st in out["settings"].values()]
        restarted = [c["restarted"] for c in counts]
        discarded = [c["calculations_discarded"] for c in counts]
        out["requests_restarted"] = None if None in restarted else sum(restarted)
        out["calculations_discarded"] = None if None in discarded else sum(discarded)
        return out

    @staticmethod
    def _setting_summary(setting: int, s: _Setting, size_mean: Any, interval_mean: Any) -> dict[str, Any]:
        import numpy as np

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
        # Work done that is in no result: every calculation of a completed request was done by some
        # element, so the rest was thrown away (restarts from scratch, work after a job's last cookie,
        # a cut-off element finishing a job its PU had given up). Known only when every request
        # completed: the work of requests still running at the end is not told apart.
        discarded = (round(total_used - s.completed_size, 1)
                     if s.issued and s.completed == s.issued and s.usage else None)
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
                "restarted": s.restarted, "restarts": s.restarts, "calculations_discarded": discarded,
            },
        }


def summarize(
    requests: Iterable[RequestRecord],
    usage: Iterable[ElementUsage],
    manifest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What summary.json holds (``manifest["scenario"]`` supplies size/interval means for the offered load)."""
    agg = Aggregator()
    for r in requests:
        agg.add_request(r)
    for u in usage:
        agg.add_usage(u)
    return agg.summary(manifest)

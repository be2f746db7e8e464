"""Writing and reading a results directory: the CSV rows, ``ResultsWriter`` and ``load_results``."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulab.results.records import (
    EVENT_FIELDS,
    EVENTS,
    FORMAT_VERSION,
    REQUEST_FIELDS,
    SAMPLE_FIELDS,
    USAGE_FIELDS,
    ElementUsage,
    EventRecord,
    RequestRecord,
    ResultsError,
    UsageSample,
)
from emulab.results.sca import PUScalars, apply_counters, keepalive_interval, sca_from_tallies, tally
from emulab.results.summary import Aggregator

# --------------------------------------------------------------------------- CSV rows


def _f(v: float | None) -> str:
    # repr round-trips a float exactly, so load_results gives back the very same numbers
    return "" if v is None else repr(float(v))


def _request_row(r: RequestRecord) -> list[Any]:
    return [
        r.setting, r.run, r.pu, r.request_id, _f(r.size), _f(r.queued_at), _f(r.started_at),
        _f(r.accepted_at), _f(r.completed_at), r.element or "", r.element_class or "",
        ";".join(r.rejected_by), r.failovers, r.status, "" if r.restarts is None else r.restarts,
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
        status=row["status"], restarts=int(row["restarts"]) if row.get("restarts") else None,
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
        self._agg = Aggregator()
        self._req_fh = open(self.path / "requests.csv", "w", newline="")  # noqa: SIM115 - closed in finish()
        self._req = csv.writer(self._req_fh)
        self._req.writerow(REQUEST_FIELDS)
        self._usage: list[ElementUsage] = []
        self._events: list[EventRecord] = []
        self._samples: list[UsageSample] = []
        self._pu_counters: dict[tuple[int, int], Mapping[str, Mapping[str, int]]] = {}
        # per-run, per-PU tallies for the .sca files: small even when the records are millions
        self._tallies: dict[tuple[int, int], dict[str, PUScalars]] = defaultdict(dict)
        self._finished = False

    @property
    def finished(self) -> bool:
        """``finish()`` has written the directory (a producer that failed half-way finishes it as aborted)."""
        return self._finished

    def add_requests(self, records: Iterable[RequestRecord]) -> None:
        writerow = self._req.writerow
        add = self._agg.add_request
        tallies = self._tallies
        keepalive_s = keepalive_interval()
        for r in records:
            writerow(_request_row(r))
            add(r)
            tally(tallies[(r.setting, r.run)], r, keepalive_s)

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

    def mark_partial(self, missing: Mapping[tuple[int, int], str]) -> None:
        """Some (setting, run)s never finished (``missing``: why each): manifest.json and summary.json
        say ``partial`` and list them, so a partial directory is never taken for a complete one."""
        self.manifest["partial"] = True
        self.manifest["missing_runs"] = [{"setting": s, "run": r, "reason": why}
                                         for (s, r), why in sorted(missing.items())]

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
        if self.manifest.get("partial"):
            summary["partial"] = True
            summary["missing_runs"] = self.manifest["missing_runs"]
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
            apply_counters(tallies, self._pu_counters.get((setting, run), {}))
            text, objs = sca_from_tallies(run, tallies, usage_by_run.get((setting, run), []))
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

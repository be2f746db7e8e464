"""A simulated sweep: every (PU setting, run) as an independent task, in parallel processes.

Each task seeds its own random streams from (seed, setting, run, PU), so the results do not depend
on how many processes ran them or in which order. Results go through ``emulab.results``'s writer, so
``emulab plot`` draws a simulated sweep exactly like an emulated one, the elements' used capacity
over time (``elements_timeline.csv``, sampled each second as the emulated PEs do) included, for
pools of up to ``SAMPLED_ELEMENTS_MAX`` elements.

With a coverage loss the results are those of `emulab experiment coverage-loss`: the runs drain
(``COVERAGE_DRAIN_S``, that command's default), events.csv has every Accept, completion and coverage
change, and summary.json the same fail-over keys (the experiment's ``coverage_metrics`` /
``coverage_summary``, ``emulab.experiments.coverage``), with the simulator's timers under ``timers``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from emulab.experiments.coverage import DRAIN_S as COVERAGE_DRAIN_S
from emulab.experiments.coverage import coverage_metrics, coverage_summary
from emulab.results import (
    ElementUsage,
    EventRecord,
    IncompleteSweep,
    RequestRecord,
    ResultsWriter,
    UsageSample,
)
from emulab.scenario import Scenario
from emulab.sim.engine import STATUS_NAMES, CoverageLoss, Failure, RunParams, RunResult, simulate_run
from emulab.sim.model import PoolModel, build_model
from rserpool.services.calcapp import SAMPLE_INTERVAL

SAMPLED_ELEMENTS_MAX = 64
"""Pools with more elements are not sampled over time: a heat map of hundreds of rows says
nothing, and 1,000 elements × 3,600 s would be 3.6 million rows per run."""

_MODEL: PoolModel | None = None


@dataclass
class Executed:
    """What running a sweep's tasks gave: the results of those that finished (in task order), the
    (setting, run)s that did not with why (only on a cluster), and where they ran (for the manifest)."""

    results: list[RunResult]
    missing: dict[tuple[int, int], str] = field(default_factory=dict)
    placement: dict[str, Any] = field(default_factory=dict)


Execute = Callable[[PoolModel, list[RunParams], Callable[[RunResult], None] | None], Executed]
"""Runs a sweep's tasks (``run_tasks`` here, ``emulab.cluster`` on a Dask cluster), calling back as each ends."""


def _init_worker(model: PoolModel) -> None:
    global _MODEL
    _MODEL = model


def _work(params: RunParams) -> RunResult:
    assert _MODEL is not None
    return simulate_run(_MODEL, params)


def make_tasks(
    scenario: Scenario,
    failures: Iterable[Failure] = (),
    coverage_losses: Iterable[CoverageLoss] = (),
    **model_params: Any,
) -> list[RunParams]:
    """One RunParams per (setting, run); runs are numbered from 1 like RSPLIB's ``run 1``."""
    fs, cs = tuple(failures), tuple(coverage_losses)
    return [
        RunParams(
            setting=n, run=k, duration=scenario.duration, seed=scenario.seed,
            size_mean=scenario.size_mean, size_dist=scenario.size_dist,
            interval_mean=scenario.interval_mean, interval_dist=scenario.interval_dist,
            failures=fs, coverage_losses=cs, **model_params,
        )
        for n in scenario.pus
        for k in range(1, scenario.runs + 1)
    ]


def run_tasks(
    model: PoolModel,
    tasks: list[RunParams],
    jobs: int = 1,
    on_done: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Run the tasks (``jobs`` processes; 1 = in this process); results in task order."""
    results: dict[tuple[int, int], RunResult] = {}
    jobs = max(1, min(jobs, len(tasks)))
    if jobs == 1:
        for t in tasks:
            res = simulate_run(model, t)
            results[(t.setting, t.run)] = res
            if on_done:
                on_done(res)
    else:
        # biggest first so the two cores finish together; fork keeps start-up cheap on Linux
        order = sorted(tasks, key=lambda t: -t.setting)
        method = "fork" if "fork" in mp.get_all_start_methods() else None
        ctx = mp.get_context(method)
        with ctx.Pool(jobs, initializer=_init_worker, initargs=(model,)) as pool:
            for res in pool.imap_unordered(_work, order, chunksize=1):
                results[(res.setting, res.run)] = res
                if on_done:
                    on_done(res)
    return [results[(t.setting, t.run)] for t in tasks]


def request_records(model: PoolModel, res: RunResult) -> Iterator[RequestRecord]:
    names = [e.name for e in model.elements]
    classes = [e.element_class for e in model.elements]
    for rid, (pu, size, q, s, a, c, el, rej, fo, status) in enumerate(res.requests, start=1):
        yield RequestRecord(
            setting=res.setting, run=res.run, pu=f"pu{pu + 1}", request_id=rid, size=size,
            queued_at=q, started_at=s, accepted_at=a, completed_at=c,
            element=names[el] if el >= 0 else None, element_class=classes[el] if el >= 0 else None,
            rejected_by=tuple(names[x] for x in rej), failovers=fo, status=STATUS_NAMES[status],
        )


def event_records(model: PoolModel, res: RunResult, losses: Iterable[CoverageLoss] = ()) -> list[EventRecord]:
    """A run's events.csv rows: every Accept (first and after fail-overs), every completion and the
    coverage changes, named as ``request_records`` names the PUs and requests."""
    names = [e.name for e in model.elements]
    classes = [e.element_class for e in model.elements]
    st, rn = res.setting, res.run
    out: list[EventRecord] = []
    for r, (pu, _size, _q, _s, a, c, el, _rej, _fo, _status) in enumerate(res.requests):
        pu_name, rid = f"pu{pu + 1}", r + 1
        accepts = res.accepts.get(r)
        if accepts is None:  # without faults: at most one Accept, at the request's element
            accepts = [(a, el)] if a is not None else []
        for t, e in accepts:
            out.append(EventRecord(st, rn, t, "accept", pu_name, rid, names[e], classes[e]))
        if c is not None:
            out.append(EventRecord(st, rn, c, "complete", pu_name, rid, names[el], classes[el]))
    for cl in losses:
        out.append(EventRecord(st, rn, cl.at, "coverage_lost"))
        out.append(EventRecord(st, rn, cl.at + cl.duration, "coverage_restored"))
    return out


def coverage_run(events: list[EventRecord], requests: list[RequestRecord], setting: int, run: int,
                 losses: tuple[CoverageLoss, ...]) -> dict[str, Any]:
    """One run's ``coverage_runs`` entry: the experiment's metrics for the (first) loss; with more
    than one loss, each loss's fail-over and recovery times under ``losses``."""
    per = [coverage_metrics(events, requests, c.at, c.at + c.duration) for c in losses]
    entry: dict[str, Any] = {"setting": setting, "run": run, **per[0]}
    if len(per) > 1:
        entry["losses"] = [{k: m[k] for k in ("lost_at_s", "restored_at_s", "failover_s", "recovery_s")}
                           for m in per]
    return entry


def sim_timers(p: RunParams, model: PoolModel) -> dict[str, Any]:
    """The timers that bound a simulated fail-over and recovery (as the experiment's ``timers``)."""
    return {
        "radio": model.radio.to_dict(),
        "rlf_s": model.radio.rlf_s,
        "calcapp_keepalive_interval_s": p.keepalive_interval_s,
        "calcapp_keepalive_timeout_s": p.keepalive_timeout_s,
        "pu_connect_timeout_s": p.connect_timeout_s,
        "pu_watch_routes": p.watch_routes,
        "pu_retry_delay_s": p.reject_retry_s,
        "registrar_max_bad_pe_reports": p.max_bad_reports,
        "registrar_partition_detect_s": p.partition_detect_s,
        "enrp_resync_max_s": p.resync_max_s,
    }


def usage_records(model: PoolModel, res: RunResult) -> list[ElementUsage]:
    return [
        ElementUsage(
            setting=res.setting, run=res.run, element=e.name, element_class=e.element_class,
            capacity=e.capacity, duration_s=res.duration, used_calculations=used,
            max_requests=e.max_requests, accepted=acc, rejected=rej,
        )
        for e, (used, acc, rej) in zip(model.elements, res.usage, strict=True)
    ]


def sample_interval(model: PoolModel) -> float:
    """The emulated PEs' sampling period (``calcapp.SAMPLE_INTERVAL``); 0 (none) for large pools."""
    return SAMPLE_INTERVAL if len(model.elements) <= SAMPLED_ELEMENTS_MAX else 0.0


def sample_records(model: PoolModel, res: RunResult) -> list[UsageSample]:
    """A run's elements_timeline.csv rows, as the emulated PEs' samples."""
    els = model.elements
    return [
        UsageSample(res.setting, res.run, round(t, 3), els[e].name, els[e].element_class, used, jobs)
        for t, e, used, jobs in res.samples
    ]


def simulate(
    scenario: Scenario,
    failures: Iterable[Failure] = (),
    coverage_losses: Iterable[CoverageLoss] = (),
    *,
    progress: bool = True,
    name: str | None = None,
    model_params: dict[str, Any] | None = None,
    drain: float | None = None,
    execute: Execute | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Simulate the sweep and write a results directory; returns its path and the timing figures.

    ``drain``: seconds after the run for queued requests to finish (None: ``COVERAGE_DRAIN_S`` with
    a coverage loss, as `emulab experiment coverage-loss`, else none, as `emulab experiment paper`).
    ``execute``: what runs the tasks (default: ``run_tasks`` in ``scenario.jobs`` processes). When
    some never finished, the directory is written marked partial and ``IncompleteSweep`` is raised.
    """
    if execute is None:
        def execute(m: PoolModel, ts: list[RunParams], cb: Callable[[RunResult], None] | None) -> Executed:
            return Executed(run_tasks(m, ts, scenario.jobs, on_done=cb))

    model = build_model(scenario)
    fs, cs = tuple(failures), tuple(coverage_losses)
    params = dict(model_params or {})
    params.setdefault("drain_s", drain if drain is not None else (COVERAGE_DRAIN_S if cs else 0.0))
    params.setdefault("sample_interval_s", sample_interval(model))
    tasks = make_tasks(scenario, fs, cs, **params)
    t0 = time.perf_counter()
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True,
        ) as bar:
            tid = bar.add_task("runs", total=len(tasks))
            done = execute(model, tasks, lambda _r: bar.advance(tid))
    else:
        done = execute(model, tasks, None)
    results = done.results
    wall = time.perf_counter() - t0
    events = sum(r.events for r in results)
    sim_seconds = sum(r.duration for r in results)
    timing = {
        "wall_s": wall,
        "events": events,
        "events_per_s": events / wall if wall > 0 else None,
        "simulated_s": sim_seconds,
        "realtime_ratio": sim_seconds / wall if wall > 0 else None,
        "jobs": scenario.jobs,
        "cpu_s_per_run": [r.wall_s for r in results],
    }
    manifest = {
        "kind": "simulation",
        "label": "simulated",
        "tool": "emulab simulate",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "scenario": scenario.to_dict(),
        "model": model.to_dict(),
        "run_params": {k: v for k, v in asdict(replace(tasks[0], setting=0, run=0)).items()
                       if k not in ("setting", "run")},
        "faults": {
            "failures": [asdict(f) for f in fs],
            "coverage_losses": [asdict(c) for c in cs],
        },
        "drain_s": tasks[0].drain_s,
    }
    if cs:  # as the experiment's manifest (which has one loss)
        manifest["coverage_loss"] = {"lose_at": cs[0].at, "restore_at": cs[0].at + cs[0].duration}
    manifest.update(done.placement)
    writer = ResultsWriter(scenario.out, name or f"sim-{Path(scenario.target).stem}", manifest)
    if done.missing:
        writer.mark_partial(done.missing)
    runs: list[dict[str, Any]] = []
    for res in results:
        if fs or cs:
            requests = list(request_records(model, res))
            events = event_records(model, res, cs)
            writer.add_requests(requests)
            writer.add_events(events)
            if cs:
                runs.append(coverage_run(events, requests, res.setting, res.run, cs))
        else:
            writer.add_requests(request_records(model, res))
        writer.add_usage(usage_records(model, res))
        writer.add_usage_samples(sample_records(model, res))
    extra: dict[str, Any] = {"simulator": {k: v for k, v in timing.items() if k != "cpu_s_per_run"}}
    if cs:
        extra.update(coverage_summary(runs), timers=sim_timers(tasks[0], model))
    path = writer.finish(extra)
    if done.missing:
        raise IncompleteSweep(path, done.missing, len(tasks))
    return path, timing


def parse_failure(text: str) -> Failure:
    """ELEMENT@T[+DUR], e.g. ``mec-pe1@100+30`` (back after 30 s) or ``mec-pe1@100`` (for good)."""
    name, sep, rest = text.partition("@")
    if not sep or not name:
        raise ValueError(f"--fail: expected ELEMENT@T[+DUR], got {text!r}")
    at, plus, dur = rest.partition("+")
    return Failure(name, float(at), float(dur) if plus else None)


def parse_coverage(text: str) -> CoverageLoss:
    """T+DUR, e.g. ``120+20``."""
    at, plus, dur = text.partition("+")
    if not plus:
        raise ValueError(f"--coverage-loss: expected T+DUR, got {text!r}")
    return CoverageLoss(float(at), float(dur))

"""`emulab experiment coverage-loss`: the paper run with the UE's radio coverage taken away and given back.

The UE loses coverage (``radio.detach()``) at ``--lose-at`` and gets it back at ``--restore-at``
seconds (counted from the start of the pool users' process, so a few tenths of a second before
their clock starts; the summary has the exact times on the PUs' clock), and every run drains so that
every request issued can finish. Its metrics, also what `emulab simulate --coverage-loss` writes
(``coverage_metrics`` / ``coverage_summary``): summary.json adds ``failover_s`` (coverage lost →
first Accept from a UE element), ``failover_job_s`` (per job cut off by the loss: its cut → its
first Accept after it; n, p50, p90, max), ``runs_without_failover``, ``recovery_s`` (coverage back →
first Accept from a MEC element), the request counts, ``coverage_runs`` (per run, with every cut-off
job: when it resumed and where) and ``timers`` (what bounds both times);
``events.csv`` has every Accept, completion and coverage change for the timeline plot
(``emulab.plots.fig_coverage_timelines``).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from emulab.cluster.options import cluster_options
from emulab.experiments.base import EmulatedSweep, RunContext, emulated_options
from emulab.experiments.records import ExperimentError, RunOutput
from emulab.results import CLASSES, EventRecord, RequestRecord
from emulab.scenario import Scenario, scenario_options
from radio import backend_names

if TYPE_CHECKING:  # not at run time: the simulator imports this module's metrics
    from emulab.cluster.options import ClusterRun
    from emulab.sim.engine import CoverageLoss

DRAIN_S = 60.0
"""``--drain``'s default; `emulab simulate --coverage-loss` drains as long, so both count lost
requests the same way."""


# --------------------------------------------------------------------------- metrics (summary.json)
# Shared with `emulab simulate --coverage-loss`, so that both put the same numbers, computed the
# same way, under the same keys of summary.json.


def distribution(values: Iterable[float]) -> dict[str, float | int | None]:
    """``{"n", "p50", "p90", "max"}`` of ``values`` (quantiles by linear interpolation; None when empty)."""
    import numpy as np

    a = np.asarray(list(values), dtype=float)
    if a.size == 0:
        return {"n": 0, "p50": None, "p90": None, "max": None}
    p50, p90 = np.quantile(a, [0.5, 0.9])
    return {"n": int(a.size), "p50": round(float(p50), 3), "p90": round(float(p90), 3), "max": round(float(a.max()), 3)}


def job_failovers(events: Iterable[EventRecord], requests: Iterable[RequestRecord], lost_at: float | None,
                  restored_at: float | None) -> list[dict[str, Any]]:
    """Every job the loss cut off, with when and where it resumed (its first Accept after the cut).

    A job counts when it was ``in_flight`` at the loss (its PU had started serving it and it had not
    completed) or ``started_during`` the loss (its PU began serving it while the UE had no coverage:
    issued during the loss, or waiting in the PU's queue until then). Its cut is the loss for the
    first, the start of its service for the second; ``failover_s`` = its first Accept at or after the
    cut − the cut. A job in flight on a UE element at the loss was not cut off (``from_class`` "ue",
    kept for the record, never counted as a fail-over); one with no Accept after the cut has
    ``resumed_at`` None (``completed`` says whether it still finished, e.g. its Complete was already
    on the way). ``rejections`` counts the rejects the request got (at any time): while cut off, a
    job the full UE element turns away waits for capacity (the PU retries every second), not for
    the fail-over itself.
    """
    if lost_at is None:
        return []
    end = restored_at if restored_at is not None else float("inf")
    accepts: dict[tuple[str | None, int | None], list[EventRecord]] = {}
    for e in events:
        if e.event == "accept":
            accepts.setdefault((e.pu, e.request_id), []).append(e)
    out = []
    for r in sorted(requests, key=lambda r: (r.started_at is None, r.started_at or 0.0, r.pu, r.request_id)):
        if r.started_at is None or r.started_at >= end:
            continue
        if r.completed_at is not None and r.completed_at < lost_at:
            continue
        mine = sorted(accepts.get((r.pu, r.request_id), []), key=lambda e: e.t)
        if r.started_at < lost_at:
            kind, cut = "in_flight", lost_at
            before = [e for e in mine if e.t < lost_at]
            src = before[-1] if before else None
        else:
            kind, cut, src = "started_during", r.started_at, None
        nxt = next((e for e in mine if e.t >= cut), None)
        out.append({
            "pu": r.pu, "request_id": r.request_id, "kind": kind, "cut_at": round(cut, 3),
            "from_element": src.element if src else None, "from_class": src.element_class if src else None,
            "resumed_at": None if nxt is None else round(nxt.t, 3),
            "failover_s": None if nxt is None else round(nxt.t - cut, 3),
            "element": nxt.element if nxt else None, "element_class": nxt.element_class if nxt else None,
            "completed": r.status == "completed", "rejections": len(r.rejected_by),
        })
    return out


def _failed_over(jobs: list[dict[str, Any]], failover_s: float | None, restored_at: float | None) -> str | None:
    """Why a run did not fail over (None: it did): a UE element accepted work during the loss, and every
    job in flight on a remote element (or in start-up) at the loss resumed on a UE element while cut
    off, or was turned away there (the UE element was full: it waited for capacity, which
    ``failover_job_s`` shows) and resumed later. A job that never resumed, or resumed only after
    coverage came back without being turned away, did not fail over."""
    if failover_s is None:
        return "no Accept by a UE element during the loss"
    end = restored_at if restored_at is not None else float("inf")

    def moved(j: dict[str, Any]) -> bool:
        if j["resumed_at"] is None:
            return bool(j["completed"])  # its Complete was already on the way
        return (j["element_class"] == "ue" and j["resumed_at"] < end) or j["rejections"] > 0

    stuck = [j for j in jobs if j["kind"] == "in_flight" and j["from_class"] != "ue" and not moved(j)]
    if stuck:
        return (f"{len(stuck)} job(s) in flight at the loss did not fail over to a UE element: "
                + ", ".join(f"{j['pu']}#{j['request_id']}" for j in stuck[:5]))
    return None


def coverage_metrics(events: Iterable[EventRecord], requests: Iterable[RequestRecord], lost_at: float | None,
                     restored_at: float | None) -> dict[str, Any]:
    """One coverage-loss run: fail-over and recovery times, and whether every request finished once.

    ``failover_s``: coverage lost → the first Accept by a UE element at or after it, of any request
    (one resumed or a new one); ``recovery_s``: coverage back → the first Accept by a MEC element
    after it (None when it never happened). ``failover_jobs`` (``job_failovers``) times every job
    the loss cut off, ``failover_job_s`` their distribution; ``failed_over`` says whether the run
    failed over (``failover_problem`` why not). ``requests_lost`` counts every request issued that did
    not complete (after the drain), ``requests_duplicated`` every request recorded more than once
    (both must be 0), ``requests_restarted`` those started again from scratch after an Accept.
    """
    events = list(events)
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
    failover_s = first_after(lost_at, "ue")
    jobs = job_failovers(events, reqs, lost_at, restored_at)
    counted = [j["failover_s"] for j in jobs if j["failover_s"] is not None and j["from_class"] != "ue"]
    problem = _failed_over(jobs, failover_s, restored_at)
    known = all(r.restarts is not None for r in reqs)
    return {
        "lost_at_s": None if lost_at is None else round(lost_at, 3),
        "restored_at_s": None if restored_at is None else round(restored_at, 3),
        "failover_s": failover_s,
        "recovery_s": first_after(restored_at, "mec"),
        "failed_over": problem is None,
        "failover_problem": problem,
        "failover_job_s": distribution(counted),
        "jobs_not_resumed": sum(1 for j in jobs if j["resumed_at"] is None and j["from_class"] != "ue"),
        "failover_jobs": jobs,
        "requests_issued": issued,
        "requests_completed": completed,
        "requests_lost": issued - completed,
        "requests_duplicated": len(keys) - issued,
        "requests_failed_over": sum(1 for r in reqs if r.failovers),
        "requests_restarted": sum(1 for r in reqs if r.restarts) if known else None,
        "accepts_during_loss": {cls: sum(1 for e in during if e.element_class == cls) for cls in CLASSES},
    }


def coverage_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json's coverage-loss keys over ``coverage_metrics`` of every run: the worst fail-over
    and recovery times (None if any run had none), the distribution of every cut-off job's fail-over
    time over all runs, the runs that did not fail over, the summed request counts, and the runs themselves."""

    def worst(key: str) -> float | None:
        vals = [r[key] for r in runs]
        return None if not vals or any(v is None for v in vals) else max(vals)

    jobs = [j for r in runs for j in r.get("failover_jobs", ()) if j["from_class"] != "ue"]
    return {
        "failover_s": worst("failover_s"),
        "failover_job_s": distribution(j["failover_s"] for j in jobs if j["failover_s"] is not None),
        "failover_job_in_flight_s": distribution(j["failover_s"] for j in jobs
                                                 if j["failover_s"] is not None and j["kind"] == "in_flight"),
        "failover_job_unrejected_s": distribution(j["failover_s"] for j in jobs
                                                  if j["failover_s"] is not None and not j["rejections"]),
        "jobs_not_resumed": sum(1 for j in jobs if j["resumed_at"] is None),
        "runs_without_failover": sum(1 for r in runs if not r.get("failed_over")),
        "recovery_s": worst("recovery_s"),
        **{k: sum(r[k] for r in runs) for k in ("requests_issued", "requests_completed", "requests_lost",
                                                 "requests_duplicated", "requests_failed_over")},
        "coverage_runs": runs,
    }


# --------------------------------------------------------------------------- the experiment


class CoverageLossExperiment(EmulatedSweep):
    """The paper run with one coverage loss per run (``coverage``: when and how long)."""

    name = "coverage-loss"
    results_prefix = "coverage-loss"
    poll_s = 0.05  # the loss and the restore are timed to this

    def __init__(self, scenario: Scenario, coverage: CoverageLoss, *, drain: float = DRAIN_S,
                 **kwargs: Any) -> None:
        super().__init__(scenario, drain=drain, **kwargs)
        self.coverage = coverage
        self.coverage_runs: list[dict[str, Any]] = []
        self._timers: dict[str, Any] | None = None

    def manifest_extra(self) -> dict[str, Any]:
        c = self.coverage
        return {"coverage_loss": {"lose_at": c.at, "restore_at": c.at + c.duration}}

    def during_run(self, ctx: RunContext, elapsed: float) -> None:
        """Take coverage away / give it back when the run's clock passes the scheduled times."""
        c = self.coverage
        # The loss and the restore count from the moment the radio's link change has been applied
        # (detach/attach return then): applying it takes a moment (a tc process: ~0.5 s in the
        # real-kernel lane's emulated CPU), and until then packets still cross the radio link.
        # The request time is kept too; the run's metrics report the difference.
        if "lose_requested" not in ctx.marks and elapsed >= c.at:
            ctx.marks["lose_requested"] = time.time()
            self.testbed.radio.detach()
            ctx.marks["lost"] = time.time()
            self.log(f"coverage lost at {elapsed:.1f} s")
            self.emit("coverage_lost", tag=ctx.tag, elapsed=elapsed)
        elif "lost" in ctx.marks and "restore_requested" not in ctx.marks and elapsed >= c.at + c.duration:
            ctx.marks["restore_requested"] = time.time()
            self.testbed.radio.attach()
            ctx.marks["restored"] = time.time()
            self.log(f"coverage restored at {elapsed:.1f} s")
            self.emit("coverage_restored", tag=ctx.tag, elapsed=elapsed)

    def end_run(self, ctx: RunContext) -> None:
        if "lose_requested" in ctx.marks and "restored" not in ctx.marks:
            with contextlib.suppress(Exception):  # the next run (or the teardown) finds the UE covered
                self.testbed.radio.attach()

    def after_run(self, ctx: RunContext, out: RunOutput) -> None:
        t0_epoch = float(out.summary.get("t0_epoch") or 0.0)
        lost_at = ctx.marks["lost"] - t0_epoch if "lost" in ctx.marks else None
        restored_at = ctx.marks["restored"] - t0_epoch if "restored" in ctx.marks else None
        for what, at in (("coverage_lost", lost_at), ("coverage_restored", restored_at)):
            if at is not None:
                out.events.append(EventRecord(ctx.setting, ctx.run, at, what))
        m = coverage_metrics(out.events, out.requests, lost_at, restored_at)
        # what the radio backend measured of the loss: its RLF and re-attach (OAI: the UE's radio link
        # monitor and the softmodem's new attach; the emulated radio: its model's timers)
        radio = self._radio_state()
        m["radio"] = {k: radio.get(k) for k in ("backend", "rlf_count", "last_rlf_at", "reattach_s", "ue_restarts")
                      if k in radio}
        # how long the radio took to apply the loss / the restore after they were requested
        m["radio"]["apply_s"] = {what: round(ctx.marks[done] - ctx.marks[asked], 4)
                                 for what, asked, done in (("lose", "lose_requested", "lost"),
                                                           ("restore", "restore_requested", "restored"))
                                 if done in ctx.marks}
        out.metrics["coverage"] = {"setting": ctx.setting, "run": ctx.run, **m}
        out.metrics["timers"] = self.timers(radio)  # what the run's testbed used (on a cluster: the worker's)
        jobs = m["failover_job_s"]
        self.log(f"{ctx.tag}: fail-over {m['failover_s']} s (per job: n {jobs['n']}, p50 {jobs['p50']} s, max "
                 f"{jobs['max']} s{'' if m['failed_over'] else '; ' + str(m['failover_problem'])}), recovery "
                 f"{m['recovery_s']} s, {m['requests_completed']}/{m['requests_issued']} requests completed, "
                 f"{m['requests_restarted']} restarted")

    def collect(self, ctx: RunContext, out: RunOutput) -> None:
        self.coverage_runs.append(out.metrics["coverage"])
        self._timers = out.metrics["timers"]

    def summarise(self) -> dict[str, Any]:
        """summary.json's coverage-loss keys: per run, and over all runs (worst times, summed counts)."""
        return {**coverage_summary(self.coverage_runs), "timers": self._timers or self.timers()}

    def _radio_state(self) -> dict[str, Any]:
        return self.testbed.radio.state() if self.testbed is not None and self.testbed.radio else {}

    def timers(self, radio: dict[str, Any] | None = None) -> dict[str, Any]:
        """The timers that bound fail-over and recovery, as this run used them (``radio``: the radio's
        state when the caller has just read it)."""
        from rserpool.pu import PUConfig
        from rserpool.registrar import RegistrarConfig
        from rserpool.services.calcapp import KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT

        if radio is None:
            radio = self._radio_state()
        reg = RegistrarConfig()
        return {
            "radio": radio.get("timers", {}),
            "calcapp_keepalive_interval_s": KEEPALIVE_INTERVAL,
            "calcapp_keepalive_timeout_s": KEEPALIVE_TIMEOUT,
            "pu_connect_timeout_s": PUConfig().connect_timeout,
            "pu_watch_routes": PUConfig().watch_routes,
            "registrar_max_bad_pe_reports": reg.max_bad_pe_reports,
            "enrp_peer_max_time_last_heard_s": reg.peer_max_time_last_heard,
        }


def run_coverage_loss(scenario: Scenario, lose_at: float, restore_at: float, *, drain: float = DRAIN_S,
                      pe_registrar: str = "auto", pcaps: bool = True, progress: bool = True,
                      radio: str | None = None, cluster: ClusterRun | None = None) -> Path:
    """The paper run with the UE out of coverage from ``lose_at`` to ``restore_at`` s (here, or with
    ``cluster`` each run on a worker's testbed); returns the results directory."""
    from emulab.sim.engine import CoverageLoss

    if not 0 <= lose_at < restore_at:
        raise ExperimentError(f"--lose-at ({lose_at:g}) must be >= 0 and before --restore-at ({restore_at:g})")
    if restore_at >= scenario.duration:
        raise ExperimentError(f"--restore-at ({restore_at:g}) must be before the end of the run "
                              f"(--duration {scenario.duration:g})")
    if drain < 0:
        raise ExperimentError(f"--drain must not be negative, got {drain:g}")
    make = functools.partial(CoverageLossExperiment, scenario, CoverageLoss(lose_at, restore_at - lose_at), drain=drain,
                             pe_registrar=pe_registrar, pcaps=pcaps, radio=radio)
    if cluster is not None:
        from emulab.cluster.sweeps import run_emulated_on_cluster

        return run_emulated_on_cluster(make, cluster, progress=progress)
    return make(progress=progress).run()


@click.command(name="coverage-loss")
@scenario_options(pus="8", runs=1, duration=90.0, quick=False)
@click.option("--lose-at", default=30.0, show_default=True, type=float,
              help="Take the UE's radio coverage away this many seconds into the run.")
@click.option("--restore-at", default=60.0, show_default=True, type=float,
              help="Give coverage back this many seconds into the run (before --duration).")
@click.option("--drain", default=DRAIN_S, show_default=True, type=float,
              help="After --duration, issue no new requests and wait up to this long for the queued ones.")
@click.option("--radio", type=click.Choice(backend_names()), default=None,
              help="The radio backend (default: the topology's); oai runs OpenAirInterface's RF simulator.")
@emulated_options
@cluster_options
def command(scenario: Scenario, lose_at: float, restore_at: float, drain: float, pe_registrar: str,
            pcaps: bool, radio: str | None, cluster: ClusterRun | None) -> None:
    """CalcApp pool users on the UE while the UE loses radio coverage and gets it back; prints the results path last.

    Work fails over to the UE's own pool element while the UE is cut off and returns to the MEC when
    coverage is back. summary.json gives failover_s (coverage lost -> first Accept from the UE
    element), failover_job_s (per cut-off job: cut -> its first Accept after it), recovery_s (coverage back -> first Accept from a MEC element) and the counts of
    requests issued, completed and lost; events.csv the timeline that `emulab plot` draws.
    """
    path = run_coverage_loss(scenario, lose_at, restore_at, drain=drain, pe_registrar=pe_registrar, pcaps=pcaps,
                             progress=sys.stderr.isatty(), radio=radio, cluster=cluster)
    click.echo(str(path))

"""`emulab experiment chaos`: the paper run while pool elements and registrars crash, links flap and the
UE loses coverage, by a seeded schedule — and the proof that no request is lost or done twice.

Every run draws its own schedule from its seed (``chaos_schedule``; the run's seed is the one its
pool users get, so a run is repeated by its seed): faults at exponentially distributed gaps
(``--mean-gap``) from ``WARMUP_S`` on, each undone after a random time, none left after
``duration - settle`` so the end of the run and the drain see the full pool. The faults:

* ``pe`` / ``registrar``: SIGKILL of the node's pool element or registrar (a crash, no
  deregistration; ``ServiceManager.kill``), started again with its command (``restart``);
* ``link``: a link's delay raised, loss raised, or the link down (100 % loss), then its parameters
  before the flap put back — through ``Testbed.set_link_params``, what `emulab link set` runs in
  the runner;
* ``coverage``: the UE's radio ``detach()`` / ``attach()``, what `emulab coverage lose|restore` runs.

A target has at most one fault at a time. The schedule (planned) is in manifest.json under
``chaos.schedules``; ``chaos.csv`` in the results lists every action as done (planned and actual
second on the run's clock, ok or the error). summary.json's ``chaos`` has, over all runs and per
run, the request counts: ``issued``, ``completed``, ``completed_twice`` (a request recorded or
reported complete more than once: must be 0), ``lost`` (issued, not completed after the drain) and
``lost_by_reason`` (``queued_at_end``: never dequeued; ``never_accepted``: no element accepted it;
``unfinished_after_accept``: accepted, not completed), ``restarted`` (requests started again from
scratch after an Accept), ``failed_over`` (requests that failed over at least once), and the faults
injected, restores done and failed, and services restarted.
"""

from __future__ import annotations

import csv
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from emulab.experiments.base import EmulatedSweep, RunContext, emulated_options
from emulab.experiments.coverage import coverage_metrics
from emulab.experiments.records import ExperimentError, RunOutput
from emulab.results import RequestRecord
from emulab.scenario import Scenario, run_seed, scenario_options

KINDS = ("pe", "registrar", "link", "coverage")
WARMUP_S = 5.0  # the pool users' first requests go out on a whole pool
DOWN_S = {"pe": (2.0, 10.0), "registrar": (2.0, 10.0), "link": (3.0, 15.0), "coverage": (3.0, 12.0)}
"""How long each kind of fault lasts (uniform between the bounds, seconds)."""
LINK_FLAPS = ("delay", "loss", "down")
DRAIN_S = 90.0
CSV_FIELDS = ("setting", "run", "planned_s", "done_s", "kind", "target", "action", "detail", "ok", "error")


@dataclass(frozen=True)
class Fault:
    """One fault of a schedule: at ``at`` s into the run, ``kind`` on ``target`` for ``down`` s."""

    at: float
    kind: str
    target: str
    down: float
    detail: str = ""
    """link: delay:+MS | loss:PCT | down."""

    @property
    def until(self) -> float:
        return self.at + self.down


def chaos_schedule(seed: int, duration: float, settle: float, mean_gap: float,
                   targets: dict[str, list[str]]) -> list[Fault]:
    """The faults of one run, drawn from ``seed`` alone: ``targets`` maps each kind to what it may hit
    (kinds without targets are skipped); every fault is undone by ``duration - settle``."""
    rng = random.Random(seed)
    kinds = [k for k in KINDS if targets.get(k)]
    end = duration - settle
    busy: dict[tuple[str, str], float] = {}
    out: list[Fault] = []
    t = WARMUP_S
    while kinds:
        t += rng.expovariate(1.0 / mean_gap)
        kind = rng.choice(kinds)
        lo, hi = DOWN_S[kind]
        down = round(rng.uniform(lo, hi), 2)
        detail = ""
        if kind == "link":
            flap = rng.choice(LINK_FLAPS)
            detail = {"delay": f"delay:+{rng.randint(50, 300)}", "loss": f"loss:{rng.randint(5, 30)}",
                      "down": "down"}[flap]
        free = [x for x in targets[kind] if busy.get((kind, x), -1.0) < t]
        if t > end:
            break
        if t + down > end or not free:  # too late to be undone in time, or every target busy
            continue
        target = rng.choice(free)
        busy[(kind, target)] = t + down
        out.append(Fault(round(t, 2), kind, target, down, detail))
    return out


def lost_reason(r: RequestRecord) -> str:
    """Why a request issued did not complete (after the drain)."""
    if r.status not in ("completed", "unfinished"):
        return r.status
    if r.started_at is None:
        return "queued_at_end"
    if r.accepted_at is None:
        return "never_accepted"
    return "unfinished_after_accept"


def request_counts(requests: list[RequestRecord], events: list[Any], pu_counters: dict[str, Any]) -> dict[str, Any]:
    """The run's exactly-once accounting (the keys of summary.json's ``chaos``)."""
    m = coverage_metrics(events, requests, None, None)
    completed_records = sum(1 for r in requests if r.status == "completed")
    # twice: a request recorded complete twice, or more Completes reached the PUs than requests completed
    twice = completed_records - m["requests_completed"]
    completes = pu_counters.get("completes")
    if completes is not None:
        twice += max(0, int(completes) - completed_records)
    latest: dict[tuple[str, int], RequestRecord] = {}
    for r in requests:
        latest[(r.pu, r.request_id)] = r
    done = {(r.pu, r.request_id) for r in requests if r.status == "completed"}
    by_reason: dict[str, int] = {}
    for key, r in latest.items():
        if key not in done:
            why = lost_reason(r)
            by_reason[why] = by_reason.get(why, 0) + 1
    return {
        "issued": m["requests_issued"], "completed": m["requests_completed"], "completed_twice": twice,
        "recorded_twice": m["requests_duplicated"], "lost": m["requests_lost"], "lost_by_reason": by_reason,
        "restarted": m["requests_restarted"], "failed_over": m["requests_failed_over"],
    }


class ChaosExperiment(EmulatedSweep):
    """The paper run with crashes, link flaps and coverage losses by a seeded schedule."""

    name = "chaos"
    results_prefix = "chaos"
    poll_s = 0.2

    def __init__(self, scenario: Scenario, *, mean_gap: float = 8.0, settle: float = 15.0,
                 kinds: tuple[str, ...] = KINDS, drain: float = DRAIN_S, **kwargs: Any) -> None:
        if mean_gap <= 0:
            raise ExperimentError(f"--mean-gap must be positive, got {mean_gap:g}")
        if not 0 <= settle < scenario.duration - WARMUP_S:
            raise ExperimentError(f"--settle ({settle:g}) must leave time for faults in a run of "
                                  f"{scenario.duration:g} s (after the first {WARMUP_S:g} s)")
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ExperimentError(f"--faults: unknown {', '.join(sorted(unknown)) or 'none given'} "
                                  f"(of {', '.join(KINDS)})")
        super().__init__(scenario, drain=drain, **kwargs)  # after the checks: it makes a work directory
        self.mean_gap, self.settle, self.kinds = mean_gap, settle, tuple(kinds)
        self.schedules: dict[str, list[Fault]] = {}
        self.actions: list[dict[str, Any]] = []
        self.chaos_runs: list[dict[str, Any]] = []
        self.results_path: Path | None = None
        self.subscribe(self._note_results)
        # per run: faults not yet done, faults to undo (fault, the state to put back)
        self._pending: list[Fault] = []
        self._undo: list[tuple[Fault, Any]] = []

    def _note_results(self, event: Any) -> None:
        if event.kind == "sweep_started":
            self.results_path = Path(event.data["results"])

    # ------------------------------------------------------------------ the schedule
    def targets(self) -> dict[str, list[str]]:
        """What each kind of fault may hit in this testbed."""
        spec = self.testbed.spec
        links = []
        for lk in spec.links:
            emu = self.testbed.links.get(lk.name)
            # radio links belong to the radio (coverage faults); a neutral shaper link has no hop to shape
            if emu is not None and not lk.radio and (emu.backend == "netem" or emu.hop):
                links.append(lk.name)
        found = {
            "pe": [e.node for e in self.elements],
            "registrar": sorted(n for n, s in spec.nodes.items() if any(x.kind == "registrar" for x in s.services)),
            "link": sorted(links),
            "coverage": [self.ue] if self.testbed.radio is not None else [],
        }
        return {k: v for k, v in found.items() if k in self.kinds}

    def manifest_extra(self) -> dict[str, Any]:
        sc = self.scenario
        targets = self.targets()
        for setting, run in self.tasks():
            self.schedules[f"{setting}pus-run{run}"] = chaos_schedule(
                run_seed(sc.seed, setting, run), sc.duration, self.settle, self.mean_gap, targets)
        return {"chaos": {"mean_gap_s": self.mean_gap, "settle_s": self.settle, "warmup_s": WARMUP_S,
                          "kinds": list(self.kinds), "down_s": {k: list(v) for k, v in DOWN_S.items()},
                          "targets": targets, "drain_s": self.drain,
                          "schedules": {tag: [asdict(f) for f in fs] for tag, fs in self.schedules.items()}}}

    # ------------------------------------------------------------------ acting on the testbed
    def before_run(self, ctx: RunContext) -> None:
        self._pending = list(self.schedules.get(ctx.tag, []))
        self._undo = []

    def during_run(self, ctx: RunContext, elapsed: float) -> None:
        for item in [u for u in self._undo if u[0].until <= elapsed]:
            self._undo.remove(item)
            self._restore(ctx, item[0], item[1], elapsed)
        while self._pending and self._pending[0].at <= elapsed:
            fault = self._pending.pop(0)
            before = self._inject(ctx, fault, elapsed)
            if before is not _FAILED:
                self._undo.append((fault, before))

    def end_run(self, ctx: RunContext) -> None:
        """Undo every fault still in force (the run failed or ended early) and write chaos.csv so far."""
        elapsed = time.monotonic() - ctx.started if ctx.started else 0.0
        for fault, before in self._undo:
            self._restore(ctx, fault, before, elapsed)
        self._undo, self._pending = [], []
        self._write_csv()

    def _record(self, ctx: RunContext, fault: Fault, action: str, elapsed: float, error: str | None) -> None:
        planned = fault.at if action == "fault" else fault.until
        self.actions.append({"setting": ctx.setting, "run": ctx.run, "planned_s": planned,
                             "done_s": round(elapsed, 3), "kind": fault.kind, "target": fault.target,
                             "action": action, "detail": fault.detail, "ok": error is None, "error": error or ""})
        if error:
            self.log(f"{ctx.tag}: chaos {action} {fault.kind} {fault.target} failed: {error}")
        self.emit(f"chaos_{action}", tag=ctx.tag, fault=fault.kind, target=fault.target, elapsed=elapsed,
                  ok=error is None)

    def _inject(self, ctx: RunContext, fault: Fault, elapsed: float) -> Any:
        try:
            before: Any = None
            if fault.kind in ("pe", "registrar"):
                self.svc.kill(fault.target, fault.kind)
            elif fault.kind == "link":
                before = self.testbed.link(fault.target).params
                self.testbed.set_link_params(fault.target, flapped(before, fault.detail))
            elif fault.kind == "coverage":
                self.testbed.radio.detach()
        except Exception as exc:  # a fault that could not be injected is recorded, the run goes on
            self._record(ctx, fault, "fault", elapsed, f"{type(exc).__name__}: {exc}")
            return _FAILED
        self._record(ctx, fault, "fault", elapsed, None)
        return before

    def _restore(self, ctx: RunContext, fault: Fault, before: Any, elapsed: float) -> None:
        try:
            if fault.kind in ("pe", "registrar"):
                st = self.svc.restart(fault.target, fault.kind)
                if fault.kind == "pe":  # the base stops the run's elements by these handles
                    self.pes[fault.target] = next(p for _, _, p, _ in self.svc.procs if p.pid == st["pid"])
                if not st.get("alive"):
                    raise ExperimentError(f"the restarted {fault.kind} exited at once")
            elif fault.kind == "link":
                self.testbed.set_link_params(fault.target, before)
            elif fault.kind == "coverage":
                self.testbed.radio.attach()
        except Exception as exc:
            self._record(ctx, fault, "restore", elapsed, f"{type(exc).__name__}: {exc}")
            return
        self._record(ctx, fault, "restore", elapsed, None)

    def _write_csv(self) -> None:
        if self.results_path is None or not self.results_path.is_dir():
            return
        with open(self.results_path / "chaos.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, CSV_FIELDS)
            w.writeheader()
            w.writerows(self.actions)

    # ------------------------------------------------------------------ accounting
    def after_run(self, ctx: RunContext, out: RunOutput) -> None:
        counts = request_counts(out.requests, out.events, out.summary.get("counters") or {})
        mine = [a for a in self.actions if (a["setting"], a["run"]) == (ctx.setting, ctx.run)]
        faults = {k: sum(1 for a in mine if a["action"] == "fault" and a["kind"] == k and a["ok"]) for k in KINDS}
        run = {"setting": ctx.setting, "run": ctx.run, "seed": ctx.seed, **counts, "faults": faults,
               "faults_failed": sum(1 for a in mine if a["action"] == "fault" and not a["ok"]),
               "restores_failed": sum(1 for a in mine if a["action"] == "restore" and not a["ok"]),
               "services_restarted": sum(1 for a in mine if a["action"] == "restore" and a["ok"]
                                         and a["kind"] in ("pe", "registrar"))}
        self.chaos_runs.append(run)
        self.log(f"{ctx.tag}: chaos: {sum(faults.values())} faults; {counts['completed']}/{counts['issued']} "
                 f"requests completed, {counts['completed_twice']} twice, {counts['lost']} lost "
                 f"{counts['lost_by_reason'] or ''}, {counts['restarted']} restarted")

    def summarise(self) -> dict[str, Any]:
        self._write_csv()
        return {"chaos": chaos_summary(self.chaos_runs)}


_FAILED = object()


def flapped(params: Any, detail: str) -> Any:
    """A link's parameters during a flap (``detail`` from the schedule)."""
    if detail == "down":
        return params.with_changes(loss_pct=100.0)
    what, _, value = detail.partition(":")
    if what == "delay":
        return params.with_changes(delay_ms=params.delay_ms + float(value))
    if what == "loss":
        return params.with_changes(loss_pct=min(100.0, params.loss_pct + float(value)))
    raise ExperimentError(f"unknown link flap {detail!r}")


def chaos_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json's ``chaos``: the counts summed over all runs, and the runs."""
    total: dict[str, Any] = {k: sum(r[k] for r in runs) for k in
                             ("issued", "completed", "completed_twice", "recorded_twice", "lost", "failed_over",
                              "faults_failed", "restores_failed", "services_restarted")}
    total["restarted"] = None if any(r["restarted"] is None for r in runs) else sum(r["restarted"] for r in runs)
    reasons: dict[str, int] = {}
    faults: dict[str, int] = dict.fromkeys(KINDS, 0)
    for r in runs:
        for k, v in r["lost_by_reason"].items():
            reasons[k] = reasons.get(k, 0) + v
        for k, v in r["faults"].items():
            faults[k] += v
    return {**total, "lost_by_reason": reasons, "faults": faults, "runs": runs}


def run_chaos(scenario: Scenario, *, mean_gap: float = 8.0, settle: float = 15.0, kinds: tuple[str, ...] = KINDS,
              drain: float = DRAIN_S, pe_registrar: str = "auto", pcaps: bool = True,
              progress: bool = True) -> Path:
    """The chaos sweep; returns the results directory."""
    return ChaosExperiment(scenario, mean_gap=mean_gap, settle=settle, kinds=kinds, drain=drain,
                           pe_registrar=pe_registrar, pcaps=pcaps, progress=progress).run()


@click.command(name="chaos")
@scenario_options(pus="8", runs=1, duration=120.0, quick=False)
@click.option("--mean-gap", default=8.0, show_default=True, type=click.FloatRange(min=0.5),
              help="Mean seconds between faults (exponentially distributed).")
@click.option("--settle", default=15.0, show_default=True, type=click.FloatRange(min=0),
              help="No fault in force during the last SETTLE seconds of a run.")
@click.option("--faults", "faults", default=",".join(KINDS), show_default=True,
              help="Which faults: a comma list of " + ", ".join(KINDS) + ".")
@click.option("--drain", default=DRAIN_S, show_default=True, type=float,
              help="After --duration, issue no new requests and wait up to this long for the queued ones.")
@emulated_options
def command(scenario: Scenario, mean_gap: float, settle: float, faults: str, drain: float, pe_registrar: str,
            pcaps: bool) -> None:
    """CalcApp pool users on the UE while elements and registrars crash (SIGKILL) and come back, links
    flap and coverage comes and goes, by a schedule drawn from --seed; prints the results path last.

    summary.json's "chaos": requests issued, completed, completed twice (must be 0), lost by reason,
    restarted; chaos.csv: every fault and restore as done.
    """
    kinds = tuple(k.strip() for k in faults.split(",") if k.strip())
    path = run_chaos(scenario, mean_gap=mean_gap, settle=settle, kinds=kinds, drain=drain,
                     pe_registrar=pe_registrar, pcaps=pcaps, progress=sys.stderr.isatty())
    click.echo(str(path))

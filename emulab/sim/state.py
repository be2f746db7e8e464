"""The state of one simulated run, in columns, and what changes it without an event.

``RunState`` holds every element's and request's state as lists indexed by element or request
number (``element_jobs[e]``, ``token[r]`` …) and the PUs' queues, seeded as the emulated PUs are;
it advances the elements' processor sharing (and the cookies their jobs send), takes the periodic
samples and turns the state into a ``RunResult``. The events that change it are
``emulab.sim.engine.Simulation``'s.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque

from emulab.scenario import run_seed
from emulab.sim.faults import orphan_work
from emulab.sim.model import PoolModel
from emulab.sim.runs import STATUS_COMPLETED, STATUS_UNFINISHED, RunParams, RunResult
from rserpool.policy import PolicyElement, SelectionPool
from rserpool.services.calcapp_pu import pu_rng, sampler


class RunState:
    """Everything one run knows: the pool and its policy, the elements, the requests, the PUs."""

    # slots: a run has more attributes than an instance dict keeps compact, and the loop reads them
    # on every event
    __slots__ = (
        "accepted_at", "accepted_session", "accepts", "capacity", "completed_at", "completed_by",
        "cookie_done", "cookie_previous_done", "cookie_time", "cut_at", "duration", "element_accepted",
        "element_advanced_at", "element_bad_reports", "element_count", "element_jobs",
        "element_rejected", "element_remaining", "element_up", "element_used", "element_version",
        "end_limit", "failovers", "faults", "handle_resolution_items", "handle_resolution_rtt",
        "in_pool", "job_accepted_at", "link_up", "load_infos", "load_update_delay", "max_jobs", "model",
        "next_interval", "next_sample", "next_size", "on_ue", "one_way", "orphans", "params",
        "pending_connect", "policy_elements", "pool", "pu_count", "pu_current", "pu_queue", "queued_at",
        "rejected_by", "request_pu", "request_size", "resume_from", "resync_rng", "retrying",
        "routes_up", "rtt", "samples", "send_latency", "silence", "started_at", "target",
        "token", "wall_started",
    )

    def __init__(self, model: PoolModel, params: RunParams) -> None:
        self.wall_started = time.perf_counter()
        self.params = p = params
        self.model = model
        self.duration = p.duration
        self.end_limit = p.duration + p.drain_s
        elements = model.elements
        self.element_count = n_elements = len(elements)
        self.pu_count = n_pus = p.setting
        tag = f"{p.seed}:{p.setting}:{p.run}"

        # ---- selection state: the same policy code as the registrar (C selector included)
        self.pool = SelectionPool(model.policy_type, force_python=p.force_python_selector,
                                  rng=random.Random(tag + ":pool"))
        self.policy_elements = [PolicyElement(i + 1, e.policy) for i, e in enumerate(elements)]
        # pre-built policy infos for 0 … max jobs: a load report then costs no allocation
        self.load_infos = [[e.policy.with_load(k / e.max_requests) for k in range(e.max_requests + 1)]
                           for e in elements]
        for pe in self.policy_elements:
            self.pool.add(pe)
        self.in_pool = [True] * n_elements

        # ---- the elements' constants
        self.capacity = [e.capacity for e in elements]
        self.max_jobs = [e.max_requests for e in elements]
        self.one_way = [e.one_way_s for e in elements]
        self.rtt = [e.rtt_s for e in elements]
        self.send_latency = [p.connect_rtts * e.rtt_s + e.one_way_s for e in elements]
        self.load_update_delay = [e.load_update_delay_s for e in elements]
        self.on_ue = [e.on_ue for e in elements]
        self.handle_resolution_rtt = model.handle_resolution_rtt_s
        self.handle_resolution_items = p.handle_resolution_items
        # the PU's silence before it gives up: a quiet interval, a keep-alive, no answer
        self.silence = p.keepalive_interval_s + p.keepalive_timeout_s

        # ---- the elements' state: jobs (request indexes) and their remaining calculations
        self.element_jobs: list[list[int]] = [[] for _ in range(n_elements)]
        self.element_remaining: list[list[float]] = [[] for _ in range(n_elements)]
        self.element_advanced_at = [0.0] * n_elements  # the jobs' remaining work is as of this time
        # bumped when the job set changes: older completion events are stale
        self.element_version = [0] * n_elements
        self.element_used = [0.0] * n_elements
        self.element_accepted = [0] * n_elements
        self.element_rejected = [0] * n_elements
        self.element_up = [True] * n_elements
        self.element_bad_reports = [0] * n_elements
        self.link_up = True  # the UE's packets reach remote elements
        self.routes_up = True  # the UE has routes to remote elements (withdrawn from RLF to re-attach)
        self.cut_at = 0.0

        self.faults = bool(p.failures or p.coverage_losses)
        # ---- fault-only per-request state (empty dicts otherwise)
        # cookies: the PE's last cookie (time, calculations done) and the one before it
        self.cookie_time: dict[int, float] = {}
        self.cookie_done: dict[int, float] = {}
        self.cookie_previous_done: dict[int, float] = {}
        self.resume_from: dict[int, float] = {}  # the progress the PU's cookie echo gives the next PE
        self.job_accepted_at: dict[int, float] = {}  # when the current job was accepted, on the PE's clock
        # session with an Accept: (last Accept at the PU, its token)
        self.accepted_session: dict[int, tuple[float, int]] = {}
        # a session opening waiting for a connect timeout: (tried, attempts, in a fail-over, element)
        self.pending_connect: dict[int, tuple[set[int], int, bool, int]] = {}
        self.accepts: dict[int, list[tuple[float, int]]] = {}  # every Accept: (time, element)
        self.retrying: set[int] = set()  # requests waiting out the PU's retry delay (no association open)
        # jobs a cut-off PE keeps running: (element, cut time, remaining calculations, keep-alive drop times)
        self.orphans: list[tuple[int, float, list[float], list[float]]] = []

        # ---- the requests' columns
        self.request_pu: list[int] = []
        self.request_size: list[float] = []
        self.queued_at: list[float] = []
        self.started_at: list[float | None] = []
        self.accepted_at: list[float | None] = []
        self.completed_at: list[float | None] = []
        self.completed_by: list[int] = []  # the element that completed it (-1: none)
        self.target: list[int] = []  # the element the request was last sent to (-1: none yet)
        self.token: list[int] = []  # bumped on every send / retry / timeout: older events are stale
        self.rejected_by: dict[int, list[int]] = {}
        self.failovers: dict[int, int] = {}

        # ---- the PUs: FIFO queues; the emulated PUs' own streams (calcapp_pu.pu_rng / sampler)
        self.pu_current = [-1] * n_pus
        self.pu_queue: list[deque[int]] = [deque() for _ in range(n_pus)]
        pu_rngs = [pu_rng(run_seed(p.seed, p.setting, p.run), i) for i in range(n_pus)]
        self.next_interval = [sampler(p.interval_dist, p.interval_mean, g) for g in pu_rngs]
        self.next_size = [sampler(p.size_dist, p.size_mean, g) for g in pu_rngs]
        self.resync_rng = random.Random(tag + ":radio") if p.coverage_losses else None

        self.samples: list[tuple[float, int, float, int]] = []
        self.next_sample = 0.0 if p.sample_interval_s > 0.0 else math.inf

    # ------------------------------------------------------------------ processor sharing

    def advance(self, e: int, now: float) -> None:
        """Bring element e's jobs to ``now`` (equal shares of the capacity)."""
        jobs = self.element_jobs[e]
        n = len(jobs)
        if n:
            dt = now - self.element_advanced_at[e]
            if dt > 0.0:
                share = dt * self.capacity[e] / n
                remaining = self.element_remaining[e]
                if self.faults:
                    self.send_cookies(e, now, share / dt)
                for k in range(n):
                    remaining[k] -= share
                self.element_used[e] += share * n
        self.element_advanced_at[e] = now

    def send_cookies(self, e: int, now: float, rate: float) -> None:
        """The cookies element e sent since it was last advanced: every ``cookie_interval_s`` or
        ``cookie_calculations``, whichever comes first."""
        t0 = self.element_advanced_at[e]
        interval = self.params.cookie_interval_s
        calculations = self.params.cookie_calculations
        cookie_time, cookie_done = self.cookie_time, self.cookie_done
        remaining = self.element_remaining[e]
        for k, r in enumerate(self.element_jobs[e]):
            done0 = self.request_size[r] - remaining[k]
            while True:
                last_time = cookie_time[r]
                last_done = cookie_done[r]
                by_time = last_time + interval
                by_calculations = t0 + (last_done + calculations - done0) / rate if rate > 0 else math.inf
                t_next = by_time if by_time < by_calculations else by_calculations
                if t_next > now:
                    break
                self.cookie_previous_done[r] = last_done
                cookie_time[r] = t_next
                cookie_done[r] = done0 + (t_next - t0) * rate

    def cookie_seen_by(self, r: int, e: int, t: float) -> float:
        """The progress in the last cookie of request r's job on element e that reached the PU by ``t``."""
        if self.cookie_time[r] + self.one_way[e] <= t:
            return self.cookie_done[r]
        return self.cookie_previous_done[r]

    # ------------------------------------------------------------------ samples and result

    def result(self, events: int) -> RunResult:
        """The run's outcome, at its end: the last samples, the elements' usage, the requests' rows."""
        p = self.params
        end_t = self.end_time()
        self.sample_to_end(end_t)  # before the final advance: it moves element_advanced_at to end_t
        for e in range(self.element_count):
            if self.element_up[e]:
                self.advance(e, end_t)
        for e, t0, remaining, drops in self.orphans:
            self.element_used[e] += orphan_work(self.capacity[e], remaining, drops, t0, end_t)
        res = RunResult(setting=p.setting, run=p.run, duration=end_t, events=events, accepts=self.accepts,
                        samples=self.samples, requests=self.request_rows())
        res.usage = [(self.element_used[e], self.element_accepted[e], self.element_rejected[e])
                     for e in range(self.element_count)]
        res.wall_s = time.perf_counter() - self.wall_started
        return res

    def end_time(self) -> float:
        """``duration``; with a drain, when the last request completed (all did) or the drain's end."""
        p = self.params
        if p.drain_s <= 0.0:
            return p.duration
        done = [c for c in self.completed_at if c is not None]
        return max([p.duration, *done]) if len(done) == len(self.completed_at) else self.end_limit

    def request_rows(self) -> list[tuple]:
        """``RunResult.requests``: one row per request."""
        rows = []
        for r in range(len(self.request_pu)):
            completed = self.completed_at[r]
            accepted = self.accepted_at[r]
            if completed is not None:
                status, element = STATUS_COMPLETED, self.completed_by[r]
            else:
                status, element = STATUS_UNFINISHED, self.target[r] if accepted is not None else -1
            rows.append((
                self.request_pu[r], self.request_size[r], self.queued_at[r], self.started_at[r], accepted,
                completed, element, tuple(self.rejected_by.get(r, ())), self.failovers.get(r, 0), status,
            ))
        return rows

    def sample_to_end(self, end_t: float) -> None:
        """The samples due by the run's end, none after it, and one at it if it is off the grid."""
        self.sample_until(end_t)
        if self.samples and self.samples[-1][0] > end_t:  # the drain ended before the loop's last events
            self.samples = [x for x in self.samples if x[0] <= end_t]
        if self.samples and self.samples[-1][0] < end_t:  # the run's end off the grid (a drain): one more
            self.next_sample = end_t
            self.sample_until(end_t)

    def sample_until(self, t: float) -> float:
        """Every sample due at or before ``t`` (between events each element's work grows linearly);
        returns when the next one is due."""
        next_sample = self.next_sample
        interval = self.params.sample_interval_s
        while next_sample <= t:
            ts = next_sample
            unseen = [0.0] * self.element_count  # what cut-off PEs still work on their jobs
            for e, t0, remaining, drops in self.orphans:
                unseen[e] += orphan_work(self.capacity[e], remaining, drops, t0, ts)
            for e in range(self.element_count):
                n = len(self.element_jobs[e])
                used = self.element_used[e]
                if n:
                    used += (ts - self.element_advanced_at[e]) * self.capacity[e]
                self.samples.append((ts, e, used + unseen[e], n))
            next_sample = ts + interval
        self.next_sample = next_sample
        return next_sample

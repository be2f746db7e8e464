"""One simulated run: PUs with FIFO queues, PEs with processor sharing, PLU selection via rserpool.

The model follows the emulated CalcApp code it is compared with — ``rserpool.services.calcapp``
(the PE), ``rserpool.services.calcapp_pu`` (the PU) and ``rserpool.pu.PoolSession`` (its session
layer), which in turn follow RSPLIB 3.4.4's ``calcappservice.cc`` / ``calcappclient.cc`` — and
takes every timer from the constants those modules use (``RunParams``' defaults), so there is one
source of truth:

* each PU issues requests with random sizes at random intervals (first one after one interval),
  queues them FIFO and serves one at a time;
* dequeuing starts the *start-up*: a handle resolution at the PU's registrar, which runs the pool's
  policy (``rserpool.policy.SelectionPool``, C selector, up to ``RegistrarConfig.max_hr_items`` = 3
  elements); the PU takes the first one it has not excluded (``PoolSession.open``: if every returned
  element is excluded it resolves afresh, then asks for ``len(tried) + MORE_ITEMS`` elements, then
  gives up — ``NoPoolElementError`` — and tries again after ``RETRY_DELAY``), and sends its request
  over a new association;
* a PE accepts while it runs fewer than ``max_requests`` jobs and shares its capacity equally
  among them (processor sharing); otherwise it rejects. On a reject the PU waits ``RETRY_DELAY``
  (1 s) and then selects again *excluding the element that rejected* (``CalcAppPU._handle``);
* a PE reports load = jobs / max jobs (``CalcAppServer._report_load``) on every accept and
  completion; the report reaches the PU's registrar after the load-update delay;
* ``accepted_at`` is the first Accept (as ``calcapp_pu.Request``); with faults every Accept is kept
  (``RunResult.accepts``) for the fail-over timeline.

Faults (optional): element crashes and UE coverage losses, on the emulation's timeline.

* PUs notice a silent PE by CalcApp keep-alive (``KEEPALIVE_INTERVAL`` / ``KEEPALIVE_TIMEOUT``,
  2.5 s / 2.5 s): messages from a working PE arrive every interval + RTT, so the PU gives up
  interval + timeout after the last one. Before an Accept that means "lost": a new session at once,
  no report; after one it is a fail-over: an Endpoint Unreachable report, a re-selection without
  the failed PE and the request resumed from the last cookie that reached the PU (the PE sends one
  every ``COOKIE_MAX_TIME`` s or ``COOKIE_MAX_CALCULATIONS``), or restarted without one. After
  ``max_failovers`` fail-overs, or when a fail-over finds no PE, the session ends and a new one
  starts from scratch (``CalcAppPU._run_job``'s "lost").
* Connecting to a PE that does not answer (crashed, or behind a radio that drops every packet)
  takes the PU's ``connect_timeout`` (3 s); one the UE has no route to (after the radio link
  failure) fails at once. Either way the PU reports it unreachable and tries the next one, at most
  8 attempts per session opening. With ``PUConfig.watch_routes`` (rserpool.pu's route watcher) the
  route's withdrawal also ends, at that moment, every session and connect under way to an element
  beyond the radio: the PU fails over at the RLF instead of at its keep-alive or connect timeout.
  The registrar drops a PE after ``max_bad_pe_reports`` (3) reports, or a crashed one after its
  endpoint keep-alive fails (``registrar_detect_s``).
* A coverage loss at L (``radio.emulated``, timers ``model.radio``): from L the UE's packets to and
  from remote elements are lost; at L + N310 × 10 ms + T310 (1.2 s) the radio link fails and the
  UE's routes are withdrawn; elements on the UE are never affected. The UE's registrar keeps the
  remote elements until reports remove them, or until its ENRP peers are declared dead and their
  entries taken over and dropped (``partition_detect_s``). Coverage back at R: the UE re-attaches
  (``RadioTimers.reattach_s``, 1.01 s) and its registrar learns the remote elements again with
  the next ENRP Presence of their registrars (uniform within a heartbeat cycle) plus a round trip.
  Jobs on remote elements keep running there (unseen) until the PE's own keep-alive drops them.
* ``sample_interval_s`` (``emulab simulate``: the emulated PEs' 1 s), every element's
  cumulative used calculations and running jobs are sampled on that period (``RunResult.samples``,
  the results' ``elements_timeline.csv``); sampling reads the state and changes nothing.
* ``drain_s``: as ``emulab experiment coverage-loss --drain``, no new requests after ``duration``
  and up to ``drain_s`` more seconds for the queued ones; the run's length is then the time the
  last one completed (or duration + drain).

Limits: the PUs' registrar is taken to be reachable during a coverage loss (it runs on the UE in
the papers' topology), and jobs left running on a cut-off element are accounted as if they had
the element to themselves.

The loop is lean on purpose: events are plain tuples on a heapq, requests and elements are integer
indexes into lists, and a PE's completion is recomputed only when its own job set changes (stale
completion events are skipped by a per-element version number). Everything only faults need lives
in dicts touched only when ``faults`` is true, so the papers' sweep pays nothing for it.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field

from emulab.scenario import run_seed
from emulab.sim.model import PoolModel
from rserpool.policy import PolicyElement, SelectionPool
from rserpool.pu import MORE_ITEMS, PUConfig
from rserpool.registrar import RegistrarConfig
from rserpool.services.calcapp import (
    COOKIE_MAX_CALCULATIONS,
    COOKIE_MAX_TIME,
    KEEPALIVE_INTERVAL,
    KEEPALIVE_TIMEOUT,
)
from rserpool.services.calcapp_pu import RETRY_DELAY, PUParams, pu_rng, sampler

# event kinds, ordered roughly by frequency
(_ARRIVE, _AT_PE, _PE_DONE, _COMPLETE, _LOAD, _REJECT, _RETRY, _ACCEPT, _TIMEOUT, _CONNFAIL,
 _FAULT) = range(11)

STATUS_COMPLETED, STATUS_LOST, STATUS_UNFINISHED = 0, 1, 2
STATUS_NAMES = ("completed", "lost", "unfinished")

_EPS = 1e-3  # calculations: a job with less than this left is done (floating-point slack)

_REG = RegistrarConfig()
_PU = PUConfig()
OPEN_ATTEMPTS = 8
"""``PoolSession`` tries per session opening: ``calcapp_pu._Session`` passes ``max_attempts=8``."""


@dataclass(frozen=True, slots=True)
class Failure:
    """An element crash at ``at`` seconds, back after ``duration`` (None: for good)."""

    element: str
    at: float
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class CoverageLoss:
    """The UE loses radio coverage between ``at`` and ``at + duration``."""

    at: float
    duration: float


@dataclass(frozen=True, slots=True)
class RunParams:
    """Everything one run needs besides the pool model.

    The timers default to the constants of the emulated code (``rserpool``), so that simulation and
    emulation run on the same numbers; change them here only to ask "what if".
    """

    setting: int
    """Number of PUs."""
    run: int
    duration: float
    seed: int
    size_mean: float = 1e6
    size_dist: str = "exp"
    interval_mean: float = 10.0
    interval_dist: str = "exp"
    failures: tuple[Failure, ...] = ()
    coverage_losses: tuple[CoverageLoss, ...] = ()
    drain_s: float = 0.0
    """After ``duration`` no new requests; up to this many seconds for the queued ones to finish."""
    connect_rtts: float = 1.0
    """RTTs before the request leaves (new association per job); request + accept add one more."""
    reject_retry_s: float = RETRY_DELAY
    """``calcapp_pu.RETRY_DELAY``: the pause after a reject (or no PE at all) before selecting again."""
    keepalive_interval_s: float = KEEPALIVE_INTERVAL
    """``calcapp.KEEPALIVE_INTERVAL``: CalcApp silence before a keep-alive (PE and PU alike)."""
    keepalive_timeout_s: float = KEEPALIVE_TIMEOUT
    """``calcapp.KEEPALIVE_TIMEOUT``: no answer to a keep-alive within this ends the job / session."""
    cookie_interval_s: float = COOKIE_MAX_TIME
    cookie_calculations: float = COOKIE_MAX_CALCULATIONS
    connect_timeout_s: float = _PU.connect_timeout
    """``PUConfig.connect_timeout``: connecting to a PE that does not answer fails after this."""
    watch_routes: bool = _PU.watch_routes
    """``PUConfig.watch_routes``: sessions and connects to a PE the UE lost its route to end at once."""
    open_attempts: int = OPEN_ATTEMPTS
    max_failovers: int = PUParams().max_failovers
    """``PUParams.max_failovers``: after this many fail-overs the PU starts the request afresh."""
    registrar_detect_s: float = _REG.keepalive_interval / 2 + _REG.keepalive_timeout
    """A crashed PE leaves the registrar after its endpoint keep-alive fails (``RegistrarConfig``:
    5 s interval, 5 s timeout): on average 2.5 + 5 s."""
    max_bad_reports: int = _REG.max_bad_pe_reports
    partition_detect_s: float = _REG.peer_max_time_last_heard + _REG.peer_max_time_no_response + _REG.keepalive_timeout
    """A cut-off registrar drops the entries of its unreachable ENRP peers after last-heard +
    no-response (declared dead, taken over) + the takeover's keep-alive timeout (``rserpool.enrp``: 15 s)."""
    resync_max_s: float = _REG.peer_heartbeat_cycle
    """Connectivity back: the peers' next Presence (and the handle-table download) comes within one
    heartbeat cycle."""
    handle_resolution_items: int = _REG.max_hr_items
    sample_interval_s: float = 0.0
    """Period of the used-capacity samples (0: none); ``emulab simulate`` samples on the emulated PEs'
    ``calcapp.SAMPLE_INTERVAL`` (``sweep.sample_interval``)."""
    force_python_selector: bool | None = None


@dataclass(slots=True)
class RunResult:
    """A run's outcome in compact columns (cheap to pickle between processes)."""

    setting: int
    run: int
    duration: float
    """Seconds the run lasted: ``RunParams.duration``, plus the part of the drain that was used."""
    # per request: pu index, size, queued, started, first accept, completed, element index (-1),
    # rejected-by element indexes, failovers, status code
    requests: list[tuple] = field(default_factory=list)
    # per element: used calculations, accepted, rejected
    usage: list[tuple[float, int, int]] = field(default_factory=list)
    accepts: dict[int, list[tuple[float, int]]] = field(default_factory=dict)
    """Runs with faults: request index -> every Accept (time, element index). Without faults a
    request has at most one, its ``accepted_at`` at its element."""
    samples: list[tuple[float, int, float, int]] = field(default_factory=list)
    """Every ``sample_interval_s``: (time, element index, cumulative used calculations, jobs)."""
    events: int = 0
    wall_s: float = 0.0


def _orphan_work(capacity: float, rem: list[float], drops: list[float], t0: float, t_end: float) -> float:
    """Calculations a cut-off PE still spends on ``rem`` from ``t0`` (processor sharing, nobody else)
    until each job completes or its keep-alive drop time in ``drops`` comes, at most until ``t_end``."""
    jobs = [[r, d] for r, d in zip(rem, drops, strict=True) if r > _EPS and d > t0]
    t, used = t0, 0.0
    while jobs and t < t_end:
        n = len(jobs)
        dt = min(min(j[0] for j in jobs) * n / capacity, min(j[1] for j in jobs) - t, t_end - t)
        dt = max(dt, 0.0)
        used += dt * capacity
        t += dt
        for j in jobs:
            j[0] -= dt * capacity / n
        jobs = [j for j in jobs if j[0] > _EPS and j[1] > t + 1e-12]
    return used


def simulate_run(model: PoolModel, p: RunParams) -> RunResult:  # noqa: C901 - one lean event loop
    """Simulate one run of ``p.setting`` PUs for ``p.duration`` seconds (plus the drain)."""
    wall0 = time.perf_counter()
    duration = p.duration
    end_limit = duration + p.drain_s
    elems = model.elements
    n_el = len(elems)
    n_pu = p.setting
    tag = f"{p.seed}:{p.setting}:{p.run}"

    # ---- selection state: the same policy code as the registrar (C selector included)
    pool = SelectionPool(model.policy_type, force_python=p.force_python_selector, rng=random.Random(tag + ":pool"))
    hr_items = p.handle_resolution_items
    pelems = [PolicyElement(i + 1, e.policy) for i, e in enumerate(elems)]
    # pre-built policy infos for 0 … max jobs: a load report then costs no allocation
    infos = [[e.policy.with_load(k / e.max_requests) for k in range(e.max_requests + 1)] for e in elems]
    for pe in pelems:
        pool.add(pe)
    in_pool = [True] * n_el

    cap = [e.capacity for e in elems]
    maxj = [e.max_requests for e in elems]
    ow = [e.one_way_s for e in elems]
    rtt = [e.rtt_s for e in elems]
    sendlat = [p.connect_rtts * e.rtt_s + e.one_way_s for e in elems]
    lud = [e.load_update_delay_s for e in elems]
    on_ue = [e.on_ue for e in elems]
    hr_rtt = model.handle_resolution_rtt_s
    retry = p.reject_retry_s
    ka_int = p.keepalive_interval_s
    silence = p.keepalive_interval_s + p.keepalive_timeout_s  # PU: quiet interval, keep-alive, no ack

    e_jobs: list[list[int]] = [[] for _ in range(n_el)]
    e_rem: list[list[float]] = [[] for _ in range(n_el)]
    e_last = [0.0] * n_el
    e_ver = [0] * n_el
    e_used = [0.0] * n_el
    e_acc = [0] * n_el
    e_rej = [0] * n_el
    e_up = [True] * n_el
    e_bad = [0] * n_el
    link = True  # the UE's packets reach remote elements
    bearer = True  # the UE has routes to remote elements (withdrawn from RLF to re-attach)
    cut_at = 0.0

    faults = bool(p.failures or p.coverage_losses)
    # ---- fault-only per-request state (empty dicts otherwise)
    # cookies: the PE's last cookie (time, done) and the one before it
    ck_t: dict[int, float] = {}
    ck_done: dict[int, float] = {}
    ck_prev: dict[int, float] = {}
    resume: dict[int, float] = {}  # the progress the PU's cookie echo gives the next PE
    j_acc: dict[int, float] = {}  # when the current job was accepted, on the PE's clock
    r_sess: dict[int, tuple[float, int]] = {}  # session with an Accept: (last Accept at the PU, its token)
    # a session opening waiting for a connect timeout: (tried, attempts, in a fail-over, element)
    r_open: dict[int, tuple[set[int], int, bool, int]] = {}
    r_acc: dict[int, list[tuple[float, int]]] = {}  # every Accept: (time, element)
    sleeping: set[int] = set()  # requests waiting out the PU's retry delay (no association open)
    orphans: list[tuple[int, float, list[float], list[float]]] = []  # jobs a cut-off PE keeps running

    # ---- request columns
    r_pu: list[int] = []
    r_size: list[float] = []
    r_q: list[float] = []
    r_s: list[float | None] = []
    r_a: list[float | None] = []
    r_c: list[float | None] = []
    r_el: list[int] = []
    r_tgt: list[int] = []
    r_tok: list[int] = []
    r_rej: dict[int, list[int]] = {}
    r_fo: dict[int, int] = {}

    pu_cur = [-1] * n_pu
    pu_q: list[deque[int]] = [deque() for _ in range(n_pu)]
    # the emulated PUs' own streams (calcapp_pu.pu_rng / sampler): same seed, same requests
    pu_rngs = [pu_rng(run_seed(p.seed, p.setting, p.run), i) for i in range(n_pu)]
    next_iv = [sampler(p.interval_dist, p.interval_mean, g) for g in pu_rngs]
    next_sz = [sampler(p.size_dist, p.size_mean, g) for g in pu_rngs]

    heap: list[tuple] = []
    push = heapq.heappush
    pop = heapq.heappop
    seq = 0

    for i in range(n_pu):
        t = next_iv[i]()
        if t < duration:
            push(heap, (t, seq, _ARRIVE, i, 0))
            seq += 1

    fault_events: list[tuple[str, int]] = []

    def fault_at(t: float, what: str, arg: int = -1) -> None:
        nonlocal seq
        fault_events.append((what, arg))
        push(heap, (t, seq, _FAULT, len(fault_events) - 1, 0))
        seq += 1

    for f in p.failures:
        idx = next((k for k, e in enumerate(elems) if e.name == f.element), None)
        if idx is None:
            raise ValueError(f"failure of unknown element {f.element!r}")
        fault_at(f.at, "fail", idx)
        fault_at(f.at + p.registrar_detect_s, "unregister", idx)
        if f.duration is not None:
            fault_at(f.at + f.duration, "recover", idx)
    radio = model.radio
    resync_rng = random.Random(tag + ":radio") if p.coverage_losses else None
    for c in p.coverage_losses:
        fault_at(c.at, "cut")
        rlf_at = c.at + radio.rlf_s
        back_at = c.at + c.duration
        if back_at > rlf_at:
            # T310 ran out: the UE detaches, its routes go, and it must re-attach once covered again
            fault_at(rlf_at, "rlf")
            fault_at(back_at + radio.reattach_s(back_at - rlf_at), "reach")
        else:
            fault_at(back_at, "reach")  # back before T310 expired: the UE never noticed
        fault_at(c.at + p.partition_detect_s, "partition")

    select = pool.select
    update_policy = pool.update_policy

    # ---------------------------------------------------------------- helpers (closures, kept small)

    def advance(e: int, now: float) -> None:
        """Bring element e's jobs to ``now`` (equal shares of the capacity)."""
        jobs = e_jobs[e]
        n = len(jobs)
        if n:
            dt = now - e_last[e]
            if dt > 0.0:
                d = dt * cap[e] / n
                rem = e_rem[e]
                if faults:
                    _cookies(e, now, d / dt)
                for k in range(n):
                    rem[k] -= d
                e_used[e] += d * n
        e_last[e] = now

    def _cookies(e: int, now: float, rate: float) -> None:
        # cookies a PE sent between e_last and now: every cookie_interval_s or cookie_calculations
        t0 = e_last[e]
        for k, r in enumerate(e_jobs[e]):
            done0 = r_size[r] - e_rem[e][k]
            while True:
                ct = ck_t[r]
                cd = ck_done[r]
                t_by_time = ct + p.cookie_interval_s
                t_by_calc = t0 + (cd + p.cookie_calculations - done0) / rate if rate > 0 else math.inf
                tn = t_by_time if t_by_time < t_by_calc else t_by_calc
                if tn > now:
                    break
                ck_prev[r] = cd
                ck_t[r] = tn
                ck_done[r] = done0 + (tn - t0) * rate

    def reschedule(e: int, now: float) -> None:
        nonlocal seq
        e_ver[e] += 1
        rem = e_rem[e]
        if rem:
            m = min(rem)
            push(heap, (now + (m if m > 0.0 else 0.0) * len(rem) / cap[e], seq, _PE_DONE, e, e_ver[e]))
            seq += 1

    def report_load(e: int, now: float) -> None:
        nonlocal seq
        n = len(e_jobs[e])
        if lud[e] <= 0.0:
            if in_pool[e]:
                update_policy(pelems[e], infos[e][n])
        else:
            push(heap, (now + lud[e], seq, _LOAD, e, n))
            seq += 1

    def pick(tried: tuple[int, ...] | set[int]) -> int:
        """``PoolSession.open``'s choice: the first element of a handle resolution not in ``tried``;
        if all are, one resolution asking for ``len(tried) + MORE_ITEMS`` (-1: none)."""
        for items in (hr_items, len(tried) + MORE_ITEMS) if tried else (hr_items,):
            for pe in select(items):
                e = pe.identifier - 1
                if e not in tried:
                    return e
        return -1

    def send(r: int, e: int, t: float) -> None:
        """The request (or the Cookie Echo) leaves for element e at ``t`` over a new association."""
        nonlocal seq
        r_tok[r] += 1
        r_tgt[r] = e
        push(heap, (t + sendlat[e], seq, _AT_PE, r, r_tok[r]))
        seq += 1

    def retry_later(r: int, t: float, excl: int, fo: bool) -> None:
        """Select again after the PU's retry delay, without ``excl`` (-1: none); ``fo``: in a fail-over."""
        nonlocal seq
        r_tok[r] += 1
        push(heap, (t + retry, seq, _RETRY, r, r_tok[r], excl, fo))
        seq += 1
        if faults:
            sleeping.add(r)

    def open_session(r: int, now: float, tried: set[int], n: int, fo: bool) -> None:
        """``PoolSession.open`` (``failover`` when ``fo``): resolve, connect, report the unreachable.

        Faults only; without faults every connect succeeds and ``open_fast`` does the same in one step.
        """
        nonlocal seq
        while True:
            e = pick(tried) if n < p.open_attempts else -1
            n += 1
            t = now + hr_rtt
            if e < 0:
                if fo:
                    # calcapp_pu: a fail-over that finds no PE ends the session ("lost"); a new one,
                    # without the cookie, starts at once
                    new_session(r)
                    tried, n, fo, now = set(), 0, False, t
                    continue
                retry_later(r, t, -1, False)
                return
            tried.add(e)
            if e_up[e] and (link or on_ue[e]):
                send(r, e, t)
                return
            if not (bearer or on_ue[e]):  # no route since the radio link failure: connect() fails at once
                report(e)
                now = t
                continue
            # nothing answers (a crashed host, or the radio drops every packet): the connect times out
            r_tok[r] += 1
            r_open[r] = (tried, n, fo, e)
            push(heap, (t + p.connect_timeout_s, seq, _CONNFAIL, r, r_tok[r]))
            seq += 1
            return

    def open_fast(r: int, now: float, excl: int) -> None:
        e = pick((excl,) if excl >= 0 else ())
        if e < 0:
            retry_later(r, now + hr_rtt, -1, False)
        else:
            send(r, e, now + hr_rtt)

    def open_(r: int, now: float, excl: int, fo: bool) -> None:
        if faults:
            open_session(r, now, {excl} if excl >= 0 else set(), 0, fo)
        else:
            open_fast(r, now, excl)

    def new_session(r: int) -> None:
        """The PU gives the session up: no Accept, no cookie any more."""
        r_sess.pop(r, None)
        resume.pop(r, None)

    def report(e: int) -> None:
        """ASAP Endpoint Unreachable to the PU's registrar; enough of them remove the element."""
        e_bad[e] += 1
        if e_bad[e] >= p.max_bad_reports and in_pool[e]:
            pool.remove(pelems[e].identifier)
            in_pool[e] = False

    def detect_at(r: int, e: int, t_dead: float) -> float:
        """When the PU, Accepted, gives up on a PE silent since ``t_dead``: messages (keep-alives
        and acks) arrive every interval + RTT from the Accept on; the last one before ``t_dead``
        is followed by a quiet interval, a keep-alive and its timeout."""
        a = r_sess[r][0]
        period = ka_int + rtt[e]
        k = math.floor((t_dead - a) / period) if t_dead > a else 0
        return a + k * period + silence

    def session_broke(r: int, now: float) -> None:
        """The PU finds its session dead (keep-alive timeout, or its route gone): ``_run_job``."""
        e = r_tgt[r]
        if r in r_sess:
            if r_fo.get(r, 0) >= p.max_failovers:
                new_session(r)
                open_session(r, now, set(), 0, False)
            else:
                # fail-over: report the PE, select without it, Cookie Echo (resume) if any
                r_fo[r] = r_fo.get(r, 0) + 1
                report(e)
                open_session(r, now, {e}, 0, True)
        else:
            # no Accept on this session: calcapp_pu starts a new one at once, reporting nothing
            new_session(r)
            open_session(r, now, set(), 0, False)

    def routes_gone(now: float) -> None:
        """``PoolUser._watch_routes`` / ``connect_routed`` at the RLF: every PU's session or connect
        under way to an element beyond the radio ends now (a PU sleeping has none)."""
        for i in range(n_pu):
            r = pu_cur[i]
            if r < 0 or r in sleeping:
                continue
            pending = r_open.get(r)
            if pending is not None:  # a connect under way: ENETUNREACH, report, the next one
                if not on_ue[pending[3]]:
                    del r_open[r]
                    r_tok[r] += 1
                    report(pending[3])
                    open_session(r, now, pending[0], pending[1], pending[2])
            elif r_tgt[r] >= 0 and not on_ue[r_tgt[r]]:
                r_tok[r] += 1  # what was still to come from that element is void
                session_broke(r, now)

    def timeout_at(r: int, t: float) -> None:
        nonlocal seq
        push(heap, (t, seq, _TIMEOUT, r, r_tok[r]))
        seq += 1

    def start_next(i: int, now: float) -> None:
        q = pu_q[i]
        if q:
            r = q.popleft()
            pu_cur[i] = r
            r_s[r] = now
            open_(r, now, -1, False)
        else:
            pu_cur[i] = -1

    def detach(e: int, now: float, orphan: bool) -> None:
        """Element e's jobs are lost to their PUs (crash or cut off); their keep-alives will tell.

        ``orphan``: the PE itself still runs (cut off), and works on until its keep-alive drops them.
        """
        advance(e, now)
        jobs = e_jobs[e]
        if orphan and jobs:
            # the PE's keep-alives go every interval + RTT from interval after the accept; the first
            # whose ack cannot come back before the cut drops the job a timeout later
            per = ka_int + rtt[e]
            drops = []
            for r in jobs:
                tx0 = j_acc[r] + ka_int
                k = max(0, math.ceil((now - rtt[e] - tx0) / per))
                drops.append(tx0 + k * per + p.keepalive_timeout_s)
            orphans.append((e, now, list(e_rem[e]), drops))
        for r in jobs:
            # the PU holds the last cookie that reached it before ``now``
            resume[r] = ck_done[r] if ck_t[r] + ow[e] <= now else ck_prev[r]
            s = r_sess.get(r)
            if s is not None and s[1] == r_tok[r]:
                timeout_at(r, detect_at(r, e, now))
            # else its Accept is still on the way: _ACCEPT sees what became of it
        e_jobs[e] = []
        e_rem[e] = []
        e_ver[e] += 1

    samples: list[tuple[float, int, float, int]] = []
    s_int = p.sample_interval_s
    next_sample = 0.0 if s_int > 0.0 else math.inf

    def sample_until(t: float) -> None:
        """Every sample due at or before ``t``; between events each element's work grows linearly."""
        nonlocal next_sample
        while next_sample <= t:
            ts = next_sample
            unseen = [0.0] * n_el  # what cut-off PEs still work on their jobs
            for e, t0, rem, drops in orphans:
                unseen[e] += _orphan_work(cap[e], rem, drops, t0, ts)
            for e in range(n_el):
                n = len(e_jobs[e])
                used = e_used[e] + (ts - e_last[e]) * cap[e] if n else e_used[e]
                samples.append((ts, e, used + unseen[e], n))
            next_sample = ts + s_int

    # ---------------------------------------------------------------- the loop
    events = 0
    while heap:
        ev = pop(heap)
        now = ev[0]
        if now > end_limit:
            break
        if now >= next_sample:
            sample_until(now)
        events += 1
        kind = ev[2]
        if kind == _ARRIVE:
            i = ev[3]
            r = len(r_pu)
            r_pu.append(i)
            sz = float(max(1, round(next_sz[i]())))  # as calcapp_pu: at least one calculation
            r_size.append(sz if sz >= 1.0 else 1.0)
            r_q.append(now)
            r_s.append(None)
            r_a.append(None)
            r_c.append(None)
            r_el.append(-1)
            r_tgt.append(-1)
            r_tok.append(0)
            pu_q[i].append(r)
            if pu_cur[i] < 0:
                start_next(i, now)
            t = now + next_iv[i]()
            if t < duration:
                push(heap, (t, seq, _ARRIVE, i, 0))
                seq += 1
        elif kind == _AT_PE:
            r = ev[3]
            if ev[4] != r_tok[r]:
                continue
            e = r_tgt[r]
            if faults and not (e_up[e] and (link or on_ue[e])):
                # lost with the PE or the radio: the PU hears nothing after sending it
                timeout_at(r, now - ow[e] + silence)
                continue
            if len(e_jobs[e]) < maxj[e]:
                advance(e, now)
                e_jobs[e].append(r)
                e_acc[e] += 1
                if faults:
                    done = resume.pop(r, 0.0)
                    e_rem[e].append(r_size[r] - done)
                    ck_t[r] = now
                    ck_done[r] = done
                    ck_prev[r] = done
                    j_acc[r] = now
                    push(heap, (now + ow[e], seq, _ACCEPT, r, r_tok[r]))
                    seq += 1
                else:
                    e_rem[e].append(r_size[r])
                    r_a[r] = now + ow[e]  # without faults a request is accepted once
                reschedule(e, now)
                report_load(e, now)
            else:
                e_rej[e] += 1
                push(heap, (now + ow[e], seq, _REJECT, r, r_tok[r]))
                seq += 1
        elif kind == _PE_DONE:
            e = ev[3]
            if ev[4] != e_ver[e]:
                continue
            advance(e, now)
            jobs = e_jobs[e]
            rem = e_rem[e]
            k = 0
            while k < len(jobs):
                if rem[k] <= _EPS:
                    r = jobs[k]
                    e_used[e] += rem[k]  # give back the float overshoot
                    del jobs[k]
                    del rem[k]
                    r_el[r] = e
                    push(heap, (now + ow[e], seq, _COMPLETE, r, r_tok[r]))
                    seq += 1
                else:
                    k += 1
            reschedule(e, now)
            report_load(e, now)
        elif kind == _COMPLETE:
            r = ev[3]
            if ev[4] != r_tok[r]:
                continue
            if faults and not (link or on_ue[r_tgt[r]]):
                # the Complete is lost on the radio: to the PU the PE has gone quiet since the cut
                e = r_tgt[r]
                s = r_sess.get(r)
                if s is not None and s[1] == r_tok[r]:
                    resume[r] = ck_done[r] if ck_t[r] + ow[e] <= cut_at else ck_prev[r]
                    timeout_at(r, max(now, detect_at(r, e, cut_at)))
                continue
            r_c[r] = now
            start_next(r_pu[r], now)
        elif kind == _LOAD:
            e = ev[3]
            if in_pool[e] and (link or on_ue[e]):  # a remote PE's update cannot reach a cut-off UE
                update_policy(pelems[e], infos[e][ev[4]])
        elif kind == _REJECT:
            r = ev[3]
            if ev[4] != r_tok[r]:
                continue
            e = r_tgt[r]
            if faults and not (link or on_ue[e]):
                timeout_at(r, now - 2 * ow[e] + silence)  # lost on the radio: silence since the request
                continue
            lst = r_rej.get(r)
            if lst is None:
                lst = r_rej[r] = []
            lst.append(e)
            # calcapp_pu: wait RETRY_DELAY, then select without the element that said no; a Cookie
            # Echo's reject keeps the session (and its cookie): failover(report=False)
            retry_later(r, now, e, faults and r in r_sess)
        elif kind == _RETRY:
            r = ev[3]
            if ev[4] != r_tok[r]:
                continue
            if faults:
                sleeping.discard(r)
            open_(r, now, ev[5], ev[6])
        elif kind == _ACCEPT:
            r = ev[3]
            if ev[4] != r_tok[r]:
                continue
            e = r_tgt[r]
            if not (link or on_ue[e]):
                timeout_at(r, now - 2 * ow[e] + silence)  # lost on the radio: silence since the request
                continue
            if r_a[r] is None:
                r_a[r] = now
            lst = r_acc.get(r)
            if lst is None:
                lst = r_acc[r] = []
            lst.append((now, e))
            r_sess[r] = (now, r_tok[r])
            if not e_up[e]:  # sent just before the PE crashed: nothing follows it
                timeout_at(r, now + silence)
        elif kind == _TIMEOUT:
            r = ev[3]
            if ev[4] != r_tok[r]:
                continue
            session_broke(r, now)
        elif kind == _CONNFAIL:
            r = ev[3]
            if ev[4] != r_tok[r]:
                continue
            tried, n, fo, e = r_open.pop(r)
            report(e)  # the connect timed out: report it and try the next one
            open_session(r, now, tried, n, fo)
        elif kind == _FAULT:
            what, e = fault_events[ev[3]]
            if what == "fail":
                detach(e, now, orphan=False)
                e_up[e] = False
            elif what == "unregister":
                if in_pool[e] and not e_up[e]:
                    pool.remove(pelems[e].identifier)
                    in_pool[e] = False
            elif what == "recover":
                e_up[e] = True
                e_bad[e] = 0
                e_last[e] = now
                if not in_pool[e]:
                    pelems[e].policy = infos[e][0]
                    pool.add(pelems[e])
                    in_pool[e] = True
                else:
                    update_policy(pelems[e], infos[e][0])
            elif what == "cut":
                link = False
                cut_at = now
                for x in range(n_el):
                    if not on_ue[x] and e_up[x]:
                        detach(x, now, orphan=True)
            elif what == "rlf":
                bearer = False
                if p.watch_routes:
                    routes_gone(now)
            elif what == "reach":
                link = bearer = True
                assert resync_rng is not None
                resync = resync_rng.uniform(0.0, p.resync_max_s)
                for x in range(n_el):
                    if not on_ue[x]:
                        fault_at(now + resync + rtt[x], "relearn", x)
            elif what == "relearn":
                if link and e_up[e]:
                    info = infos[e][len(e_jobs[e])]
                    if not in_pool[e]:
                        pelems[e].policy = info
                        pool.add(pelems[e])
                        in_pool[e] = True
                        e_bad[e] = 0
                    else:
                        update_policy(pelems[e], info)
            elif what == "partition":
                if not link:
                    for x in range(n_el):
                        if not on_ue[x] and in_pool[x]:
                            pool.remove(pelems[x].identifier)
                            in_pool[x] = False

    # the run's end: the drain ends when the last request completes
    end_t = duration
    if p.drain_s > 0.0:
        done = [c for c in r_c if c is not None]
        end_t = max([duration, *done]) if len(done) == len(r_c) else end_limit
    sample_until(end_t)  # before the final advance: it moves e_last to end_t
    if samples and samples[-1][0] > end_t:  # the drain ended before the loop's last events
        samples = [x for x in samples if x[0] <= end_t]
    if samples and samples[-1][0] < end_t:  # the run's end off the grid (a drain): one more, at the end
        next_sample = end_t
        sample_until(end_t)
    for e in range(n_el):
        if e_up[e]:
            advance(e, end_t)
    for e, t0, rem, drops in orphans:
        e_used[e] += _orphan_work(cap[e], rem, drops, t0, end_t)

    res = RunResult(setting=p.setting, run=p.run, duration=end_t, events=events, accepts=r_acc, samples=samples)
    out = res.requests
    for r in range(len(r_pu)):
        c = r_c[r]
        status = STATUS_COMPLETED if c is not None else STATUS_UNFINISHED
        el = r_el[r] if c is not None else (r_tgt[r] if r_a[r] is not None else -1)
        out.append((
            r_pu[r], r_size[r], r_q[r], r_s[r], r_a[r], c, el,
            tuple(r_rej.get(r, ())), r_fo.get(r, 0), status,
        ))
    res.usage = [(e_used[e], e_acc[e], e_rej[e]) for e in range(n_el)]
    res.wall_s = time.perf_counter() - wall0
    return res

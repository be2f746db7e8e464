"""One simulated run: PUs with FIFO queues, PEs with processor sharing, PLU selection via rserpool.

The model follows RSPLIB 3.4.4's CalcApp client and server (``calcappclient.cc``,
``calcappservice.cc``):

* each PU issues requests with random sizes at random intervals (first one after one interval),
  queues them FIFO and serves one at a time;
* dequeuing starts the *start-up*: a handle resolution at the PU's registrar, which runs the pool's
  policy (``rserpool.policy.SelectionPool``, C selector, up to 3 elements as RSPLIB's registrar
  returns); the PU takes the first, as RSPLIB's session layer does, and sends its request over a
  new association;
* a PE accepts while it runs fewer than ``max_requests`` jobs and shares its capacity equally
  among them (processor sharing); otherwise it rejects. On a reject the PU fails over: a new handle
  resolution (a re-selection), then — no cookie yet — RSPLIB's client sleeps 1 s before sending the
  request again;
* a PE reports load = jobs / max jobs (``CalcAppServer::scheduleJobs`` → ``setLoad``) on every
  accept and completion; the report reaches the PU's registrar after the load-update delay;
* faults (optional): an element crash or a UE coverage loss. PUs notice a dead association by
  their keep-alive (sent 5 s after the accept or the last ack, 5 s timeout) and fail over; a
  request with a cookie (the PE sends one every 5 s or 5,000,000 calculations) resumes from it,
  else it restarts. The registrar drops a crashed PE after its endpoint keep-alive fails
  (``registrar_detect_s``) or after 3 unreachability reports. During a coverage loss only elements
  on the UE are selectable (the UE's registrar is cut off from the others).

The loop is lean on purpose: events are plain tuples on a heapq, requests and elements are integer
indexes into lists, and a PE's completion is recomputed only when its own job set changes (stale
completion events are skipped by a per-element version number).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field

from emulab.sim.model import PoolModel
from rserpool.policy import DEFAULT_MAX_HANDLE_RESOLUTION_ITEMS, PolicyElement, SelectionPool

# event kinds, ordered roughly by frequency
_ARRIVE, _AT_PE, _PE_DONE, _COMPLETE, _LOAD, _REJECT, _SEND, _TIMEOUT, _RETRY, _FAULT = range(10)

STATUS_COMPLETED, STATUS_LOST, STATUS_UNFINISHED = 0, 1, 2
STATUS_NAMES = ("completed", "lost", "unfinished")

_EPS = 1e-3  # calculations: a job with less than this left is done (floating-point slack)


@dataclass(frozen=True, slots=True)
class Failure:
    """An element crash at ``at`` seconds, back after ``duration`` (None: for good)."""

    element: str
    at: float
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class CoverageLoss:
    """The UE is cut off from the network between ``at`` and ``at + duration``."""

    at: float
    duration: float


@dataclass(frozen=True, slots=True)
class RunParams:
    """Everything one run needs besides the pool model."""

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
    connect_rtts: float = 1.0
    """RTTs before the request leaves (new association per job); request + accept add one more."""
    reject_retry_s: float = 1.0
    """RSPLIB calcappclient: usleep(1000000) after a reject when no cookie exists."""
    keepalive_interval_s: float = 5.0
    keepalive_timeout_s: float = 5.0
    cookie_interval_s: float = 5.0
    cookie_calculations: float = 5_000_000.0
    registrar_detect_s: float = 7.5
    """Endpoint keep-alive (5 s cycle, 5 s timeout): on average 2.5 + 5 s to drop a dead PE."""
    max_bad_reports: int = 3
    handle_resolution_items: int = DEFAULT_MAX_HANDLE_RESOLUTION_ITEMS
    force_python_selector: bool | None = None


@dataclass(slots=True)
class RunResult:
    """A run's outcome in compact columns (cheap to pickle between processes)."""

    setting: int
    run: int
    duration: float
    # per request: pu index, size, queued, started, accepted, completed, element index (-1),
    # rejected-by element indexes, failovers, status code
    requests: list[tuple] = field(default_factory=list)
    # per element: used calculations, accepted, rejected
    usage: list[tuple[float, int, int]] = field(default_factory=list)
    events: int = 0
    wall_s: float = 0.0


def _sampler(dist: str, mean: float, rng: random.Random):
    if dist == "exp":
        lam = 1.0 / mean
        ex = rng.expovariate
        return lambda: ex(lam)
    if dist == "uniform":
        un = rng.random
        return lambda: un() * 2.0 * mean
    return lambda: mean


def simulate_run(model: PoolModel, p: RunParams) -> RunResult:  # noqa: C901 - one lean event loop
    """Simulate one run of ``p.setting`` PUs for ``p.duration`` seconds."""
    wall0 = time.perf_counter()
    duration = p.duration
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
    sendlat = [p.connect_rtts * e.rtt_s + e.one_way_s for e in elems]
    lud = [e.load_update_delay_s for e in elems]
    on_ue = [e.on_ue for e in elems]
    hr_rtt = model.handle_resolution_rtt_s

    e_jobs: list[list[int]] = [[] for _ in range(n_el)]
    e_rem: list[list[float]] = [[] for _ in range(n_el)]
    e_last = [0.0] * n_el
    e_ver = [0] * n_el
    e_used = [0.0] * n_el
    e_acc = [0] * n_el
    e_rej = [0] * n_el
    e_up = [True] * n_el
    e_bad = [0] * n_el
    covered = True

    faults = bool(p.failures or p.coverage_losses)
    # cookie bookkeeping per request (only with faults): last cookie (time, done), previous done
    ck_t: dict[int, float] = {}
    ck_done: dict[int, float] = {}
    ck_prev: dict[int, float] = {}
    resume: dict[int, float] = {}

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
    r_lost: set[int] = set()

    pu_cur = [-1] * n_pu
    pu_q: list[deque[int]] = [deque() for _ in range(n_pu)]
    pu_rngs = [random.Random(f"{tag}:{i}") for i in range(n_pu)]
    next_iv = [_sampler(p.interval_dist, p.interval_mean, g) for g in pu_rngs]
    next_sz = [_sampler(p.size_dist, p.size_mean, g) for g in pu_rngs]

    heap: list[tuple] = []
    push = heapq.heappush
    pop = heapq.heappop
    seq = 0

    for i in range(n_pu):
        t = next_iv[i]()
        if t < duration:
            push(heap, (t, seq, _ARRIVE, i, 0))
            seq += 1

    fault_events: list[tuple[str, object]] = []
    for f in p.failures:
        idx = next((k for k, e in enumerate(elems) if e.name == f.element), None)
        if idx is None:
            raise ValueError(f"failure of unknown element {f.element!r}")
        fault_events.append(("fail", idx))
        push(heap, (f.at, seq, _FAULT, len(fault_events) - 1, 0))
        seq += 1
        if f.duration is not None:
            fault_events.append(("unregister", idx))
            push(heap, (f.at + p.registrar_detect_s, seq, _FAULT, len(fault_events) - 1, 0))
            seq += 1
            fault_events.append(("recover", idx))
            push(heap, (f.at + f.duration, seq, _FAULT, len(fault_events) - 1, 0))
            seq += 1
        else:
            fault_events.append(("unregister", idx))
            push(heap, (f.at + p.registrar_detect_s, seq, _FAULT, len(fault_events) - 1, 0))
            seq += 1
    for c in p.coverage_losses:
        fault_events.append(("cut", None))
        push(heap, (c.at, seq, _FAULT, len(fault_events) - 1, 0))
        seq += 1
        fault_events.append(("restore", None))
        push(heap, (c.at + c.duration, seq, _FAULT, len(fault_events) - 1, 0))
        seq += 1

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
                    _cookies(e, now, d / dt if dt > 0 else 0.0)
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

    def choose() -> int:
        chosen = select(hr_items)
        return chosen[0].identifier - 1 if chosen else -1

    def send(r: int, e: int, now: float, extra: float) -> None:
        """Send request r to element e (after ``extra`` s); -1: nothing selectable, retry in 1 s."""
        nonlocal seq
        r_tok[r] += 1
        r_tgt[r] = e
        if e < 0:
            push(heap, (now + p.reject_retry_s, seq, _RETRY, r, r_tok[r]))
        else:
            push(heap, (now + extra + sendlat[e], seq, _AT_PE, r, r_tok[r]))
        seq += 1

    def start_next(i: int, now: float) -> None:
        q = pu_q[i]
        if q:
            r = q.popleft()
            pu_cur[i] = r
            r_s[r] = now
            send(r, choose(), now, hr_rtt)
        else:
            pu_cur[i] = -1

    def detach(e: int, now: float, detect: bool) -> None:
        """Element e loses all its jobs (crash or cut off); their PUs time out and fail over."""
        nonlocal seq
        advance(e, now)
        for r in e_jobs[e]:
            if faults:
                # the PU holds the last cookie that reached it before ``now``
                resume[r] = ck_done[r] if ck_t[r] + ow[e] <= now else ck_prev[r]
            if detect:
                # next keep-alive after the accept's 5 s grid, then its timeout
                acc = r_a[r] if r_a[r] is not None else now
                k = math.floor(max(0.0, now - acc) / p.keepalive_interval_s) + 1
                push(heap, (acc + k * p.keepalive_interval_s + p.keepalive_timeout_s, seq, _TIMEOUT, r, r_tok[r]))
                seq += 1
        e_jobs[e] = []
        e_rem[e] = []
        e_ver[e] += 1

    def reachable(e: int) -> bool:
        return e_up[e] and (covered or on_ue[e])

    # ---------------------------------------------------------------- the loop
    events = 0
    while heap:
        ev = pop(heap)
        now = ev[0]
        if now > duration:
            break
        events += 1
        kind = ev[2]
        if kind == _ARRIVE:
            i = ev[3]
            r = len(r_pu)
            r_pu.append(i)
            sz = float(round(next_sz[i]()))
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
            if faults and not reachable(e):
                # nothing comes back: the PU's keep-alive timeout (set when sending) fires
                push(heap, (now - sendlat[e] + p.keepalive_timeout_s, seq, _TIMEOUT, r, r_tok[r]))
                seq += 1
                continue
            if len(e_jobs[e]) < maxj[e]:
                advance(e, now)
                done = resume.pop(r, 0.0) if faults else 0.0
                e_jobs[e].append(r)
                e_rem[e].append(r_size[r] - done)
                if faults:
                    ck_t[r] = now
                    ck_done[r] = done
                    ck_prev[r] = done
                e_acc[e] += 1
                r_a[r] = now + ow[e]  # RSPLIB overwrites AcceptTimeStamp on every accept
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
            r_c[r] = now
            start_next(r_pu[r], now)
        elif kind == _LOAD:
            e = ev[3]
            if in_pool[e]:
                update_policy(pelems[e], infos[e][ev[4]])
        elif kind == _REJECT:
            r = ev[3]
            if ev[4] != r_tok[r]:
                continue
            lst = r_rej.get(r)
            if lst is None:
                lst = r_rej[r] = []
            lst.append(r_tgt[r])
            # forced failover = a new handle resolution now; the request leaves after RSPLIB's 1 s sleep
            send(r, choose(), now, p.reject_retry_s)
        elif kind == _RETRY:
            r = ev[3]
            if ev[4] != r_tok[r]:
                continue
            send(r, choose(), now, 0.0)
        elif kind == _TIMEOUT:
            r = ev[3]
            if ev[4] != r_tok[r]:
                continue
            e = r_tgt[r]
            r_fo[r] = r_fo.get(r, 0) + 1
            e_bad[e] += 1
            if e_bad[e] >= p.max_bad_reports and in_pool[e] and not e_up[e]:
                pool.remove(pelems[e].identifier)
                in_pool[e] = False
            send(r, choose(), now, 0.0)
        elif kind == _FAULT:
            what, arg = fault_events[ev[3]]
            if what == "fail":
                e = int(arg)  # type: ignore[arg-type]
                detach(e, now, detect=True)
                e_up[e] = False
            elif what == "unregister":
                e = int(arg)  # type: ignore[arg-type]
                if in_pool[e] and not e_up[e]:
                    pool.remove(pelems[e].identifier)
                    in_pool[e] = False
            elif what == "recover":
                e = int(arg)  # type: ignore[arg-type]
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
                covered = False
                for e in range(n_el):
                    if not on_ue[e]:
                        detach(e, now, detect=True)
                        if in_pool[e]:
                            pool.remove(pelems[e].identifier)
                            in_pool[e] = False
            elif what == "restore":
                covered = True
                for e in range(n_el):
                    if not on_ue[e] and e_up[e] and not in_pool[e]:
                        e_last[e] = now
                        pelems[e].policy = infos[e][len(e_jobs[e])]
                        pool.add(pelems[e])
                        in_pool[e] = True

    for e in range(n_el):
        if e_up[e]:
            advance(e, duration)

    res = RunResult(setting=p.setting, run=p.run, duration=duration, events=events)
    out = res.requests
    for r in range(len(r_pu)):
        c = r_c[r]
        status = STATUS_COMPLETED if c is not None else (STATUS_LOST if r in r_lost else STATUS_UNFINISHED)
        el = r_el[r] if c is not None else (r_tgt[r] if r_a[r] is not None else -1)
        out.append((
            r_pu[r], r_size[r], r_q[r], r_s[r], r_a[r], c, el,
            tuple(r_rej.get(r, ())), r_fo.get(r, 0), status,
        ))
    res.usage = [(e_used[e], e_acc[e], e_rej[e]) for e in range(n_el)]
    res.wall_s = time.perf_counter() - wall0
    return res

"""The CalcApp pool user (RSPLIB ``calcappclient``): a request queue served one request at a time.

Each PU generates requests (sizes and inter-request times from a distribution: negative
exponential by default, as RSPLIB's randomExpDouble; ``const``; ``uniform`` = U(0, 2 x mean)) into a
FIFO queue. The head request is served by a fresh ASAP session (RSPLIB opens one per job):

1. dequeue (``started_at``): handle resolution at the registrar (PLU selection there) and connect;
2. CalcApp Request -> Accept (``accepted_at``) or Reject: on a reject the PU closes the session, waits
   ``retry_delay`` (1 s, RSPLIB calcappclient's pause before it tries again) and selects again
   (each rejecting element is counted in ``rejected_by``);
3. while the job runs, Keep-Alive/Ack in both directions (2500 ms / 2500 ms); the PE's ASAP Cookies
   carry the job's progress; if the PE fails (session lost or keep-alive timeout) the session fails
   over to another PE with a Cookie Echo of the last cookie, so the job resumes from there;
4. CalcApp Complete (``completed_at``): the record is done; the next request is dequeued.

``run_pus`` runs N such PUs in one asyncio loop for a duration and returns plain dict records (the
fields of ``emulab.results.RequestRecord`` without setting/run; times in seconds since the start,
``PURun.t0_epoch`` being that start on the wall clock). Each record also lists every Accept the
request got (``accepts``: [time, element]), the first one and those after fail-overs, so a coverage
loss's fail-over and recovery can be timed, and every restart of an accepted request from scratch
(``restarts``: [time, reason, element left, calculations given up]; reasons in ``RESTART_REASONS``),
so work thrown away is counted. With ``drain`` the PUs stop generating at ``duration``
and get up to ``drain`` more seconds to finish what they have queued, so a run can end with every
request issued either completed or visibly not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rserpool.pu import NoPoolElementError, PoolSession, PoolUser, PUConfig
from rserpool.services.calcapp import KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, PPID_CALCAPP, decode_cookie
from rserpool.wire.calcapp import CalcAppMessage, CalcAppType, decode_calcapp
from rserpool.wire.errors import CodecError

log = logging.getLogger(__name__)

RETRY_DELAY = 1.0  # calcappclient: pause after a reject / an unreachable pool before trying again
DISTRIBUTIONS = ("exp", "const", "uniform")
RESTART_REASONS = {
    "no_cookie": "the PE was lost before a cookie of the job reached the PU: the request goes to another PE anew",
    "session_lost": "the session ended after the Accept (a fail-over found no PE, the fail-overs ran out, or "
                    "the request could not be sent): a new session starts the request anew, its cookie unused",
}
"""Why an accepted request was started again from scratch (``Request.restarts``)."""


def pu_rng(seed: int, index: int) -> random.Random:
    """The random stream of PU number ``index`` of a run seeded ``seed`` (sizes and intervals, drawn
    interval first, then size, request after request). `emulab simulate` draws from the very same
    streams, so a simulated run and an emulated one with the same seed see the same requests."""
    return random.Random(seed * 100_003 + index)


def sampler(dist: str, mean: float, rng: random.Random) -> Callable[[], float]:
    """A draw function for ``dist`` with the given mean."""
    if dist == "exp":
        return lambda: rng.expovariate(1.0 / mean)
    if dist == "const":
        return lambda: mean
    if dist == "uniform":
        return lambda: rng.uniform(0.0, 2.0 * mean)
    raise ValueError(f"unknown distribution {dist!r} (one of {', '.join(DISTRIBUTIONS)})")


@dataclass
class PUParams:
    pool_handle: bytes = b"Processing Pool"
    size_mean: float = 1_000_000.0
    size_dist: str = "exp"
    interval_mean: float = 10.0
    interval_dist: str = "exp"
    retry_delay: float = RETRY_DELAY
    keepalive_interval: float = KEEPALIVE_INTERVAL
    keepalive_timeout: float = KEEPALIVE_TIMEOUT
    max_failovers: int = 10


@dataclass
class Request:
    request_id: int
    size: int
    queued_at: float
    started_at: float | None = None
    accepted_at: float | None = None
    completed_at: float | None = None
    element: str | None = None
    element_id: int | None = None
    rejected_by: list[str] = field(default_factory=list)
    failovers: int = 0
    status: str = "unfinished"
    accepts: list[tuple[float, str]] = field(default_factory=list)  # (time, element) of every Accept
    # (time, reason, element left, calculations the job had reached by its last cookie) of every
    # restart from scratch after an Accept
    restarts: list[tuple[float, str, str | None, int]] = field(default_factory=list)

    def to_dict(self, pu: str) -> dict[str, Any]:
        return {"pu": pu, "request_id": self.request_id, "size": float(self.size), "queued_at": self.queued_at,
                "started_at": self.started_at, "accepted_at": self.accepted_at,
                "completed_at": self.completed_at, "element": self.element, "element_id": self.element_id,
                "rejected_by": list(self.rejected_by), "failovers": self.failovers, "status": self.status,
                "accepts": [[round(t, 6), e] for t, e in self.accepts],
                "restarts": [[round(t, 6), why, e, done] for t, why, e, done in self.restarts]}


class _Session:
    """One job's ASAP session: CalcApp messages into a queue, keep-alives, fail-over."""

    def __init__(self, pu: PoolUser, handle: bytes) -> None:
        self.queue: asyncio.Queue[CalcAppMessage] = asyncio.Queue()
        self.accepted = False  # a PE accepted the job on this session (a loss now throws work away)
        self.session = PoolSession(pu, handle, on_data=self._data, on_failover=None, max_attempts=8)

    def _data(self, data: bytes, ppid: int) -> None:
        try:
            self.queue.put_nowait(decode_calcapp(data))
        except CodecError as exc:
            log.warning("malformed CalcApp message: %s", exc)

    def send(self, msg: CalcAppMessage) -> None:
        self.session.send(msg.encode(), PPID_CALCAPP)

    @property
    def element(self) -> tuple[str, int]:
        pe = self.session.pe
        assert pe is not None
        return pe.endpoint[0], pe.identifier

    async def next(self, timeout: float) -> CalcAppMessage | None:
        """The next CalcApp message, or None on timeout / lost session."""
        ch = self.session.channel
        if ch is None:
            return None
        get = asyncio.ensure_future(self.queue.get())
        closed = asyncio.ensure_future(ch.closed.wait())
        try:
            done, _ = await asyncio.wait({get, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not get.done():
                get.cancel()
        if get in done:
            return get.result()
        if not self.queue.empty():
            return self.queue.get_nowait()
        return None

    def progress(self) -> int:
        """Calculations the job had reached by the last cookie this session holds (0: none)."""
        ch = self.session.channel
        cookie = ch.cookie if ch is not None and ch.cookie is not None else self.session.cookie
        if cookie is None:
            return 0
        try:
            return int(decode_cookie(cookie)[2])
        except CodecError:
            return 0

    def close(self) -> None:
        self.session.close()


class CalcAppPU:
    """One CalcApp pool user (its own ASAP instance, like one calcappclient process)."""

    def __init__(self, name: str, config: PUConfig, params: PUParams, rng: random.Random,
                 clock: Callable[[], float]) -> None:
        self.name = name
        self.params = params
        self.pu = PoolUser(config)
        self.clock = clock
        self.next_size = sampler(params.size_dist, params.size_mean, rng)
        self.next_interval = sampler(params.interval_dist, params.interval_mean, rng)
        self.queue: deque[Request] = deque()
        self.requests: list[Request] = []
        self.busy = False  # a request is being served
        self._wakeup = asyncio.Event()
        self._generator: asyncio.Task[None] | None = None
        # RSPLIB calcappclient's counters: Keep-Alives and Keep-Alive Acks are the ones this PU *sent*
        # (TotalCalcAppKeepAlives / TotalCalcAppKeepAliveAcks); the PE's answers are counted apart.
        self.counters = {"requests": 0, "accepts": 0, "rejects": 0, "completes": 0, "keepalives": 0,
                         "keepalive_acks": 0, "keepalive_acks_received": 0, "restarts": 0}

    async def run(self) -> None:
        await self.pu.start()
        self._generator = gen = asyncio.create_task(self._generate())
        try:
            await self._serve()
        finally:
            gen.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gen
            await self.pu.close()

    def stop_generating(self) -> None:
        """No new requests from now on; queued ones are still served."""
        if self._generator is not None:
            self._generator.cancel()

    @property
    def idle(self) -> bool:
        return not self.busy and not self.queue

    async def _generate(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(self.next_interval())
            n += 1
            r = Request(n, max(1, int(round(self.next_size()))), self.clock())
            self.requests.append(r)
            self.queue.append(r)
            self._wakeup.set()

    async def _serve(self) -> None:
        while True:
            while not self.queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            r = self.queue.popleft()
            r.started_at = self.clock()
            self.busy = True
            try:
                await self._handle(r)
            finally:
                self.busy = False

    async def _handle(self, r: Request) -> None:
        p = self.params
        exclude: set[int] = set()
        while True:
            s = _Session(self.pu, p.pool_handle)
            try:
                await s.session.open(exclude=exclude)
            except (NoPoolElementError, ConnectionError, OSError) as exc:
                log.info("%s: no pool element for request %d (%s); retrying", self.name, r.request_id, exc)
                s.close()
                exclude.clear()
                await asyncio.sleep(p.retry_delay)
                continue
            try:
                result = await self._run_job(s, r)
                if result == "lost" and s.accepted:
                    # the session held the job after an Accept: the next session starts it anew
                    self._restart(r, "session_lost", s)
            finally:
                s.close()
            if result == "completed":
                return
            if result == "rejected":
                host, ident = s.element
                r.rejected_by.append(host)
                exclude = {ident}  # the next selection avoids the element that just said no
                await asyncio.sleep(p.retry_delay)
            else:  # the session broke before an accept: select again at once
                exclude = set()

    async def _run_job(self, s: _Session, r: Request) -> str:
        """Request -> accept -> complete on one session, failing over with the cookie on PE failure."""
        p = self.params
        try:
            s.send(CalcAppMessage(CalcAppType.REQUEST, r.request_id, r.size))
        except ConnectionError:
            return "lost"
        self.counters["requests"] += 1
        s.accepted = accepted = False
        waiting_ack = False
        while True:
            msg = await s.next(p.keepalive_timeout if waiting_ack else p.keepalive_interval)
            if msg is None:
                ch = s.session.channel
                if ch is not None and ch.is_open and not waiting_ack:
                    # silence: probe the PE (calcappclient's keep-alive)
                    with contextlib.suppress(ConnectionError):
                        s.send(CalcAppMessage(CalcAppType.KEEPALIVE, r.request_id))
                        self.counters["keepalives"] += 1
                        waiting_ack = True
                        continue
                if not accepted:
                    return "lost"
                # the PE failed while working on the job: fail over, resuming from the last cookie
                if r.failovers >= p.max_failovers:
                    return "lost"
                r.failovers += 1
                log.info("%s: request %d: PE failed, failing over", self.name, r.request_id)
                try:
                    if s.session.cookie is None and (s.session.channel is None or s.session.channel.cookie is None):
                        # no cookie yet: nothing to resume from, start over on another PE
                        left = s.session.pe.endpoint[0] if s.session.pe is not None else None
                        await s.session.failover()
                        s.send(CalcAppMessage(CalcAppType.REQUEST, r.request_id, r.size))
                        self._restart(r, "no_cookie", s, left)
                    else:
                        await s.session.failover()  # sends the Cookie Echo; the new PE answers Accept/Reject
                except (NoPoolElementError, ConnectionError, OSError):
                    return "lost"
                waiting_ack = False
                continue
            waiting_ack = False
            if msg.job_id != r.request_id:
                continue
            if msg.type == CalcAppType.ACCEPT:
                self.counters["accepts"] += 1
                now = self.clock()
                if not accepted:
                    s.accepted = accepted = True
                    r.accepted_at = now
                host, ident = s.element
                r.element, r.element_id = host, ident
                r.accepts.append((now, host))
            elif msg.type == CalcAppType.REJECT:
                self.counters["rejects"] += 1
                if accepted:
                    # a reject of a Cookie Echo after fail-over: try yet another PE with the same cookie
                    host, _ = s.element
                    r.rejected_by.append(host)
                    await asyncio.sleep(p.retry_delay)
                    try:
                        await s.session.failover(report=False)
                    except (NoPoolElementError, ConnectionError, OSError):
                        return "lost"
                    continue
                return "rejected"
            elif msg.type == CalcAppType.COMPLETE:
                self.counters["completes"] += 1
                r.completed_at = self.clock()
                host, ident = s.element
                r.element, r.element_id = host, ident
                r.status = "completed"
                return "completed"
            elif msg.type == CalcAppType.KEEPALIVE:
                with contextlib.suppress(ConnectionError):
                    s.send(CalcAppMessage(CalcAppType.KEEPALIVE_ACK, r.request_id))
                    self.counters["keepalive_acks"] += 1
            elif msg.type == CalcAppType.KEEPALIVE_ACK:
                self.counters["keepalive_acks_received"] += 1

    def _restart(self, r: Request, reason: str, s: _Session, left: str | None = None) -> None:
        """Note that accepted request ``r`` starts again from scratch (``left``: the PE it leaves)."""
        if left is None and s.session.pe is not None:
            left = s.session.pe.endpoint[0]
        r.restarts.append((self.clock(), reason, left, s.progress()))
        self.counters["restarts"] += 1
        log.info("%s: request %d restarts from scratch (%s)", self.name, r.request_id, reason)

    def records(self) -> list[dict[str, Any]]:
        return [r.to_dict(self.name) for r in self.requests]


@dataclass
class PURun:
    """What ``run_pus`` returns: the records, the PUs' summed message counters, and when time 0 was."""

    records: list[dict[str, Any]]
    counters: dict[str, int]
    t0_epoch: float  # wall-clock time (time.time()) of the records' time 0
    elapsed: float  # seconds the PUs ran, drain included
    counters_by_pu: dict[str, dict[str, int]] = field(default_factory=dict)


async def run_pus(n: int, duration: float, config: PUConfig, params: PUParams, seed: int = 1,
                  prefix: str = "pu", drain: float = 0.0) -> PURun:
    """Run ``n`` PUs for ``duration`` seconds (then up to ``drain`` s to finish their queues)."""
    t0, t0_epoch = time.monotonic(), time.time()

    def clock() -> float:
        return time.monotonic() - t0

    pus = [CalcAppPU(f"{prefix}{i}", config, params, pu_rng(seed, i), clock) for i in range(n)]
    tasks = [asyncio.create_task(p.run(), name=p.name) for p in pus]
    await asyncio.sleep(max(0.0, duration - clock()))
    if drain > 0:
        for p in pus:
            p.stop_generating()
        deadline = duration + drain
        while not all(p.idle for p in pus) and clock() < deadline:
            await asyncio.sleep(min(0.1, max(0.0, deadline - clock())))
    elapsed = clock()
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    records = [rec for p in pus for rec in p.records()]
    totals: dict[str, int] = {}
    for p in pus:
        for k, v in p.counters.items():
            totals[k] = totals.get(k, 0) + v
    return PURun(records, totals, t0_epoch, elapsed, {p.name: dict(p.counters) for p in pus})

"""RSPLIB's CalcApp pool element service (``rspserver -calcapp``, src/calcappservice.cc), in asyncio.

Semantics kept from RSPLIB 3.4.4:

* capacity in calculations/s, shared equally among the accepted jobs (processor sharing);
* at most ``max_jobs`` jobs (RSPLIB default 10, the papers 4: ``-capmaxjobs=4``); a request beyond
  that is answered with CalcApp Reject;
* load = jobs / max jobs, reported to the registrar (re-registration on change, as RSPLIB's setLoad);
* keep-alive: every 2500 ms the PE sends CalcApp Keep-Alive; no Keep-Alive Ack within 2500 ms
  removes the job; a PU's Keep-Alive is answered with an Ack;
* cookies: the job's progress (``CalcAppCookie``: job ID u32, size u64, completed u64, packed,
  network order) is sent as an ASAP Cookie every 5 s or every 5,000,000 calculations, whichever
  comes first; a Cookie Echo on a new session re-creates the job with that progress (fail-over);
* on completion CalcApp Complete carries size and completed calculations.

Statistics: ``stats()`` gives RSPLIB's "CalcAppPE ..." scalars (used calculations, jobs accepted /
rejected, uptime); with ``RSERPOOL_CALCAPP_STATS=<path>`` set, they are written there as JSON on
close and on SIGUSR1, so an experiment can read each PE's used capacity without parsing logs.
Then the PE also samples its cumulative used calculations and its job count every
``SAMPLE_INTERVAL`` (1 s) on the wall clock (``series`` in the JSON): the used capacity over time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import struct
import time
from dataclasses import dataclass
from typing import Any

from rserpool.session import SessionChannel
from rserpool.wire.calcapp import CalcAppMessage, CalcAppType, decode_calcapp
from rserpool.wire.errors import CodecError

log = logging.getLogger(__name__)

PPID_CALCAPP = 34
DEFAULT_MAX_JOBS = 10  # rspserver -capmaxjobs default
KEEPALIVE_INTERVAL = 2.5  # KeepAliveTransmissionInterval (s)
KEEPALIVE_TIMEOUT = 2.5  # KeepAliveTimeoutInterval (s)
COOKIE_MAX_TIME = 5.0  # CookieMaxTime (s)
COOKIE_MAX_CALCULATIONS = 5_000_000.0  # CookieMaxCalculations
COOKIE = struct.Struct("!IQQ")  # struct CalcAppCookie (packed)
STATS_ENV = "RSERPOOL_CALCAPP_STATS"
SAMPLE_INTERVAL = 1.0  # s between samples of the used capacity (only with a statistics file)


def encode_cookie(job_id: int, job_size: float, completed: float) -> bytes:
    return COOKIE.pack(job_id & 0xFFFFFFFF, int(round(job_size)), int(round(completed)))


def decode_cookie(data: bytes) -> tuple[int, int, int]:
    """(job ID, size, completed); raises CodecError if too short (RSPLIB: "malformed cookie echo")."""
    if len(data) < COOKIE.size:
        raise CodecError(f"CalcApp cookie: {len(data)} byte(s), expected {COOKIE.size}")
    return COOKIE.unpack_from(data, 0)


@dataclass
class Job:
    channel: SessionChannel
    job_id: int
    size: float
    completed: float
    last_update: float
    last_cookie_at: float
    last_cookie_completed: float
    keepalive_tx_at: float
    keepalive_timeout_at: float = float("inf")


class CalcAppServer:
    """The service object ``PoolElement`` drives through ``on_data`` / ``on_cookie_echo`` / ``close``."""

    def __init__(self, pe: Any, *, capacity: float | None = None, max_jobs: int | None = None,
                 keepalive_interval: float = KEEPALIVE_INTERVAL, keepalive_timeout: float = KEEPALIVE_TIMEOUT,
                 cookie_max_time: float = COOKIE_MAX_TIME,
                 cookie_max_calculations: float = COOKIE_MAX_CALCULATIONS,
                 stats_path: str | None = None) -> None:
        self.pe = pe
        cfg = getattr(pe, "config", None)
        self.capacity = float(capacity if capacity is not None else getattr(cfg, "capacity", 1e6))
        mr = max_jobs if max_jobs is not None else getattr(cfg, "max_requests", 0)
        self.max_jobs = int(mr) if mr and mr > 0 else DEFAULT_MAX_JOBS
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.cookie_max_time = cookie_max_time
        self.cookie_max_calculations = cookie_max_calculations
        self.jobs: list[Job] = []
        self.started = time.monotonic()
        self.used_calculations = 0.0
        self.accepted = 0
        self.rejected = 0
        self.completed_jobs = 0
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.series: list[tuple[float, float, int]] = []  # (wall-clock time, used calculations, jobs)
        self._sampler: asyncio.TimerHandle | None = None
        self.stats_path = stats_path if stats_path is not None else os.environ.get(STATS_ENV)
        if self.stats_path:
            with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.write_stats)
            with contextlib.suppress(RuntimeError):
                self._sample()

    def _record_sample(self) -> None:
        self._update(time.monotonic())
        self.series.append((time.time(), self.used_calculations, len(self.jobs)))

    def _sample(self) -> None:
        """One sample of the used capacity now, and the next one in SAMPLE_INTERVAL."""
        if self._closed:
            return
        self._record_sample()
        self._sampler = asyncio.get_running_loop().call_later(SAMPLE_INTERVAL, self._sample)

    # ------------------------------------------------------------------ load

    def load(self) -> float:
        return min(1.0, len(self.jobs) / self.max_jobs)

    def _report_load(self) -> None:
        if hasattr(self.pe, "set_load"):
            self.pe.set_load(self.load())

    # ------------------------------------------------------------------ processor sharing

    def _update(self, now: float) -> None:
        """Advance every job to ``now`` at capacity / jobs (RSPLIB updateCalculations)."""
        if not self.jobs:
            return
        per_job = self.capacity / len(self.jobs)
        for j in self.jobs:
            done = min(j.size - j.completed, max(0.0, now - j.last_update) * per_job)
            j.completed += done
            self.used_calculations += done
            j.last_update = now

    def _schedule(self) -> None:
        """Re-arm the single timer at the earliest job event (RSPLIB scheduleNextTimerEvent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed or not self.jobs:
            return
        now = time.monotonic()
        per_job = self.capacity / len(self.jobs)
        nxt = float("inf")
        for j in self.jobs:
            nxt = min(nxt, j.last_update + (j.size - j.completed) / per_job, self._cookie_due(j, now, per_job),
                      j.keepalive_tx_at, j.keepalive_timeout_at)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(0.0, nxt - now), self._on_timer)

    def _cookie_due(self, j: Job, now: float, per_job: float) -> float:
        by_calc = max(0.0, self.cookie_max_calculations - (j.completed - j.last_cookie_completed)) / per_job
        by_time = max(0.0, self.cookie_max_time - (now - j.last_cookie_at))
        return now + min(by_calc, by_time)

    def _on_timer(self) -> None:
        self._timer = None
        now = time.monotonic()
        self._update(now)
        eps = 1e-6
        for j in list(self.jobs):
            if j.completed >= j.size - 1e-6:
                self._complete(j)
                continue
            per_job = self.capacity / len(self.jobs)
            if self._cookie_due(j, now, per_job) <= now + eps:
                self._send_cookie(j, now)
            if j.keepalive_tx_at <= now + eps:
                j.keepalive_tx_at = float("inf")
                j.keepalive_timeout_at = now + self.keepalive_timeout
                self._send(j.channel, CalcAppMessage(CalcAppType.KEEPALIVE, j.job_id), j)
            elif j.keepalive_timeout_at <= now + eps:
                log.info("no keep-alive ack for job %d: removing it", j.job_id)
                self._remove(j, close=True)
        self._schedule()

    # ------------------------------------------------------------------ jobs

    def _add(self, ch: SessionChannel, job_id: int, size: float, completed: float) -> Job | None:
        if len(self.jobs) >= self.max_jobs:
            return None
        now = time.monotonic()
        self._update(now)
        j = Job(ch, job_id, float(size), min(float(completed), float(size)), now, now, float(completed),
                now + self.keepalive_interval)
        self.jobs.append(j)
        self._report_load()
        return j

    def _remove(self, j: Job, close: bool = False) -> None:
        if j not in self.jobs:
            return
        self._update(time.monotonic())
        self.jobs.remove(j)
        self._report_load()
        if close:
            j.channel.close()

    def _complete(self, j: Job) -> None:
        self.completed_jobs += 1
        self._send(j.channel, CalcAppMessage(CalcAppType.COMPLETE, j.job_id, int(round(j.size)),
                                             int(round(j.completed))), None)
        self._remove(j)

    def _send_cookie(self, j: Job, now: float) -> None:
        try:
            j.channel.send_cookie(encode_cookie(j.job_id, j.size, j.completed))
        except ConnectionError:
            self._remove(j)
            return
        j.last_cookie_at = now
        j.last_cookie_completed = j.completed

    def _send(self, ch: SessionChannel, msg: CalcAppMessage, job: Job | None) -> None:
        try:
            ch.send(msg.encode(), PPID_CALCAPP)
        except ConnectionError:
            if job is not None:
                self._remove(job)

    def _find(self, ch: SessionChannel, job_id: int | None = None) -> Job | None:
        return next((j for j in self.jobs if j.channel is ch and (job_id is None or j.job_id == job_id)), None)

    def _start_job(self, ch: SessionChannel, job_id: int, size: float, completed: float) -> None:
        j = self._add(ch, job_id, size, completed)
        if j is None:
            self.rejected += 1
            self._send(ch, CalcAppMessage(CalcAppType.REJECT, job_id), None)
            return
        self.accepted += 1
        self._send(ch, CalcAppMessage(CalcAppType.ACCEPT, job_id), j)
        self._schedule()

    # ------------------------------------------------------------------ PoolElement hooks

    def on_data(self, ch: SessionChannel, data: bytes, ppid: int) -> None:
        try:
            msg = decode_calcapp(data)
        except CodecError as exc:
            log.warning("malformed CalcApp message: %s", exc)
            return
        if msg.type == CalcAppType.REQUEST:
            self._start_job(ch, msg.job_id, msg.job_size, 0.0)
        elif msg.type == CalcAppType.KEEPALIVE:
            j = self._find(ch, msg.job_id)
            if j is not None:
                self._send(ch, CalcAppMessage(CalcAppType.KEEPALIVE_ACK, msg.job_id), j)
        elif msg.type == CalcAppType.KEEPALIVE_ACK:
            j = self._find(ch, msg.job_id)
            if j is not None:
                j.keepalive_timeout_at = float("inf")
                j.keepalive_tx_at = time.monotonic() + self.keepalive_interval
                self._schedule()
        else:
            log.warning("unexpected %s", msg.NAME)

    def on_cookie_echo(self, ch: SessionChannel, cookie: bytes) -> None:
        try:
            job_id, size, completed = decode_cookie(cookie)
        except CodecError as exc:
            log.warning("%s", exc)
            ch.close()
            return
        log.info("job %d resumed from cookie echo at %d/%d calculations", job_id, completed, size)
        self._start_job(ch, job_id, size, completed)

    def on_session_closed(self, ch: SessionChannel) -> None:
        j = self._find(ch)
        while j is not None:
            self._remove(j)
            j = self._find(ch)
        self._schedule()

    # ------------------------------------------------------------------ statistics

    def stats(self) -> dict[str, Any]:
        self._update(time.monotonic())
        uptime = time.monotonic() - self.started
        avail = uptime * self.capacity
        return {
            "identifier": getattr(self.pe, "identifier", 0),
            "uptime_s": uptime, "capacity": self.capacity, "max_jobs": self.max_jobs,
            "used_calculations": self.used_calculations, "accepted": self.accepted, "rejected": self.rejected,
            "completed": self.completed_jobs, "jobs": len(self.jobs),
            "utilisation": self.used_calculations / avail if avail > 0 else 0.0,
            "written_at": time.time(),
            "series": [[round(t, 3), round(u, 1), n] for t, u, n in self.series],
        }

    def write_stats(self) -> None:
        if not self.stats_path:
            return
        tmp = f"{self.stats_path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(self.stats(), fh)
        os.replace(tmp, self.stats_path)

    def close(self) -> None:
        if self._closed:
            return
        if self.stats_path:
            self._record_sample()  # the end, exactly
            with contextlib.suppress(OSError):
                self.write_stats()
        self._closed = True
        for timer in (self._timer, self._sampler):
            if timer is not None:
                timer.cancel()
        self.jobs.clear()


def create_service(pe: Any) -> CalcAppServer:
    """Factory ``rserpool.pe`` calls for ``--service calcapp``."""
    return CalcAppServer(pe)

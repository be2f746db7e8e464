"""RSPLIB's Fractal Generator pool element (``rspserver -fractal``, src/fractalgeneratorservice.cc), in asyncio.

Semantics kept from RSPLIB 3.4.4 (``FractalGeneratorServer``, defaults of src/rspserver.cc):

* a Parameter message (wire: ``rserpool.wire.fractal``) starts an image at (0, 0); one with Width
  or Height > 65536 or MaxIterations > 1,000,000 is refused by closing the session ("Bad
  parameters!"); a Cookie Echo carrying an ``FGPCookie`` resumes the image at the cookie's
  (CurrentX, CurrentY) - a fail-over from another PE;
* the points are computed row by row from the corners C1 and C2 (step (C2 - C1) / size):
  Mandelbrot ``z = z*z - c``, MandelbrotN ``z = z**N - c``, z0 = 0, stopping when
  ``|z|^2 >= 2`` or at MaxIterations; the value sent for a point is the iteration count. Any other
  AlgorithmID (or ``test_mode``, ``-fgptestmode``) gives RSPLIB's test pattern ``(x * y) % 256``.
  Here each row is computed vectorised with numpy;
* values go out in Data messages of up to 324 points (``FGD_MAX_POINTS``), consecutive points that
  wrap from one row to the next, as RSPLIB's buffer does; a partly filled message goes out once
  ``data_max_time`` (1 s, ``-fgpdatamaxtime``) has passed since the last one; the end is the
  finalizer Data message (StartX = StartY = 0xFFFFFFFF);
* a Cookie goes out at the start; then, whenever RSPLIB's timer fires (``cookie_max_time`` after the
  last cookie or ``data_max_time`` after the last Data message), a cookie goes out if
  ``cookie_max_packets`` (10) Data messages were sent since the last one or ``cookie_max_time`` (1 s)
  has passed. (A fast element may thus finish an image with the start cookie only, as RSPLIB's
  does.) Unlike RSPLIB, whose cookie may name a point
  whose predecessors still sit unsent in the open Data buffer (a gap in the image after a
  fail-over), the open buffer is sent first, so the cookie's position is exactly the first point
  the PU has not received;
* ``failure_after`` (``-fgpfailureafter``): after that many Data messages send a cookie and close the
  session (a failure test);
* load: every session computing an image adds 1 / max threads (``-fgpmaxthreads``, default 4;
  here ``PEConfig.max_requests`` when > 0), reported to the registrar as RSPLIB's setLoad does; a
  session beyond max threads is closed at once (the PU fails over).

Emulation (not in RSPLIB): ``capacity`` > 0 limits the element to that many iterations per
second (``PEConfig.capacity``, as CalcApp's calculations per second), so the testbed's UE, MEC and
cloud elements can differ in compute power; ``capacity`` <= 0 computes as fast as the host can.
``stats()`` gives images, points and iterations computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rserpool.session import SessionChannel
from rserpool.wire.errors import CodecError
from rserpool.wire.fractal import (
    FGD_MAX_POINTS,
    PPID_FGP,
    Algorithm,
    FGPCookie,
    FGPData,
    FGPParameter,
    decode_cookie,
    decode_fgp,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_THREADS = 4  # rspserver -fgpmaxthreads default
DATA_MAX_TIME = 1.0  # -fgpdatamaxtime default (s)
COOKIE_MAX_TIME = 1.0  # -fgpcookiemaxtime default (s)
COOKIE_MAX_PACKETS = 10  # -fgpcookiemaxpackets default
MAX_SIZE = 65536  # larger Width/Height is refused ("Bad parameters!")
MAX_ITERATIONS = 1_000_000


def parameters_ok(p: FGPParameter) -> bool:
    """RSPLIB's handleParameter() limits."""
    return p.width <= MAX_SIZE and p.height <= MAX_SIZE and p.max_iterations <= MAX_ITERATIONS


def compute_row(p: FGPParameter, y: int, x0: int = 0, *, test_mode: bool = False) -> np.ndarray:
    """Values (iteration counts, uint32) of row ``y`` from column ``x0`` to the end, as RSPLIB computes them."""
    xs = np.arange(x0, p.width, dtype=np.float64)
    algorithm = 0 if test_mode else p.algorithm
    if algorithm not in (Algorithm.MANDELBROT, Algorithm.MANDELBROTN):
        return ((np.arange(x0, p.width, dtype=np.uint64) * y) % 256).astype(np.uint32)
    step_x = (p.c2real - p.c1real) / p.width
    step_y = (p.c2imag - p.c1imag) / p.height
    c = (p.c1real + xs * step_x) + 1j * (p.c1imag + float(y) * step_y)
    out = np.full(xs.shape, p.max_iterations, dtype=np.uint32)
    z = np.zeros_like(c)
    active = np.arange(c.size)  # indices still iterating
    zc, cc = z, c
    n = complex(p.n)
    with np.errstate(all="ignore"):
        for i in range(p.max_iterations):
            if algorithm == Algorithm.MANDELBROT:
                zc = zc * zc - cc
            else:  # std::pow(z, complex(N)): 0 for z == 0, else exp(N log z)
                zc = np.where(zc == 0, 0j, np.exp(n * np.log(np.where(zc == 0, 1, zc)))) - cc
            escaped = (zc.real * zc.real + zc.imag * zc.imag) >= 2.0
            if escaped.any():
                out[active[escaped]] = i
                keep = ~escaped
                active, zc, cc = active[keep], zc[keep], cc[keep]
                if active.size == 0:
                    break
    return out


@dataclass
class Job:
    """One session's image."""

    channel: SessionChannel
    parameter: FGPParameter
    x: int  # first point not yet sent to the PU
    y: int
    task: asyncio.Task[None] | None = None
    data_packets: int = 0
    after_cookie: int = 0
    last_send: float = 0.0
    last_cookie: float = 0.0
    pending: list[np.ndarray] = field(default_factory=list)  # computed, not yet sent, from (x, y)


class FractalServer:
    """The service object ``PoolElement`` drives through ``on_data`` / ``on_cookie_echo`` / ``close``."""

    def __init__(self, pe: Any, *, max_threads: int | None = None, capacity: float | None = None,
                 data_max_time: float = DATA_MAX_TIME, cookie_max_time: float = COOKIE_MAX_TIME,
                 cookie_max_packets: int = COOKIE_MAX_PACKETS, failure_after: int = 0,
                 test_mode: bool = False) -> None:
        self.pe = pe
        cfg = getattr(pe, "config", None)
        mt = max_threads if max_threads is not None else getattr(cfg, "max_requests", 0)
        self.max_threads = int(mt) if mt and mt > 0 else DEFAULT_MAX_THREADS
        self.capacity = float(capacity if capacity is not None else getattr(cfg, "capacity", 0.0) or 0.0)
        self.data_max_time = data_max_time
        self.cookie_max_time = cookie_max_time
        self.cookie_max_packets = cookie_max_packets
        self.failure_after = failure_after
        self.test_mode = test_mode
        self.jobs: dict[SessionChannel, Job] = {}
        self.started = time.monotonic()
        self.images_started = 0
        self.images_completed = 0
        self.resumed = 0
        self.rejected = 0
        self.points = 0
        self.iterations = 0
        self._closed = False

    # ------------------------------------------------------------------ load

    def load(self) -> float:
        return min(1.0, len(self.jobs) / self.max_threads)

    def _report_load(self) -> None:
        if hasattr(self.pe, "set_load"):
            self.pe.set_load(self.load())

    # ------------------------------------------------------------------ PoolElement hooks

    def on_data(self, ch: SessionChannel, data: bytes, ppid: int) -> None:
        try:
            msg = decode_fgp(data)
        except CodecError as exc:
            log.warning("malformed FGP message: %s", exc)
            ch.close()
            return
        if not isinstance(msg, FGPParameter):
            log.warning("unexpected %s from a pool user", msg.NAME)
            ch.close()
            return
        log.info("Parameter: w=%d h=%d c1=(%g,%g) c2=(%g,%g) n=%g maxIterations=%d algorithmID=%d", msg.width,
                 msg.height, msg.c1real, msg.c1imag, msg.c2real, msg.c2imag, msg.n, msg.max_iterations,
                 msg.algorithm)
        self._start(ch, msg, 0, 0)

    def on_cookie_echo(self, ch: SessionChannel, cookie: bytes) -> None:
        try:
            c = decode_cookie(cookie)
        except CodecError as exc:
            log.warning("%s", exc)
            ch.close()
            return
        log.info("Cookie Echo: resuming at x=%d y=%d", c.current_x, c.current_y)
        self.resumed += 1
        self._start(ch, c.parameter, c.current_x, c.current_y)

    def on_session_closed(self, ch: SessionChannel) -> None:
        job = self.jobs.pop(ch, None)
        if job is not None:
            if job.task is not None:
                job.task.cancel()
            self._report_load()

    # ------------------------------------------------------------------ images

    def _start(self, ch: SessionChannel, p: FGPParameter, x: int, y: int) -> None:
        if self._closed:
            return
        if not parameters_ok(p):
            log.warning("bad parameters %r: closing the session", p)
            ch.close()
            return
        old = self.jobs.pop(ch, None)
        if old is not None and old.task is not None:
            old.task.cancel()
        if len(self.jobs) >= self.max_threads:
            self.rejected += 1
            log.info("%d sessions computing already (max threads): closing the new one", len(self.jobs))
            ch.close()
            return
        job = Job(ch, p, min(x, p.width), y)
        self.jobs[ch] = job
        self.images_started += 1
        self._report_load()
        job.task = asyncio.ensure_future(self._run(job))

    def _send(self, job: Job, msg: FGPData) -> None:
        job.channel.send(msg.encode(), PPID_FGP)

    def _send_cookie(self, job: Job, now: float) -> None:
        job.channel.send_cookie(FGPCookie(job.parameter, job.x, job.y).encode())
        job.last_cookie = now
        job.after_cookie = 0

    def _flush(self, job: Job, now: float, *, partial: bool) -> None:
        """Send the pending points in Data messages of FGD_MAX_POINTS (the rest too if ``partial``)."""
        buf = np.concatenate(job.pending) if len(job.pending) > 1 else (job.pending[0] if job.pending else None)
        job.pending = []
        if buf is None:
            return
        width = job.parameter.width
        off = 0
        while buf.size - off >= FGD_MAX_POINTS or (partial and off < buf.size):
            chunk = buf[off:off + FGD_MAX_POINTS]
            self._send(job, FGPData(job.x, job.y, tuple(int(v) for v in chunk)))
            off += chunk.size
            pos = job.y * width + job.x + chunk.size
            job.y, job.x = divmod(pos, width)
            job.data_packets += 1
            job.after_cookie += 1
            job.last_send = now
            if self.failure_after > 0 and job.data_packets >= self.failure_after:
                raise _FailureTest
        if off < buf.size:
            job.pending = [buf[off:]]

    async def _run(self, job: Job) -> None:
        p = job.parameter
        loop_t0 = time.monotonic()
        spent = 0  # iterations since loop_t0, for the capacity limit
        try:
            now = time.monotonic()
            job.last_send = now
            self._send_cookie(job, now)
            y, x0 = job.y, job.x
            if p.width > 0:
                while y < p.height:
                    row = compute_row(p, y, x0, test_mode=self.test_mode)
                    work = int(row.sum(dtype=np.uint64)) + row.size
                    self.points += row.size
                    self.iterations += work
                    spent += work
                    job.pending.append(row)
                    y, x0 = y + 1, 0
                    now = time.monotonic()
                    self._flush(job, now, partial=False)
                    if now >= min(job.last_cookie + self.cookie_max_time, job.last_send + self.data_max_time):
                        # RSPLIB's cookie/data timer: a partial Data message when none went out for
                        # DataMaxTime, a cookie after CookieMaxPackets Data messages or CookieMaxTime
                        cookie = (job.after_cookie >= self.cookie_max_packets
                                  or now - job.last_cookie >= self.cookie_max_time)
                        if cookie or now - job.last_send >= self.data_max_time:
                            self._flush(job, now, partial=True)  # so the cookie names the first point not sent
                        if cookie:
                            self._send_cookie(job, now)
                    if self.capacity > 0:
                        await asyncio.sleep(max(0.0, loop_t0 + spent / self.capacity - time.monotonic()))
                    else:
                        await asyncio.sleep(0)  # one row at a time: keep-alives and other sessions go on
            now = time.monotonic()
            self._flush(job, now, partial=True)
            self._send(job, FGPData.finalizer())
            self.images_completed += 1
            log.info("image %dx%d completed in %d Data messages", p.width, p.height, job.data_packets)
        except _FailureTest:
            log.info("failure test: closing the session after %d Data messages", job.data_packets)
            with contextlib.suppress(ConnectionError):
                self._send_cookie(job, time.monotonic())
            job.channel.close()
        except ConnectionError as exc:
            log.info("session closed while computing: %s", exc)
        finally:
            if self.jobs.get(job.channel) is job:
                del self.jobs[job.channel]
                self._report_load()

    # ------------------------------------------------------------------ statistics

    def stats(self) -> dict[str, Any]:
        return {
            "identifier": getattr(self.pe, "identifier", 0),
            "uptime_s": time.monotonic() - self.started, "capacity": self.capacity,
            "max_threads": self.max_threads, "sessions": len(self.jobs), "images_started": self.images_started,
            "images_completed": self.images_completed, "resumed": self.resumed, "rejected": self.rejected,
            "points": self.points, "iterations": self.iterations,
        }

    def close(self) -> None:
        self._closed = True
        for job in list(self.jobs.values()):
            if job.task is not None:
                job.task.cancel()
        self.jobs.clear()


class _FailureTest(Exception):
    """``failure_after`` Data messages sent: end the session."""


def create_service(pe: Any) -> FractalServer:
    """Factory ``rserpool.pe`` calls for ``--service fractal``."""
    return FractalServer(pe)

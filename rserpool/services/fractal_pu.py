"""Fractal Generator pool user: RSPLIB's ``fractalpooluser`` (src/fractalpooluser.cc) without the Qt window.

One image per ``FractalPU.compute()``, as one ``FractalCalculationThread`` of RSPLIB's PU does it:

* open a session to the pool (``rserpool.pu.PoolSession``: handle resolution, policy) and send the
  Parameter message (``rserpool.wire.fractal``) with the image's size and corners;
* put each Data message's points into the image (RSPLIB's checks: StartX < width, StartY < height,
  at most 324 points, else the message is ignored as invalid) until the finalizer
  (StartX = StartY = 0xFFFFFFFF) says the image is complete;
* when the PE's session breaks or nothing arrives for ``recv_timeout`` (5 s, RSPLIB's
  ``-recvtimeout`` default), fail over: select another PE and Cookie Echo the last cookie the old
  PE sent, so the new PE resumes at the cookie's position; with no cookie yet, send the Parameter
  again (RSPLIB's ``rsp_forcefailover(FFF_NONE)`` then ``sendParameterMessage``). The old PE is
  reported unreachable only when the Parameter could not be sent to it (``FFF_UNREACHABLE``).

Unlike RSPLIB's PU, which only tints the image after each fail-over, every point remembers the
identifier of the PE whose Data message set it (``FractalImage.owner``): points a PE sent and a
later PE recomputed after resuming from the cookie belong to the later PE. ``on_update`` (or
``FractalPU.stream()``, an async iterator) gets one ``Update(pe_id, x, y, points, ...)`` per Data
message, and ``on_event`` the session's events (connect, first_data, failover, done), each with its
time ``t`` since the request - what a live view draws.
``FractalImage.save_png()`` renders RSPLIB's colours (hue = (value mod 72) x 5 degrees);
``save_json()`` writes the regions (runs of points) per PE and the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rserpool.pu import NoPoolElementError, PoolSession, PoolUser, PUConfig
from rserpool.wire.errors import CodecError
from rserpool.wire.fractal import (
    FGD_MAX_POINTS,
    PPID_FGP,
    Algorithm,
    FGPData,
    FGPParameter,
    decode_cookie,
    decode_fgp,
)

log = logging.getLogger(__name__)

DEFAULT_POOL = b"Fractal Generator Pool"  # the demo's pool (RSPLIB's own default: "FractalGeneratorPool")
RECV_TIMEOUT = 5.0  # DEFAULT_FPU_RECV_TIMEOUT (ms 5000)
MAX_FAILOVERS = 32
UNSET = 0xFFFFFFFF  # value of a point no PE has sent


def default_parameters(width: int = 400, height: int = 250) -> FGPParameter:
    """fractalpooluser's built-in image (used when it has no configuration file): Mandelbrot over
    (-1.5, 1.5) .. (1.5, -1.5), 1024 iterations; its default window is 400 x 250."""
    return FGPParameter(width, height, 1024, Algorithm.MANDELBROT, -1.5, 1.5, 1.5, -1.5, 2.0)


@dataclass(frozen=True)
class Update:
    """One Data message applied: ``points`` values from (``x``, ``y``) onwards, row-major, wrapping."""

    pe_id: int
    x: int
    y: int
    points: int
    at: float  # seconds since the image was requested
    width: int  # the image's width, for the wrap
    values: tuple[int, ...] = field(repr=False, default=())

    @property
    def rows(self) -> tuple[int, int]:
        """First and last row the update touches (what a display redraws)."""
        return self.y, self.y + (self.x + max(1, self.points) - 1) // max(1, self.width)


@dataclass
class FractalImage:
    """The image being assembled: values, the PE that sent each point, and what happened."""

    parameter: FGPParameter
    values: np.ndarray  # (height, width) uint32; UNSET where nothing has arrived
    owner: np.ndarray  # (height, width) uint32 PE identifier; 0 where nothing has arrived
    events: list[dict[str, Any]] = field(default_factory=list)
    data_messages: int = 0
    invalid_messages: int = 0
    complete: bool = False
    elapsed: float = 0.0

    @classmethod
    def blank(cls, p: FGPParameter) -> FractalImage:
        return cls(p, np.full((p.height, p.width), UNSET, dtype=np.uint32),
                   np.zeros((p.height, p.width), dtype=np.uint32))

    @property
    def width(self) -> int:
        return self.parameter.width

    @property
    def height(self) -> int:
        return self.parameter.height

    def apply(self, msg: FGPData, pe_id: int) -> int:
        """Put a Data message's points in; returns how many landed (0: invalid, as RSPLIB's checks)."""
        w, h = self.width, self.height
        if msg.start_x >= w or msg.start_y >= h or msg.points > FGD_MAX_POINTS:
            self.invalid_messages += 1
            return 0
        start = msg.start_y * w + msg.start_x
        n = min(msg.points, w * h - start)
        flat_v, flat_o = self.values.reshape(-1), self.owner.reshape(-1)
        flat_v[start:start + n] = np.asarray(msg.values[:n], dtype=np.uint32)
        flat_o[start:start + n] = pe_id
        self.data_messages += 1
        return n

    def elements(self) -> dict[int, int]:
        """Points per PE identifier (who computed how much of the image)."""
        ids, counts = np.unique(self.owner[self.owner != 0], return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts, strict=True)}

    def regions(self) -> list[dict[str, Any]]:
        """Maximal runs of points (row-major, wrapping) computed by one PE: {pe, x, y, points}."""
        flat = self.owner.reshape(-1)
        if flat.size == 0:
            return []
        cuts = np.flatnonzero(np.diff(flat)) + 1
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts, [flat.size]))
        out = []
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            y, x = divmod(s, self.width)
            out.append({"pe": int(flat[s]), "pe_hex": f"0x{int(flat[s]):08x}", "x": x, "y": y, "points": e - s})
        return out

    def rgb(self) -> np.ndarray:
        """(height, width, 3) uint8 in fractalpooluser's colours: hue ((v mod 72) x 5) mod 360 at full
        saturation and value; points not received are its background grey (200, 200, 200)."""
        from matplotlib.colors import hsv_to_rgb

        v = self.values.astype(np.int64)
        hsv = np.stack([((v % 72) * 5 % 360) / 360.0, np.ones(v.shape), np.ones(v.shape)], axis=-1)
        rgb = (hsv_to_rgb(hsv) * 255).round().astype(np.uint8)
        rgb[self.values == UNSET] = (200, 200, 200)
        return rgb

    def save_png(self, path: str | Path) -> None:
        import matplotlib.pyplot as plt

        plt.imsave(str(path), self.rgb())

    def to_dict(self) -> dict[str, Any]:
        p = self.parameter
        return {
            "width": p.width, "height": p.height,
            "parameter": {"max_iterations": p.max_iterations, "algorithm": p.algorithm, "c1": [p.c1real, p.c1imag],
                          "c2": [p.c2real, p.c2imag], "n": p.n},
            "complete": self.complete, "elapsed": self.elapsed, "data_messages": self.data_messages,
            "invalid_messages": self.invalid_messages,
            "elements": {f"0x{k:08x}": v for k, v in self.elements().items()},
            "regions": self.regions(), "events": self.events,
        }

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")


class FractalPU:
    """A Fractal Generator pool user. Give it a ``PoolUser`` (shared) or a ``PUConfig`` (its own)."""

    def __init__(self, pu: PoolUser | PUConfig | None = None, pool_handle: bytes | str = DEFAULT_POOL, *,
                 recv_timeout: float = RECV_TIMEOUT, max_failovers: int = MAX_FAILOVERS) -> None:
        self._own = not isinstance(pu, PoolUser)
        self.pu = pu if isinstance(pu, PoolUser) else PoolUser(pu)
        self.pool_handle = pool_handle.encode() if isinstance(pool_handle, str) else bytes(pool_handle)
        self.recv_timeout = recv_timeout
        self.max_failovers = max_failovers
        self.session: PoolSession | None = None

    async def start(self) -> None:
        if self._own:
            await self.pu.start()

    async def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        if self._own:
            await self.pu.close()

    async def __aenter__(self) -> FractalPU:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def compute(self, parameter: FGPParameter, *, on_update: Callable[[Update], None] | None = None,
                      on_event: Callable[[dict[str, Any]], None] | None = None) -> FractalImage:
        """Have the pool compute one image; returns it complete (raises NoPoolElementError when no PE
        is left, TimeoutError after ``max_failovers`` fail-overs)."""
        image = FractalImage.blank(parameter)
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        t0 = time.monotonic()

        def event(kind: str, **info: Any) -> None:
            ev = {"t": round(time.monotonic() - t0, 4), "event": kind, **info}
            image.events.append(ev)
            if on_event is not None:
                on_event(ev)

        def data(raw: bytes, ppid: int) -> None:
            inbox.put_nowait(raw)

        session = await self.pu.connect(self.pool_handle, on_data=data, max_attempts=8)
        self.session = session
        pe_id = session.pe.identifier if session.pe else 0
        event("connect", pe=pe_id, pe_hex=f"0x{pe_id:08x}", source=session.pe_source)
        failovers = 0
        send_parameter = True
        report = False
        first_data_from = -1
        try:
            while True:
                if send_parameter:
                    try:
                        session.send(parameter.encode(), PPID_FGP)
                        send_parameter = False
                    except ConnectionError:
                        report = True  # RSPLIB: failed sendParameterMessage() -> FFF_UNREACHABLE
                raw = None if send_parameter else await self._next(session, inbox)
                if raw is not None:
                    try:
                        msg = decode_fgp(raw)
                    except CodecError as exc:
                        log.warning("invalid FGP message from PE $%08x: %s", pe_id, exc)
                        image.invalid_messages += 1
                        continue
                    if not isinstance(msg, FGPData):
                        image.invalid_messages += 1
                        continue
                    if msg.is_finalizer:
                        image.complete = True
                        break
                    n = image.apply(msg, pe_id)
                    if n and pe_id != first_data_from:
                        first_data_from = pe_id
                        event("first_data", pe=pe_id, pe_hex=f"0x{pe_id:08x}", x=msg.start_x, y=msg.start_y)
                    if n and on_update is not None:
                        on_update(Update(pe_id, msg.start_x, msg.start_y, n, time.monotonic() - t0,
                                         parameter.width, msg.values[:n]))
                    continue
                # the PE is gone or silent: fail over (RSPLIB: rsp_forcefailover, reporting the PE
                # unreachable only when the Parameter could not be sent; then Cookie Echo)
                failovers += 1
                if failovers > self.max_failovers:
                    raise TimeoutError(f"image not completed after {self.max_failovers} fail-overs")
                old = pe_id
                await session.failover(report=report)
                report = False
                while not inbox.empty():  # anything the old PE still managed to send is stale
                    inbox.get_nowait()
                pe_id = session.pe.identifier if session.pe else 0
                resumed = session.cookie is not None
                info: dict[str, Any] = {"from_pe": old, "from_pe_hex": f"0x{old:08x}", "pe": pe_id,
                                        "pe_hex": f"0x{pe_id:08x}", "cookie": resumed}
                if resumed:
                    with contextlib.suppress(CodecError):
                        c = decode_cookie(session.cookie)  # type: ignore[arg-type]
                        info.update(x=c.current_x, y=c.current_y)
                event("failover", **info)
                send_parameter = not resumed
        finally:
            session.close()
            self.session = None
        image.elapsed = time.monotonic() - t0
        event("done", pe=pe_id, pe_hex=f"0x{pe_id:08x}", failovers=failovers)
        return image

    async def _next(self, session: PoolSession, inbox: asyncio.Queue[bytes]) -> bytes | None:
        """The next message, or None when the session broke or stayed silent for ``recv_timeout``."""
        if not inbox.empty():
            return inbox.get_nowait()
        ch = session.channel
        if ch is None or not ch.is_open:
            return None
        get = asyncio.ensure_future(inbox.get())
        closed = asyncio.ensure_future(ch.closed.wait())
        try:
            done, _ = await asyncio.wait({get, closed}, timeout=self.recv_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            if not get.done():
                get.cancel()
        if get in done:
            return get.result()
        if not inbox.empty():  # data that arrived with the close
            return inbox.get_nowait()
        return None

    async def stream(self, parameter: FGPParameter) -> AsyncIterator[Update | dict[str, Any] | FractalImage]:
        """``compute()`` as an async iterator: ``Update``s and event dicts as they happen, then the image."""
        queue: asyncio.Queue[Update | dict[str, Any]] = asyncio.Queue()
        task = asyncio.ensure_future(self.compute(parameter, on_update=queue.put_nowait, on_event=queue.put_nowait))
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    yield get.result()
                    continue
                get.cancel()
                while not queue.empty():
                    yield queue.get_nowait()
                yield task.result()
                return
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


__all__ = ["DEFAULT_POOL", "FractalImage", "FractalPU", "NoPoolElementError", "Update", "default_parameters"]

"""The dashboard's helpers that run inside a testbed node (``python -m emulab.dashboard.agent ...``).

The registrars and pool elements live in the nodes' network namespaces, out of the host's reach,
so the dashboard starts one long-lived helper per job in the right node (``nsenter --net``, as
`emulab exec` does) and reads one JSON object per line from it:

* ``registry ADDR:PORT``: every ``--interval`` s, the registrar's ENRP peers and whole handlespace
  (``rserpool.hsdump.fetch_peers`` / ``fetch_handlespace``: what `rserpool peers` and `rserpool
  hsdump` print);
* ``fractal ADDR:PORT``: images from the Fractal Generator Pool, one after another, each split
  into ``--strips`` horizontal strips computed as parallel sessions (fractalpooluser's
  ``-threads``), with one line per Data message (which element computed which points) and per
  session event (connect, first_data, failover, done).

A long-lived helper costs one Python start per testbed instead of one per refresh.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def registry(host: str, port: int, interval: float, stop: asyncio.Event) -> None:
    from rserpool.hsdump import fetch_handlespace, fetch_peers

    while not stop.is_set():
        t0 = time.time()
        try:
            peers = await fetch_peers(host, port, timeout=3.0)
            dump = await fetch_handlespace(host, port, timeout=3.0)
            _emit({"t": t0, "ok": True, "peers": peers, "handlespace": dump.to_dict()})
        except (OSError, TimeoutError, ConnectionError) as exc:
            _emit({"t": t0, "ok": False, "error": str(exc) or type(exc).__name__})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.1, interval - (time.time() - t0)))


def shades(values: Any, iterations: int) -> str:
    """The points' values for drawing, one byte each (base64): fractalpooluser's colour index
    (value mod 72, its hue in steps of 5 degrees), 255 for a point inside the set."""
    import base64

    return base64.b64encode(bytes(255 if v >= iterations else v % 72 for v in values)).decode()


def strip_parameters(width: int, height: int, iterations: int, strips: int) -> list[tuple[int, Any]]:
    """fractalpooluser's default view split into ``strips`` horizontal strips: (first row, parameter)."""
    from rserpool.wire.fractal import Algorithm, FGPParameter

    (x1, y1), (x2, y2) = (-1.5, 1.5), (1.5, -1.5)
    out = []
    rows = [height * i // strips for i in range(strips + 1)]
    for top, bottom in zip(rows, rows[1:], strict=False):
        if bottom <= top:
            continue
        # the strip's corners: the same pixel grid as the whole image (c1 is the top-left pixel)
        dy = (y2 - y1) / height
        out.append((top, FGPParameter(width, bottom - top, iterations, Algorithm.MANDELBROT,
                                      x1, y1 + top * dy, x2, y1 + bottom * dy, 2.0)))
    return out


async def fractal(host: str, port: int, args: argparse.Namespace, stop: asyncio.Event) -> None:
    from rserpool.pu import PoolUser, PUConfig
    from rserpool.services.fractal_pu import FractalPU, Update

    pu = PoolUser(PUConfig(registrars=[(host, port)]))
    await pu.start()
    try:
        n = 0
        while not stop.is_set() and (args.images == 0 or n < args.images):
            n += 1
            strips = strip_parameters(args.width, args.height, args.iterations, args.strips)
            _emit({"image": n, "event": "image", "width": args.width, "height": args.height,
                   "strips": [[top, p.height] for top, p in strips], "at": time.time()})

            async def one(s: int, top: int, param: Any, n: int = n) -> bool:
                def on_update(u: Update) -> None:
                    _emit({"image": n, "strip": s, "update": [u.pe_id, u.x, u.y + top, u.points, round(u.at, 3)],
                           "shade": shades(u.values, args.iterations)})

                def on_event(ev: dict[str, Any]) -> None:
                    _emit({"image": n, "strip": s, **ev})

                fpu = FractalPU(pu, args.pool, recv_timeout=args.recv_timeout)
                try:
                    await fpu.compute(param, on_update=on_update, on_event=on_event)
                    return True
                except (ConnectionError, TimeoutError, LookupError) as exc:
                    _emit({"image": n, "strip": s, "event": "failed", "error": str(exc) or type(exc).__name__})
                    return False
                finally:
                    await fpu.close()

            t0 = time.monotonic()
            jobs = asyncio.gather(*(one(s, top, p) for s, (top, p) in enumerate(strips)))
            waiter = asyncio.ensure_future(stop.wait())
            await asyncio.wait({jobs, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not jobs.done():
                jobs.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await jobs
                return
            ok = all(jobs.result())
            _emit({"image": n, "event": "image_done", "ok": ok, "elapsed": round(time.monotonic() - t0, 3)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.pause)
    finally:
        await pu.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emulab.dashboard.agent", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="job", required=True)
    reg = sub.add_parser("registry", help="poll a registrar's ENRP peers and handlespace")
    reg.add_argument("endpoint", help="the registrar's ENRP endpoint ADDR:PORT")
    reg.add_argument("--interval", type=float, default=2.0)
    fr = sub.add_parser("fractal", help="compute images from the Fractal Generator Pool")
    fr.add_argument("endpoint", help="the registrar's ASAP endpoint ADDR:PORT")
    fr.add_argument("--pool", default="Fractal Generator Pool")
    fr.add_argument("--width", type=int, default=400)
    fr.add_argument("--height", type=int, default=250)
    fr.add_argument("--iterations", type=int, default=1024)
    fr.add_argument("--strips", type=int, default=4)
    fr.add_argument("--images", type=int, default=0, help="0: until stopped")
    fr.add_argument("--pause", type=float, default=2.0, help="seconds between images")
    fr.add_argument("--recv-timeout", type=float, default=5.0)
    args = ap.parse_args(argv)
    host, _, port = args.endpoint.rpartition(":")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # the dashboard going away closes our stdin: stop then too
        loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(4096) else None)
        if args.job == "registry":
            await registry(host, int(port), args.interval, stop)
        else:
            await fractal(host, int(port), args, stop)

    with contextlib.suppress(BrokenPipeError):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())

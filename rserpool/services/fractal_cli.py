"""``rserpool fractal-pu``: RSPLIB's ``fractalpooluser`` without a window - images from the Fractal Generator Pool.

Computes ``--images`` images one after the other (RSPLIB's ``-interimagetime`` pause between them),
each saved as PNG (``--png``) and as JSON of the regions each pool element computed and the
session's events (``--json``); ``{n}`` in those paths is the image number. ``--output`` gets one
JSON line per event (connect, failover, done) and, with ``--updates``, per Data message applied
(``{"update": [pe_id, x, y, points, t]}``): what a live view follows. The pool elements are
``rserpool pe --service fractal`` or RSPLIB's ``rspserver -fractal``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, TextIO

import click

from rserpool import csp
from rserpool import transport as tp
from rserpool.registrar_cli import (
    _announce_options,
    _endpoints,
    _log_option,
    _run_daemon,
    _setup_logging,
    _transport_option,
)
from rserpool.services.fractal_pu import DEFAULT_POOL, RECV_TIMEOUT, FractalPU, Update
from rserpool.wire.fractal import Algorithm, FGPParameter

ALGORITHMS = {"mandelbrot": Algorithm.MANDELBROT, "mandelbrotn": Algorithm.MANDELBROTN, "test": 0}


def _complex(value: str) -> tuple[float, float]:
    try:
        re_, im = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected REAL,IMAG") from None
    return re_, im


@click.command("fractal-pu")
@click.option("--registrar", "registrars", multiple=True, help="Registrar ADDR[:PORT]; repeatable "
              "(default: find registrars by multicast announce).")
@click.option("--pool", default=DEFAULT_POOL.decode(), show_default=True, help="Pool handle.")
@click.option("--width", default=400, show_default=True, type=click.IntRange(1, 65536))
@click.option("--height", default=250, show_default=True, type=click.IntRange(1, 65536))
@click.option("--c1", default="-1.5,1.5", show_default=True, help="Upper left corner REAL,IMAG.")
@click.option("--c2", default="1.5,-1.5", show_default=True, help="Lower right corner REAL,IMAG.")
@click.option("--max-iterations", default=1024, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--algorithm", default="mandelbrot", show_default=True, type=click.Choice(list(ALGORITHMS)))
@click.option("--n", "power", default=2.0, show_default=True, type=float, help="N of MandelbrotN.")
@click.option("--images", default=1, show_default=True, type=click.IntRange(1), help="Images to compute.")
@click.option("--inter-image-time", default=5.0, show_default=True, type=float,
              help="Pause between images [s] (fractalpooluser -interimagetime).")
@click.option("--recv-timeout", default=RECV_TIMEOUT, show_default=True, type=float,
              help="Silence [s] after which the PU fails over (fractalpooluser -recvtimeout).")
@click.option("--png", default=None, help="Save each image as PNG here ({n}: image number).")
@click.option("--json", "json_path", default=None, help="Save regions per PE and events as JSON here ({n}).")
@click.option("--updates/--no-updates", default=False, show_default=True,
              help="Also write one line per Data message to --output.")
@click.option("--output", "-o", default="-", show_default=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Where to write the JSON lines of events.")
@_announce_options
@_transport_option
@_log_option
@csp.click_options
def fractal_pu_cmd(registrars: tuple[str, ...], pool: str, width: int, height: int, c1: str, c2: str,
                   max_iterations: int, algorithm: str, power: float, images: int, inter_image_time: float,
                   recv_timeout: float, png: str | None, json_path: str | None, updates: bool, output: str,
                   transport: str | None, log_level: str,
                   announce_address: str = f"{tp.ASAP_ANNOUNCE_GROUP}:{tp.ASAP_PORT}",
                   announce_interface: str | None = None, cspserver: str | None = None,
                   cspinterval: int | None = None) -> None:
    """Have the Fractal Generator Pool compute IMAGES images (RSPLIB fractalpooluser semantics)."""
    from rserpool.pu import PUConfig
    from rserpool.wire.fractal import PPID_FGP

    _setup_logging(log_level)
    csp.configure_from_options(cspserver, cspinterval, PPID_FGP)
    (c1r, c1i), (c2r, c2i) = _complex(c1), _complex(c2)
    param = FGPParameter(width, height, max_iterations, ALGORITHMS[algorithm], c1r, c1i, c2r, c2i, power)
    group, gport = tp.parse_endpoint(announce_address, tp.ASAP_PORT)
    cfg = PUConfig(registrars=_endpoints(registrars), transport=transport, announce_group=group,
                   announce_port=gport, announce_interface=announce_interface)
    out: TextIO = sys.stdout if output == "-" else open(output, "w")  # noqa: SIM115 - closed below
    failed: list[str] = []

    def line(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def on_update(u: Update) -> None:
        line({"update": [u.pe_id, u.x, u.y, u.points, round(u.at, 4)]})

    async def main(stop: asyncio.Event) -> None:
        async with FractalPU(cfg, pool, recv_timeout=recv_timeout) as fpu:
            for n in range(1, images + 1):
                job = asyncio.ensure_future(fpu.compute(
                    param, on_update=on_update if updates else None, on_event=lambda ev, n=n: line({"image": n, **ev})))
                waiter = asyncio.ensure_future(stop.wait())
                await asyncio.wait({job, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not job.done():
                    job.cancel()
                    return
                try:
                    image = job.result()
                except (ConnectionError, TimeoutError, LookupError) as exc:
                    failed.append(f"image {n}: {exc}")
                    line({"image": n, "event": "failed", "error": str(exc)})
                else:
                    if png:
                        image.save_png(png.format(n=n))
                    if json_path:
                        image.save_json(json_path.format(n=n))
                    line({"image": n, "event": "summary", "elapsed": round(image.elapsed, 4),
                          "elements": {f"0x{k:08x}": v for k, v in image.elements().items()}})
                if n < images:
                    try:
                        await asyncio.wait_for(stop.wait(), inter_image_time)
                        return
                    except TimeoutError:
                        pass

    try:
        _run_daemon(main)
    finally:
        if out is not sys.stdout:
            out.close()
    if failed:
        raise click.ClickException("; ".join(failed))

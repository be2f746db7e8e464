"""``rserpool calcapp-pu``: N CalcApp pool users in one process for a duration, records as JSON lines.

The experiment runs this inside the UE's namespace. The output file gets one JSON object per
request (``calcapp_pu.Request.to_dict``) and, last, one line ``{"summary": {...}}`` with the PUs'
message counters (RSPLIB's "CalcAppPU Total CalcApp..." scalars).
"""

from __future__ import annotations

import asyncio
import json
import sys

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
from rserpool.services.calcapp_pu import DISTRIBUTIONS, RETRY_DELAY, PUParams, run_pus


@click.command("calcapp-pu")
@click.option("--registrar", "registrars", multiple=True, help="Registrar ADDR[:PORT]; repeatable "
              "(default: find registrars by multicast announce).")
@click.option("--pool", default="Processing Pool", show_default=True, help="Pool handle.")
@click.option("--pus", "count", default=1, show_default=True, type=int, help="Number of pool users.")
@click.option("--duration", default=60.0, show_default=True, type=float, help="Seconds to run.")
@click.option("--size-mean", default=1_000_000.0, show_default=True, type=float, help="Mean request size.")
@click.option("--size-dist", default="exp", show_default=True, type=click.Choice(DISTRIBUTIONS))
@click.option("--interval-mean", default=10.0, show_default=True, type=float, help="Mean inter-request time [s].")
@click.option("--interval-dist", default="exp", show_default=True, type=click.Choice(DISTRIBUTIONS))
@click.option("--retry-delay", default=RETRY_DELAY, show_default=True, type=float,
              help="Pause after a reject before selecting again [s].")
@click.option("--stale-cache", default=0.0, show_default=True, type=float,
              help="Handle-resolution cache lifetime [s] (0: resolve at the registrar for every request).")
@click.option("--drain", default=0.0, show_default=True, type=float,
              help="After --duration, stop issuing requests and wait up to this many seconds for the "
                   "queued ones to finish.")
@click.option("--seed", default=1, show_default=True, type=int, help="Random seed.")
@click.option("--name-prefix", default="pu", show_default=True, help="PU names are PREFIX0, PREFIX1, ...")
@click.option("--output", "-o", default="-", show_default=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Where to write the JSON lines.")
@_announce_options
@_transport_option
@_log_option
@csp.click_options
def calcapp_pu_cmd(registrars: tuple[str, ...], pool: str, count: int, duration: float, size_mean: float,
                   size_dist: str, interval_mean: float, interval_dist: str, retry_delay: float,
                   stale_cache: float, drain: float, seed: int, name_prefix: str, output: str, transport: str | None,
                   log_level: str, announce_address: str = f"{tp.ASAP_ANNOUNCE_GROUP}:{tp.ASAP_PORT}",
                   announce_interface: str | None = None, cspserver: str | None = None,
                   cspinterval: int | None = None) -> None:
    """Run COUNT CalcApp pool users (RSPLIB calcappclient semantics) for DURATION seconds."""
    from rserpool.pu import PUConfig
    from rserpool.wire.constants import CALCAPP_PPID

    _setup_logging(log_level)
    csp.configure_from_options(cspserver, cspinterval, CALCAPP_PPID)
    if count < 1 or duration <= 0 or drain < 0:
        raise click.BadParameter("--pus must be >= 1, --duration > 0 and --drain >= 0")
    # without --registrar every PU finds the registrars by announce (PUConfig.announce None: iff no list)
    group, gport = tp.parse_endpoint(announce_address, tp.ASAP_PORT)
    cfg = PUConfig(registrars=_endpoints(registrars), transport=transport, stale_cache=stale_cache,
                   announce_group=group, announce_port=gport, announce_interface=announce_interface)
    params = PUParams(pool_handle=pool.encode(), size_mean=size_mean, size_dist=size_dist,
                      interval_mean=interval_mean, interval_dist=interval_dist, retry_delay=retry_delay)
    result: dict[str, object] = {}

    async def main(stop: asyncio.Event) -> None:
        run = asyncio.ensure_future(run_pus(count, duration, cfg, params, seed=seed, prefix=name_prefix,
                                            drain=drain))
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not run.done():  # SIGTERM: stop early but still write what we have
            run.cancel()
            return
        done = run.result()
        result.update(records=done.records, counters=done.counters, t0_epoch=done.t0_epoch, elapsed=done.elapsed,
                      counters_by_pu=done.counters_by_pu)

    _run_daemon(main)
    records = result.get("records") or []
    out = sys.stdout if output == "-" else open(output, "w")  # noqa: SIM115 - closed below
    try:
        for rec in records:  # type: ignore[union-attr]
            out.write(json.dumps(rec) + "\n")
        out.write(json.dumps({"summary": {"pus": count, "duration": duration, "drain": drain,
                                          "t0_epoch": result.get("t0_epoch"), "elapsed": result.get("elapsed"),
                                          "counters": result.get("counters", {}),
                                          "counters_by_pu": result.get("counters_by_pu", {})}}) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()

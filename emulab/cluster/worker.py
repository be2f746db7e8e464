"""`emulab worker`: this machine's Dask workers for sweeps on a cluster, one per testbed slot.

``--slots N`` starts N worker processes (each under a Nanny, which restarts it if it dies), each
with the worker resource ``testbed`` = 1 and its own testbed instance (``EMULAB_INSTANCE`` = the
slot's number, from ``--first-instance``), so N emulated runs go on at once on this machine without
touching each other. ``--slots 0`` starts one worker with every core for simulation only (no root).
It runs until interrupted (Ctrl-C or SIGTERM), tearing down the testbeds its workers built.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import click

from emulab import paths
from emulab.cluster.address import ClusterError, parse_address

CONNECT_TIMEOUT_S = 30.0


async def _serve(scheduler: str, specs: list[dict], timeout: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    nannies = [spec["cls"](scheduler, death_timeout=timeout, **spec["options"]) for spec in specs]
    try:
        try:
            await asyncio.wait_for(asyncio.gather(*nannies), timeout + 5)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot join the Dask scheduler at {scheduler} within {timeout:g} s ({exc}); "
                               "is `dask scheduler` running there and the port open?") from None
        for n in nannies:
            click.echo(f"worker {n.name}: {n.worker_address} (testbed instance "
                       f"{n.env.get(paths.INSTANCE_ENV, '-')})", err=True)
        done = [asyncio.ensure_future(n.finished()) for n in nannies]
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiter, *done], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        await asyncio.gather(*(n.close(timeout=60) for n in nannies), return_exceptions=True)


@click.command(name="worker")
@click.option("--scheduler", required=True, metavar="ADDRESS",
              help="The Dask scheduler to join: tcp://HOST:PORT (`dask scheduler` listens on 8786).")
@click.option("--slots", type=click.IntRange(0, paths.INSTANCE_MAX), default=1, show_default=True,
              help="Testbed slots: this many workers, each building its own testbed instance (needs root); "
                   "0: one worker for simulation only.")
@click.option("--first-instance", type=click.IntRange(1, paths.INSTANCE_MAX), default=1, show_default=True,
              help="The slots use testbed instances FIRST … FIRST+SLOTS-1.")
@click.option("--connect-timeout", type=float, default=CONNECT_TIMEOUT_S, show_default=True,
              help="Seconds to wait for the scheduler before giving up.")
def command(scheduler: str, slots: int, first_instance: int, connect_timeout: float) -> None:
    """Join the Dask scheduler at ADDRESS with this machine's testbed slots; runs until interrupted.

    Sweeps started with `emulab experiment paper --cluster ADDRESS` (or `emulab simulate --cluster`)
    then run their (setting, run)s here: an emulated run on one of this machine's testbed
    instances, a simulated one on any worker. Every machine needs the same `make setup`.
    """
    from emulab.cluster.connect import worker_spec  # Dask only now: `emulab --help` stays quick

    address = parse_address(scheduler, allow_local=False).scheduler
    assert address is not None
    host = socket.gethostname().split(".")[0]
    if slots:
        if os.geteuid() != 0:
            raise ClusterError(f"emulab worker --slots {slots} needs root: each slot builds a testbed (network "
                               "namespaces, Open vSwitch); run it with sudo, or --slots 0 for simulation only")
        last = first_instance + slots - 1
        if last > paths.INSTANCE_MAX:
            raise ClusterError(f"--first-instance {first_instance} --slots {slots}: instances go up to "
                               f"{paths.INSTANCE_MAX} only")
        busy = [str(i) for i in range(first_instance, last + 1) if paths.state_file(str(i)).exists()]
        if busy:
            raise ClusterError(f"testbed instance(s) {', '.join(busy)} already run a testbed here: stop them "
                               "(`emulab --instance N stop`) or choose --first-instance")
        specs = [worker_spec(str(i), name=f"{host}-{os.getpid()}-instance-{i}")
                 for i in range(first_instance, last + 1)]
    else:
        specs = [worker_spec(None, name=f"{host}-{os.getpid()}-sim", nthreads=os.cpu_count() or 1)]
    click.echo(f"joining {address} with {slots or 'no'} testbed slot(s)", err=True)
    try:
        asyncio.run(_serve(address, specs, connect_timeout))
    except KeyboardInterrupt:
        pass
    sys.exit(0)

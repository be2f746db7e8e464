"""The ``--cluster`` options every sweep command shares (`emulab simulate`, `emulab experiment
paper|coverage-loss`); the command receives ``cluster``: a ``ClusterRun``, or None for a local run."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from emulab.cluster.address import ClusterAddress, parse_address

SLOT_WAIT_S = 60.0


@dataclass(frozen=True)
class ClusterRun:
    """Where and how a sweep runs on a cluster."""

    address: ClusterAddress
    task_timeout: float | None = None
    """Seconds a run may take on a worker before it counts as missing (None: the sweep's default)."""
    slot_wait: float = SLOT_WAIT_S
    """Seconds to wait for a worker (with a testbed slot, for emulation) before giving up."""


def cluster_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--cluster``, ``--task-timeout``, ``--wait-workers``; the command gets ``cluster``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        address = kwargs.pop("cluster_address")
        timeout = kwargs.pop("task_timeout")
        wait = kwargs.pop("wait_workers")
        kwargs["cluster"] = None if address is None else ClusterRun(parse_address(address), timeout, wait)
        return func(*args, **kwargs)

    for opt in reversed([
        click.option("--cluster", "cluster_address", default=None, metavar="ADDRESS",
                     help="Run every (setting, run) as a task on a Dask cluster: tcp://HOST:PORT (a scheduler "
                          "that `emulab worker`s joined) or local:N (N workers, one testbed instance each, here)."),
        click.option("--task-timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
                     help="With --cluster: a run still going after this long on its worker is reported missing "
                          "(default: none for simulation; the run's duration + drain + 10 min for emulation)."),
        click.option("--wait-workers", type=click.FloatRange(min=0), default=SLOT_WAIT_S, show_default=True,
                     metavar="SECONDS",
                     help="With --cluster: how long to wait for a worker (with a testbed slot, for emulation)."),
    ]):
        wrapper = opt(wrapper)
    return wrapper

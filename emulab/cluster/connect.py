"""A Dask client for a sweep: on a running scheduler, or on a local cluster of worker processes
started here (``local:N``), each with a testbed slot and its own testbed instance.

The checks a sweep needs before it submits anything, each ending in one clear message instead of a
hang: the scheduler does not answer (``connect``), no worker holds a testbed slot for an emulated
sweep (``wait_for_slots``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from emulab import paths
from emulab.cluster.address import ClusterAddress, ClusterError
from emulab.cluster.tasks import SLOT_RESOURCE

CONNECT_TIMEOUT_S = 10.0


def free_instances(n: int) -> list[str]:
    """``n`` testbed instances (numbers "1" … "99") with no testbed running on this machine."""
    free = [str(i) for i in range(1, paths.INSTANCE_MAX + 1) if not paths.state_file(str(i)).exists()]
    if len(free) < n:
        raise ClusterError(f"only {len(free)} testbed instance(s) free on this machine, {n} asked for")
    return free[:n]


def worker_spec(instance: str | None, *, name: str, nthreads: int = 1) -> dict[str, Any]:
    """A Nanny (a worker process it restarts if it dies) named ``name`` with the testbed slot of
    instance ``instance``: the worker's environment names the instance, so every testbed it builds
    is that instance's. ``instance`` None: a worker for simulation only (no slot, no instance)."""
    from distributed import Nanny

    return {"cls": Nanny, "options": {
        "nthreads": nthreads, "resources": {SLOT_RESOURCE: 1} if instance else {},
        "env": {paths.INSTANCE_ENV: instance} if instance else {}, "name": name,
        "memory_limit": 0, "silence_logs": logging.ERROR}}


def local_cluster(n: int) -> Any:
    """A scheduler in this process and ``n`` worker processes, one testbed slot and instance each."""
    from distributed import Scheduler, SpecCluster

    workers = {f"local-{i}": worker_spec(i, name=f"instance-{i}") for i in free_instances(n)}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR, name="emulab-local")


@contextlib.contextmanager
def connect(address: ClusterAddress, *, log: Callable[[str], None],
            timeout: float = CONNECT_TIMEOUT_S) -> Iterator[Any]:
    """A ``distributed.Client`` on ``address``; a local cluster is started and, on the way out (also
    after an error), closed with all its worker processes."""
    from distributed import Client

    cluster = None
    try:
        if address.local:
            cluster = local_cluster(address.local)
            client = Client(cluster, set_as_default=False)
            client.wait_for_workers(address.local, timeout=60)
        else:
            try:
                client = Client(address.scheduler, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ClusterError(f"cannot reach the Dask scheduler at {address.scheduler} within {timeout:g} s "
                                   f"({exc}); is `dask scheduler` running there and the port open?") from None
        try:
            log(f"Dask scheduler {client.scheduler.address}, dashboard {dashboard(client)}")
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
    finally:
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=30)


def dashboard(client: Any) -> str:
    """The scheduler's dashboard link (its graphs need bokeh; without it the /info pages still work)."""
    import importlib.util

    link = str(client.dashboard_link)
    if importlib.util.find_spec("bokeh") is None:
        link = link.replace("/status", "/info/main/workers.html") + " (graphs: pip install bokeh)"
    return link


def workers(client: Any) -> dict[str, dict[str, Any]]:
    """address -> the scheduler's record of each worker (name, host, resources …)."""
    try:
        return dict(client.scheduler_info(n_workers=-1).get("workers", {}))
    except (OSError, TimeoutError):
        return {}


def slot_count(client: Any) -> int:
    return sum(int((w.get("resources") or {}).get(SLOT_RESOURCE, 0)) for w in workers(client).values())


def wait_for_slots(client: Any, timeout: float, log: Callable[[str], None], *, slot: bool = True) -> int:
    """Wait up to ``timeout`` s for a worker with a testbed slot (``slot`` False: for any worker);
    returns how many there are, or raises a ClusterError saying what to start."""
    deadline = time.monotonic() + timeout
    what = "worker with a testbed slot" if slot else "worker"
    told = False
    while True:
        n = slot_count(client) if slot else len(workers(client))
        if n:
            return n
        if time.monotonic() >= deadline:
            known = len(workers(client))
            hint = (f"start `sudo emulab worker --scheduler {client.scheduler.address} --slots N` on a machine "
                    "that can run the testbed") if slot else (
                    f"start `emulab worker --scheduler {client.scheduler.address}` on a machine")
            raise ClusterError(f"no {what} joined the scheduler within {timeout:g} s ({known} worker(s) "
                               f"there{' without a slot' if slot and known else ''}): {hint}")
        if not told:
            log(f"waiting up to {timeout:g} s for a {what} …")
            told = True
        time.sleep(0.5)

"""A Dask cluster of separate processes for the cluster tests: a scheduler (`dask scheduler`) and
`emulab worker`s, each in its own process group so a test can kill one outright (a machine lost)
and every one is ended when the test ends, passed or failed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

EMULAB = str(Path(sys.executable).with_name("emulab"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


class Lab:
    """Processes started by a test; ``close()`` kills every one left (SIGKILL to its group)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, cmd: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    def scheduler(self, port: int) -> subprocess.Popen[bytes]:
        p = self.spawn([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                        "--port", str(port), "--dashboard-address", "127.0.0.1:0", "--no-show"],
                       f"scheduler-{port}-{len(self.procs)}")
        wait_port(port)
        return p

    def worker(self, port: int, *args: str, name: str = "worker") -> subprocess.Popen[bytes]:
        return self.spawn([EMULAB, "worker", "--scheduler", f"tcp://127.0.0.1:{port}", *args],
                          f"{name}-{len(self.procs)}")

    @staticmethod
    def kill(p: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process and all it started (a Nanny and its worker): as if the machine died."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=10)

    def close(self) -> None:
        for p in self.procs:
            self.kill(p)


@contextlib.contextmanager
def lab(tmp: Path) -> Iterator[Lab]:
    it = Lab(tmp)
    try:
        yield it
    finally:
        it.close()


def processing(port: int) -> dict[str, int]:
    """How many tasks each worker of the scheduler at ``port`` is executing now (not only queued)."""
    from distributed import Client

    with Client(f"tcp://127.0.0.1:{port}", timeout=10, set_as_default=False) as c:
        return c.run(lambda dask_worker: len(dask_worker.state.executing))


def wait_until(pred, timeout: float, what: str, every: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")

"""A throwaway lab for root tests: network namespaces on one bridge, `rserpool` processes in them,
all removed by ``close()`` whatever happened. Shared by the registrar/PE/PU and ENRP namespace tests.

Faults: ``cut(ns)`` takes the bridge end of a namespace's veth down (packets into it vanish, as
in a coverage loss: the namespace's own interface stays up, so nothing fails fast), ``heal(ns)``
brings it back; a process is killed with its ``Popen`` (``send_signal(SIGKILL)``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).parent / "rserpool"
RSERPOOL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "rserpool"]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


class Lab:
    """Namespaces ``<tag><name>`` on a bridge in ``<tag>hub``, addresses ``<subnet>.<host>/24``.

    ``tag`` and ``subnet`` carry the pid so parallel test runs don't collide; ``name_chars`` is how
    much of a namespace name goes into its veth names (which must stay within 15 characters).
    """

    def __init__(self, prefix: str, second_octet: int, name_chars: int,
                 spawn_stdout: int = subprocess.DEVNULL) -> None:
        n = os.getpid() % 10000
        self.tag = f"{prefix}{n}"
        self.subnet = f"10.{second_octet}.{n % 200 + 20}"
        self.hub = f"{self.tag}hub"
        self.name_chars = name_chars
        self.spawn_stdout = spawn_stdout
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []
        self._logs: list[IO[str]] = []

    def add_ns(self, name: str) -> str:
        ns = f"{self.tag}{name}"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def build_hub(self) -> None:
        self.add_ns("hub")
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")

    def _veth(self, ns: str) -> tuple[str, str]:
        """(inner, outer) names of the veth pair that attaches ``ns`` to the bridge."""
        return f"{ns[-self.name_chars:]}i", f"{ns[-self.name_chars:]}o"

    def attach(self, ns: str, host: int, multicast_route: bool = True) -> str:
        inner, outer = self._veth(ns)
        sh("ip", "link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer, "netns", self.hub)
        sh("ip", "-n", self.hub, "link", "set", outer, "master", "br0", "up")
        addr = f"{self.subnet}.{host}"
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", inner)
        sh("ip", "-n", ns, "link", "set", inner, "up")
        if multicast_route:
            sh("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", inner)
        return addr

    def cut(self, ns: str) -> None:
        """Cut ``ns`` off the bridge: its veth's bridge end goes down."""
        sh("ip", "-n", self.hub, "link", "set", self._veth(ns)[1], "down")

    def heal(self, ns: str) -> None:
        """Undo ``cut``."""
        sh("ip", "-n", self.hub, "link", "set", self._veth(ns)[1], "up")

    def spawn(self, ns: str, *args: str, log: Path | None = None) -> subprocess.Popen[str]:
        """Start ``rserpool ARGS`` in ``ns``. Its stderr is a pipe, or with ``log`` that file (for
        long-running chatty processes: a pipe nobody reads would fill up and block them)."""
        stderr: int | IO[str] = subprocess.PIPE
        if log is not None:
            stderr = open(log, "w")  # closed in close()
            self._logs.append(stderr)
        p = subprocess.Popen(["ip", "netns", "exec", ns, *RSERPOOL, *args], cwd=ROOT, text=True,
                             stdout=self.spawn_stdout, stderr=stderr)
        self.procs.append(p)
        return p

    def run(self, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *RSERPOOL, *args], cwd=ROOT, text=True,
                              capture_output=True, timeout=60)

    def close(self) -> None:
        stop_processes(self.procs)
        for f in self._logs:
            f.close()
        for ns in reversed(self.namespaces):  # deleting a namespace deletes its veth ends
            sh("ip", "netns", "del", ns, check=False)


def stop_processes(procs: list[subprocess.Popen[Any]]) -> None:
    """SIGTERM every process still running, then reap each (SIGKILL after 10 s)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()


@contextmanager
def lab_session(lab: Lab) -> Iterator[Lab]:
    """Yield ``lab``; afterwards close it and prove none of its namespaces is left."""
    try:
        yield lab
    finally:
        lab.close()
    assert lab.tag not in sh("ip", "netns", "list").stdout

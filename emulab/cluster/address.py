"""What `--cluster` and `emulab worker --scheduler` accept, parsed once with a clear error."""

from __future__ import annotations

import re
from dataclasses import dataclass

from emulab.errors import EmulabError

DEFAULT_PORT = 8786
"""The Dask scheduler's port (``dask scheduler`` listens there unless told otherwise)."""

_LOCAL = re.compile(r"local:(\d+)")
_TCP = re.compile(r"(?:tcp://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+)(?::(\d+))?")


class ClusterError(EmulabError):
    """The cluster cannot run the sweep (bad address, unreachable scheduler, no testbed slot …)."""


@dataclass(frozen=True)
class ClusterAddress:
    """Either a scheduler to connect to (``scheduler``) or a local cluster of ``local`` workers."""

    scheduler: str | None = None
    """``tcp://HOST:PORT``."""
    local: int = 0
    """``local:N``: N worker processes on this machine (0: connect to ``scheduler``)."""

    def __str__(self) -> str:
        return self.scheduler if self.scheduler else f"local:{self.local}"


def parse_address(text: str, *, allow_local: bool = True) -> ClusterAddress:
    """``local:N`` (N ≥ 1), ``tcp://HOST[:PORT]`` or ``HOST[:PORT]`` (port 8786 by default)."""
    text = text.strip()
    m = _LOCAL.fullmatch(text)
    if m:
        if not allow_local:
            raise ClusterError(f"{text!r}: a worker joins a scheduler (tcp://HOST:PORT), not a local cluster")
        n = int(m.group(1))
        if not 1 <= n <= 99:
            raise ClusterError(f"--cluster {text}: N must be 1 … 99 (one testbed instance per worker)")
        return ClusterAddress(local=n)
    m = _TCP.fullmatch(text)
    if not m or "://" in text and not text.startswith("tcp://"):
        raise ClusterError(f"bad cluster address {text!r}: expected tcp://HOST:PORT (a Dask scheduler) "
                           "or local:N (N workers on this machine)")
    port = int(m.group(2) or DEFAULT_PORT)
    if not 0 < port < 65536:
        raise ClusterError(f"bad cluster address {text!r}: port {port} out of range")
    return ClusterAddress(scheduler=f"tcp://{m.group(1)}:{port}")

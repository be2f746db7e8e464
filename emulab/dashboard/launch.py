"""`emulab start --dashboard`: the dashboard as a background process that ends with the testbed.

Several testbed instances may each have a dashboard: when the default port is taken (by another
instance's dashboard, say), a free one is picked and printed.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time

from emulab import paths
from emulab.errors import EmulabError

#: The dashboard's usual port (`emulab start --dashboard` without a number).
DEFAULT_PORT = 8050


def _port_free(bind: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds: TIME_WAIT is no obstacle
        try:
            s.bind((bind, port))
        except OSError:
            return False
    return True


def choose_port(bind: str, port: int) -> int:
    """``port``, or a free one when it is the default port and that is taken (another instance's
    dashboard); a port the user named is kept, and a clash then reported by the dashboard."""
    if port != DEFAULT_PORT or _port_free(bind, port):
        return port
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s, contextlib.suppress(OSError):
        s.bind((bind, 0))
        return int(s.getsockname()[1])
    return port


def launch_detached(port: int, *, bind: str = "127.0.0.1", wait: bool = True, timeout: float = 15.0) -> str:
    """Start ``python -m emulab.dashboard`` in its own session, its output in ``<run dir>/logs/dashboard.log``;
    with ``wait``, return once it listens (the line with its address). The default port is
    replaced by a free one when taken (see choose_port)."""
    port = choose_port(bind, port)
    paths.log_dir().mkdir(parents=True, exist_ok=True)
    log_path = paths.log_dir() / "dashboard.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "emulab.dashboard", "--bind", bind, "--port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    if not wait:
        return f"dashboard starting on http://{bind}:{port}/ (pid {proc.pid}, log {log_path})"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text()
        for line in text.splitlines():
            if "dashboard on http" in line:
                return f"{line.removeprefix('emulab: ')} (pid {proc.pid}; it ends with the testbed)"
        if proc.poll() is not None:
            raise EmulabError(f"the dashboard exited (code {proc.returncode}): {text.strip()[-300:]}")
        time.sleep(0.1)
    raise EmulabError(f"the dashboard did not come up within {timeout:.0f} s (log: {log_path})")

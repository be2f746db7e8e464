"""`emulab start --dashboard`: the dashboard as a background process that ends with the testbed."""

from __future__ import annotations

import subprocess
import sys
import time

from emulab import paths
from emulab.errors import EmulabError


def launch_detached(port: int, *, bind: str = "127.0.0.1", wait: bool = True, timeout: float = 15.0) -> str:
    """Start ``python -m emulab.dashboard`` in its own session, its output in ``<run dir>/logs/dashboard.log``;
    with ``wait``, return once it listens (the line with its address)."""
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

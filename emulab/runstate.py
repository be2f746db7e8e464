"""A testbed's run state: the ``state.json`` the runner keeps (what was built, with pids) and whether
a process it names is alive. Read by the control client and by `emulab clean` alike."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from emulab import paths


def read_state(instance: str | None = None) -> dict[str, Any] | None:
    """The running testbed's state (of ``instance``; None: the current one); None when there is none,
    ``{"phase": "damaged"}`` when unreadable."""
    try:
        return json.loads(paths.state_file(instance).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"phase": "damaged"}


def write_state(state: dict[str, Any]) -> None:
    """Atomically replace the state file (readers never see half a file)."""
    target = paths.state_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, target)


def pid_alive(pid: int | None) -> bool:
    """True if process ``pid`` exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as dead
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False

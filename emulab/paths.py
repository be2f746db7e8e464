"""Where emulab keeps its run-time state, logs and topology files.

One testbed runs at a time; its state lives under the run directory (default /run/emulab,
overridable with EMULAB_RUN_DIR so tests can run beside a user's testbed without touching it).
Logs deliberately avoid /tmp/*.log, which `mn -c` deletes.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Prefix of everything emulab creates on the host: OVS bridges, root-namespace links, named netns.
PREFIX = "em-"
#: Environment marker inherited by every process a testbed starts, so `emulab clean` finds them.
RUN_ENV = "EMULAB_RUN_ID"


def run_dir() -> Path:
    return Path(os.environ.get("EMULAB_RUN_DIR", "/run/emulab"))


def state_file() -> Path:
    return run_dir() / "state.json"


def control_socket() -> Path:
    return run_dir() / "control.sock"


def log_dir() -> Path:
    return run_dir() / "logs"


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def topologies_dir() -> Path:
    return Path(os.environ.get("EMULAB_TOPOLOGIES", repo_root() / "topologies"))


def netns_name(node: str) -> str:
    """Name under /run/netns of a node's network namespace (so `ip netns exec em-ue …` works)."""
    return f"{PREFIX}{node}"

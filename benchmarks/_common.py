"""What several benchmarks share: the machine's load average read beside every figure (the machine is
shared, and a figure means little without it), and the figures of an emulab self-check's report.

Imported by the benchmarks as a sibling module (``from _common import ...``: a benchmark runs as a
script, so its folder is on the path); not a benchmark itself.
"""

from __future__ import annotations

import os
import re
from typing import Any

_REACHABLE = re.compile(r"self-check: (\d+)/(\d+) pairs reachable")
_RTT = re.compile(r"self-check: RTT over (\d+) paths, largest error ([-+]?[\d.]+) ms \(tolerance ±([\d.]+)\)")


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded to hundredths."""
    return [round(x, 2) for x in os.getloadavg()]


def load_1m() -> float:
    """The 1 minute load average, rounded to hundredths."""
    return loadavg()[0]


def self_check_figures(text: str) -> dict[str, Any]:
    """The figures of a self-check's report (what `emulab self-check` or `emulab start --self-check`
    printed): ``passed``; ``reachable`` ("n/m" pairs), ``paths`` (RTTs compared), ``largest_error_ms``
    and ``tolerance_ms``, each None when the report has no such line; ``failures``, its FAIL lines."""
    reach, rtt = _REACHABLE.search(text), _RTT.search(text)
    return {
        "passed": "self-check: passed" in text,
        "reachable": f"{reach[1]}/{reach[2]}" if reach else None,
        "paths": int(rtt[1]) if rtt else None,
        "largest_error_ms": float(rtt[2]) if rtt else None,
        "tolerance_ms": float(rtt[3]) if rtt else None,
        "failures": [ln.strip() for ln in text.splitlines() if "self-check: FAIL " in ln],
    }

"""The radio's round-trip time through OAI, measured all the time the UE is attached.

A ``ping`` from the UE's tunnel address to the eNB's (``oaitun_ue1`` → ``oaitun_enb1``) crosses
OAI's radio alone: the UE's PDCP/RLC/MAC/PHY, the RF simulator, the eNB's stack up to its kernel,
and back down. The prober runs it at ``PROBE_INTERVAL_S`` (84-byte packets: negligible next to
the user plane) into a file in the run directory; ``window`` gives the samples of the last seconds.
On 2 shared cores OAI's RTT follows the machine's load (rfsim is CPU-bound), so a figure measured
at the same time as what it explains (the self-check's rounds, an experiment) is the fair one.

From the RTT the backend derives what the radio does per direction (``one_way``): half the median
each way (OAI's uplink waits for a scheduling request and grant, its downlink not; the split is not
measurable without synchronised clocks, the sum is) and a jitter J such that two independent
uniform ±J hops have the measured variance (2 J^2 / 3 = sd^2).
"""

from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

PROBE_INTERVAL_S = 0.2
WINDOW_S = 5.0  # the samples a figure is computed from: about the length of a self-check round
PING_LINE = re.compile(r"^\[(\d+\.\d+)\].*time=([0-9.]+) ms")


@dataclass
class RttProbe:
    """Follows the output of ``ping -D`` (one timestamped line per reply) in ``path``."""

    path: Path
    samples: list[tuple[float, float]] = field(default_factory=list)  # (unix time, rtt ms)
    offset: int = 0

    @staticmethod
    def argv(target: str) -> list[str]:
        return ["ping", "-n", "-D", "-i", str(PROBE_INTERVAL_S), "-W", "2", target]

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1  # whole lines only
        self.offset += end
        for line in data[:end].decode("utf-8", "replace").splitlines():
            m = PING_LINE.match(line)
            if m:
                self.samples.append((float(m.group(1)), float(m.group(2))))
        cutoff = time.time() - 600
        if self.samples and self.samples[0][0] < cutoff:
            self.samples = [s for s in self.samples if s[0] >= cutoff]

    def window(self, seconds: float = WINDOW_S, now: float | None = None) -> dict[str, float] | None:
        """Median, sd, range and count of the RTTs of the last ``seconds`` (None: fewer than 3)."""
        self.poll()
        now = time.time() if now is None else now
        rtts = [r for t, r in self.samples if now - seconds <= t <= now]
        if len(rtts) < 3:
            return None
        return {"median_ms": round(statistics.median(rtts), 3), "sd_ms": round(statistics.stdev(rtts), 3),
                "min_ms": min(rtts), "max_ms": max(rtts), "n": len(rtts), "window_s": seconds}


def one_way(stats: dict[str, float]) -> tuple[float, float]:
    """(delay, jitter) in ms per direction from RTT figures (see the module docstring)."""
    return stats["median_ms"] / 2, stats["sd_ms"] * math.sqrt(1.5)

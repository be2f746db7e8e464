"""The self-check's statistics: the median's standard error under uniform per-hop jitter, the FIFO
bias that jitter puts on closely spaced probes, ping's print resolution, and the shaper's own
lateness between two stats readings (emulab.selfcheck states the whole tolerance rule)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MC_REPLICAS = 400  # Monte Carlo replicas of the median (its SE then carries ~4 % error)
FLOOR_SIGMA_MS = 0.02


def ping_resolution_ms(rtt_ms: float) -> float:
    """The step in which ping (iputils) prints an RTT of this size."""
    if rtt_ms >= 99.95:
        return 1.0
    if rtt_ms >= 9.995:
        return 0.1
    if rtt_ms >= 1.0:
        return 0.01
    return 0.001


def fifo_bias_ms(rate_per_s: float, jitter_ms: float) -> float:
    """Expected extra wait of a probe behind an earlier one on a FIFO hop with uniform jitter ±J
    and probes arriving at ``rate_per_s`` (Poisson, rate * 2J << 1): lambda * J^2 / 6."""
    return rate_per_s * (jitter_ms / 1e3) ** 2 / 6.0 * 1e3


@dataclass
class Lateness:
    """The shaper's lateness histogram of one link direction over one probing round (ms)."""

    edges: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    sum_ms: float = 0.0

    @property
    def n(self) -> int:
        return sum(self.counts)

    @property
    def mean_ms(self) -> float:
        return self.sum_ms / self.n if self.n else 0.0

    def bounds(self) -> tuple[Any, Any]:
        """Lower and upper bound of every bucket (the open ends closed at one more step)."""
        import numpy as np

        e = np.asarray(self.edges, dtype=float)
        lo = np.concatenate(([e[0] - (e[1] - e[0])], e))
        hi = np.concatenate((e, [e[-1] * 1.5]))
        return lo, hi

    def sample(self, rng: Any, shape: tuple[int, ...]) -> Any:
        """Draws from the histogram (uniform within a bucket)."""
        import numpy as np

        if not self.n:
            return np.zeros(shape)
        lo, hi = self.bounds()
        idx = rng.choice(len(self.counts), size=shape, p=np.asarray(self.counts, dtype=float) / self.n)
        return lo[idx] + (hi[idx] - lo[idx]) * rng.random(shape)


def lateness_between(before: dict[str, Any], after: dict[str, Any], edges: list[float]) -> dict[tuple[str, str], Lateness]:
    """Per (link, "1to2"/"2to1"): the shaper's lateness between two ``stats`` answers."""
    out: dict[tuple[str, str], Lateness] = {}
    for name, st in after.items():
        prev = before.get(name)
        for d, sd in (("1to2", "ab"), ("2to1", "ba")):
            a = st[sd]
            b = prev[sd] if prev else {"late_sum_ms": 0.0, "late_hist": [0] * len(a["late_hist"])}
            hist = [max(0, x - y) for x, y in zip(a["late_hist"], b["late_hist"], strict=True)]
            out[(name, d)] = Lateness(list(edges), hist, a["late_sum_ms"] - b["late_sum_ms"])
    return out


@dataclass
class Noise:
    """One path's RTT noise model: the uniform jitters of its hops, the shaper's lateness on its
    shaped hops, and the kernel floor."""

    jitters_ms: list[float] = field(default_factory=list)
    lateness: list[Lateness] = field(default_factory=list)

    def median_stats(self, n: int, seed: int, replicas: int = MC_REPLICAS) -> tuple[float, float]:
        """Mean and standard deviation of the median of ``n`` RTT noise samples (Monte Carlo)."""
        import numpy as np

        if n <= 0:
            return 0.0, math.inf
        rng = np.random.default_rng(seed)
        shape = (replicas, n)
        x = rng.normal(0.0, FLOOR_SIGMA_MS, shape)
        for j in self.jitters_ms:
            x += rng.uniform(-j, j, shape)
        for late in self.lateness:
            x += late.sample(rng, shape)
        med = np.median(x, axis=1)
        return float(med.mean()), float(med.std())


def median_se_ms(jitters_ms: Iterable[float], extra_sigma_ms: float, n: int) -> float:
    """Closed form of the median's standard error for uniform jitters plus normal noise (no
    lateness): 1 / (2 f sqrt(n)), f = min(1/(2 J_max), 1/(sigma sqrt(2 pi))). The check itself
    uses ``Noise.median_stats`` (which also takes the measured lateness); this is the rule's
    closed form for the configuration alone, printed and tested against it."""
    js = [j for j in jitters_ms if j > 0]
    var = sum(j * j / 3.0 for j in js) + extra_sigma_ms**2
    if n <= 0:
        return math.inf
    if var <= 0:
        return 0.0
    f = 1.0 / (math.sqrt(var) * math.sqrt(2 * math.pi))
    if js:
        f = min(f, 1.0 / (2 * max(js)))
    return 1.0 / (2 * f * math.sqrt(n))

"""Link emulation parameters (delay, jitter, loss, rate) and parsing of their human-readable forms.

Shared by the topology spec (what is configured), the link layer (what is applied, by netem or by
the userspace shaper) and the radio backends (which change them at run time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|µs|ms|s)?\s*$")
_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)?\s*$", re.IGNORECASE)
_PCT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%?\s*$")


class LinkParamError(ValueError):
    """A link parameter could not be parsed; the message says what was expected."""


@dataclass(frozen=True)
class LinkParams:
    """What a link does to traffic, per direction: one-way delay and jitter (ms), loss (%), rate (Mbit/s).

    Delay is one-way and applied in both directions, so a link with delay d adds 2*d to an RTT.
    ``rate_mbit`` None means unlimited.
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_mbit: float | None = None

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise LinkParamError("delay and jitter must not be negative")
        if not 0.0 <= self.loss_pct <= 100.0:
            raise LinkParamError(f"loss must be between 0 and 100 %, got {self.loss_pct}")
        if self.rate_mbit is not None and self.rate_mbit <= 0:
            raise LinkParamError(f"rate must be positive, got {self.rate_mbit} Mbit/s")

    @property
    def is_neutral(self) -> bool:
        """True when the link needs no emulation at all."""
        return not (self.delay_ms or self.jitter_ms or self.loss_pct or self.rate_mbit)

    def with_changes(self, **changes: float | None) -> LinkParams:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, float | None]:
        return {
            "delay_ms": self.delay_ms,
            "jitter_ms": self.jitter_ms,
            "loss_pct": self.loss_pct,
            "rate_mbit": self.rate_mbit,
        }


def parse_time_ms(value: object) -> float:
    """'20ms', '1.5 s', '250us' or a bare number (milliseconds) -> milliseconds."""
    if isinstance(value, bool):
        raise LinkParamError(f"expected a duration like '20ms', got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = _TIME.match(str(value))
    if not m:
        raise LinkParamError(f"expected a duration like '20ms' or '1.5s', got {value!r}")
    number, unit = float(m.group(1)), (m.group(2) or "ms")
    return number * {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0}[unit]


def parse_rate_mbit(value: object) -> float:
    """'100Mbit', '500kbit', '1Gbit' or a bare number (Mbit/s) -> Mbit/s."""
    if isinstance(value, bool):
        raise LinkParamError(f"expected a rate like '100Mbit', got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = _RATE.match(str(value))
    if not m:
        raise LinkParamError(f"expected a rate like '100Mbit' or '500kbit', got {value!r}")
    number, unit = float(m.group(1)), (m.group(2) or "mbit").lower()
    scale = {"bit": 1e-6, "kbit": 1e-3, "mbit": 1.0, "gbit": 1e3, "bps": 8e-6, "kbps": 8e-3, "mbps": 8.0, "gbps": 8e3}
    return number * scale[unit]


def parse_percent(value: object) -> float:
    """'1%', '0.5 %' or a bare number -> percent."""
    if isinstance(value, bool):
        raise LinkParamError(f"expected a percentage like '1%', got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = _PCT.match(str(value))
    if not m:
        raise LinkParamError(f"expected a percentage like '1%', got {value!r}")
    return float(m.group(1))

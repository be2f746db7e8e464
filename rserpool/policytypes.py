"""Pool member selection policy type codes (RFC 5356 plus RSPLIB's extensions) and their value scales.

The codes and ranges follow RSPLIB 3.4.4's ``src/rserpool-policytypes.h``. Every numeric policy
value (weight, load, load degradation, load DPF, weight DPF) is an unsigned 32-bit integer; for the
load-like values 0xFFFFFFFF means 100 %. The wire layout of each policy's parameters lives in
``rserpool.wire.params`` (``POLICY_FIELDS``).
"""

from __future__ import annotations

from enum import IntEnum


class PolicyType(IntEnum):
    """Policy type codes carried in the Pool Member Selection Policy parameter (RFC 5356, RSPLIB)."""

    UNDEFINED = 0x00000000
    """Placeholder RSPLIB uses for "no policy"; no parameters."""

    # --- RFC 5356, non-adaptive ---
    ROUND_ROBIN = 0x00000001
    """RR: no parameters."""
    WEIGHTED_ROUND_ROBIN = 0x00000002
    """WRR: Weight (u32)."""
    RANDOM = 0x00000003
    """RAND: no parameters."""
    WEIGHTED_RANDOM = 0x00000004
    """WRAND: Weight (u32)."""
    PRIORITY = 0x00000005
    """PRIO: Priority (u32), carried in the weight field."""

    # --- RFC 5356, adaptive ---
    LEAST_USED = 0x40000001
    """LU: Load (u32, 0xFFFFFFFF = 100 %)."""
    LEAST_USED_DEGRADATION = 0x40000002
    """LUD: Load, Load Degradation (both u32 fractions)."""
    PRIORITY_LEAST_USED = 0x40000003
    """PLU: Load, Load Degradation (RSPLIB puts PLU's per-selection increment in the degradation field)."""
    RANDOMIZED_LEAST_USED = 0x40000004
    """RLU: Load."""

    # --- RSPLIB extensions (non-standard) ---
    RANDOMIZED_PRIORITY_LEAST_USED = 0xB0001001
    """RPLU: Load, Load Degradation."""
    RANDOMIZED_LEAST_USED_DEGRADATION = 0xB0001002
    """RLUD: Load, Load Degradation."""
    PRIORITY_LEAST_USED_DEGRADATION = 0xB0001003
    """PLUD: Load, Load Degradation."""
    RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION = 0xB0001004
    """RPLUD: Load, Load Degradation."""

    # --- RSPLIB distance-penalty-factor (DPF) extensions ---
    WEIGHTED_RANDOM_DPF = 0xB0002001
    """WRAND-DPF: Weight, Weight DPF, Distance (all u32)."""
    LEAST_USED_DPF = 0xB0002002
    """LU-DPF: Load, Load DPF, Distance."""
    LEAST_USED_DEGRADATION_DPF = 0xB0002003
    """LUD-DPF: Load, Load Degradation, Load DPF, Distance."""
    PRIORITY_LEAST_USED_DPF = 0xB0002004
    """PLU-DPF: Load, Load Degradation, Load DPF, Distance."""
    PRIORITY_LEAST_USED_DEGRADATION_DPF = 0xB0002005
    """PLUD-DPF: Load, Load Degradation, Load DPF, Distance."""


# Short names as RSPLIB's command line and the papers spell them.
SHORT_NAMES: dict[PolicyType, str] = {
    PolicyType.UNDEFINED: "Undefined",
    PolicyType.ROUND_ROBIN: "RR",
    PolicyType.WEIGHTED_ROUND_ROBIN: "WRR",
    PolicyType.RANDOM: "RAND",
    PolicyType.WEIGHTED_RANDOM: "WRAND",
    PolicyType.PRIORITY: "PRIO",
    PolicyType.LEAST_USED: "LU",
    PolicyType.LEAST_USED_DEGRADATION: "LUD",
    PolicyType.PRIORITY_LEAST_USED: "PLU",
    PolicyType.RANDOMIZED_LEAST_USED: "RLU",
    PolicyType.RANDOMIZED_PRIORITY_LEAST_USED: "RPLU",
    PolicyType.RANDOMIZED_LEAST_USED_DEGRADATION: "RLUD",
    PolicyType.PRIORITY_LEAST_USED_DEGRADATION: "PLUD",
    PolicyType.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION: "RPLUD",
    PolicyType.WEIGHTED_RANDOM_DPF: "WRAND-DPF",
    PolicyType.LEAST_USED_DPF: "LU-DPF",
    PolicyType.LEAST_USED_DEGRADATION_DPF: "LUD-DPF",
    PolicyType.PRIORITY_LEAST_USED_DPF: "PLU-DPF",
    PolicyType.PRIORITY_LEAST_USED_DEGRADATION_DPF: "PLUD-DPF",
}

ADAPTIVE_POLICIES: frozenset[PolicyType] = frozenset(
    {
        PolicyType.LEAST_USED,
        PolicyType.LEAST_USED_DPF,
        PolicyType.LEAST_USED_DEGRADATION,
        PolicyType.LEAST_USED_DEGRADATION_DPF,
        PolicyType.PRIORITY_LEAST_USED,
        PolicyType.PRIORITY_LEAST_USED_DPF,
        PolicyType.PRIORITY_LEAST_USED_DEGRADATION,
        PolicyType.PRIORITY_LEAST_USED_DEGRADATION_DPF,
        PolicyType.RANDOMIZED_LEAST_USED,
        PolicyType.RANDOMIZED_LEAST_USED_DEGRADATION,
        PolicyType.RANDOMIZED_PRIORITY_LEAST_USED,
        PolicyType.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION,
    }
)
"""Policies whose selection depends on the PE's reported load (RSPLIB's PPT_IS_ADAPTIVE)."""

# Fixed-point scales: all values are u32 on the wire.
MIN_WEIGHT = 0
MAX_WEIGHT = 0xFFFFFFFF
MIN_LOAD = 0
MAX_LOAD = 0xFFFFFFFF
"""Load 0xFFFFFFFF means 100 % utilisation."""
MIN_LOAD_DEGRADATION = 0
MAX_LOAD_DEGRADATION = 0xFFFFFFFF
"""Load degradation 0xFFFFFFFF means +100 % load per selection."""
MIN_LOAD_DPF = 0
MAX_LOAD_DPF = 0xFFFFFFFF
"""Load DPF: load fraction added per millisecond of distance; 0xFFFFFFFF = 100 %/ms."""
MIN_WEIGHT_DPF = 0
MAX_WEIGHT_DPF = 0xFFFFFFFF


def fraction_to_u32(fraction: float) -> int:
    """Convert a fraction in [0, 1] (e.g. load 0.25) to RSPLIB's u32 scale, clamping outside values."""
    if fraction <= 0.0:
        return 0
    if fraction >= 1.0:
        return MAX_LOAD
    # RSPLIB computes (unsigned int)rint(fraction * PPV_MAX_LOAD); round() matches rint (half-even).
    return round(fraction * MAX_LOAD)


def u32_to_fraction(value: int) -> float:
    """Convert a u32 load-like value back to a fraction in [0, 1]."""
    return value / MAX_LOAD

"""Per-PU request rate limits of the registrar (RSPLIB 3.4.4 ``rspregistrar-security.c``).

RSPLIB's registrar can refuse Handle Resolutions (``max_hr_rate``) and Endpoint Unreachable
reports (``max_eu_rate``) from a PU that sends them faster than a limit per second (off = -1, the
default). The rate is tracked per PU connection and pool handle over the PU's last
``RATE_TABLE_ENTRIES`` (16) requests of that kind (RSPLIB's timestamp hash table depth), for at most
``RATE_TABLE_POOLS`` (64) pools per PU, the least recently used evicted first.

Beyond RSPLIB, ``max_reg_rate`` limits the Registrations of one association (all pools together,
key ``REGISTRATION`` and the empty handle): a registration flood of fake PEs (RFC 5355 section 3.1)
is refused with "Rejected due to security considerations" (off = -1, the default, as RSPLIB has
no such limit).

What a refusal looks like on the wire (a Handle Resolution Response with "Rejected due to
security considerations"; a silently ignored report) is the ASAP side's business
(``rserpool.registrar``); this module only decides.
"""

from __future__ import annotations

import collections
import time
from typing import Protocol

RATE_TABLE_ENTRIES = 16  # RSPLIB TSHT_ENTRIES: timestamps kept per PU and pool
RATE_TABLE_POOLS = 64  # RSPLIB TSHT_BUCKETS: pools tracked per PU (oldest evicted)

# Request kinds: the ASAP message types counted.
REGISTRATION = 0x01
HANDLE_RESOLUTION = 0x05
ENDPOINT_UNREACHABLE = 0x09


class RateTracker:
    """Request rate of one PU per pool handle over its last ``RATE_TABLE_ENTRIES`` requests."""

    __slots__ = ("_pools",)

    def __init__(self) -> None:
        self._pools: collections.OrderedDict[tuple[int, bytes], collections.deque[float]] = collections.OrderedDict()

    def note(self, action: int, handle: bytes, now: float) -> float:
        """Record one request; return the current rate (requests per second)."""
        key = (action, handle)
        q = self._pools.get(key)
        if q is None:
            q = self._pools[key] = collections.deque(maxlen=RATE_TABLE_ENTRIES)
            if len(self._pools) > RATE_TABLE_POOLS:
                self._pools.popitem(last=False)
        else:
            self._pools.move_to_end(key)
        q.append(now)
        if len(q) < 2:
            return 0.0
        span = now - q[0]
        return float("inf") if span <= 0 else (len(q) - 1) / span


class RateLimited(Protocol):
    """What carries a PU's rates: one per PU connection (created on its first counted request)."""

    rates: RateTracker | None


def over_limit(pu: RateLimited, action: int, handle: bytes, limit: float) -> bool:
    """Count one ``action`` request of ``pu`` for pool ``handle``; True if its rate is above ``limit``.

    ``limit`` <= 0 means unlimited (RSPLIB's -1): nothing is counted then."""
    if limit <= 0:
        return False
    rates = pu.rates
    if rates is None:
        rates = pu.rates = RateTracker()
    return rates.note(action, handle, time.monotonic()) > limit


def handle_resolution_refused(pu: RateLimited, handle: bytes, max_hr_rate: float) -> bool:
    """Whether this Handle Resolution of ``pu`` exceeds ``max_hr_rate`` (per second; <= 0: unlimited)."""
    return over_limit(pu, HANDLE_RESOLUTION, handle, max_hr_rate)


def unreachable_report_refused(pu: RateLimited, handle: bytes, max_eu_rate: float) -> bool:
    """Whether this Endpoint Unreachable report of ``pu`` exceeds ``max_eu_rate`` (per second)."""
    return over_limit(pu, ENDPOINT_UNREACHABLE, handle, max_eu_rate)


def registration_refused(pe: RateLimited, max_reg_rate: float) -> bool:
    """Whether this Registration over ``pe``'s association exceeds ``max_reg_rate`` (per second)."""
    return over_limit(pe, REGISTRATION, b"", max_reg_rate)


def describe_rate(rate: float) -> str:
    """A rate limit as the registrar's banner shows it."""
    return "unlimited" if rate <= 0 else f"{rate:g}/s"

"""What one simulated run takes (``RunParams`` and its faults) and what it gives (``RunResult``).

``RunParams``' timers default to the constants of the emulated code (``rserpool``), so that the
simulator (``emulab.sim.engine``) and the emulation run on the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rserpool.pu import PUConfig
from rserpool.registrar import RegistrarConfig
from rserpool.services.calcapp import (
    COOKIE_MAX_CALCULATIONS,
    COOKIE_MAX_TIME,
    KEEPALIVE_INTERVAL,
    KEEPALIVE_TIMEOUT,
)
from rserpool.services.calcapp_pu import RETRY_DELAY, PUParams

STATUS_COMPLETED, STATUS_LOST, STATUS_UNFINISHED = 0, 1, 2
STATUS_NAMES = ("completed", "lost", "unfinished")

_REG = RegistrarConfig()
_PU = PUConfig()
OPEN_ATTEMPTS = 8
"""``PoolSession`` tries per session opening: ``calcapp_pu._Session`` passes ``max_attempts=8``."""


@dataclass(frozen=True, slots=True)
class Failure:
    """An element crash at ``at`` seconds, back after ``duration`` (None: for good)."""

    element: str
    at: float
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class CoverageLoss:
    """The UE loses radio coverage between ``at`` and ``at + duration``."""

    at: float
    duration: float


@dataclass(frozen=True, slots=True)
class RunParams:
    """Everything one run needs besides the pool model.

    The timers default to the constants of the emulated code (``rserpool``), so that simulation and
    emulation run on the same numbers; change them here only to ask "what if".
    """

    setting: int
    """Number of PUs."""
    run: int
    duration: float
    seed: int
    size_mean: float = 1e6
    size_dist: str = "exp"
    interval_mean: float = 10.0
    interval_dist: str = "exp"
    failures: tuple[Failure, ...] = ()
    coverage_losses: tuple[CoverageLoss, ...] = ()
    drain_s: float = 0.0
    """After ``duration`` no new requests; up to this many seconds for the queued ones to finish."""
    connect_rtts: float = 1.0
    """RTTs before the request leaves (new association per job); request + accept add one more."""
    reject_retry_s: float = RETRY_DELAY
    """``calcapp_pu.RETRY_DELAY``: the pause after a reject (or no PE at all) before selecting again."""
    keepalive_interval_s: float = KEEPALIVE_INTERVAL
    """``calcapp.KEEPALIVE_INTERVAL``: CalcApp silence before a keep-alive (PE and PU alike)."""
    keepalive_timeout_s: float = KEEPALIVE_TIMEOUT
    """``calcapp.KEEPALIVE_TIMEOUT``: no answer to a keep-alive within this ends the job / session."""
    cookie_interval_s: float = COOKIE_MAX_TIME
    cookie_calculations: float = COOKIE_MAX_CALCULATIONS
    connect_timeout_s: float = _PU.connect_timeout
    """``PUConfig.connect_timeout``: connecting to a PE that does not answer fails after this."""
    watch_routes: bool = _PU.watch_routes
    """``PUConfig.watch_routes``: sessions and connects to a PE the UE lost its route to end at once."""
    open_attempts: int = OPEN_ATTEMPTS
    max_failovers: int = PUParams().max_failovers
    """``PUParams.max_failovers``: after this many fail-overs the PU starts the request afresh."""
    registrar_detect_s: float = _REG.keepalive_interval / 2 + _REG.keepalive_timeout
    """A crashed PE leaves the registrar after its endpoint keep-alive fails (``RegistrarConfig``:
    5 s interval, 5 s timeout): on average 2.5 + 5 s."""
    max_bad_reports: int = _REG.max_bad_pe_reports
    partition_detect_s: float = _REG.peer_max_time_last_heard + _REG.peer_max_time_no_response + _REG.keepalive_timeout
    """A cut-off registrar drops the entries of its unreachable ENRP peers after last-heard +
    no-response (declared dead, taken over) + the takeover's keep-alive timeout (``rserpool.enrp``: 15 s)."""
    resync_max_s: float = _REG.peer_heartbeat_cycle
    """Connectivity back: the peers' next Presence (and the handle-table download) comes within one
    heartbeat cycle."""
    handle_resolution_items: int = _REG.max_hr_items
    sample_interval_s: float = 0.0
    """Period of the used-capacity samples (0: none); ``emulab simulate`` samples on the emulated PEs'
    ``calcapp.SAMPLE_INTERVAL`` (``sweep.sample_interval``)."""
    force_python_selector: bool | None = None


@dataclass(slots=True)
class RunResult:
    """A run's outcome in compact columns (cheap to pickle between processes)."""

    setting: int
    run: int
    duration: float
    """Seconds the run lasted: ``RunParams.duration``, plus the part of the drain that was used."""
    # per request: pu index, size, queued, started, first accept, completed, element index (-1),
    # rejected-by element indexes, failovers, status code
    requests: list[tuple] = field(default_factory=list)
    # per element: used calculations, accepted, rejected
    usage: list[tuple[float, int, int]] = field(default_factory=list)
    accepts: dict[int, list[tuple[float, int]]] = field(default_factory=dict)
    """Runs with faults: request index -> every Accept (time, element index). Without faults a
    request has at most one, its ``accepted_at`` at its element."""
    samples: list[tuple[float, int, float, int]] = field(default_factory=list)
    """Every ``sample_interval_s``: (time, element index, cumulative used calculations, jobs)."""
    events: int = 0
    wall_s: float = 0.0

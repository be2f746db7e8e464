"""An LTE downlink channel and RRC model for the emulated UE–eNodeB link (pure numpy, no testbed needed).

Per 10 ms radio frame the model computes, from the UE's situation, what the link does to IP packets:

* **Path loss**: 3GPP TR 36.942 §4.5.2 macro cell propagation model (urban/suburban, Okumura–Hata
  derived)::

      L(R) = 40·(1 − 4e-3·Δhb)·log10(R/km) − 18·log10(Δhb) + 21·log10(f/MHz) + 80  dB

  with Δhb = base-station antenna height above rooftop (15 m) and f the carrier (2680 MHz, band 7,
  as the papers' B210 eNodeB); for 2 GHz this is the familiar 128.1 + 37.6·log10(R/km). Distances
  are clamped to ``min_distance_m`` (35 m, 36.942's minimum coupling distance).
* **Shadowing**: log-normal, σ = 8 dB, spatially correlated with Gudmundson's model
  (ρ = exp(−Δd / 50 m)), so a UE that does not move keeps its shadowing value. Seeded, reproducible.
* **SNR** = P_tx + G_ant − L − shadowing − (−174 dBm/Hz + 10·log10(N_PRB·180 kHz) + NF_UE); defaults
  46 dBm, 15 dBi, NF 9 dB (36.942 Table 4.3/4.4 macro values). 10 MHz: SNR ≈ 28 dB at 1 km, ≈ −8 dB
  (Qout) around 9 km. A scripted SNR profile bypasses the propagation part.
* **CQI**: highest CQI of 36.213 Table 7.2.3-1 whose 10 %-BLER SNR threshold is met (thresholds of
  testbed-facts.md §5.6); below CQI 1 the eNodeB still schedules at CQI 1's MCS.
* **BLER** of the chosen CQI: a logistic waterfall through 10 % at the threshold, ``bler_slope_db``
  (2 per dB) steep, i.e. ≈ 1.5 % one dB above it and ≈ 45 % one dB below it.
* **Rate** (achievable, as the testbed-facts formula): eff(CQI) × N_PRB × 0.168 × (1 − 0.25) Mbit/s →
  17.5 / 35.0 / 70.0 Mbit/s at CQI 15 for 5 / 10 / 20 MHz. The link is shaped to the goodput,
  rate × (1 − BLER), since retransmissions use the same resources, capped at ``max_rate_mbit`` (by
  default the radio link's configured rate: the practical peak, e.g. 30 Mbit/s in paper-topology,
  testbed-facts §5.2; ``max_rate_mbit: null`` in the options removes the cap).
* **Delay**: base user-plane one-way delay (the topology's configured radio-link delay, 8 ms) plus
  HARQ: each retransmission costs one 8 ms HARQ RTT; with independent attempts and at most
  ``max_harq_tx`` (4, OAI's default) transmissions the mean extra delay is 8 ms × Σ_k BLER^k and its
  standard deviation is added to the base jitter. Chase combining would make retransmissions
  likelier to succeed, so this is slightly pessimistic.
* **Loss**: residual HARQ loss BLER^max_harq_tx (what RLC-UM would pass up), 100 % while out of sync.
* **Radio link failure** (36.331 §5.3.11, OAI eNB defaults): one out-of-sync indication per frame while
  SNR < Qout (−8 dB), in-sync while SNR > Qin (−6 dB); N310 (20) consecutive out-of-sync start T310
  (1000 ms); N311 (1) consecutive in-sync stop it; T310 expiry = RLF → detached. A hard outage thus
  detaches the UE N310 × 10 ms + T310 = 1.2 s after it starts; a dip shorter than that does not.
* **Re-attach**: after RLF the UE searches for the cell; once SNR > Qin again, it re-attaches after
  ``attach_time_s`` (default 1.0 s: full attach RRC + NAS + default bearer measured 0.5–2 s in labs,
  testbed-facts.md §5.4), or ``reestablish_time_s`` if the cell comes back within T311 (10 s) and
  that option is set (RRC re-establishment; by default the same 1 s, since OAI 4G's re-establishment
  support is partial). During attach and while detached the link has 100 % loss.

Uplink is not modelled separately: the emulated link is symmetric and carries the downlink figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from radio.host import LinkParamsView, RadioLinkParams

FRAME_S = 0.010  # one out-of-sync/in-sync indication per 10 ms radio frame
PRB_BY_BANDWIDTH = {1.4: 6, 3.0: 15, 5.0: 25, 10.0: 50, 15.0: 75, 20.0: 100}
#: SNR used for "no signal at all" (manual coverage loss, coverage holes): far below Qout.
NO_SIGNAL_DB = -40.0

# 36.213 Table 7.2.3-1 (4-bit CQI): modulation, code rate x 1024, efficiency; the SNR thresholds are
# the common 10 %-BLER AWGN approximation (testbed-facts.md §5.6), index = CQI, CQI 0 = out of range.
CQI_MODULATION = ("none", *("QPSK",) * 6, *("16QAM",) * 3, *("64QAM",) * 6)
CQI_CODE_RATE = np.array([0, 78, 120, 193, 308, 449, 602, 378, 490, 616, 466, 567, 666, 772, 873, 948])
CQI_EFFICIENCY = np.array([0.0, 0.1523, 0.2344, 0.3770, 0.6016, 0.8770, 1.1758, 1.4766, 1.9141,
                           2.4063, 2.7305, 3.3223, 3.9023, 4.5234, 5.1152, 5.5547])
CQI_SNR_DB = np.array([-np.inf, -6.7, -4.7, -2.3, 0.2, 2.4, 4.3, 5.9, 8.1,
                       10.3, 11.7, 14.1, 16.3, 18.7, 21.0, 22.7])

# Attach states, in the order a coverage loss walks through them.
ATTACHED, RLF_PENDING, DETACHED, ATTACHING = "attached", "rlf-pending", "detached", "attaching"


class LteModelError(ValueError):
    """A radio option is invalid; the message names it."""


@dataclass(frozen=True)
class LteConfig:
    """Every number the model uses; the defaults are the ones documented in the module docstring."""

    bandwidth_mhz: float = 10.0
    tx_power_dbm: float = 46.0
    antenna_gain_dbi: float = 15.0
    noise_figure_db: float = 9.0
    carrier_mhz: float = 2680.0
    bs_height_m: float = 15.0
    min_distance_m: float = 35.0
    shadowing_std_db: float = 8.0
    shadowing_corr_m: float = 50.0
    overhead: float = 0.25
    base_delay_ms: float = 8.0
    base_jitter_ms: float = 1.0
    harq_rtt_ms: float = 8.0
    max_harq_tx: int = 4
    bler_slope_db: float = 2.0
    qout_db: float = -8.0
    qin_db: float = -6.0
    n310: int = 20
    t310_ms: float = 1000.0
    n311: int = 1
    t311_ms: float = 10000.0
    attach_time_s: float = 1.0
    reestablish_time_s: float | None = None
    max_rate_mbit: float | None = None
    seed: int | None = 1

    def __post_init__(self) -> None:
        if self.bandwidth_mhz not in PRB_BY_BANDWIDTH:
            raise LteModelError(f"bandwidth_mhz must be one of {sorted(PRB_BY_BANDWIDTH)}, got {self.bandwidth_mhz}")
        if not 0.0 <= self.overhead < 1.0:
            raise LteModelError(f"overhead must be in [0, 1), got {self.overhead}")
        if self.n310 < 1 or self.n311 < 1 or self.max_harq_tx < 1:
            raise LteModelError("n310, n311 and max_harq_tx must be at least 1")
        if self.attach_time_s < 0 or self.t310_ms < 0:
            raise LteModelError("attach_time_s and t310_ms must not be negative")

    @property
    def n_prb(self) -> int:
        return PRB_BY_BANDWIDTH[self.bandwidth_mhz]

    @classmethod
    def from_options(cls, options: dict[str, Any], base: LinkParamsView | None = None) -> LteConfig:
        """Build from a topology's ``radio.options`` (unknown keys ignored: the backend reads those)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: v for k, v in options.items() if k in known}
        if base is not None:  # the topology's configured radio-link delay/jitter is the unloaded baseline
            values.setdefault("base_delay_ms", base.delay_ms)
            values.setdefault("base_jitter_ms", base.jitter_ms)
            # the configured rate is the cell's practical peak (e.g. 30 of 35 Mbit/s at 10 MHz, §5.2)
            values.setdefault("max_rate_mbit", base.rate_mbit)
        try:
            if "bandwidth_mhz" in values:
                values["bandwidth_mhz"] = float(values["bandwidth_mhz"])
            return cls(**values)
        except TypeError as exc:
            raise LteModelError(f"bad radio option: {exc}") from None


# ---------------------------------------------------------------------------------------------
# per-quantity functions (vectorised, so tests and plots can sweep them)


def path_loss_db(distance_m: Any, carrier_mhz: float = 2680.0, bs_height_m: float = 15.0,
                 min_distance_m: float = 35.0) -> Any:
    """TR 36.942 §4.5.2 macro path loss in dB for distances in metres."""
    r_km = np.maximum(np.asarray(distance_m, dtype=float), min_distance_m) / 1000.0
    return (40.0 * (1 - 4e-3 * bs_height_m) * np.log10(r_km) - 18.0 * math.log10(bs_height_m)
            + 21.0 * math.log10(carrier_mhz) + 80.0)


def noise_dbm(n_prb: int, noise_figure_db: float) -> float:
    """Thermal noise over the occupied bandwidth (N_PRB × 180 kHz) plus the UE noise figure."""
    return -174.0 + 10.0 * math.log10(n_prb * 180e3) + noise_figure_db


def snr_db(distance_m: Any, cfg: LteConfig, shadowing_db: Any = 0.0) -> Any:
    pl = path_loss_db(distance_m, cfg.carrier_mhz, cfg.bs_height_m, cfg.min_distance_m)
    return cfg.tx_power_dbm + cfg.antenna_gain_dbi - pl - shadowing_db - noise_dbm(cfg.n_prb, cfg.noise_figure_db)


def snr_to_cqi(snr: Any) -> Any:
    """Highest CQI whose threshold the SNR meets (0 below CQI 1's)."""
    return np.searchsorted(CQI_SNR_DB, np.asarray(snr, dtype=float), side="right") - 1


def bler(snr: Any, cqi: Any, slope_db: float = 2.0) -> Any:
    """Block error rate of transmitting at ``cqi``'s MCS (CQI 0 → scheduled at CQI 1) at ``snr``."""
    thr = CQI_SNR_DB[np.maximum(np.asarray(cqi), 1)]
    # logistic through 10 % at the threshold: 1 / (1 + 9·exp(slope·(snr − thr)))
    x = np.clip(slope_db * (np.asarray(snr, dtype=float) - thr), -50.0, 50.0)
    return 1.0 / (1.0 + 9.0 * np.exp(x))


def rate_mbit(cqi: Any, n_prb: int, overhead: float = 0.25) -> Any:
    """Achievable downlink rate: eff(CQI) × N_PRB × 0.168 × (1 − overhead), CQI 0 → CQI 1."""
    return CQI_EFFICIENCY[np.maximum(np.asarray(cqi), 1)] * n_prb * 0.168 * (1.0 - overhead)


def harq_delay_ms(p: float, max_tx: int, harq_rtt_ms: float) -> tuple[float, float]:
    """Mean and standard deviation of the HARQ delay of delivered blocks (retransmissions × RTT).

    Attempt k (0-based) happens with probability p^k; a block delivered after k retransmissions
    waited k × RTT. Conditioned on delivery within ``max_tx`` attempts.
    """
    k = np.arange(max_tx)
    w = p ** k * (1.0 - p)
    if w.sum() <= 0:
        return 0.0, 0.0
    w = w / w.sum()
    mean = float((w * k).sum())
    std = float(math.sqrt(max((w * k * k).sum() - mean * mean, 0.0)))
    return mean * harq_rtt_ms, std * harq_rtt_ms


# ---------------------------------------------------------------------------------------------
# the stateful model


@dataclass(frozen=True)
class RadioState:
    """What one tick of the model says: channel figures, RRC state and the link parameters to apply."""

    t: float
    snr_db: float
    cqi: int
    bler: float
    rate_mbit: float  # achievable (formula), before BLER
    attach: str
    since: float  # model time when ``attach`` was entered
    in_sync: bool
    params: RadioLinkParams

    @property
    def connected(self) -> bool:
        """True while packets can cross (attached, or still waiting for T310)."""
        return self.params.loss_pct < 100.0

    @property
    def bearer(self) -> bool:
        """True while the UE holds its bearer: attached, or T310 running (the RRC view)."""
        return self.attach in (ATTACHED, RLF_PENDING)

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 3), "snr_db": round(self.snr_db, 2), "cqi": self.cqi,
            "bler": round(self.bler, 4), "rate_mbit": round(self.rate_mbit, 3), "attach": self.attach,
            "since": round(self.since, 3), "in_sync": self.in_sync, "params": self.params.as_dict(),
        }


def _profile(points: Sequence[Sequence[float]] | None, what: str) -> tuple[np.ndarray, np.ndarray] | None:
    if points is None:
        return None
    try:
        arr = np.asarray([(float(t), float(v)) for t, v in points], dtype=float)
    except (TypeError, ValueError):
        raise LteModelError(f"{what} must be a list of [t, value] pairs") from None
    if arr.size == 0 or np.any(np.diff(arr[:, 0]) < 0):
        raise LteModelError(f"{what} must be a non-empty list of [t, value] pairs in time order")
    return arr[:, 0], arr[:, 1]


@dataclass
class _Rrc:
    attach: str = ATTACHED
    since: float = 0.0
    oos: int = 0  # consecutive out-of-sync indications
    ins: int = 0  # consecutive in-sync indications
    t310_end: float | None = None
    rlf_at: float | None = None
    attach_end: float | None = None


@dataclass
class LteModel:
    """Advances the channel and RRC state in 10 ms frames; ``step(t)`` returns the state at time t.

    The UE's situation is, by priority: a manual coverage loss or a scripted coverage hole (no
    signal), a scripted SNR profile [(t, snr_db)], a trajectory [(t, distance_m)] (both linearly
    interpolated, held after the last point), else the fixed ``distance_m``.
    """

    cfg: LteConfig = field(default_factory=LteConfig)
    distance_m: float = 500.0
    trajectory: Sequence[Sequence[float]] | None = None
    snr_profile: Sequence[Sequence[float]] | None = None
    coverage_holes: Sequence[tuple[float, float]] = ()

    def __post_init__(self) -> None:
        self._traj = _profile(self.trajectory, "trajectory")
        self._snr = _profile(self.snr_profile, "snr_profile")
        self._rng = np.random.default_rng(self.cfg.seed)
        self._shadow = float(self._rng.normal(0.0, self.cfg.shadowing_std_db)) if self.cfg.shadowing_std_db else 0.0
        self._last_d: float | None = None
        self._t = 0.0
        self._rrc = _Rrc()
        self._manual_loss: tuple[float, float] | None = None  # (from, until) in model time
        self._last_snr = self._signal(0.0)
        self._state = self._evaluate(0.0, self._last_snr)

    # -- inputs -----------------------------------------------------------------------------------

    def lose(self, at: float, duration_s: float | None = None) -> None:
        """Manual coverage loss from ``at`` (for ``duration_s``, or until ``restore``)."""
        self._manual_loss = (at, math.inf if duration_s is None else at + duration_s)

    def restore(self, at: float) -> None:
        if self._manual_loss is not None:
            self._manual_loss = (self._manual_loss[0], min(self._manual_loss[1], at))

    @property
    def coverage_lost(self) -> bool:
        """True while a manual coverage loss is in force at the time of the last ``step``."""
        m, t = self._manual_loss, self._state.t
        return m is not None and m[0] <= t < m[1]

    def _no_signal(self, t: float) -> bool:
        m = self._manual_loss
        if m is not None and m[0] <= t < m[1]:
            return True
        return any(at <= t < at + dur for at, dur in self.coverage_holes)

    def distance_at(self, t: float) -> float:
        if self._traj is None:
            return self.distance_m
        return float(np.interp(t, *self._traj))

    def _signal(self, t: float) -> float:
        if self._no_signal(t):
            return NO_SIGNAL_DB
        if self._snr is not None:
            return float(np.interp(t, *self._snr))
        d = self.distance_at(t)
        if self._last_d is not None and d != self._last_d and self.cfg.shadowing_std_db:
            rho = math.exp(-abs(d - self._last_d) / self.cfg.shadowing_corr_m)
            self._shadow = rho * self._shadow + math.sqrt(1 - rho * rho) * float(
                self._rng.normal(0.0, self.cfg.shadowing_std_db))
        self._last_d = d
        return float(snr_db(d, self.cfg, self._shadow))

    # -- RRC ---------------------------------------------------------------------------------------

    def _frame(self, t: float, snr: float) -> None:
        """One 10 ms frame of the RLF / re-attach state machine at time t."""
        c, r = self.cfg, self._rrc
        oos, ins = snr < c.qout_db, snr > c.qin_db
        r.oos = r.oos + 1 if oos else 0
        r.ins = r.ins + 1 if ins else 0

        def enter(state: str) -> None:
            r.attach, r.since = state, t

        if r.attach == ATTACHED:
            if r.oos >= c.n310:
                r.t310_end = t + c.t310_ms / 1000.0
                enter(RLF_PENDING)
        if r.attach == RLF_PENDING:
            if r.ins >= c.n311:
                r.t310_end = None
                enter(ATTACHED)
            elif r.t310_end is not None and t >= r.t310_end - 1e-9:
                r.rlf_at, r.t310_end = t, None
                enter(DETACHED)
        if r.attach == DETACHED and r.ins >= 1:  # cell found again: start (re-)attaching
            within_t311 = r.rlf_at is not None and t - r.rlf_at <= c.t311_ms / 1000.0
            dur = c.reestablish_time_s if (within_t311 and c.reestablish_time_s is not None) else c.attach_time_s
            r.attach_end = t + dur
            enter(ATTACHING)
        if r.attach == ATTACHING:
            if r.oos >= c.n310:  # lost again while attaching: back to searching
                r.attach_end = None
                enter(DETACHED)
            elif r.attach_end is not None and t >= r.attach_end - 1e-9:
                r.attach_end = None
                enter(ATTACHED)

    def _evaluate(self, t: float, snr: float) -> RadioState:
        c, r = self.cfg, self._rrc
        cqi = int(snr_to_cqi(snr))
        p = float(bler(snr, cqi, c.bler_slope_db))
        rate = float(rate_mbit(cqi, c.n_prb, c.overhead))
        in_sync = snr >= c.qout_db
        if r.attach in (DETACHED, ATTACHING) or not in_sync:
            params = RadioLinkParams(c.base_delay_ms, c.base_jitter_ms, 100.0, round(rate, 2))
        else:
            mean, std = harq_delay_ms(p, c.max_harq_tx, c.harq_rtt_ms)
            loss = min(100.0, 100.0 * p ** c.max_harq_tx)
            goodput = max(rate * (1.0 - p), 0.01)
            if c.max_rate_mbit is not None:
                goodput = min(goodput, c.max_rate_mbit)
            params = RadioLinkParams(
                delay_ms=round(c.base_delay_ms + mean, 2),
                jitter_ms=round(math.hypot(c.base_jitter_ms, std), 2),
                loss_pct=round(loss, 3),
                rate_mbit=round(goodput, 2),
            )
        return RadioState(t, snr, cqi, p, rate, r.attach, r.since, in_sync, params)

    def step(self, t: float) -> RadioState:
        """Advance to time ``t`` (seconds, monotonic model time) frame by frame; return the state there."""
        while self._t + FRAME_S <= t + 1e-9:
            self._t += FRAME_S
            # the indication at the end of a frame reflects that frame, judged at its middle
            self._last_snr = self._signal(self._t - FRAME_S / 2)
            self._frame(self._t, self._last_snr)
        # the channel figures are the last frame's (re-sampling at t would move the shadowing twice),
        # except that a coverage loss starting now takes effect now
        self._state = self._evaluate(t, NO_SIGNAL_DB if self._no_signal(t) else self._last_snr)
        return self._state

    @property
    def state(self) -> RadioState:
        return self._state

    def next_event(self, t: float) -> float | None:
        """The next model time after ``t`` at which the state changes by itself (timer expiry, end of a
        coverage loss, a scripted hole), plus the frames it takes to show; None if none is scheduled.

        The backend wakes up then instead of at its next tick, so these changes are not late by a tick.
        """
        r = self._rrc
        times = [x for x in (r.t310_end, r.attach_end) if x is not None]
        if self._manual_loss is not None:
            times += [x for x in self._manual_loss if math.isfinite(x)]
        for at, dur in self.coverage_holes:
            times += [at, at + dur]
        later = [x for x in times if x > t - FRAME_S]
        return min(later) + 2 * FRAME_S if later else None


def run_profile(model: LteModel, duration_s: float, tick_s: float = 0.1) -> list[RadioState]:
    """The states of ``model`` every ``tick_s`` up to ``duration_s`` (offline runs, plots, tests)."""
    n = int(round(duration_s / tick_s))
    return [model.step(i * tick_s) for i in range(1, n + 1)]

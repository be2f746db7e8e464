"""The default radio backend: the UE–eNodeB link driven by the LTE model of radio.lte.

A background thread advances the model every ``tick_s`` (default 0.1 s) and, when the resulting
delay/jitter/loss/rate differ from what is applied, pushes them with ``host.set_link_params`` (the
testbed builds the radio link ``dynamic=True``, so netem and the shaper both take several changes a
second). ``detach()`` is a manual coverage loss (100 % loss at once; RLF, i.e. "detached", after
N310 × 10 ms + T310), ``attach()`` gives coverage back (re-attach after ``attach_time_s``).

The UE's bearer follows the RRC state: from RLF until the re-attach completes the UE's routes out
of the radio interface are withdrawn (``host.set_routes``), as a real UE's modem drops its
default bearer, so the UE knows it is offline and connections to remote addresses fail at once.
While T310 runs the UE still believes it is connected: packets are just lost, as over the air.

Options (topology ``radio.options``; all optional): ``bandwidth_mhz`` (5/10/20), ``distance_m``,
``trajectory`` ([[t, distance_m], ...]), ``snr_profile`` ([[t, snr_db], ...]), ``coverage_holes``
([{at: 30, for: 10}, ...], seconds after start), ``tick_s``, and every LteConfig field
(``tx_power_dbm``, ``antenna_gain_dbi``, ``noise_figure_db``, ``carrier_mhz``, ``shadowing_std_db``,
``n310``, ``t310_ms``, ``n311``, ``t311_ms``, ``attach_time_s``, ``reestablish_time_s``, ``seed`` …).
The base delay/jitter default to the radio link's configured ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from radio.base import RadioBackend, RadioError, RadioOptionError
from radio.host import LinkParamsView, RadioHost, RadioLinkParams
from radio.lte import LteConfig, LteModel, LteModelError, RadioState

log = logging.getLogger(__name__)
DEFAULT_TICK_S = 0.1
#: What a RadioOptionError says the options should be.
EXPECTED = "options the emulated radio understands"


def parse_holes(value: Any) -> list[tuple[float, float]]:
    """``[{at: 30, for: 10}, ...]`` → [(30.0, 10.0), ...] (LteModelError naming the bad entry)."""
    holes = []
    for i, h in enumerate(value or []):
        try:
            holes.append((float(h["at"]), float(h["for"])))
        except (TypeError, KeyError, ValueError):
            raise LteModelError(f"coverage_holes[{i}]: expected {{at: <s>, for: <s>}}, got {h!r}") from None
    return holes


#: Options the backend itself reads; every other key must be an LteConfig field.
BACKEND_OPTIONS = ("distance_m", "trajectory", "snr_profile", "coverage_holes", "tick_s")


def validate_options(options: Mapping[str, Any], base: LinkParamsView | None = None,
                     where: str = "radio.options") -> LteModel:
    """The model ``options`` describe; RadioOptionError naming the first bad option (unknown key, bad value)."""
    known = set(BACKEND_OPTIONS) | {f.name for f in fields(LteConfig)}
    unknown = sorted(k for k in options if k not in known)
    if unknown:
        raise RadioOptionError(where, EXPECTED, f"unknown option {unknown[0]!r} (known: {', '.join(sorted(known))})")
    try:
        tick = float(options.get("tick_s", DEFAULT_TICK_S))
    except (TypeError, ValueError):
        raise RadioOptionError(where, EXPECTED, f"tick_s: expected seconds, got {options['tick_s']!r}") from None
    if tick <= 0:
        raise RadioOptionError(where, EXPECTED, f"tick_s must be positive, got {tick:g}")
    return build_model(options, base, where)


def build_model(options: Mapping[str, Any], base: LinkParamsView | None = None,
                where: str = "radio.options") -> LteModel:
    """The LTE model an ``options`` mapping describes (RadioOptionError on a bad option)."""
    try:
        return LteModel(
            cfg=LteConfig.from_options(dict(options), base),
            distance_m=float(options.get("distance_m", 500.0)),
            trajectory=options.get("trajectory"),
            snr_profile=options.get("snr_profile"),
            coverage_holes=parse_holes(options.get("coverage_holes")),
        )
    except (LteModelError, TypeError, ValueError) as exc:
        raise RadioOptionError(where, EXPECTED, str(exc)) from None


class EmulatedRadio(RadioBackend):
    name = "emulated"

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], where: str = "radio.options",
                         base: LinkParamsView | None = None) -> None:
        validate_options(options, base, where)

    def __init__(self, host: RadioHost) -> None:
        super().__init__(host)
        self.model: LteModel | None = None
        self.tick_s = DEFAULT_TICK_S  # the option's value once start() has checked the options
        self._t0 = 0.0  # monotonic clock at model time 0
        self._wall0 = 0.0  # wall clock at model time 0 (for "since")
        self._lock = threading.RLock()  # model + apply: from the tick thread and the control socket
        self._stop = threading.Event()
        self._kick = threading.Event()  # set when coverage changes: the tick thread re-plans its wake-up
        self._thread: threading.Thread | None = None
        self._applied: RadioLinkParams | None = None
        self._ue_end: tuple[str, str] | None = None  # (node, interface) of the radio link's UE end
        self._bearer = True  # the UE's routes are installed by the testbed build
        self._last_error: str | None = None
        self._updates = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self.link_name is None:
            return  # a topology without a radio link: nothing to drive
        link = self.radio_link()
        self.model = validate_options(self.options, link.params)
        self.tick_s = float(self.options.get("tick_s", DEFAULT_TICK_S))
        self._ue_end = next(((e.node, e.intf) for e in (link.a, link.b)
                             if self.host.topology.nodes[e.node].role == "ue"), None)
        self._t0, self._wall0 = time.monotonic(), time.time()
        self._tick()  # apply the initial channel before anyone measures
        self._stop.clear()
        self._kick.clear()
        self._thread = threading.Thread(target=self._run, name="emulab-radio", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _now(self) -> float:
        return time.monotonic() - self._t0

    def _run(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at += self.tick_s
            wake = next_at
            with self._lock:  # a timer expiring before the next tick: wake up just after it instead
                event = self.model.next_event(self._now()) if self.model else None
            if event is not None and self._t0 + event < wake:
                wake = max(self._t0 + event, time.monotonic() + 0.001)
            self._kick.wait(max(0.0, wake - time.monotonic()))
            self._kick.clear()
            if self._stop.is_set():
                return
            if time.monotonic() < next_at - 1e-3:  # an early (event or kick) wake-up: keep the tick grid
                next_at -= self.tick_s
            try:
                self._tick()
            except Exception as exc:  # a failed tc/shaper call must not end the radio: retry next tick
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.warning("radio tick failed: %s", self._last_error)
            if time.monotonic() - next_at > 10 * self.tick_s:  # fell far behind (suspended): resync
                next_at = time.monotonic()

    def _tick(self) -> RadioState:
        """Advance the model to now and apply its link parameters if they changed.

        Called by the tick thread and by control requests; the lock covers the apply too, so two
        callers cannot apply an older state after a newer one.
        """
        assert self.model is not None and self.link_name is not None  # start() set both
        with self._lock:
            st = self.model.step(self._now())
            if st.params != self._applied:  # only real changes reach tc / the shaper
                self.host.set_link_params(self.link_name, st.params)
                self._applied = st.params
                self._updates += 1
            bearer = st.bearer
            if bearer != self._bearer and self._ue_end is not None:
                node, intf = self._ue_end
                self.host.set_routes(node, bearer, dev=intf)
                self._bearer = bearer
            return st

    # -- coverage ----------------------------------------------------------------------------------

    def _need_model(self) -> LteModel:
        if self.model is None:
            raise RadioError("this topology has no radio link (or the radio is not started)")
        return self.model

    def detach(self, duration_s: float | None = None) -> None:
        model = self._need_model()
        with self._lock:
            model.lose(self._now(), duration_s)
        self._tick()
        self._kick.set()  # 100 % loss now, not at the next tick

    def attach(self) -> None:
        model = self._need_model()
        with self._lock:
            model.restore(self._now())
        self._tick()
        self._kick.set()

    # -- report ------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.name, "link": self.link_name}
        if self.model is None:
            return out | {"attached": False, "attach": "none"}
        try:
            self._tick()  # report the state at this instant, not at the last tick
        except Exception as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            st = self.model.state
            lost = self.model.coverage_lost
        return out | {
            "attached": st.bearer,  # RRC view: T310 running = still attached
            "attach": st.attach,
            "bearer": "up" if self._bearer else "down",
            "since": self._wall0 + st.since,
            "for_s": round(st.t - st.since, 3),
            "coverage": "lost" if lost else "ok",
            "snr_db": round(st.snr_db, 2),
            "cqi": st.cqi,
            "bler": round(st.bler, 4),
            "rate_mbit": round(st.rate_mbit, 3),
            "bandwidth_mhz": self.model.cfg.bandwidth_mhz,
            "params": (self._applied or st.params).as_dict(),
            "tick_s": self.tick_s,
            "timers": {k: getattr(self.model.cfg, k) for k in ("n310", "t310_ms", "n311", "t311_ms", "attach_time_s")},
            "updates": self._updates,
            "last_error": self._last_error,
        }

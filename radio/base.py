"""The one interface every radio backend implements, and radio's own errors.

A backend is a ``RadioBackend`` subclass: built with a ``RadioHost`` (radio.host: the testbed as
the backend sees it), it brings the radio up and down (``start``/``stop``), takes the UE's coverage
away and gives it back (``detach``/``attach``) and reports its ``state``. Its class also answers,
before anything runs: whether a topology's ``radio.options`` are valid (``validate_options``), what
the machine must offer for it (``probes``, shown by ``emulab doctor``) and the UE's RRC timers it
runs with (``rrc_timers``, which the simulator reproduces). Backends are listed in radio.registry.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from radio.host import LinkParamsView, LinkView, RadioHost


class RadioError(Exception):
    """A radio backend cannot start or act (missing binary, no device, bad option)."""


class RadioOptionError(RadioError):
    """A topology's ``radio.options`` are wrong: str() is "<where>: expected <what>, got <what>"."""

    def __init__(self, where: str, expected: str, got: str) -> None:
        super().__init__(f"{where}: expected {expected}, got {got}")
        self.where, self.expected, self.got = where, expected, got

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.where, self.expected, self.got)


@dataclass(frozen=True)
class RadioProbe:
    """Something a backend needs from the machine: ``check()`` → (present, detail line); ``fallback``
    says what is unavailable without it. ``emulab doctor`` lists every backend's probes."""

    name: str
    check: Callable[[], tuple[bool, str]]
    fallback: str


def binaries_probe(name: str, *binaries: str, fallback: str) -> RadioProbe:
    """A probe that is present when any of ``binaries`` is on PATH."""

    def check() -> tuple[bool, str]:
        found = [shutil.which(b) for b in binaries]
        if any(found):
            return True, ", ".join(f for f in found if f)
        return False, "not found: " + ", ".join(binaries)

    return RadioProbe(name, check, fallback)


@dataclass(frozen=True)
class RrcTimers:
    """The UE's RRC timers a backend runs with (36.331 §5.3.11): RLF after N310 out-of-sync frames
    plus T310, re-attach after ``attach_time_s`` (or ``reestablish_time_s`` within T311 of the RLF)."""

    n310: int
    t310_ms: float
    n311: int
    t311_ms: float
    attach_time_s: float
    reestablish_time_s: float | None


class RadioBackend(ABC):
    """One way of carrying the UE–eNodeB link."""

    name: ClassVar[str] = "?"

    def __init__(self, host: RadioHost) -> None:
        self.host = host
        section = host.topology.radio
        self.link_name: str | None = section.link if section else None
        self.options: dict[str, Any] = dict(section.options) if section else {}

    # -- what the class knows before anything runs ---------------------------------------------

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], where: str = "radio.options",
                         base: LinkParamsView | None = None) -> None:
        """Check a topology's ``radio.options`` (``base``: the radio link's configured parameters);
        ``RadioOptionError`` naming ``where`` and the first problem. This default accepts anything."""
        return None

    @classmethod
    def probes(cls) -> tuple[RadioProbe, ...]:
        """What this backend needs from the machine (none by default)."""
        return ()

    @classmethod
    def rrc_timers(cls, options: Mapping[str, Any]) -> RrcTimers:
        """The UE's RRC timers under ``options``: by default radio.lte's, with the options' overrides
        (``n310``, ``t310_ms``, ``n311``, ``t311_ms``, ``attach_time_s``, ``reestablish_time_s``)."""
        from radio.lte import LteConfig, LteModelError  # numpy: only when asked

        try:
            cfg = LteConfig.from_options(dict(options))
        except (LteModelError, TypeError, ValueError) as exc:
            raise RadioError(f"radio.options: {exc}") from None
        return RrcTimers(cfg.n310, cfg.t310_ms, cfg.n311, cfg.t311_ms, cfg.attach_time_s, cfg.reestablish_time_s)

    # -- helpers for subclasses ------------------------------------------------------------------

    def radio_link(self) -> LinkView:
        """The topology's radio link (RadioError if the ``radio`` section names one it does not have)."""
        link = next((lk for lk in self.host.topology.links if lk.name == self.link_name), None)
        if link is None:
            raise RadioError(f"radio link {self.link_name!r} is not in the topology")
        return link

    # -- the running radio -------------------------------------------------------------------------

    @abstractmethod
    def start(self) -> None:
        """Bring the radio up and attach the UE."""

    @abstractmethod
    def stop(self) -> None:
        """Stop whatever the backend started; must tolerate a partial start."""

    @abstractmethod
    def attach(self) -> None:
        """Give the UE coverage again (the UE re-attaches)."""

    @abstractmethod
    def detach(self, duration_s: float | None = None) -> None:
        """Take the UE's coverage away (radio link failure follows); back by itself after ``duration_s``."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """A JSON-able report: backend, attach state and whatever channel figures it has (SNR, CQI, rate)."""

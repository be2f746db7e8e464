"""The one interface every radio backend implements: start/stop, attach/detach, channel state, report.

The testbed object handed to a backend gives it the topology spec (``testbed.spec.radio`` names the
radio link and its options), the link (``testbed.link(name)``, whose ``set_params`` changes rate,
delay and loss) and the two hosts (``testbed.host(name)``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from emulab.errors import EmulabError


class RadioError(EmulabError):
    """A radio backend cannot start or act (missing binary, no device, bad option)."""


class RadioBackend(ABC):
    """One way of carrying the UE–eNodeB link."""

    name: str = "?"

    def __init__(self, testbed: Any) -> None:
        self.testbed = testbed
        spec = testbed.spec.radio
        self.link_name: str | None = spec.link if spec else None
        self.options: dict[str, Any] = dict(spec.options) if spec else {}

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

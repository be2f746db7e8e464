"""Radio backends for the UE–eNodeB link, behind one small interface (see radio.base).

`emulated` (default) drives the link through the testbed's link emulation from the LTE model of
radio.lte (path loss, SNR → CQI → rate, HARQ delay, RLF timers, re-attach); `oai` runs
OpenAirInterface's RF simulator and `b210` a real USRP B210 in its place (radio.oai). Backends are
listed once, in radio.registry; a backend reaches the testbed only through radio.host's
``RadioHost``, which the testbed implements, so this package imports nothing of the testbed.
docs/guides/radio-backend.md says how to add one.
"""

from __future__ import annotations

from radio.base import RadioBackend, RadioError, RadioOptionError, RadioProbe, RrcTimers
from radio.host import RadioHost, RadioLinkParams
from radio.registry import DEFAULT_BACKEND, backend_names, get_backend, probes, register

__all__ = [
    "DEFAULT_BACKEND", "RadioBackend", "RadioError", "RadioHost", "RadioLinkParams", "RadioOptionError",
    "RadioProbe", "RrcTimers", "backend_names", "get_backend", "probes", "register",
]

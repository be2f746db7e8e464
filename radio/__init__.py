"""Radio backends for the UE–eNodeB link, behind one small interface (see radio.base).

`emulated` (default) drives the link through emulab's link-emulation layer from the LTE model of
radio.lte (path loss, SNR → CQI → rate, HARQ delay, RLF timers, re-attach); `oai` runs
OpenAirInterface's RF simulator and `b210` a real USRP B210 in its place (radio.oai). The testbed
picks one by name with `get_backend`; `emulab radio status` / `emulab coverage lose|restore`
(emulab.cli_radio) act on the running one.
"""

from __future__ import annotations

from radio.base import RadioBackend, RadioError


def get_backend(name: str) -> type[RadioBackend]:
    """The backend class registered under ``name``."""
    if name == "emulated":
        from radio.emulated import EmulatedRadio

        return EmulatedRadio
    if name in ("oai", "b210"):
        from radio.oai import B210Radio, OaiRfsimRadio

        return OaiRfsimRadio if name == "oai" else B210Radio
    raise RadioError(f"unknown radio backend {name!r} (choose emulated, oai or b210)")


__all__ = ["RadioBackend", "RadioError", "get_backend"]

"""The one list of radio backends: name → class. Everything that names backends reads it.

The topology loader (``radio.backend`` and its options), the CLI's ``--radio`` choices, ``emulab
doctor`` (each backend's probes) and the simulator (each backend's RRC timers) all ask here, so a
new backend is one module plus one line in ``BACKENDS`` below.

Entries are ``"module:Class"`` strings, imported on first use: listing the names (the CLI does so
at every start-up) must not import the backends and their numpy models. ``register`` adds a class
at run time (a backend kept outside this package, or a test's).
"""

from __future__ import annotations

import importlib

from radio.base import RadioBackend, RadioError, RadioProbe

#: The backend a topology without ``radio.backend`` (or without a ``radio`` section) gets.
DEFAULT_BACKEND = "emulated"

#: name → "module:Class" (or the class itself, once registered or imported).
BACKENDS: dict[str, str | type[RadioBackend]] = {
    "emulated": "radio.emulated:EmulatedRadio",  # the LTE model of radio.lte over the emulated link
    "oai": "radio.oai:OaiRfsimRadio",  # OpenAirInterface's eNodeB and UE softmodems, RF simulator
    "b210": "radio.oai:B210Radio",  # OpenAirInterface's eNodeB on a USRP B210, a real UE
}


def register(name: str, backend: str | type[RadioBackend]) -> None:
    """Add (or replace) backend ``name``: a ``RadioBackend`` subclass or its ``"module:Class"``."""
    BACKENDS[name] = backend


def backend_names() -> tuple[str, ...]:
    """Every backend's name, in registration order."""
    return tuple(BACKENDS)


def get_backend(name: str) -> type[RadioBackend]:
    """The backend class registered under ``name`` (RadioError for an unknown name)."""
    entry = BACKENDS.get(name)
    if entry is None:
        *most, last = backend_names()
        choices = f"{', '.join(most)} or {last}" if most else last
        raise RadioError(f"unknown radio backend {name!r} (choose {choices})")
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        if not (isinstance(entry, type) and issubclass(entry, RadioBackend)):
            raise TypeError(f"radio backend {name!r}: {BACKENDS[name]} is not a RadioBackend")
        BACKENDS[name] = entry
    return entry


def probes() -> tuple[RadioProbe, ...]:
    """Every backend's probes, each name once (backends may share one), in registration order."""
    seen: dict[str, RadioProbe] = {}
    for name in backend_names():
        for probe in get_backend(name).probes():
            seen.setdefault(probe.name, probe)
    return tuple(seen.values())

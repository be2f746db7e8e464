"""What a radio backend needs from the testbed it runs in: the typed interface the testbed implements.

``radio`` knows nothing of the testbed's code. A backend is handed a ``RadioHost`` and sees through
it only what it needs: a read-only view of the topology (``TopologyView``: nodes' roles, links'
ends, addresses and configured parameters, the static routes, the ``radio`` section), a way to
change the radio link's parameters (``RadioLinkParams``, radio's own value type), the UE's routes,
where to write its files and logs, and a way to run a process or a shell command inside a node.
emulab implements it in ``emulab.radio_host``; the unit tests implement it with a small fake.

The views are ``typing.Protocol``s with read-only members, so any object with these attributes
(emulab's frozen topology dataclasses, a test's ``SimpleNamespace``) satisfies them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class RadioLinkParams:
    """What the radio link does to traffic, per direction: one-way delay and jitter (ms), loss (%),
    rate (Mbit/s, None = unlimited). The default is a neutral link."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    rate_mbit: float | None = None

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay and jitter must not be negative")
        if not 0.0 <= self.loss_pct <= 100.0:
            raise ValueError(f"loss must be between 0 and 100 %, got {self.loss_pct}")
        if self.rate_mbit is not None and self.rate_mbit <= 0:
            raise ValueError(f"rate must be positive, got {self.rate_mbit} Mbit/s")

    @property
    def is_neutral(self) -> bool:
        """True when the link needs no emulation at all."""
        return not (self.delay_ms or self.jitter_ms or self.loss_pct or self.rate_mbit)

    def as_dict(self) -> dict[str, float | None]:
        return {"delay_ms": self.delay_ms, "jitter_ms": self.jitter_ms, "loss_pct": self.loss_pct,
                "rate_mbit": self.rate_mbit}


# --- the topology, as a backend reads it ------------------------------------------------------------


class LinkParamsView(Protocol):
    """A link's configured parameters (the same four numbers as ``RadioLinkParams``)."""

    @property
    def delay_ms(self) -> float: ...
    @property
    def jitter_ms(self) -> float: ...
    @property
    def loss_pct(self) -> float: ...
    @property
    def rate_mbit(self) -> float | None: ...


class EndpointView(Protocol):
    """One end of a link: the node, its interface there and the interface's address (None: none)."""

    @property
    def node(self) -> str: ...
    @property
    def intf(self) -> str: ...
    @property
    def address(self) -> ipaddress.IPv4Interface | None: ...


class LinkView(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def a(self) -> EndpointView: ...
    @property
    def b(self) -> EndpointView: ...
    @property
    def params(self) -> LinkParamsView: ...


class NodeView(Protocol):
    @property
    def role(self) -> str: ...


class RouteView(Protocol):
    """A static route of a node: ``dest`` via ``via`` out of ``dev``."""

    @property
    def dest(self) -> ipaddress.IPv4Network: ...
    @property
    def via(self) -> ipaddress.IPv4Address: ...
    @property
    def dev(self) -> str: ...


class RadioSectionView(Protocol):
    """The topology's ``radio`` section: which link is the radio link, and the backend's options."""

    @property
    def link(self) -> str: ...
    @property
    def options(self) -> Mapping[str, Any]: ...


class TopologyView(Protocol):
    """The topology as a backend reads it."""

    @property
    def nodes(self) -> Mapping[str, NodeView]: ...
    @property
    def links(self) -> Sequence[LinkView]: ...
    @property
    def radio(self) -> RadioSectionView | None: ...

    def addresses(self, node: str) -> Sequence[ipaddress.IPv4Interface]:
        """A node's interface addresses."""
        ...

    def routes(self) -> Mapping[str, Sequence[RouteView]]:
        """Static routes per node (directly connected subnets excluded)."""
        ...


# --- what a backend can do in the testbed -------------------------------------------------------------


class Process(Protocol):
    """A process started in a node (``subprocess.Popen`` satisfies it)."""

    def poll(self) -> int | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


class RadioHost(Protocol):
    """The testbed, as a radio backend uses it."""

    @property
    def topology(self) -> TopologyView:
        """The running topology."""
        ...

    @property
    def run_dir(self) -> Path:
        """The run's state directory: a backend writes its generated files into a subdirectory of it."""
        ...

    @property
    def log_dir(self) -> Path:
        """Where a backend's processes write their logs."""
        ...

    def set_link_params(self, link: str, params: RadioLinkParams) -> None:
        """Apply ``params`` to link ``link`` now, in both directions."""
        ...

    def set_routes(self, node: str, present: bool, dev: str | None = None) -> None:
        """Install (``present``) or withdraw the static routes the topology gives ``node`` (only those
        out of ``dev``, if given); directly connected subnets stay."""
        ...

    def replace_route(self, node: str, dest: str, via: str | None = None, dev: str | None = None,
                      src: str | None = None) -> None:
        """``ip route replace DEST [via VIA] [dev DEV] [src SRC]`` inside ``node``."""
        ...

    def interface_address(self, node: str, dev: str) -> ipaddress.IPv4Interface | None:
        """The IPv4 address of interface ``dev`` in ``node`` (None: no such interface, or no address)."""
        ...

    def popen(self, node: str, argv: Sequence[str], cwd: Path, log: Path) -> Process:
        """Start ``argv`` inside ``node`` in directory ``cwd``, stdout and stderr to the file ``log``."""
        ...

    def run(self, node: str, command: str) -> str:
        """Run the shell ``command`` inside ``node``; return its output."""
        ...

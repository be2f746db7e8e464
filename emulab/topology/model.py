"""The validated topology: immutable dataclasses that the network builder, services and plots read.

Everything here has already passed validation (see ``emulab.topology.loader``); consumers can rely
on names being unique, addresses being assigned and inside their subnets, and the IP graph being
connected. ``TopologySpec.routes()`` gives the static routes that make it so.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from emulab import paths
from emulab.linkparams import LinkParams
from emulab.topology.routing import Route, compute_routes

#: Node roles. The 4G ones name the OAI EPC/RAN functions; registrar/pe/pu mark hosts dedicated to one
#: RSerPool component; mec/pmc are general-purpose hosts in the MEC cloud / a public cloud site;
#: router is a plain IP router; host is anything else.
ROLES: tuple[str, ...] = (
    "ue", "enb", "hss", "mme", "spgwc", "spgwu",
    "router", "registrar", "pe", "pu", "mec", "pmc", "host",
)
#: Roles that forward IP packets unless the node says ``forwarding: false``: a router by definition,
#: the eNodeB and the SPGW-U because the user plane runs through them (UE -> eNB -> SPGW-U -> SGi).
FORWARDING_ROLES: frozenset[str] = frozenset({"router", "enb", "spgwu"})
#: Service kinds a node can run; a misspelt kind would otherwise silently start nothing.
SERVICE_KINDS: tuple[str, ...] = ("registrar", "pe", "pu")
#: Linux limits interface names to 15 characters (IFNAMSIZ - 1).
IFNAME_MAX = 15
#: OVS bridges are named "<prefix><switch>": "em-sgi" in the default instance, "e07sgi" in instance 7
#: (emulab.paths.prefix(), always 3 characters). This is the default instance's prefix.
BRIDGE_PREFIX = paths.PREFIX


class TopologyError(Exception):
    """A topology file is wrong; str() is one line: "<file>: <field path>: expected <what>, got <what>"."""

    def __init__(self, file: str | Path, path: str, expected: str, got: str) -> None:
        self.file = str(file)
        self.path = path
        self.expected = expected
        self.got = got
        # args keep the four parts so the error pickles (e.g. across a multiprocessing boundary).
        super().__init__(self.file, path, expected, got)

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: expected {self.expected}, got {self.got}"


@dataclass(frozen=True)
class ServiceSpec:
    """A process to start on a node; ``options`` go to the service untouched."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SiteSpec:
    """Where nodes are (a lab, a data centre, a NorNet Core site); ``source`` cites delay figures."""

    name: str
    description: str = ""
    location: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class NodeSpec:
    """A host (a Mininet host = a network namespace); routers are hosts with ``forwarding``."""

    name: str
    role: str
    site: str
    forwarding: bool = False
    services: tuple[ServiceSpec, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class SwitchSpec:
    """An L2 segment (an OVS bridge); ``subnet`` is shared by every switch linked to it."""

    name: str
    site: str
    subnet: ipaddress.IPv4Network
    description: str = ""

    @property
    def bridge(self) -> str:
        return paths.prefix() + self.name


@dataclass(frozen=True)
class Endpoint:
    """One end of a link: a node's interface ("eth0", ...) or a switch port ("em-sgi-1", ...)."""

    node: str
    intf: str
    address: ipaddress.IPv4Interface | None = None


@dataclass(frozen=True)
class LinkSpec:
    """A veth pair with emulation ``params`` (one-way, applied in both directions)."""

    name: str
    a: Endpoint
    b: Endpoint
    params: LinkParams = LinkParams()
    segment: str | None = None
    radio: bool = False
    description: str = ""

    @property
    def ends(self) -> tuple[Endpoint, Endpoint]:
        return (self.a, self.b)

    def end_of(self, node: str) -> Endpoint:
        """The endpoint on ``node`` (KeyError if the link does not touch it)."""
        for end in self.ends:
            if end.node == node:
                return end
        raise KeyError(f"link {self.name} does not touch {node!r}")

    def peer_of(self, node: str) -> Endpoint:
        """The endpoint opposite ``node``."""
        return self.b if self.end_of(node) is self.a else self.a


@dataclass(frozen=True)
class RadioSpec:
    """Which radio backend drives the radio link (a name of ``radio.backend_names()``), with the
    backend's options (checked by the backend's ``validate_options``)."""

    backend: str
    link: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TopologySpec:
    """A whole validated topology. Mappings keep the file's order; links keep their order."""

    name: str
    description: str
    source: Path
    sites: Mapping[str, SiteSpec]
    nodes: Mapping[str, NodeSpec]
    switches: Mapping[str, SwitchSpec]
    links: tuple[LinkSpec, ...]
    radio: RadioSpec | None = None

    # --- lookups -------------------------------------------------------------------------------

    def links_of(self, node: str) -> tuple[LinkSpec, ...]:
        """Links touching a node or switch, in file order (= interface / port order)."""
        return tuple(link for link in self.links if node in (link.a.node, link.b.node))

    def interfaces(self, node: str) -> tuple[Endpoint, ...]:
        """A node's own endpoints in interface order (eth0, eth1, ...)."""
        return tuple(link.end_of(node) for link in self.links_of(node))

    def addresses(self, node: str) -> tuple[ipaddress.IPv4Interface, ...]:
        """A host's interface addresses in interface order; empty for a switch."""
        return tuple(end.address for end in self.interfaces(node) if end.address is not None)

    def primary_address(self, node: str) -> ipaddress.IPv4Address:
        """The address other nodes use to reach ``node``: that of its first interface."""
        if node not in self.nodes:
            raise KeyError(f"{node!r} is not a node of topology {self.name!r}")
        return self.addresses(node)[0].ip

    def link(self, name: str) -> LinkSpec:
        for link in self.links:
            if link.name == name:
                return link
        raise KeyError(f"no link {name!r} in topology {self.name!r}")

    @property
    def radio_link(self) -> LinkSpec | None:
        return next((link for link in self.links if link.radio), None)

    def owner_of(self, address: ipaddress.IPv4Address) -> str | None:
        """The node that has ``address`` on one of its interfaces."""
        for link in self.links:
            for end in link.ends:
                if end.address is not None and end.address.ip == address:
                    return end.node
        return None

    # --- routing -------------------------------------------------------------------------------

    def routes(self) -> Mapping[str, tuple[Route, ...]]:
        """Static routes per node (every node present; directly connected subnets excluded)."""
        return self._routes

    @cached_property
    def _routes(self) -> dict[str, tuple[Route, ...]]:
        # cached_property writes the instance __dict__ directly, so it works on a frozen dataclass.
        return compute_routes(self)

    # --- serialisation (for run manifests) -----------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary of the spec (addresses and networks as strings)."""

        def end(e: Endpoint) -> dict[str, Any]:
            return {"node": e.node, "intf": e.intf, "address": str(e.address) if e.address else None}

        return {
            "name": self.name,
            "description": self.description,
            "source": str(self.source),
            "sites": {n: vars(s).copy() for n, s in self.sites.items()},
            "nodes": {
                n: {
                    "role": s.role, "site": s.site, "forwarding": s.forwarding, "description": s.description,
                    "services": [{"kind": v.kind, "options": dict(v.options)} for v in s.services],
                }
                for n, s in self.nodes.items()
            },
            "switches": {
                n: {"site": s.site, "subnet": str(s.subnet), "bridge": s.bridge, "description": s.description}
                for n, s in self.switches.items()
            },
            "links": [
                {
                    "name": li.name, "a": end(li.a), "b": end(li.b), "params": li.params.as_dict(),
                    "segment": li.segment, "radio": li.radio, "description": li.description,
                }
                for li in self.links
            ],
            "radio": None if self.radio is None else {
                "backend": self.radio.backend, "link": self.radio.link, "options": dict(self.radio.options),
            },
            "routes": {
                n: [{"dest": str(r.dest), "via": str(r.via), "dev": r.dev} for r in rs]
                for n, rs in self.routes().items()
            },
        }

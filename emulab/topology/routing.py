"""Static routes for a topology: shortest paths (in router hops) over the IP graph, deterministic.

The IP graph has one vertex per subnet (a switched segment or a point-to-point link). A node with
``forwarding`` joins all its subnets; other nodes only originate and receive traffic. For each node a
breadth-first search over subnets finds, for every subnet it is not on, the first router of a path
with the fewest router hops. Ties go to the path found first when the node's interfaces are taken in
interface order and the routers on a subnet in name order, so the same file always yields the same
tables.

A non-forwarding node with a single interface gets a default route via its most used next hop
(plus explicit routes for the rest): smaller tables, same forwarding for every topology address.
Forwarding nodes never get a default route, so unknown destinations are dropped instead of bouncing
between routers until the TTL runs out.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

DEFAULT_ROUTE = ipaddress.IPv4Network("0.0.0.0/0")


@dataclass(frozen=True)
class Route:
    """A static route: ``ip route add <dest> via <via> dev <dev>``."""

    dest: ipaddress.IPv4Network
    via: ipaddress.IPv4Address
    dev: str


# What routing reads of a topology (``emulab.topology.model.TopologySpec`` provides it): described here
# so that this module depends on no model class and the model can compute its routes with it.
class _End(Protocol):
    @property
    def node(self) -> str: ...
    @property
    def intf(self) -> str: ...
    @property
    def address(self) -> ipaddress.IPv4Interface | None: ...


class _Link(Protocol):
    @property
    def ends(self) -> Iterable[_End]: ...


class _Node(Protocol):
    @property
    def forwarding(self) -> bool: ...


class RoutedTopology(Protocol):
    """The nodes (by name) and links of a topology, as far as routing needs them."""

    @property
    def nodes(self) -> Mapping[str, _Node]: ...
    @property
    def links(self) -> Iterable[_Link]: ...


class _Iface(NamedTuple):
    node: str
    intf: str
    address: ipaddress.IPv4Interface


class _Hop(NamedTuple):
    via: ipaddress.IPv4Address
    dev: str


def _interfaces(spec: RoutedTopology) -> dict[str, list[_Iface]]:
    ifaces: dict[str, list[_Iface]] = {name: [] for name in spec.nodes}
    for link in spec.links:
        for end in link.ends:
            if end.address is not None:
                ifaces[end.node].append(_Iface(end.node, end.intf, end.address))
    return ifaces


def next_hops(spec: RoutedTopology) -> dict[str, dict[ipaddress.IPv4Network, _Hop]]:
    """For every node, the first hop towards every subnet it is not directly on (and can reach)."""
    ifaces = _interfaces(spec)
    members: dict[ipaddress.IPv4Network, list[_Iface]] = {}
    for node in sorted(ifaces):
        for iface in ifaces[node]:
            members.setdefault(iface.address.network, []).append(iface)

    table: dict[str, dict[ipaddress.IPv4Network, _Hop]] = {}
    for src, own in ifaces.items():
        direct = {iface.address.network: iface for iface in own}
        hops: dict[ipaddress.IPv4Network, _Hop] = {}
        seen = set(direct)
        queue: deque[tuple[ipaddress.IPv4Network, _Hop | None]] = deque((net, None) for net in direct)
        while queue:
            net, first = queue.popleft()
            for router in members[net]:  # sorted by node name
                if router.node == src or not spec.nodes[router.node].forwarding:
                    continue
                hop = first or _Hop(router.address.ip, direct[net].intf)
                for onward in ifaces[router.node]:
                    other = onward.address.network
                    if other not in seen:
                        seen.add(other)
                        hops[other] = hop
                        queue.append((other, hop))
        table[src] = hops
    return table


def compute_routes(spec: RoutedTopology) -> dict[str, tuple[Route, ...]]:
    """Static routes for every node of ``spec`` (see the module docstring for the rules)."""
    routes: dict[str, tuple[Route, ...]] = {}
    ifaces = _interfaces(spec)
    for node, hops in next_hops(spec).items():
        default: _Hop | None = None
        if hops and len(ifaces[node]) == 1 and not spec.nodes[node].forwarding:
            counts = Counter(hops.values())
            # Most used next hop; ties to the lowest address so the choice is stable.
            default = min(counts, key=lambda h: (-counts[h], int(h.via)))
        table = [Route(dest, hop.via, hop.dev) for dest, hop in hops.items() if hop != default]
        table.sort(key=lambda r: (int(r.dest.network_address), r.dest.prefixlen))
        if default is not None:
            table.append(Route(DEFAULT_ROUTE, default.via, default.dev))
        routes[node] = tuple(table)
    return routes


def unreachable(spec: RoutedTopology) -> tuple[str, str] | None:
    """The first (target, source) pair, in name order, where source cannot reach target's primary subnet."""
    hops = next_hops(spec)
    ifaces = _interfaces(spec)
    for target in sorted(spec.nodes):
        primary = ifaces[target][0].address.network
        for source in sorted(spec.nodes):
            if source == target:
                continue
            if primary not in hops[source] and all(i.address.network != primary for i in ifaces[source]):
                return target, source
    return None

"""The paths the self-check measures: which links (and in which direction) a packet from one node to
another crosses, and how many switch crossings, derived from the topology's routes (emulab.topology).
Shared by the self-check (emulab.selfcheck) and the simulator's delay model (emulab.sim.model)."""

from __future__ import annotations

import ipaddress

from emulab.topology import LinkSpec, TopologySpec


def _segment_path(spec: TopologySpec, src: str, dst: str) -> list[LinkSpec]:
    """Links from node ``src`` to neighbour ``dst`` across one L2 segment (direct, or through switches)."""
    frontier: list[tuple[str, list[LinkSpec]]] = [(src, [])]
    seen = {src}
    while frontier:
        nxt = []
        for node, path in frontier:
            for link in spec.links_of(node):
                other = link.b.node if link.a.node == node else link.a.node
                if other in seen:
                    continue
                if other == dst:
                    return [*path, link]
                if other in spec.switches:
                    seen.add(other)
                    nxt.append((other, [*path, link]))
        frontier = nxt
    raise ValueError(f"{src} and {dst} share no segment")


def _owner(spec: TopologySpec, ip: ipaddress.IPv4Address) -> str:
    for name in spec.nodes:
        if any(a.ip == ip for a in spec.addresses(name)):
            return name
    raise ValueError(f"no node has address {ip}")


def path_links(
    spec: TopologySpec, src: str, dst: str, target: ipaddress.IPv4Address | None = None
) -> list[LinkSpec]:
    """The links an IP packet from ``src`` to ``target`` (default: ``dst``'s primary address)
    crosses, following the routes."""
    target = target or spec.primary_address(dst)
    routes = spec.routes()
    cur, links, hops = src, [], 0
    while cur != dst:
        hops += 1
        if hops > 64:
            raise ValueError(f"routing loop from {src} to {dst}")
        if any(target in a.network for a in spec.addresses(cur)):
            nxt = dst
        else:
            candidates = [r for r in routes.get(cur, ()) if target in r.dest]
            if not candidates:
                raise ValueError(f"{cur} has no route to {dst} ({target})")
            best = max(candidates, key=lambda r: r.dest.prefixlen)
            nxt = _owner(spec, best.via)
        links.extend(_segment_path(spec, cur, nxt))
        cur = nxt
    return links


def path_hops(
    spec: TopologySpec, src: str, dst: str, target: ipaddress.IPv4Address | None = None
) -> list[tuple[LinkSpec, str]]:
    """``path_links`` with the direction each link is crossed in: "1to2" from its end a to end b."""
    hops, cur = [], src
    for link in path_links(spec, src, dst, target):
        if link.a.node == cur:
            hops.append((link, "1to2"))
            cur = link.b.node
        else:
            hops.append((link, "2to1"))
            cur = link.a.node
    return hops


def round_trip(spec: TopologySpec, a: str, b: str) -> list[tuple[LinkSpec, str]]:
    """Every hop a ping from ``a`` to ``b`` and its reply cross, in order.

    The reply goes to the request's source address, i.e. the address of ``a``'s outgoing
    interface, which need not be ``a``'s primary address (so the way back may differ)."""
    there = path_hops(spec, a, b)
    source = there[0][0].end_of(a).address if there else None
    return there + path_hops(spec, b, a, source.ip if source is not None else None)


def expected_rtt_ms(spec: TopologySpec, a: str, b: str) -> float:
    """Configured RTT: one-way delays along the path there plus along the path back."""
    return sum(lk.params.delay_ms for lk, _ in round_trip(spec, a, b))


def switch_crossings(spec: TopologySpec, src: str, dst: str) -> int:
    """How many times a ping's round trip is forwarded by a switch (an Open vSwitch bridge)."""
    return sum(1 for link, d in round_trip(spec, src, dst)
               if (link.b.node if d == "1to2" else link.a.node) in spec.switches)

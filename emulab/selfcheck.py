"""Checks a running testbed against its topology: every node reaches every other, and measured ping
RTTs match the RTTs the configuration implies along the routed path (±2 ms or ±2 %, whichever is larger).

Used by `emulab start … --self-check`, by the end-to-end tests and by the link-accuracy benchmark.
"""

from __future__ import annotations

import ipaddress
import re
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from emulab.topology import LinkSpec, TopologySpec

_RTT = re.compile(r"time=([0-9.]+) ms")


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


def expected_rtt_ms(spec: TopologySpec, a: str, b: str) -> float:
    """Configured RTT: one-way delays along the path there plus along the path back.

    The reply goes to the request's source address, i.e. the address of ``a``'s outgoing
    interface, which need not be ``a``'s primary address (so the way back may differ)."""
    there = path_links(spec, a, b)
    source = there[0].end_of(a).address if there else None
    back = path_links(spec, b, a, source.ip if source is not None else None)
    return sum(lk.params.delay_ms for lk in there) + sum(lk.params.delay_ms for lk in back)


def tolerance_ms(expected: float) -> float:
    return max(2.0, 0.02 * expected)


@dataclass
class PairResult:
    src: str
    dst: str
    reachable: bool
    expected_ms: float
    measured_ms: float | None

    @property
    def error_ms(self) -> float | None:
        return None if self.measured_ms is None else self.measured_ms - self.expected_ms

    @property
    def within_tolerance(self) -> bool:
        return self.error_ms is not None and abs(self.error_ms) <= tolerance_ms(self.expected_ms)


def measure(testbed: Any, pairs: Iterable[tuple[str, str]], count: int = 15, interval: float = 0.07) -> list[PairResult]:
    """Ping each pair ``count`` times after one warm-up ping (which pays for ARP on every hop) and
    report the median RTT (robust against a stray scheduling hiccup; unbiased under symmetric jitter).

    Fifteen samples, not five, in about the same second: on the radio link (±1 ms uniform jitter each
    way) the median of five strays beyond ±2 ms on a few percent of paths by chance alone.

    Sources run in parallel, each pinging its targets one after another so the links stay lightly loaded.
    The k-th source starts k places further down its list: were they all to walk the same list in step,
    every source would ping the same node at once, and on a jittered FIFO link (netem with a rate, or
    the shaper) each ping would wait behind the one ahead that drew a longer delay. That bias (+2 ms
    on the paper topology's radio link) belongs to the measurement, not to the link.
    """
    spec: TopologySpec = testbed.spec
    by_src: dict[str, list[str]] = {}
    for src, dst in pairs:
        by_src.setdefault(src, []).append(dst)
    procs = {}
    for k, (src, dsts) in enumerate(by_src.items()):
        dsts = dsts[k % len(dsts):] + dsts[: k % len(dsts)]
        script = "; ".join(
            f"ping -n -c 1 -W 3 {spec.primary_address(dst)} >/dev/null; echo '## {dst}'; "
            f"ping -n -c {count} -i {interval} -W 3 {spec.primary_address(dst)}"
            for dst in dsts
        )
        procs[src] = testbed.host(src).popen(["sh", "-c", script], stdout=-1, stderr=-1, text=True)
    results = []
    for src, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        for block in out.split("## ")[1:]:
            dst, _, body = block.partition("\n")
            rtts = [float(x) for x in _RTT.findall(body)]
            results.append(
                PairResult(
                    src,
                    dst.strip(),
                    bool(rtts),
                    expected_rtt_ms(spec, src, dst.strip()),
                    statistics.median(rtts) if rtts else None,
                )
            )
    return results


def all_pairs(spec: TopologySpec) -> list[tuple[str, str]]:
    return [(a, b) for a in spec.nodes for b in spec.nodes if a != b]


def run_self_check(testbed: Any, progress: Callable[[str], None]) -> bool:
    """Reachability of every pair and RTT accuracy on every path; prints a summary, returns success."""
    pairs = all_pairs(testbed.spec)
    progress(f"self-check: pinging {len(pairs)} node pairs")
    results = measure(testbed, pairs)
    unreachable = [r for r in results if not r.reachable]
    off = [r for r in results if r.reachable and not r.within_tolerance]
    delayed = [r for r in results if r.expected_ms > 0 and r.measured_ms is not None]
    worst = max(delayed, key=lambda r: abs(r.error_ms or 0), default=None)
    progress(f"self-check: {len(results) - len(unreachable)}/{len(results)} pairs reachable")
    if worst is not None:
        progress(
            f"self-check: RTT over {len(delayed)} delayed paths, worst {worst.src}->{worst.dst}: "
            f"{worst.measured_ms:.2f} ms measured vs {worst.expected_ms:.2f} ms configured"
        )
    for r in unreachable:
        progress(f"self-check: FAIL {r.src} cannot reach {r.dst}")
    for r in off:
        progress(
            f"self-check: FAIL {r.src}->{r.dst} RTT {r.measured_ms:.2f} ms, configured {r.expected_ms:.2f} ms "
            f"(tolerance ±{tolerance_ms(r.expected_ms):.1f} ms)"
        )
    ok = not unreachable and not off
    progress("self-check: passed" if ok else "self-check: FAILED")
    return ok

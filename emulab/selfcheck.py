"""Checks a running testbed against its topology: every node reaches every other, and the median
ping RTT of every path matches what the configuration implies, within what the statistics allow.

Used by `emulab start … --self-check`, by the end-to-end tests and by the link-accuracy benchmark.

The rule (printed by the self-check; RULE below). For a path, let the round trip cross hops i
(each link in each direction it is crossed), each with configured one-way delay d_i, jitter ±J_i,
loss l_i and rate R_i. One RTT sample is

    RTT = sum d_i + sum 8*F/R_i + sum b_i + B + k*S + sum U_i + sum L_i + e

* F = 98 bytes, the frame of a default ping; 8*F/R_i is its serialisation on a rated hop.
* b_i = lambda_i * J_i^2 / 6: the FIFO bias of jitter. A link never reorders (netem with a rate and
  the shaper are FIFO), so a probe that drew a short delay waits behind one that drew a long delay
  and arrived up to 2 J_i earlier; with probes arriving at lambda_i per second on that hop (known
  from the probing schedule: 1/interval per pair of the round whose round trip crosses the hop)
  the expected wait is lambda_i * E[(U_a - U_b)+^2] / 2 = lambda_i J_i^2 / 6.
* B + k*S: forwarding outside the shaper: B the base RTT of two hosts' kernels and veths, S one
  crossing of a switch (an OVS bridge; the userspace datapath costs ~0.1 ms), k the crossings of
  the round trip. Both are measured by the check itself on the paths with nothing configured on
  them (no delay, jitter, loss, rate or shaper hop anywhere): B the median RTT of those without a
  switch, S the median of (RTT - B)/k of those with one; their spreads across paths (1.4826 x
  MAD) s_B, s_S join the tolerance. Without such paths B = 0.05 ms and S = 0.1 ms are assumed.
* U_i ~ uniform(-J_i, +J_i): netem's default (table-less) jitter and the shaper's are uniform.
* L_i: the emulation's own cost on a shaped hop, i.e. the lateness (release time - scheduled
  departure) the userspace shaper recorded for that link direction, as a histogram, during the
  probing round the path was measured in (netem, in the kernel, reports none: L_i = 0). This is
  the per-hop cost, measured where and when the probes ran, with its tail (a busy machine stalls
  the shaper now and then: the tail moves a path's median when several hops add up).
* e ~ normal(0, 0.02 ms): the kernel's own forwarding (veth pairs), the floor.

The median of the n replies is compared with

    expected  = sum d_i + sum 8*F/R_i + sum b_i + B + k*S + E[median of n draws of sum U_i + sum L_i + e]
    tolerance = Z * sqrt(SE^2 + s_B^2 + (k s_S)^2 + U^2) + q/2 + M,   SE = standard deviation of that median

The expectation and SE of the median are computed by Monte Carlo (MC_REPLICAS replicas of n draws
from the hops' uniform jitters and lateness histograms). Without lateness they follow the closed
form SE = 1 / (2 f sqrt(n)), f the density at the centre, f = min(1/(2 J_max), 1/(sigma sqrt(2 pi))),
sigma^2 = sum J_i^2/3 + (0.02 ms)^2: exact for one or two jittered hops (the density is flat at
1/(2 J_max) there), the normal 1.2533 sigma / sqrt(n) once several hops add up (median_se_ms;
printed beside the Monte Carlo figure).

* U: what the model leaves unexplained, measured: 1.4826 x the median |measured - expected| over
  the paths without jitter (at least 5 of them; else 0), over the whole check and over the path's
  own round (a burst of load hits the paths of one round), the larger of the two. On an idle machine it is a few hundredths
  of a millisecond; when the machine is busy it carries the delays the shaper cannot see (softirqs
  deferred to ksoftirqd, the pinging process itself). Being a median, a minority of wrong paths
  (a mis-applied delay) does not widen it.
* n: replies received. Loss only removes samples (count * prod(1 - l_i) expected) and so widens
  the tolerance; a path is unreachable only when no reply comes back.
* q: ping's print resolution at that RTT (0.001 ms below 1 ms, 0.01 below 10, 0.1 below 100, 1 ms
  above); a median of rounded values is off by up to q/2.
* Z = 4 (a valid path fails with probability ~6e-5, about 1 % of 200-path checks) and M = 0.1 ms +
  b/2: what the model leaves out (a veth pair more per shaped hop, ~10 us; the FIFO bias is an
  estimate).

Probing runs in rounds (``schedule``): all sources at once, each pinging one target per round, so
what the shaper measured in a round belongs to that round's probes.

The configuration of a hop is the topology's, except on a radio link, whose delay/jitter/loss/rate
the radio backend sets at run time: there it is what the link applies (read before and after the
probes, averaged). A backend that carries the user plane itself (OAI: the link then applies nothing,
OAI's radio does the delay) reports instead what its radio does, measured while the probes run
(``measured_link_params``: half the median RTT of its own radio probes each way, jitter J with the
measured variance, no FIFO bias since a measured median holds it), and where it reaches a node at
another address (``address_of``: OAI's UE and eNB at their tunnel addresses) the probes go there.
A path that fails names its likely cause: "configuration" when a link on it applies something
else than the topology says (read back from netem or the shaper), or when the emulation kept time;
"load" when the path is late (never early) and the shaper's lateness on the path's shaped hops
during its round shows a busy machine: a mean above LOAD_LATENESS_MS per hop,
or a tail (mean - median) of at least half the excess over the tolerance (delays the shaper cannot
see - kernel softirqs, the pinging process - then likely came with it).
"""

from __future__ import annotations

import math
import re
import statistics
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from emulab.linkparams import LinkParams
from emulab.selfcheck_paths import (
    expected_rtt_ms,
    round_trip,
    switch_crossings,
)
from emulab.selfcheck_stats import (
    FLOOR_SIGMA_MS,
    Lateness,
    Noise,
    fifo_bias_ms,
    lateness_between,
    median_se_ms,
    ping_resolution_ms,
)
from emulab.topology import TopologySpec

_RTT = re.compile(r"time=([0-9.]+) ms")

RULE = (
    "expected RTT = sum of configured delays + 98-byte serialisation at each rate + FIFO jitter bias "
    "sum(lambda*J^2/6) + forwarding B + k*S (base RTT, k switch crossings; measured on the unshaped paths) "
    "+ the median of the emulation's noise (uniform jitter of each hop + the shaper's measured lateness on each "
    "shaped hop during that round + 0.02 ms kernel floor; Monte Carlo)",
    "tolerance = 4 x sqrt(SE(median of n replies)^2 + sd(B)^2 + (k sd(S))^2 + U^2) + ping resolution/2 + 0.1 ms "
    "+ bias/2; closed form of SE without lateness: 1/(2 f sqrt(n)), f = min(1/(2 J_max), 1/(sigma sqrt(2 pi))), "
    "sigma^2 = sum J^2/3 + (0.02 ms)^2; n = replies (loss only removes samples); U = 1.4826 x median "
    "|error| of the paths without jitter, whole check or the path's round, the larger (what the model leaves "
    "unexplained: load outside the shaper)",
)
Z = 4.0
MODEL_MS = 0.1
BASE_DEFAULT_MS = 0.05  # RTT of a plain veth pair (benchmarks/links.py: 0.04-0.05 ms) when no path measures it
SWITCH_DEFAULT_MS = 0.1  # one crossing of an OVS userspace bridge when no path measures it
UNEXPLAINED_MIN_PATHS = 5  # paths without jitter needed to estimate what the model leaves unexplained
LOAD_LATENESS_MS = 0.1  # mean lateness per shaped hop above which a busy machine is the likely cause
PING_FRAME_BYTES = 98  # Ethernet 14 + IPv4 20 + ICMP 8 + 56 bytes of ping data
DEFAULT_COUNT = 15
DEFAULT_INTERVAL = 0.07
DIRECTIONS = ("1to2", "2to1")


# ---------------------------------------------------------------------------------------------
# measuring


@dataclass
class PairResult:
    src: str
    dst: str
    reachable: bool
    expected_ms: float  # what the configuration implies (the model's expectation, see the docstring)
    measured_ms: float | None  # median of the replies
    samples: list[float] = field(default_factory=list)
    configured_ms: float | None = None  # sum of the configured delays alone
    round: int = 0  # the probing round it was measured in
    tolerance: float = 2.0
    breakdown: dict[str, float] = field(default_factory=dict)
    cause: str | None = None

    @property
    def error_ms(self) -> float | None:
        return None if self.measured_ms is None else self.measured_ms - self.expected_ms

    @property
    def within_tolerance(self) -> bool:
        return self.error_ms is not None and abs(self.error_ms) <= self.tolerance


def schedule(pairs: Iterable[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Probing rounds: in each, every source pings one of its targets, all sources at once.

    The k-th source starts k places further down its list: were they all to walk the same list in
    step, every source would ping the same node at once, and on a jittered FIFO link (netem with a
    rate, or the shaper) each ping would wait behind the one ahead that drew a longer delay. That
    bias (+2 ms on the paper topology's radio link) belongs to the measurement, not to the link;
    what is left of it is in the expected RTT (see the module docstring)."""
    by_src: dict[str, list[str]] = {}
    for src, dst in pairs:
        by_src.setdefault(src, []).append(dst)
    rounds: list[list[tuple[str, str]]] = []
    for k, (src, dsts) in enumerate(by_src.items()):
        dsts = dsts[k % len(dsts):] + dsts[: k % len(dsts)]
        for j, dst in enumerate(dsts):
            if j == len(rounds):
                rounds.append([])
            rounds[j].append((src, dst))
    return rounds


def measure(testbed: Any, pairs: Iterable[tuple[str, str]], count: int = DEFAULT_COUNT,
            interval: float = DEFAULT_INTERVAL, between: Callable[[int], None] | None = None) -> list[PairResult]:
    """Ping each pair ``count`` times after one warm-up ping (which pays for ARP on the hops to and
    across switches, and for a switch's first flow set-up; point-to-point links have permanent
    neighbour entries from the start) and
    report the median RTT (robust against a stray scheduling hiccup; unbiased under symmetric jitter).

    Pairs are probed in rounds (``schedule``): all sources at once, each one target per round, so
    the links stay lightly loaded and what the emulation measured during a round belongs to the
    probes of that round. ``between(j)`` is called before round j and once after the last one.

    ``expected_ms`` here is the configured RTT alone; ``check`` replaces it with the full model.
    """
    spec: TopologySpec = testbed.spec
    results = []
    rounds = schedule(pairs)
    for j, batch in enumerate(rounds):
        if between is not None:
            between(j)
        procs = []
        for src, dst in batch:
            addr = _address(testbed, dst)
            script = f"ping -n -c 1 -W 3 {addr} >/dev/null; ping -n -c {count} -i {interval} -W 3 {addr}"
            procs.append((src, dst, testbed.host(src).popen(["sh", "-c", script], stdout=-1, stderr=-1, text=True)))
        for src, dst, proc in procs:
            out, _ = proc.communicate(timeout=60 + 3 * count * (interval + 3))
            rtts = [float(x) for x in _RTT.findall(out)]
            cfg = expected_rtt_ms(spec, src, dst)
            results.append(PairResult(src, dst, bool(rtts), cfg, statistics.median(rtts) if rtts else None,
                                      rtts, cfg, j))
    if between is not None:
        between(len(rounds))
    return results


def all_pairs(spec: TopologySpec) -> list[tuple[str, str]]:
    return [(a, b) for a in spec.nodes for b in spec.nodes if a != b]


def probe_rates(spec: TopologySpec, batch: Iterable[tuple[str, str]],
                interval: float = DEFAULT_INTERVAL) -> dict[tuple[str, str], float]:
    """Probes per second crossing each (link, direction) during a round: 1/interval per pair."""
    rates: dict[tuple[str, str], float] = {}
    for src, dst in batch:
        for link, d in round_trip(spec, src, dst):
            rates[(link.name, d)] = rates.get((link.name, d), 0.0) + 1.0 / interval
    return rates


# ---------------------------------------------------------------------------------------------
# the model


def _params_of(applied: dict[str, Any], d: str) -> LinkParams:
    a = applied[d]
    return LinkParams(float(a.get("delay_ms") or 0.0), float(a.get("jitter_ms") or 0.0),
                      float(a.get("loss_pct") or 0.0), a.get("rate_mbit"))


def _mean_params(first: LinkParams, second: LinkParams) -> LinkParams:
    rates = [r for r in (first.rate_mbit, second.rate_mbit) if r]
    return LinkParams((first.delay_ms + second.delay_ms) / 2, max(first.jitter_ms, second.jitter_ms),
                      (first.loss_pct + second.loss_pct) / 2, min(rates) if rates else None)


@dataclass
class LinkView:
    """A link as the check sees it: what it should do per direction, what it applies, whether the
    shaper process carries it (its lateness is then measured)."""

    name: str
    expected: dict[str, LinkParams]
    applied: dict[str, LinkParams] | None
    shaped: bool
    radio: bool = False
    measured: bool = False  # expected = the radio backend's measurement (its median holds any FIFO bias)

    def mismatch(self) -> str | None:
        """What the link applies unlike the topology (None when it applies what is configured)."""
        if self.applied is None or self.radio:
            return None
        for d in DIRECTIONS:
            want, got = self.expected[d], self.applied[d]
            for key, unit in (("delay_ms", "ms"), ("jitter_ms", "ms"), ("loss_pct", "%")):
                if abs(getattr(want, key) - getattr(got, key)) > 1e-3:
                    return (f"link {self.name} applies {key.split('_')[0]} {getattr(got, key):g} {unit} ({d}), "
                            f"the topology says {getattr(want, key):g} {unit}")
            if abs((want.rate_mbit or 0.0) - (got.rate_mbit or 0.0)) > 1e-3:
                return f"link {self.name} applies rate {got.rate_mbit} Mbit/s ({d}), the topology says {want.rate_mbit}"
        return None


def _radio_measured(testbed: Any, name: str) -> dict[str, LinkParams] | None:
    """A radio link whose backend carries the user plane itself (OAI) applies nothing on the link;
    what it does is the backend's measured radio delay and jitter (``measured_link_params``: per
    "uplink"/"downlink"), mapped onto the link's directions ("1to2" is from end a)."""
    measured = getattr(getattr(testbed, "radio", None), "measured_link_params", None)
    link = next((lk for lk in testbed.spec.links if lk.name == name), None)
    if link is None or not link.radio or not callable(measured) or (m := measured()) is None:
        return None
    up = "1to2" if testbed.spec.nodes[link.a.node].role == "ue" else "2to1"
    return {d: LinkParams(p.delay_ms, p.jitter_ms, p.loss_pct, p.rate_mbit)
            for d in DIRECTIONS for p in [m["uplink" if d == up else "downlink"]]}


def _address(testbed: Any, node: str) -> Any:
    """The address a probe targets: the node's primary one, unless the radio backend reaches the node
    elsewhere (OAI: the UE at its tunnel address, so both directions cross OAI's radio)."""
    other = getattr(getattr(testbed, "radio", None), "address_of", None)
    return (other(node) if callable(other) else None) or testbed.spec.primary_address(node)


def _applied(testbed: Any, name: str) -> dict[str, LinkParams] | None:
    try:
        if (measured := _radio_measured(testbed, name)) is not None:
            return measured
        a = testbed.link(name).applied()
        return {d: _params_of(a, d) for d in DIRECTIONS}
    except Exception:  # noqa: BLE001 - a read-back failure leaves the mismatch unknown, not the check broken
        return None


def link_views(testbed: Any, before: dict[str, dict[str, LinkParams] | None]) -> dict[str, LinkView]:
    """Per link: expected parameters (topology; radio link: what the radio applied, averaged over
    ``before`` and now; ``check`` narrows that to each round), applied parameters now, and whether
    the shaper carries it."""
    spec: TopologySpec = testbed.spec
    links = getattr(testbed, "links", {}) or {}
    views = {}
    for link in spec.links:
        emu = links.get(link.name)
        shaped = bool(emu is not None and getattr(emu, "backend", None) == "shaper" and getattr(emu, "hop", False))
        applied = _applied(testbed, link.name) if emu is not None else None
        expected = {d: link.params for d in DIRECTIONS}
        if link.radio and applied is not None:
            first = before.get(link.name) or applied
            expected = {d: _mean_params(first[d], applied[d]) for d in DIRECTIONS}
        measured = link.radio and callable(getattr(getattr(testbed, "radio", None), "measured_link_params", None))
        views[link.name] = LinkView(link.name, expected, applied, shaped, link.radio, measured)
    return views


@dataclass
class Calibration:
    """The forwarding cost outside the shaper, measured on the check's own unshaped paths (ms):
    ``base`` per round trip (two hosts' kernels and veths), ``switch`` per switch crossing, with
    their spreads across paths (1.4826 x median absolute deviation)."""

    base_ms: float = BASE_DEFAULT_MS
    base_sd_ms: float = 0.0
    base_paths: int = 0
    switch_ms: float = SWITCH_DEFAULT_MS
    switch_sd_ms: float = 0.0
    switch_paths: int = 0
    unexplained_sd_ms: float = 0.0
    unexplained_paths: int = 0

    def describe(self) -> str:
        def part(what: str, v: float, sd: float, n: int) -> str:
            return f"{what} {v:.3f} ms ± {sd:.3f} (from {n} paths)" if n else f"{what} {v:.3f} ms (assumed: no path)"

        unexplained = (f"; unexplained spread of the {self.unexplained_paths} paths without jitter "
                       f"{self.unexplained_sd_ms:.3f} ms") if self.unexplained_paths >= UNEXPLAINED_MIN_PATHS else ""
        return (part("base RTT", self.base_ms, self.base_sd_ms, self.base_paths) + ", "
                + part("per switch crossing", self.switch_ms, self.switch_sd_ms, self.switch_paths) + unexplained)


def _mad_sd(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = statistics.median(xs)
    return 1.4826 * statistics.median(abs(x - m) for x in xs)


def calibrate(spec: TopologySpec, results: list[PairResult], views: dict[str, LinkView]) -> Calibration:
    """Base and per-switch cost from the paths with nothing configured on them (every hop neutral,
    no shaper hop): their median RTT is the emulation's forwarding cost alone."""
    base: list[float] = []
    per_switch: list[tuple[int, float]] = []
    for r in results:
        if r.measured_ms is None:
            continue
        hops = round_trip(spec, r.src, r.dst)
        if any(not (views[lk.name].expected[d] if lk.name in views else lk.params).is_neutral
               or (lk.name in views and views[lk.name].shaped) for lk, d in hops):
            continue
        k = switch_crossings(spec, r.src, r.dst)
        if k == 0:
            base.append(r.measured_ms)
        else:
            per_switch.append((k, r.measured_ms))
    cal = Calibration()
    if base:
        cal.base_ms, cal.base_sd_ms, cal.base_paths = statistics.median(base), _mad_sd(base), len(base)
    if per_switch:
        est = [(m - cal.base_ms) / k for k, m in per_switch]
        cal.switch_ms, cal.switch_sd_ms, cal.switch_paths = statistics.median(est), _mad_sd(est), len(est)
    return cal


def evaluate(spec: TopologySpec, r: PairResult, views: dict[str, LinkView],
             lateness: dict[tuple[str, str], Lateness], rates: dict[tuple[str, str], float],
             cal: Calibration | None = None, unexplained_sd_ms: float = 0.0) -> PairResult:
    """Fill in ``r``'s expected RTT, tolerance, breakdown and (if off) likely cause (see the docstring)."""
    cal = cal or Calibration()
    configured = serial = bias = late_mean = 0.0
    noise = Noise()
    shaped_hops = 0
    mismatches: list[str] = []
    for link, d in round_trip(spec, r.src, r.dst):
        view = views.get(link.name)
        p = view.expected[d] if view is not None else link.params
        configured += p.delay_ms
        if p.rate_mbit:
            serial += PING_FRAME_BYTES * 8 / (p.rate_mbit * 1e3)
        if p.jitter_ms:
            noise.jitters_ms.append(p.jitter_ms)
            if not (view is not None and view.measured):
                bias += fifo_bias_ms(rates.get((link.name, d), 0.0), p.jitter_ms)
        if view is not None and view.shaped:
            shaped_hops += 1
            late = lateness.get((link.name, d))
            if late is not None and late.n:
                noise.lateness.append(late)
                late_mean += late.mean_ms
        if view is not None and (m := view.mismatch()) and m not in mismatches:
            mismatches.append(m)
    n = len(r.samples)
    seed = zlib.crc32(f"{r.src}>{r.dst}".encode())
    cost, se = noise.median_stats(n, seed)
    # the configuration alone (no lateness): what the rule's closed form gives
    se_cfg = median_se_ms(noise.jitters_ms, FLOOR_SIGMA_MS, n)
    k = switch_crossings(spec, r.src, r.dst)
    forwarding = cal.base_ms + k * cal.switch_ms
    spread = math.sqrt(se**2 + cal.base_sd_ms**2 + (k * cal.switch_sd_ms) ** 2 + unexplained_sd_ms**2)
    r.configured_ms = configured
    r.expected_ms = configured + serial + bias + cost + forwarding
    q = ping_resolution_ms(r.expected_ms)
    r.tolerance = Z * spread + q / 2 + MODEL_MS + bias / 2
    r.breakdown = {"configured_ms": configured, "serialisation_ms": serial, "emulation_ms": cost,
                   "forwarding_ms": forwarding, "switch_crossings": k,
                   "fifo_bias_ms": bias, "shaped_hops": shaped_hops, "n": n, "se_ms": se, "se_config_ms": se_cfg,
                   "spread_ms": spread, "resolution_ms": q, "lateness_mean_ms": late_mean,
                   "jittered_hops": len(noise.jitters_ms), "unexplained_sd_ms": unexplained_sd_ms}
    err = r.error_ms
    r.cause = None
    if err is not None and abs(err) > r.tolerance:
        excess = abs(err) - r.tolerance
        if mismatches:
            r.cause = "configuration: " + "; ".join(mismatches)
        elif err > 0 and (late_mean > LOAD_LATENESS_MS * max(shaped_hops, 1) or late_mean - cost >= excess / 2):
            r.cause = (f"load: the machine is busy; the shaper released frames {late_mean:.2f} ms late in total "
                       f"(mean; median {cost:.2f}) on this path's {shaped_hops} shaped hops during its round, and "
                       "delays outside the shaper (kernel, the pinging process) are likely too")
        else:
            r.cause = (f"configuration: the emulation kept time (lateness {late_mean:+.2f} ms in total over "
                       f"{shaped_hops} shaped hops) yet the path is {err:+.2f} ms off: a delay not applied "
                       "as configured, or a route other than the topology's")
    return r


def check(testbed: Any, pairs: list[tuple[str, str]] | None = None, count: int = DEFAULT_COUNT,
          interval: float = DEFAULT_INTERVAL, calibration: Callable[[Calibration], None] | None = None
          ) -> list[PairResult]:
    """Measure ``pairs`` (default: all) and judge each against the model of the module docstring."""
    spec: TopologySpec = testbed.spec
    pairs = pairs if pairs is not None else all_pairs(spec)
    links = getattr(testbed, "links", {}) or {}
    radio = [lk.name for lk in spec.links if lk.radio and lk.name in links]
    shaper = getattr(testbed, "shaper", None)
    edges: list[float] = shaper.client.ping()["late_edges_ms"] if shaper is not None else []
    snapshots: list[dict[str, Any]] = []
    radio_at: list[dict[str, dict[str, LinkParams] | None]] = []

    def snapshot(_round: int) -> None:
        # the radio backend changes its link at run time: what it applied around each round
        radio_at.append({name: _applied(testbed, name) for name in radio})
        if shaper is not None:
            snapshots.append(shaper.client.stats())

    results = measure(testbed, pairs, count, interval, between=snapshot)
    views = link_views(testbed, radio_at[0] if radio_at else {})
    cal = calibrate(spec, results, views)
    rounds = schedule(pairs)
    out: list[PairResult] = []
    judge: list[tuple[PairResult, dict[str, LinkView], dict[tuple[str, str], Lateness], dict[tuple[str, str], float]]] = []
    for r in results:
        late = lateness_between(snapshots[r.round], snapshots[r.round + 1], edges) if shaper is not None else {}
        round_views = dict(views)
        for name in radio:
            first, last = radio_at[r.round].get(name), radio_at[r.round + 1].get(name)
            if first is not None and last is not None:
                v = views[name]
                round_views[name] = LinkView(name, {d: _mean_params(first[d], last[d]) for d in DIRECTIONS},
                                             v.applied, v.shaped, v.radio, v.measured)
        judge.append((r, round_views, late, probe_rates(spec, rounds[r.round], interval)))
    for r, v, late, rates in judge:
        evaluate(spec, r, v, late, rates, cal)
    sd_u = unexplained_sd(judge_results := [r for r, *_ in judge])
    # the same per round: a burst of load hits every path of its round, and only those
    sd_round = {j: unexplained_sd([r for r in judge_results if r.round == j]) for j in range(len(rounds))}
    for r, v, late, rates in judge:
        out.append(evaluate(spec, r, v, late, rates, cal, max(sd_u, sd_round[r.round])))
    if calibration is not None:
        cal.unexplained_sd_ms = sd_u
        cal.unexplained_paths = sum(1 for r in judge_results if _deterministic(r))
        calibration(cal)
    return out


def _deterministic(r: PairResult) -> bool:
    return r.measured_ms is not None and r.breakdown.get("jittered_hops", 1) == 0


def unexplained_sd(results: list[PairResult]) -> float:
    """What the model leaves unexplained on paths without jitter: 1.4826 x median |measured -
    expected| over them (robust: a minority of wrong paths does not move it; about zero, so a
    common offset counts too); 0 with fewer than UNEXPLAINED_MIN_PATHS such paths."""
    errs = [abs(r.error_ms or 0.0) for r in results if _deterministic(r)]
    return 1.4826 * statistics.median(errs) if len(errs) >= UNEXPLAINED_MIN_PATHS else 0.0


def per_hop_cost_ms(results: list[PairResult]) -> float | None:
    """The emulation's measured cost per shaped hop, averaged over the paths (None: no shaped hop)."""
    hops = sum(r.breakdown.get("shaped_hops", 0) for r in results)
    return sum(r.breakdown.get("emulation_ms", 0.0) for r in results) / hops if hops else None


def describe(r: PairResult) -> str:
    b = r.breakdown
    return (f"{r.src}->{r.dst}: median {r.measured_ms:.2f} ms of {b['n']} replies vs expected {r.expected_ms:.2f} ms "
            f"(configured {b['configured_ms']:.2f} + serialisation {b['serialisation_ms']:.2f} + shaper "
            f"{b['emulation_ms']:.2f} over {b['shaped_hops']} shaped hops + forwarding {b['forwarding_ms']:.2f} "
            f"with {b['switch_crossings']} switch crossings + FIFO bias {b['fifo_bias_ms']:.2f}), "
            f"error {r.error_ms:+.2f} ms, tolerance ±{r.tolerance:.2f} ms (SE {b['se_ms']:.2f}, from the "
            f"configuration alone {b['se_config_ms']:.2f}; with forwarding and unexplained "
            f"{b['unexplained_sd_ms']:.2f}: {b['spread_ms']:.2f})")


def run_self_check(testbed: Any, progress: Callable[[str], None]) -> bool:
    """Reachability of every pair and RTT accuracy on every path; prints a summary, returns success."""
    pairs = all_pairs(testbed.spec)
    progress(f"self-check: pinging {len(pairs)} node pairs, {DEFAULT_COUNT} probes each, in rounds")
    for line in RULE:
        progress(f"self-check: rule: {line}")
    cal: list[Calibration] = []
    results = check(testbed, pairs, calibration=cal.append)
    if cal:
        progress(f"self-check: forwarding outside the shaper, measured on unshaped paths: {cal[0].describe()}")
    unreachable = [r for r in results if not r.reachable]
    off = [r for r in results if r.reachable and not r.within_tolerance]
    measured = [r for r in results if r.measured_ms is not None]
    progress(f"self-check: {len(results) - len(unreachable)}/{len(results)} pairs reachable")
    cost = per_hop_cost_ms(results)
    if cost is not None:
        progress(f"self-check: the emulation's measured cost per shaped hop: {cost:+.3f} ms")
    if measured:
        largest = max(measured, key=lambda r: abs(r.error_ms or 0.0))
        worst = max(measured, key=lambda r: abs(r.error_ms or 0.0) / r.tolerance)
        progress(f"self-check: RTT over {len(measured)} paths, largest error {largest.error_ms:+.2f} ms "
                 f"(tolerance ±{largest.tolerance:.2f}); closest to its limit: {describe(worst)}")
    for r in unreachable:
        progress(f"self-check: FAIL {r.src} cannot reach {r.dst}")
    for r in off:
        progress(f"self-check: FAIL {describe(r)}; likely cause: {r.cause}")
    ok = not unreachable and not off
    progress("self-check: passed" if ok else "self-check: FAILED")
    return ok

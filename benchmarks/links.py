"""Benchmark of the link emulation layer: ping RTT accuracy and TCP throughput per backend.

Builds two Mininet hosts joined by one EmuLink (``emu_link``: the testbed's code path, the
interfaces made by one ``ip -batch``, then the link), for every
backend this kernel offers (netem only where sch_netem exists; the shaper everywhere), and measures:

* ping RTT for one-way delays 0, 5, 20, 50, 160 ms (and 20 ms with 5 ms jitter) against the
  configured RTT (2 x delay); goal: |error| <= max(2 ms, 2 %);
* iperf3 TCP throughput through a 20 ms link, unlimited (goal >= 50 Mbit/s) and rate-limited to
  10 and 50 Mbit/s (goal: 85 %..102 % of the rate; TCP goodput is ~95 % of the L2 rate);
* the shaper's per-hop cost (``shaper_hop_rtt_ms``): RTT added by one shaped hop with zero configured
  delay over a plain veth pair, the same for a 1 ms hop beyond its 2 ms, and the shaper's CPU per
  Gbit/s of TCP; goal: <= 0.2 ms per hop per round trip; where the kernel has sch_netem, the same
  for a netem hop (``netem_hop_rtt_ms``: a veth pair with a zero-delay netem qdisc on both ends
  against one without), so both link emulations are compared on one machine;
* then the whole TOPOLOGY (default paper-topology, no services) built by the testbed itself: the
  median RTT of every node pair against the RTT its routed path is configured for, judged by
  emulab.selfcheck.check exactly as `emulab start --self-check` does (its tolerance rule).

Prints tables and ends with one JSON line holding every backend's figures. Exit status 1 when a
goal is missed, 2 when it cannot run (not root, or another testbed is running). Everything it
creates is removed in `finally`.

Usage: sudo .venv/bin/python benchmarks/links.py [--quick] [--backend shaper|netem] [--topology NAME|none]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import Any

from emulab.linkparams import LinkParams
from emulab.links import BACKENDS, EmuLink, cleanup_leftovers, emu_link, probe_netem
from emulab.shaper_control import Shaper

DELAYS_MS = [0.0, 5.0, 20.0, 50.0, 160.0]
JITTER_CASE = (20.0, 5.0)
RATES_MBIT = [10.0, 50.0]
TCP_GOAL_MBIT = 50.0
HOP_GOAL_MS = 0.2  # RTT a shaped hop may add beyond its configured delay
IP1, IP2 = "10.231.0.1", "10.231.0.2"


def tolerance_ms(rtt_ms: float) -> float:
    return max(2.0, 0.02 * rtt_ms)


def ping_rtts(host: Any, count: int, interval: float) -> list[float]:
    out = host.cmd(f"ping -n -q -c 1 -W 2 {IP2} >/dev/null; ping -n -c {count} -i {interval} -W 3 {IP2}")
    return [float(x) for x in re.findall(r"time=([0-9.]+) ms", out)]


def measure_rtt(link: EmuLink, h1: Any, delay: float, jitter: float, count: int) -> dict[str, Any]:
    link.set_params(LinkParams(delay_ms=delay, jitter_ms=jitter))
    configured = 2 * delay
    tol = tolerance_ms(configured)
    attempts = 0
    while attempts < 2:  # one retry: the machine is shared and timings are noisy
        attempts += 1
        rtts = ping_rtts(h1, count, 0.05)
        if len(rtts) < count * 0.9:
            row = {"ok": False, "error": f"only {len(rtts)}/{count} replies"}
        else:
            mean = statistics.fmean(rtts)
            row = {"avg_ms": round(mean, 3), "median_ms": round(statistics.median(rtts), 3),
                   "min_ms": min(rtts), "max_ms": max(rtts), "error_ms": round(mean - configured, 3),
                   "ok": abs(mean - configured) <= tol}
        if row["ok"]:
            break
    return {"delay_ms": delay, "jitter_ms": jitter, "configured_rtt_ms": configured, "tolerance_ms": tol,
            "samples": len(rtts), "attempts": attempts, **row}


def iperf(h1: Any, h2: Any, seconds: int, port: int = 5301) -> float:
    server = h2.popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=open(os.devnull, "w"),
                      stderr=open(os.devnull, "w"))
    try:
        time.sleep(0.3)
        out = h1.cmd(f"timeout {seconds + 30} iperf3 -c {IP2} -p {port} -t {seconds} -O 2 -J --connect-timeout 5000")
        data = json.loads(out[out.index("{"):])
        if "error" in data:
            raise RuntimeError(f"iperf3: {data['error']}")
        return data["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait()


def run_backend(backend: str, quick: bool, tag: str) -> dict[str, Any]:
    from mininet.node import Host

    count = 20 if quick else 40
    seconds = 5 if quick else 10
    tmp = tempfile.mkdtemp(prefix="emulab-bench-")
    netns = f"emtest-shaper-bench{tag}"  # outside `emulab clean`'s default prefix
    shaper = h1 = h2 = link = None
    try:
        if backend == "shaper":
            shaper = Shaper.start(f"{tmp}/shaper.sock", netns=netns)
        h1, h2 = Host(f"lb{tag}a"), Host(f"lb{tag}b")
        link = emu_link(h1, h2, "lb-eth0", "lb-eth1", params=LinkParams(), backend=backend, shaper=shaper,
                        link_id="bench", dynamic=True)
        h1.setIP(f"{IP1}/24", intf="lb-eth0")
        h2.setIP(f"{IP2}/24", intf="lb-eth1")
        rtt = [measure_rtt(link, h1, d, 0.0, count) for d in DELAYS_MS]
        rtt.append(measure_rtt(link, h1, JITTER_CASE[0], JITTER_CASE[1], count * 2))
        link.set_params(LinkParams(delay_ms=20.0))
        tcp20 = iperf(h1, h2, seconds)
        rates = []
        for r in RATES_MBIT:
            link.set_params(LinkParams(delay_ms=20.0, rate_mbit=r))
            got = iperf(h1, h2, seconds)
            rates.append({"rate_mbit": r, "achieved_mbit": round(got, 2), "ratio": round(got / r, 3),
                          "ok": 0.85 * r <= got <= 1.02 * r})
        return {
            "backend": backend, "quick": quick, "rtt": rtt,
            "max_rtt_error_ms": max(abs(x.get("error_ms", float("inf"))) for x in rtt),
            "tcp_mbit_20ms": round(tcp20, 1), "tcp_ok": tcp20 >= TCP_GOAL_MBIT, "rate_limited": rates,
            "ok": all(x["ok"] for x in rtt) and tcp20 >= TCP_GOAL_MBIT and all(x["ok"] for x in rates),
        }
    finally:
        tear_down((link,), (h1, h2), shaper, netns, tmp)


def tear_down(links: Iterable[Any], hosts: Iterable[Any], shaper: Shaper | None, netns: str, tmp: str,
              pings: Iterable[Any] = ()) -> None:
    """Remove what a measurement set up (``None`` for what it did not get to): the background
    pings, the links, the hosts, the shaper, whatever is left in the shaper's namespace, and the
    temporary directory if nothing else is in it."""
    for p in pings:
        p.terminate()
        p.wait()
    for link in links:
        if link is not None:
            link.delete()
    for h in hosts:
        if h is not None:
            h.terminate()
    if shaper is not None:
        shaper.stop()
    cleanup_leftovers(netns, tmp)
    if os.path.isdir(tmp) and not os.listdir(tmp):
        os.rmdir(tmp)


def _cpu_s(pid: int) -> float:
    """utime + stime of a process in seconds (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _median_rtt(h1: Any, count: int, interval: float) -> tuple[float, int]:
    rtts = ping_rtts(h1, count, interval)
    if len(rtts) < count * 0.9:
        raise RuntimeError(f"only {len(rtts)}/{count} replies")
    return statistics.median(rtts), len(rtts)


def run_hop_cost(quick: bool, tag: str, backend: str = "shaper") -> dict[str, Any]:
    """What one shaped (``backend`` "netem": netem) hop costs: RTT added with zero configured delay (median over a plain veth
    pair's median, interleaved rounds so a change of machine load hits both), the excess of a 1 ms
    hop (median RTT - 2 ms - the plain veth's), and the shaper's CPU per Gbit/s of TCP through it.

    Measured twice: with the shaper otherwise idle, and at the paper topology's traffic: while its
    self-check runs, about 1,700 frames/s cross the shaper (15 sources x 14.3 pings/s, request and
    reply, ~4 shaped hops each way), here replayed by BG_LINKS other shaped 1 ms links carrying
    pings at 200/s each way. The probe pings follow each other at 20 ms. The keys are named for the
    backend (``shaper_hop_rtt_ms`` / ``netem_hop_rtt_ms``; netem's CPU is the kernel's: not measured)."""
    idle = _hop_cost(quick, tag, background=False, backend=backend)
    busy = _hop_cost(quick, tag, background=True, backend=backend)
    return {**busy, "idle": idle, f"{backend}_hop_rtt_idle_ms": idle[f"{backend}_hop_rtt_ms"],
            "ok": busy["ok"] and idle["ok"]}


BG_LINKS = 4
BG_INTERVAL = 0.005


def _hop_cost(quick: bool, tag: str, background: bool, backend: str = "shaper") -> dict[str, Any]:
    from mininet.node import Host

    count, rounds = (50, 3) if quick else (100, 5)
    seconds = 5 if quick else 10
    tmp = tempfile.mkdtemp(prefix="emulab-bench-")
    netns = f"emtest-shaper-hop{tag}"
    shaper = h1 = h2 = h3 = h4 = plain = shaped = None
    bg_hosts: list[Any] = []
    bg_links: list[Any] = []
    bg_pings: list[Any] = []
    try:
        if backend == "shaper":
            shaper = Shaper.start(f"{tmp}/shaper.sock", netns=netns)
        h1, h2, h3, h4 = (Host(f"lh{tag}{x}") for x in "abcd")
        # h1-h2: plain veth (the reference); h3-h4: through the emulation with neutral parameters
        # (dynamic: the shaper hop, or a zero-delay netem qdisc on both ends, stays in place)
        plain = emu_link(h1, h2, "lh-eth0", "lh-eth1", params=LinkParams(), backend=backend, shaper=shaper,
                         link_id="plain", dynamic=False)
        shaped = emu_link(h3, h4, "lh-eth0", "lh-eth1", params=LinkParams(), backend=backend, shaper=shaper,
                          link_id="hop", dynamic=True)
        for h, ip in ((h1, IP1), (h2, IP2), (h3, IP1), (h4, IP2)):
            h.setIP(f"{ip}/24", intf="lh-eth0" if ip == IP1 else "lh-eth1")
        for k in range(BG_LINKS if background else 0):
            a, b = Host(f"lg{tag}{k}a"), Host(f"lg{tag}{k}b")
            bg_hosts += [a, b]
            bg_links.append(emu_link(a, b, "lg-eth0", "lg-eth1", params=LinkParams(delay_ms=1.0), backend=backend,
                                     shaper=shaper, link_id=f"bg{k}"))
            a.setIP(f"{IP1}/24", intf="lg-eth0")
            b.setIP(f"{IP2}/24", intf="lg-eth1")
            bg_pings.append(a.popen(["ping", "-n", "-q", "-i", str(BG_INTERVAL), IP2], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL))
        base, zero, one = [], [], []
        for _ in range(rounds):
            base.append(_median_rtt(h1, count, 0.02)[0])
            shaped.set_params(LinkParams())
            zero.append(_median_rtt(h3, count, 0.02)[0])
            shaped.set_params(LinkParams(delay_ms=1.0))
            one.append(_median_rtt(h3, count, 0.02)[0])
        b = statistics.median(base)
        hop = statistics.median(zero) - b
        hop1 = statistics.median(one) - 2.0 - b
        shaped.set_params(LinkParams())
        for p in bg_pings:
            p.terminate()
            p.wait()
        bg_pings.clear()
        cpu0 = _cpu_s(shaper.pid) if shaper is not None else 0.0
        t0 = time.monotonic()
        mbit = iperf(h3, h4, seconds)
        cpu = (_cpu_s(shaper.pid) - cpu0) / (time.monotonic() - t0) if shaper is not None else None
        return {
            "backend": backend,
            "background_frames_per_s": round(BG_LINKS * 2 * 2 / BG_INTERVAL) if background else 0,
            "plain_veth_rtt_ms": round(b, 4), "rounds": rounds, "pings_per_round": count,
            f"{backend}_hop_rtt_ms": round(hop, 4), f"{backend}_hop_rtt_1ms_delay_ms": round(hop1, 4),
            "rounds_ms": {"plain": base, "zero_delay": zero, "one_ms_delay": one},
            "tcp_mbit": round(mbit, 1), f"{backend}_cpu": None if cpu is None else round(cpu, 3),
            f"{backend}_cpu_per_gbit": round(cpu / (mbit / 1000.0), 3) if cpu is not None and mbit > 0 else None,
            "ok": hop <= HOP_GOAL_MS and hop1 <= HOP_GOAL_MS,
        }
    finally:
        tear_down((plain, shaped, *bg_links), (h1, h2, h3, h4, *bg_hosts), shaper, netns, tmp, bg_pings)


def print_hop_cost(h: dict[str, Any]) -> None:
    b = h["backend"]
    for label, x in (("idle", h["idle"]), (f"{h['background_frames_per_s']} frames/s beside", h)):
        print(f"{b} per-hop cost ({label}; RTT added per emulated hop): zero delay {x[f'{b}_hop_rtt_ms']:+.3f} ms, "
              f"1 ms delay {x[f'{b}_hop_rtt_1ms_delay_ms']:+.3f} ms beyond 2 ms (plain veth "
              f"{x['plain_veth_rtt_ms']:.3f} ms; goal <= {HOP_GOAL_MS} ms) {'yes' if x['ok'] else 'NO'}")
    if h[f"{b}_cpu"] is not None:
        print(f"{b} CPU: {h[f'{b}_cpu']:.2f} s/s at {h['tcp_mbit']:.0f} Mbit/s TCP = "
              f"{h[f'{b}_cpu_per_gbit']} CPU-s/s per Gbit/s")
    else:
        print(f"{b}: {h['tcp_mbit']:.0f} Mbit/s TCP through the hop (its CPU is the kernel's, not measured)")


def run_topology(backend: str, topology: str) -> dict[str, Any]:
    """Every node pair of ``topology`` on ``backend``: measured vs configured RTT."""
    from emulab.capabilities import probe
    from emulab.links import ENV_BACKEND
    from emulab.network import Testbed
    from emulab.selfcheck import check, describe, per_hop_cost_ms
    from emulab.topology import load

    os.environ[ENV_BACKEND] = backend  # the one place that picks the backend honours it
    spec = load(topology)
    testbed = Testbed(spec, probe(), services=False)
    try:
        testbed.start()
        results = check(testbed)
    finally:
        testbed.stop()
        os.environ.pop(ENV_BACKEND, None)
    delayed = [r for r in results if (r.configured_ms or 0) > 0 and r.measured_ms is not None]
    errors = [r.error_ms for r in delayed if r.error_ms is not None]
    worst = max(delayed, key=lambda r: abs(r.error_ms or 0.0), default=None)
    return {
        "topology": topology, "ready_s": round(testbed.ready_s, 2), "pairs": len(results),
        "reachable": sum(r.reachable for r in results), "delayed_paths": len(delayed),
        "within_tolerance": sum(r.within_tolerance for r in delayed),
        "mean_error_ms": round(statistics.fmean(errors), 3) if errors else None,
        "mean_error_vs_configured_ms": round(statistics.fmean(r.measured_ms - (r.configured_ms or 0.0)
                                                              for r in delayed), 3) if delayed else None,
        "shaper_cost_per_hop_ms": per_hop_cost_ms(results),
        "max_abs_error_ms": round(max(abs(e) for e in errors), 3) if errors else None,
        "failed": [f"{describe(r)}; likely cause: {r.cause}" for r in results if r.reachable and not r.within_tolerance],
        "worst": None if worst is None else {"path": f"{worst.src}->{worst.dst}", "expected_ms": round(worst.expected_ms, 3),
                                             "configured_ms": worst.configured_ms,
                                             "measured_ms": worst.measured_ms,
                                             "tolerance_ms": round(worst.tolerance, 3), "cause": worst.cause},
        "ok": bool(delayed) and all(r.reachable for r in results) and all(r.within_tolerance for r in results
                                                                          if r.reachable),
    }


def print_topology(backend: str, t: dict[str, Any]) -> None:
    w = t["worst"] or {}
    print(f"{t['topology']} on {backend}: {t['reachable']}/{t['pairs']} pairs reachable, "
          f"{t['within_tolerance']}/{t['delayed_paths']} delayed paths within tolerance, mean error "
          f"{t['mean_error_ms']:+.2f} ms, worst {w.get('path')} {w.get('measured_ms')} ms vs "
          f"{w.get('expected_ms')} ms expected (±{w.get('tolerance_ms')}) {'yes' if t['ok'] else 'NO'}")
    for line in t["failed"]:
        print(f"  FAIL {line}")


def print_table(res: dict[str, Any]) -> None:
    print(f"\n== backend {res['backend']} ==")
    print(f"{'delay':>7} {'jitter':>6} {'cfg RTT':>8} {'avg':>8} {'median':>8} {'min':>7} {'max':>7} "
          f"{'error':>7} {'tol':>5}  ok")
    for r in res["rtt"]:
        if "avg_ms" not in r:
            print(f"{r['delay_ms']:>7} {r['jitter_ms']:>6}  {r.get('error')}")
            continue
        print(f"{r['delay_ms']:>7.1f} {r['jitter_ms']:>6.1f} {r['configured_rtt_ms']:>8.1f} {r['avg_ms']:>8.2f} "
              f"{r['median_ms']:>8.2f} {r['min_ms']:>7.2f} {r['max_ms']:>7.2f} {r['error_ms']:>+7.2f} "
              f"{r['tolerance_ms']:>5.1f}  {'yes' if r['ok'] else 'NO'}")
    print(f"TCP through 20 ms (unlimited): {res['tcp_mbit_20ms']:.1f} Mbit/s "
          f"(goal >= {TCP_GOAL_MBIT:.0f}) {'yes' if res['tcp_ok'] else 'NO'}")
    for r in res["rate_limited"]:
        print(f"TCP through 20 ms, rate {r['rate_mbit']:.0f} Mbit/s: {r['achieved_mbit']:.2f} Mbit/s "
              f"({100 * r['ratio']:.1f} %) {'yes' if r['ok'] else 'NO'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer pings, shorter iperf3 runs")
    ap.add_argument("--backend", choices=["netem", "shaper"], help="only this backend")
    ap.add_argument("--topology", default="paper-topology",
                    help="topology whose every path is measured too (none: skip)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/links.py needs root (network namespaces)", file=sys.stderr)
        return 2
    from emulab import control

    if args.topology != "none" and control.read_state() is not None:
        print("benchmarks/links.py: a testbed is running (`emulab stop` it, or --topology none)", file=sys.stderr)
        return 2
    netem = probe_netem()
    backends, skipped = [], {}
    for b in ("netem", "shaper"):
        if args.backend and b != args.backend:
            skipped[b] = "not selected"
        elif b == "netem" and not netem:
            skipped[b] = "kernel has no sch_netem"
        else:
            backends.append(b)
    for b, why in skipped.items():
        print(f"skipping backend {b}: {why}")
    results = []
    tag = str(os.getpid() % 100000)
    for b in backends:
        res = run_backend(b, args.quick, tag)
        print_table(res)
        hop = run_hop_cost(args.quick, tag, b)
        print_hop_cost(hop)
        res["hop_cost"] = hop
        res[f"{b}_hop_rtt_ms"] = hop[f"{b}_hop_rtt_ms"]
        res["ok"] = res["ok"] and hop["ok"]
        if args.topology != "none":
            res["topology"] = run_topology(b, args.topology)
            print_topology(b, res["topology"])
            res["ok"] = res["ok"] and res["topology"]["ok"]
        results.append(res)
    ok = bool(results) and all(r["ok"] for r in results)
    hop_rtt = {b: next((r[f"{b}_hop_rtt_ms"] for r in results if f"{b}_hop_rtt_ms" in r), None) for b in BACKENDS}
    print(json.dumps({"benchmark": "links", "quick": args.quick, "shaper_hop_rtt_ms": hop_rtt["shaper"],
                      "netem_hop_rtt_ms": hop_rtt["netem"],
                      "backends": {r["backend"]: r for r in results}, "skipped": skipped, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

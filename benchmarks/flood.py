"""Benchmark: floods against a registrar (RFC 5355 threats), countermeasures off and on.

For each case the registrar (emulab's, started here on 127.0.0.1, pinned to one core) serves a
legitimate pool element and four legitimate pool users (each resolving its pool every 20 ms over
its own association) while an attacker process floods it:

* ``registration``: Registrations of fake PEs (a new identifier each, pool "FloodPool").
* ``resolution``: Handle Resolutions for the legitimate pool.
* ``unreachable``: Endpoint Unreachable reports naming the legitimate PE (RSPLIB removes a PE after
  ``max_bad_pe_reports`` of them).
* ``enrp``: ENRP from a registrar nobody knows (Presences, Handle Updates adding fake PEs to
  "FloodPool", Handle Table Requests) to the ENRP port.

The flood rate is ``--factor`` (10) times the registrar's capacity, measured first in the same run
(closed-loop Handle Resolutions of benchmarks/registrar.py: its PE farm and client), the highest of
``--capacity-runs`` (3) measurements: on a shared machine other load only lowers a measurement, and
a low one would make the flood weaker than its factor says. The attacker
opens ``--attack-connections`` associations and reconnects when the registrar closes one; what it
could not hand to the kernel (full socket buffers) is counted as ``backlogged``, not as sent.

Modes: ``off`` is RSPLIB's behaviour (no rate limits, ``max_bad_pe_reports`` 3, no aborts:
``--max-bad-messages 0``); ``on`` adds ``--max-hr-rate``, ``--max-eu-rate``, ``--max-reg-rate``,
``--max-bad-messages``, ``--audit-unreachable`` and ``--enrp-peers-only`` with the values given here (the registrar's own
options of the same names; RSPLIB names the first two ``-maxhrrate`` / ``-maxeurate``).

Per case and mode: the legitimate users' resolution p50/p99 and success rate (an answer within 1 s
that names the legitimate PE), the registrar's CPU (% of one core) and RSS (start, peak, end),
whether the legitimate PE was wrongly removed (a fresh resolution after the flood misses it), and
the flood actually sent. Goal (``goal_met``): with countermeasures on, p99 < 10 ms and success 100 %
in every case while the flood ran at >= 10x capacity (1 % pacing tolerance), and no wrongly removed PE. The machine may be
shared (the JSON has ``loadavg_1m`` at start and end): the latency tails include its scheduling
delays. Last line: JSON.

Usage: python benchmarks/flood.py [--quick] [--cases a,b] [--duration S] [--factor F]
       [--max-hr-rate R] [--max-eu-rate R] [--max-reg-rate R] [--max-bad-messages N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import registrar as regbench  # benchmarks/registrar.py: run_load (farm + clients against one registrar)
import registrar_load as regload  # its PE farm, clients and process helpers
from _common import load_1m

from rserpool import attack
from rserpool.wire import (
    EndpointUnreachable,
    HandleResolution,
    HandleTableRequest,
    HandleUpdate,
    Presence,
    Registration,
)

CASES = ("registration", "resolution", "unreachable", "enrp")
LEGIT_POOL = b"LegitPool"
LEGIT_PE = 0x600D
USERS = 4
USER_INTERVAL = 0.02
HOST = "127.0.0.1"


# ------------------------------------------------------------------------------------ attacker


def flood_messages(case: str, rnd: random.Random, n: int = 4096) -> list[bytes]:
    """The messages of one flood case (cycled through by the attacker)."""
    if case == "registration":
        return [Registration(pool_handle=b"FloodPool", pool_element=attack.element(rnd.randrange(1, 1 << 32),
                                                                                   20000 + i % 40000)).encode()
                for i in range(n)]
    if case == "resolution":
        return [HandleResolution(pool_handle=LEGIT_POOL).encode()]
    if case == "unreachable":
        return [EndpointUnreachable(pool_handle=LEGIT_POOL, identifier=LEGIT_PE).encode()]
    if case == "enrp":
        sender = 0x0BADBAD0
        out = [Presence(sender_id=sender, checksum=0).encode(), HandleTableRequest(sender_id=sender).encode()]
        out += [HandleUpdate(sender_id=sender, pool_handle=b"FloodPool",
                             pool_element=attack.element(rnd.randrange(1, 1 << 32))).encode() for _ in range(n)]
        return out
    raise ValueError(case)


class _Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


async def attacker_main(args: argparse.Namespace) -> None:
    """Send ``args.rate`` messages/s of ``args.case`` for ``args.duration`` s over ``args.connections``."""
    attack.require_loopback(HOST)
    loop = asyncio.get_running_loop()
    msgs = flood_messages(args.case, random.Random(args.seed))
    blob = b"".join(msgs)
    offsets = [0]
    for m in msgs:
        offsets.append(offsets[-1] + len(m))
    conns: list[_Sink | None] = [None] * args.connections
    sent = backlogged = opened = closed_by_registrar = 0
    pos = 0
    t0 = time.perf_counter()
    end = t0 + min(args.duration, attack.MAX_DURATION)
    tick = 0.005
    while (now := time.perf_counter()) < end:
        due = int((now - t0) * args.rate) - sent - backlogged
        per = max(1, due // args.connections) if due > 0 else 0
        for i in range(args.connections):
            if due <= 0:
                break
            c = conns[i]
            if c is None or c.lost:
                if c is not None:
                    closed_by_registrar += 1
                conns[i] = None
                try:
                    _, proto = await loop.create_connection(_Sink, HOST, args.port)
                except OSError:
                    continue
                conns[i] = c = proto
                opened += 1
            n = min(per, due)
            assert c.transport is not None
            if c.transport.get_write_buffer_size() > 1 << 20:  # the registrar does not read it
                backlogged += n
                due -= n
                continue
            if len(msgs) == 1:
                c.transport.write(msgs[0] * n)
            else:  # n messages from the ring of distinct ones
                chunks, k = [], n
                while k:
                    take = min(k, len(msgs) - pos)
                    chunks.append(blob[offsets[pos]:offsets[pos + take]])
                    pos = (pos + take) % len(msgs)
                    k -= take
                c.transport.write(b"".join(chunks))
            sent += n
            due -= n
        await asyncio.sleep(tick)
    elapsed = time.perf_counter() - t0
    for c in conns:
        if c is not None and c.transport is not None:
            c.transport.abort()
    print(json.dumps({"sent": sent, "backlogged": backlogged, "elapsed": elapsed, "connections_opened": opened,
                      "closed_by_registrar": closed_by_registrar}), flush=True)


# ------------------------------------------------------------------------------------ driver


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def registrar_options(mode: str, args: argparse.Namespace) -> list[str]:
    if mode == "off":
        return ["--max-bad-messages", "0"]
    return ["--max-hr-rate", str(args.max_hr_rate), "--max-eu-rate", str(args.max_eu_rate),
            "--max-reg-rate", str(args.max_reg_rate), "--max-bad-messages", str(args.max_bad_messages),
            "--audit-unreachable", "--enrp-peers-only"]


def measure_capacity(args: argparse.Namespace, procs: regload.Procs) -> list[float]:
    """Closed-loop Handle Resolutions/s of a fresh registrar (benchmarks/registrar.py's farm + client),
    ``args.capacity_runs`` times."""
    return [_capacity_once(args, procs) for _ in range(max(1, args.capacity_runs))]


def _capacity_once(args: argparse.Namespace, procs: regload.Procs) -> float:
    port = regload.free_port()
    reg = procs.spawn(regload.registrar_cmd("emulab", HOST, port, None, "tcp", "auto"), procs.reg_cpus)
    regload.wait_listening(HOST, port, "tcp", reg)
    ns = argparse.Namespace(transport="tcp", policy="RR", pool="BenchPool", pe_host=None, pes=10, load_updates=0.0,
                            clients=1, connections=4, depth=2, rate=0.0)
    res = regbench.run_load(ns, procs, f"{HOST}:{port}", reg.pid, args.capacity_duration)
    procs.stop(reg)
    if not res["valid"]:
        raise SystemExit(f"capacity measurement invalid: {res}")
    return float(res["resolutions_per_s"])


async def legit_run(port: int, duration: float, reg_pid: int, attacker: subprocess.Popen[bytes],
                    ) -> dict[str, Any]:
    pe = attack.LegitElement(HOST, port, LEGIT_POOL, LEGIT_PE)
    await pe.start()
    users = [attack.LegitUser(HOST, port, LEGIT_POOL, {LEGIT_PE}, interval=USER_INTERVAL) for _ in range(USERS)]
    rss0 = peak = rss_kb(reg_pid)
    cpu0, t0 = regload.cpu_seconds(reg_pid), time.monotonic()
    tasks = [asyncio.ensure_future(u.run(duration)) for u in users]
    while not all(t.done() for t in tasks):
        peak = max(peak, rss_kb(reg_pid))
        await asyncio.sleep(0.1)
    cpu = (regload.cpu_seconds(reg_pid) - cpu0) / (time.monotonic() - t0)
    rss1 = rss_kb(reg_pid)
    # wait for the attacker to end, then ask afresh: is the legitimate PE still there?
    while attacker.poll() is None:
        await asyncio.sleep(0.05)
    removed = await still_missing(port)
    await pe.stop()
    lat = [x for u in users for x in u.latencies]
    attempts = sum(u.attempts for u in users)
    failures: dict[str, int] = {}
    for u in users:
        for k, v in u.failures.items():
            failures[k] = failures.get(k, 0) + v
    p50, p99 = attack.percentile(lat, 0.5), attack.percentile(lat, 0.99)
    return {"resolutions": len(lat), "attempts": attempts, "failures": failures,
            "success_pct": round(100.0 * len(lat) / attempts, 3) if attempts else 0.0,
            "p50_ms": round(p50 * 1000, 3) if p50 is not None else None,
            "p99_ms": round(p99 * 1000, 3) if p99 is not None else None,
            "cpu_pct": round(cpu * 100, 1), "rss_mb": [round(rss0 / 1024, 1), round(peak / 1024, 1),
                                                       round(rss1 / 1024, 1)],
            "wrongly_removed": removed}


async def still_missing(port: int, patience: float = 30.0) -> bool | None:
    """Whether the legitimate PE is missing from a fresh resolution once the registrar answers again
    (it may still be working off the flood's backlog); None if it did not answer within ``patience``."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        check = attack.LegitUser(HOST, port, LEGIT_POOL, {LEGIT_PE}, interval=0.0, timeout=2.0)
        await check.run(0.01)  # one resolution
        if check.latencies:
            return False
        if check.failures.get("error answer") or check.failures.get("element missing"):
            return True
    return None


def one_case(args: argparse.Namespace, procs: regload.Procs, case: str, mode: str, rate: float) -> dict[str, Any]:
    port, eport = regload.free_port(), regload.free_port()
    cmd = regload.registrar_cmd("emulab", HOST, port, eport if case == "enrp" else None, "tcp", "auto")
    reg = procs.spawn(cmd + registrar_options(mode, args), procs.reg_cpus)
    try:
        regload.wait_listening(HOST, port, "tcp", reg)
        target = eport if case == "enrp" else port
        atk = procs.spawn([sys.executable, str(Path(__file__).resolve()), "--role", "attacker", "--case", case,
                           "--port", str(target), "--rate", str(rate), "--duration", str(args.duration),
                           "--connections", str(args.attack_connections), "--seed", str(args.seed)],
                          procs.client_cpus, subprocess.PIPE)
        legit = asyncio.run(legit_run(port, args.duration, reg.pid, atk))
        out = procs.stop(atk).decode().strip().splitlines()
        flood = json.loads(out[-1]) if out else {}
        alive = reg.poll() is None
    finally:
        procs.stop(reg)
    sent_rate = flood.get("sent", 0) / flood["elapsed"] if flood.get("elapsed") else 0.0
    return {"case": case, "mode": mode, **legit, "flood_sent_per_s": round(sent_rate),
            "flood_backlogged": flood.get("backlogged"), "flood_connections": flood.get("connections_opened"),
            "flood_closed_by_registrar": flood.get("closed_by_registrar"), "registrar_alive": alive}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs (3 s per case and mode)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {', '.join(CASES)}")
    ap.add_argument("--duration", type=float, default=None, help="flood seconds per case and mode (default 10)")
    ap.add_argument("--capacity-duration", type=float, default=None)
    ap.add_argument("--capacity-runs", type=int, default=3, help="capacity measurements (the highest counts)")
    ap.add_argument("--factor", type=float, default=10.0, help="flood rate / measured capacity")
    ap.add_argument("--attack-connections", type=int, default=8)
    ap.add_argument("--max-hr-rate", type=float, default=100.0, help="'on': handle resolutions/s per PU and pool")
    ap.add_argument("--max-eu-rate", type=float, default=1.0, help="'on': unreachable reports/s per PU and pool")
    ap.add_argument("--max-reg-rate", type=float, default=10.0, help="'on': registrations/s per association")
    ap.add_argument("--max-bad-messages", type=int, default=16, help="'on': refusals before an abort")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--role", choices=["driver", "attacker"], default="driver", help=argparse.SUPPRESS)
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--connections", type=int, default=8, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.capacity_duration = args.capacity_duration or (2.0 if args.quick else 5.0)
    if args.role == "attacker":
        asyncio.run(attacker_main(args))
        return
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"unknown case {c!r} (cases: {', '.join(CASES)})")
    procs = regload.Procs(dict(os.environ, PYTHONPATH=str(regload.ROOT)))
    rows: list[dict[str, Any]] = []
    # The legitimate PE and PUs (this process) share the registrar's core, not the attacker's: they
    # sleep between requests, so the scheduler wakes them promptly unless the registrar itself lags.
    os.sched_setaffinity(0, procs.reg_cpus)
    load0 = load_1m()
    try:
        capacities = measure_capacity(args, procs)
        capacity = max(capacities)
        rate = capacity * args.factor
        print(f"registrar capacity {capacity:,.0f} handle resolutions/s (best of "
              f"{', '.join(f'{c:,.0f}' for c in capacities)}); flood rate {rate:,.0f} messages/s")
        for case in cases:
            for mode in ("off", "on"):
                rows.append(one_case(args, procs, case, mode, rate))
    finally:
        procs.close()
    print(f"{'case':<13}{'mode':<5}{'p50 ms':>8}{'p99 ms':>9}{'ok %':>8}{'CPU %':>7}{'RSS MB peak':>12}"
          f"{'removed':>9}{'flood/s':>10}{'x cap':>7}")
    for r in rows:
        print(f"{r['case']:<13}{r['mode']:<5}{r['p50_ms'] if r['p50_ms'] is not None else '-':>8}"
              f"{r['p99_ms'] if r['p99_ms'] is not None else '-':>9}{r['success_pct']:>8}{r['cpu_pct']:>7}"
              f"{r['rss_mb'][1]:>12}{str(r['wrongly_removed']):>9}{r['flood_sent_per_s']:>10}"
              f"{r['flood_sent_per_s'] / capacity:>7.1f}")
    on = [r for r in rows if r["mode"] == "on"]
    goal = bool(on) and all(r["p99_ms"] is not None and r["p99_ms"] < 10.0 and r["success_pct"] == 100.0
                            and r["wrongly_removed"] is False and r["registrar_alive"]
                            and r["flood_sent_per_s"] >= 0.99 * 10 * capacity for r in on)
    res = {"capacity_resolutions_per_s": capacity, "capacity_runs": [round(c) for c in capacities],
           "factor": args.factor, "flood_rate_per_s": round(rate),
           "duration_s": args.duration, "users": USERS, "user_interval_s": USER_INTERVAL,
           "countermeasures_on": {"max_hr_rate": args.max_hr_rate, "max_eu_rate": args.max_eu_rate,
                                  "max_reg_rate": args.max_reg_rate, "max_bad_messages": args.max_bad_messages,
                                  "audit_unreachable": True},
           "cases": rows, "goal_met": goal, "loadavg_1m": [load0, load_1m()],
           "valid": all(r["registrar_alive"] and r["resolutions"] > 0 for r in rows)}
    print(json.dumps(res))
    sys.exit(0 if res["valid"] else 1)


if __name__ == "__main__":
    main()

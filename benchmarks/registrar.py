"""Benchmark: handle resolutions per second and latency of a registrar, emulab's or any other.

Set-up (like RSPLIB's ``testregistrator`` + ``hrestest``): a registrar process pinned to one core,
1,000 PEs registered in one pool by a "PE farm" process (which also answers the endpoint
keep-alives, so nothing expires), and client processes that drive ASAP Handle Resolutions over
persistent connections (TCP or SCTP), each keeping ``--depth`` requests in flight. Latency is
measured per request (send to response, FIFO per connection). The last line printed is one JSON
object with ``resolutions_per_s``, ``p50_ms``, ``p99_ms`` and ``valid``.

What counts: every reply is decoded (its parameters walked; every 64th one also through the full
codec, ``rserpool.wire.decode_asap``). Only Handle Resolution Responses that carry at least one
pool element count as resolutions; answers with an Operation Error (unknown pool, rate refusal,
...) or without elements, and any other message, are counted under ``errors`` and make the run
invalid (``"valid": false``, exit status 1), as does a registration the registrar refused.

Policies: ``--policy NAME`` (RSPLIB's short names: RR, RAND, LU, LUD, PLU, PLUD, RLU, RPLU, ...).
For the load-ordered ones the farm gives every PE a load (and PLU/PLUD a load increment) and keeps
re-registering PEs with changed loads (``--load-updates`` per second, 200 by default, a load report
per PE every 5 s), so the handlespace changes under the resolutions and no reply can be reused.

Registrars:

* default: emulab's registrar is started here (``--transport tcp`` or ``sctp``, SCTP where the
  kernel has it).
* ``--registrar HOST:PORT``: drive a registrar that is already running there (any
  implementation); the farm registers the pool ``--pool`` at it first.
* ``--vs-rsplib``: start RSPLIB's ``rspregistrar`` (SCTP only: it has no TCP mode) and emulab's
  registrar one after the other, several rounds alternating (``--rounds``), same pool, farm and
  client, and report emulab/RSPLIB ratios: ``ratio_throughput`` (resolutions/s, >= 1 is emulab
  faster), ``ratio_p99`` (<= 1 is emulab no worse), ``ratio_registration`` (PE registrations
  handled per second while the farm registers its 1,000 PEs, >= 1 better) and
  ``ratio_enrp_propagation`` (median time from a registration at one registrar until a Handle
  Resolution at a second registrar of the same kind, its ENRP peer, finds the PE; <= 1 better)
  and ``ratio_cpu_per_resolution`` (the registrar process's CPU time per answer, <= 1 better; it
  compares the registrars also where the one client process limits the rate).
  As root with ``ip`` at hand it runs inside its own network namespace with a dummy interface
  (RSPLIB's defaults want a site-local address); otherwise on 127.0.0.1 with
  ``-minaddressscope=loopback``.

Modes of load: closed loop (default; every connection keeps ``--depth`` requests in flight, the
registrar runs flat out) or ``--rate R`` (open loop, R requests/s in all, sent every millisecond
whatever the answers do). The machine may be shared: the JSON also has
``registrar_cpu_us_per_resolution`` (the registrar's user+system CPU time from /proc over the run,
divided by all answers; it includes the farm's keep-alive and load-update traffic) and
``loadavg_1m`` at start and end.

Usage: python benchmarks/registrar.py [--quick] [--transport tcp|sctp] [--policy NAME]
       [--registrar HOST:PORT] [--vs-rsplib [--rounds N]] [--clients N] [--connections C]
       [--depth D] [--rate R] [--load-updates U]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import load_1m
from registrar_load import (
    NETNS_ADDR,
    POLICIES,
    POOL,
    ROOT,
    Procs,
    client_main,
    cpu_seconds,
    enrp_propagation,
    farm_main,
    free_port,
    pct,
    registrar_cmd,
    wait_listening,
)

from rserpool import transport as tp
from rserpool.policytypes import ADAPTIVE_POLICIES


def run_load(args: argparse.Namespace, procs: Procs, target: str, reg_pid: int | None,
             duration: float) -> dict[str, Any]:
    """Farm + clients against the registrar at ``target``; the measurement of one run."""
    me = [sys.executable, str(Path(__file__).resolve()), "--registrar", target, "--transport", args.transport,
          "--policy", args.policy, "--pool", args.pool]
    if args.pe_host:
        me += ["--pe-host", args.pe_host]
    farm = procs.spawn(me + ["--role", "farm", "--pes", str(args.pes), "--load-updates", str(args.load_updates)],
                       procs.client_cpus, subprocess.PIPE)
    assert farm.stdout is not None
    line = farm.stdout.readline()
    if not line:
        err = procs.stop(farm) + (farm.stderr.read() if farm.stderr else b"")
        raise SystemExit(f"PE farm failed: {err.decode(errors='replace')[-2000:]}")
    reg = json.loads(line)
    cpu0 = cpu_seconds(reg_pid) if reg_pid else 0.0
    load0 = load_1m()
    clients = [procs.spawn(me + ["--role", "client", "--connections", str(args.connections), "--depth",
                                 str(args.depth), "--duration", str(duration), "--rate",
                                 str(args.rate / args.clients)], procs.client_cpus, subprocess.PIPE)
               for _ in range(args.clients)]
    ok, answered, elapsed, checked = 0, 0, 0.0, 0
    errors: collections.Counter[str] = collections.Counter()
    lat: list[float] = []
    for c in clients:
        out, err = c.communicate(timeout=duration + 60)
        if c.returncode != 0:
            raise SystemExit(f"client failed ({c.returncode}): {err.decode(errors='replace')[-2000:]}")
        r = json.loads(out.decode().strip().splitlines()[-1])
        ok += r["ok"]
        answered += r["answered"]
        checked += r["checked"]
        errors.update(r["errors"])
        elapsed = max(elapsed, r["elapsed"])
        lat += r["lat"]
    cpu = (cpu_seconds(reg_pid) - cpu0) if reg_pid else float("nan")
    fout = procs.stop(farm).decode().strip().splitlines()
    fstats = json.loads(fout[-1]) if fout else {}
    if reg["rejected"] or fstats.get("rejected", 0):
        errors["registration rejected"] += reg["rejected"] + fstats.get("rejected", 0)
    rate = ok / elapsed if elapsed else 0.0
    return {"resolutions_per_s": round(rate, 1), "p50_ms": round(pct(lat, 0.50) * 1000, 4),
            "p99_ms": round(pct(lat, 0.99) * 1000, 4), "resolutions": ok, "errors": dict(errors),
            "full_decodes_checked": checked,
            "valid": ok > 0 and not errors and reg["registered"] == args.pes,
            "registration_s": round(reg["registration_s"], 4),
            "registrations_per_s": round(args.pes / reg["registration_s"], 1),
            "load_updates": fstats.get("updates"), "keepalives_acked": fstats.get("keepalives"),
            "registrar_cpu_us_per_resolution": round(cpu / answered * 1e6, 2) if answered and reg_pid else None,
            "loadavg_1m": [load0, load_1m()]}


def single(args: argparse.Namespace, duration: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = Procs(env)
    try:
        if args.registrar:
            return {"registrar": args.registrar, **run_load(args, procs, args.registrar, None, duration)}
        host = "127.0.0.1"
        port = free_port()
        reg = procs.spawn(registrar_cmd("emulab", host, port, None, args.transport, args.event_loop),
                          procs.reg_cpus)
        wait_listening(host, port, args.transport, reg)
        return {"registrar": "emulab (started here)", "registrar_cpu": procs.reg_cpus[0],
                **run_load(args, procs, f"{host}:{port}", reg.pid, duration)}
    finally:
        procs.close()


def one_kind(args: argparse.Namespace, impl: str, host: str, duration: float, samples: int) -> dict[str, Any]:
    """One round for one implementation: registrar alone, farm, clients; then its ENRP peer."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = Procs(env)
    try:
        port, eport = free_port(), free_port()
        reg = procs.spawn(registrar_cmd(impl, host, port, eport, args.transport, args.event_loop), procs.reg_cpus)
        wait_listening(host, port, args.transport, reg)
        res = run_load(args, procs, f"{host}:{port}", reg.pid, duration)
        if samples:
            port2, eport2 = free_port(), free_port()
            reg2 = procs.spawn(registrar_cmd(impl, host, port2, eport2, args.transport, args.event_loop,
                                             peer=eport), procs.client_cpus)
            wait_listening(host, port2, args.transport, reg2)
            prop = asyncio.run(enrp_propagation((host, port), (host, port2), args.transport, host, samples,
                                                first_timeout=120))
            res["enrp_propagation_ms"] = [round(x * 1000, 3) for x in prop]
        return res
    finally:
        procs.close()


def in_own_netns(argv: list[str]) -> int | None:
    """As root: re-run this command in a fresh network namespace (loopback + a dummy interface
    with a site-local address, which RSPLIB's registrar accepts for PEs by default); returns its
    exit status, or None where that is not possible (then the run stays on 127.0.0.1)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return None
    ns = f"regbench{os.getpid()}"
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    except (subprocess.SubprocessError, OSError):
        return None
    try:
        for cmd in (["link", "set", "lo", "up"], ["link", "add", "d0", "type", "dummy"],
                    ["addr", "add", f"{NETNS_ADDR}/24", "dev", "d0"], ["link", "set", "d0", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True, timeout=30)
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, *argv, "--in-netns"]).returncode
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)


def vs_rsplib(args: argparse.Namespace, duration: float) -> dict[str, Any]:
    if args.anchor == "rsplib" and shutil.which("rspregistrar") is None:
        raise SystemExit("rspregistrar not found (apt-get install rsplib-registrar)")
    if args.anchor == "rsplib" and args.transport != "sctp":
        raise SystemExit("RSPLIB's registrar speaks ASAP over SCTP only: use --transport sctp")
    host = NETNS_ADDR if args.in_netns else "127.0.0.1"
    args.pe_host = host
    a_key = "rsplib" if args.anchor == "rsplib" else "emulab_b"
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        # alternate who goes first, so a drift of the machine's load favours neither
        order = [("emulab", "emulab"), (a_key, args.anchor)]
        row: dict[str, Any] = {"round": r + 1}
        for key, impl in order if r % 2 == 0 else order[::-1]:
            row[key] = one_kind(args, impl, host, duration, args.enrp_samples)
            print(f"round {r + 1} {key}: {row[key]['resolutions_per_s']:,.0f}/s p99 {row[key]['p99_ms']:.3f} ms "
                  f"registration {row[key]['registration_s']:.3f} s ENRP {row[key].get('enrp_propagation_ms')} ms "
                  f"valid={row[key]['valid']} errors={row[key]['errors']}", flush=True)
        rounds.append(row)

    def med(impl: str, field: str) -> float:
        vals = [x[impl][field] for x in rounds]
        return statistics.median(vals)

    def med_enrp(impl: str) -> float | None:
        vals = [v for x in rounds for v in x[impl].get("enrp_propagation_ms", [])]
        return statistics.median(vals) if vals else None

    out: dict[str, Any] = {"mode": "vs-rsplib", "anchor": args.anchor, "rounds": rounds}
    for impl in ("emulab", a_key):
        out[impl] = {"resolutions_per_s": med(impl, "resolutions_per_s"), "p99_ms": med(impl, "p99_ms"),
                     "p50_ms": med(impl, "p50_ms"), "registrations_per_s": med(impl, "registrations_per_s"),
                     "enrp_propagation_ms": med_enrp(impl),
                     "registrar_cpu_us_per_resolution": med(impl, "registrar_cpu_us_per_resolution")}
    e, a = out["emulab"], out[a_key]
    out["ratio_throughput"] = round(e["resolutions_per_s"] / a["resolutions_per_s"], 3) if a["resolutions_per_s"] else None
    out["ratio_p99"] = round(e["p99_ms"] / a["p99_ms"], 3) if a["p99_ms"] else None
    out["ratio_registration"] = (round(e["registrations_per_s"] / a["registrations_per_s"], 3)
                                 if a["registrations_per_s"] else None)
    out["ratio_enrp_propagation"] = (round(e["enrp_propagation_ms"] / a["enrp_propagation_ms"], 3)
                                     if e["enrp_propagation_ms"] and a["enrp_propagation_ms"] else None)
    # the registrars' own CPU time per answer: what each costs, also where the client limits the rate
    out["ratio_cpu_per_resolution"] = (round(e["registrar_cpu_us_per_resolution"] / a["registrar_cpu_us_per_resolution"], 3)
                                       if a["registrar_cpu_us_per_resolution"] else None)
    out["valid"] = all(x[k]["valid"] for x in rounds for k in ("emulab", a_key))
    return out


# ------------------------------------------------------------------------------------ driver


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (3 s per measurement, 2 rounds)")
    ap.add_argument("--registrar", default=None, metavar="HOST:PORT", help="drive the registrar there")
    ap.add_argument("--transport", choices=["tcp", "sctp"], default="tcp")
    ap.add_argument("--policy", choices=sorted(POLICIES), default="RR", metavar="NAME",
                    help=f"pool policy of the farm's PEs: {', '.join(sorted(POLICIES))} (default RR)")
    ap.add_argument("--load-updates", type=float, default=None,
                    help="re-registrations with a changed load per second (default: 200 for load-ordered "
                         "policies, 0 otherwise)")
    ap.add_argument("--pool", default=POOL)
    ap.add_argument("--pes", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=1, help="client processes")
    ap.add_argument("--connections", type=int, default=4, help="connections per client")
    ap.add_argument("--depth", type=int, default=2, help="requests in flight per connection (closed loop)")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="open loop: requests per second over all clients (0: closed loop)")
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--event-loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                    help="emulab registrar's event loop (auto: uvloop if installed)")
    ap.add_argument("--vs-rsplib", action="store_true", help="emulab's registrar against RSPLIB's rspregistrar")
    ap.add_argument("--rounds", type=int, default=None, help="--vs-rsplib rounds (default 4, --quick 2)")
    ap.add_argument("--enrp-samples", type=int, default=None, help="--vs-rsplib ENRP propagation samples per round")
    ap.add_argument("--anchor", choices=["rsplib", "emulab"], default="rsplib",
                    help="--vs-rsplib: the other registrar (emulab: check the procedure against itself)")
    ap.add_argument("--role", choices=["driver", "farm", "client"], default="driver", help=argparse.SUPPRESS)
    ap.add_argument("--pe-host", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    duration = args.duration or (3.0 if args.quick else 10.0)
    if args.load_updates is None:
        args.load_updates = 200.0 if POLICIES[args.policy] in ADAPTIVE_POLICIES else 0.0
    if args.transport == "sctp" and not tp.sctp_available():
        raise SystemExit("--transport sctp: this kernel has no SCTP sockets (the real-kernel lane has)")

    if args.role == "farm":
        asyncio.run(farm_main(args))
        return
    if args.role == "client":
        asyncio.run(client_main(args, 1.0, duration))
        return

    if args.vs_rsplib:
        if not args.in_netns and args.anchor == "rsplib":
            rc = in_own_netns(sys.argv)
            if rc is not None:
                sys.exit(rc)
        args.rounds = args.rounds or (2 if args.quick else 4)
        args.enrp_samples = 5 if args.enrp_samples is None else args.enrp_samples
        res = vs_rsplib(args, duration)
        res.update(policy=args.policy, transport=args.transport, pes=args.pes, duration_s=duration,
                   load_updates_per_s=args.load_updates, connections=args.connections, depth=args.depth)
        print(f"emulab/{res['anchor']}: throughput x{res['ratio_throughput']}, p99 x{res['ratio_p99']}, "
              f"registration x{res['ratio_registration']}, ENRP propagation x{res['ratio_enrp_propagation']}; "
              f"valid={res['valid']}")
        print(json.dumps(res))
        sys.exit(0 if res["valid"] else 1)

    res = single(args, duration)
    res.update(policy=args.policy, transport=args.transport, mode="open" if args.rate else "closed",
               offered_per_s=args.rate or None, pes=args.pes, clients=args.clients,
               connections=args.connections, depth=args.depth, duration_s=duration,
               load_updates_per_s=args.load_updates, event_loop=args.event_loop)
    print(f"{args.policy} over {args.transport}: {res['resolutions']} resolutions = "
          f"{res['resolutions_per_s']:,.0f}/s; p50 {res['p50_ms']:.3f} ms, p99 {res['p99_ms']:.3f} ms; "
          f"errors {res['errors'] or 'none'}; registrar CPU {res['registrar_cpu_us_per_resolution']} us/resolution; "
          f"valid={res['valid']}")
    print(json.dumps(res))
    sys.exit(0 if res["valid"] else 1)


if __name__ == "__main__":
    main()

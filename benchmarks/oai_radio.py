"""Benchmark: OpenAirInterface's radio (RF simulator) at 25 and 50 PRB beside the emulated LTE model.

For each cell bandwidth (5 MHz = 25 PRB, 10 MHz = 50 PRB) it starts TOPOLOGY (paper-topology, no
services) with ``--radio oai`` and that bandwidth, then measures over OAI's tunnel (UE
``oaitun_ue1`` ↔ eNB ``oaitun_enb1``: the radio alone, no emulated hop):

* RTT: ``ping -i 0.1`` × COUNT (median, p10, p90, mean) and jitter (standard deviation, and the
  mean difference of consecutive RTTs, RFC 3550's view);
* TCP throughput, uplink and downlink (``iperf3 -t SECONDS``, one stream);
* UDP throughput, both ways, in 1400-byte datagrams: received rate and loss at an offered rate above
  the cell's (20 Mbit/s at 25 PRB, 40 at 50; ``--udp-mbit`` sets them): what the radio carries; then
  at half of that: the loss of a flow the radio can take. Each iperf3 run has a server of its own,
  waited for (see ``iperf``): one shared server, still ending the last test, reset the control
  connection of the next (the uplink UDP run, after the TCP download);
* CPU of each softmodem (% of one core, from /proc utime+stime of the process and OAI's forked
  helper): attached and idle for 10 s, and over the measurements (loaded); RSS; the load average
  before and after.

Beside them, what the emulated backend's model (radio.lte, defaults, the paper topology's 500 m)
gives for the same bandwidth: one-way delay (base + HARQ), jitter and rate. The last line is JSON.

    .venv/bin/python benchmarks/oai_radio.py [--quick] [--topology paper-topology]

Needs root, an OAI build (`make oai`) and no other testbed running; it builds and tears down its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import loadavg

from emulab import paths
from emulab.topology import load

REPO = Path(__file__).resolve().parents[1]
EMULAB = [sys.executable, "-m", "emulab"]
ENB_TUN_ADDR = "10.0.1.1"  # OAI --noS1: oaitun_enb1 10.0.1.1, oaitun_ue1 10.0.1.2
SOFTMODEMS = ("lte-softmodem", "lte-uesoftmodem")
IDLE_S = 10.0  # CPU of the attached softmodems without user traffic, over this long
UDP_DATAGRAM_B = 1400  # iperf3 -l: one IP packet inside the tunnels' 1500-byte MTU (no fragments)
UDP_SATURATE_MBIT = {5: 20.0, 10: 40.0}  # UDP offered above the cell's capacity, per bandwidth (MHz)
SERVER_DONE_S = 20.0  # how long an iperf3 server may take to end its side of a test


def in_node(node: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", paths.netns_name(node), *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def softmodem_cpu() -> dict[str, tuple[float, int]]:
    """comm → (CPU seconds so far, RSS kB) of each running softmodem."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or (comm := (entry / "comm").read_text().strip()) not in SOFTMODEMS:
                continue
            f = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            rss = next(int(ln.split()[1]) for ln in (entry / "status").read_text().splitlines()
                       if ln.startswith("VmRSS:"))
            cpu0, rss0 = out.get(comm, (0.0, 0))  # OAI forks a helper with the same name: add it in
            out[comm] = (cpu0 + (int(f[11]) + int(f[12])) / tick, rss0 + rss)
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    return out


def rtt(count: int) -> dict[str, float]:
    p = in_node("ue", "ping", "-n", "-c", str(count), "-i", "0.1", "-W", "3", ENB_TUN_ADDR, timeout=count * 0.5 + 60)
    rtts = [float(x.split("time=")[1].split()[0]) for x in p.stdout.splitlines() if "time=" in x]
    if len(rtts) < 3:
        raise RuntimeError(f"ping through OAI's tunnel: {p.stdout[-300:]}{p.stderr[-300:]}")
    q = statistics.quantiles(rtts, n=10)
    diffs = [abs(a - b) for a, b in zip(rtts, rtts[1:], strict=False)]
    return {"n": len(rtts), "sent": count, "median_ms": round(statistics.median(rtts), 2), "p10_ms": round(q[0], 2),
            "p90_ms": round(q[-1], 2), "mean_ms": round(statistics.fmean(rtts), 2),
            "sd_ms": round(statistics.stdev(rtts), 2), "ipdv_ms": round(statistics.fmean(diffs), 2)}


def iperf(seconds: int, reverse: bool, udp_mbit: float | None = None) -> dict[str, Any]:
    """One iperf3 run from the UE to the eNB's tunnel address (``reverse``: downlink), against a server
    of its own that ends with the test (``-1``), waited for before the next run: over OAI the server's
    side of a test ends seconds after the client's (the last data and control messages queue behind
    the radio), and a server still busy with it resets the next client's control connection."""
    argv = ["iperf3", "-c", ENB_TUN_ADDR, "-t", str(seconds), "-J", "--connect-timeout", "5000"]
    if reverse:
        argv.append("-R")
    if udp_mbit is not None:
        argv += ["-u", "-b", f"{udp_mbit:.3f}M", "-l", str(UDP_DATAGRAM_B)]
    server = subprocess.Popen(["ip", "netns", "exec", paths.netns_name("enb"), "iperf3", "-s", "-1", "-B",
                               ENB_TUN_ADDR], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # until it listens
        p = in_node("ue", *argv, timeout=seconds + 60)
    finally:
        try:
            server.wait(timeout=SERVER_DONE_S)
        except subprocess.TimeoutExpired:  # the client never reached it: it would wait for ever
            server.kill()
            server.wait()
    try:
        data = json.loads(p.stdout)
    except ValueError:
        return {"error": (p.stdout + p.stderr)[-300:]}
    s = data.get("end", {}).get("sum_received")
    if data.get("error") or not s:
        return {"error": str(data.get("error") or "no result")[:300]}
    if udp_mbit is None:
        return {"mbit_s": round(s["bits_per_second"] / 1e6, 3)}
    return {"offered_mbit_s": udp_mbit, "mbit_s": round(s["bits_per_second"] / 1e6, 3),
            "lost_pct": round(s.get("lost_percent", 0.0), 2), "jitter_ms": round(s.get("jitter_ms", 0.0), 2)}


def model_figures(bandwidth_mhz: float) -> dict[str, float]:
    """The emulated backend's model at the paper topology's defaults (500 m, radio.lte's constants)."""
    from radio.lte import LteConfig, LteModel, run_profile

    states = run_profile(LteModel(LteConfig(bandwidth_mhz=bandwidth_mhz, seed=1)), 20.0)
    return {"one_way_delay_ms": round(statistics.median(s.params.delay_ms for s in states), 2),
            "jitter_ms": round(statistics.median(s.params.jitter_ms for s in states), 2),
            "rtt_ms": round(2 * statistics.median(s.params.delay_ms for s in states), 2),
            "rate_mbit_s": round(statistics.median(s.params.rate_mbit or 0.0 for s in states), 2),
            "snr_db": round(statistics.median(s.snr_db for s in states), 1)}


def cpu_share(before: dict[str, tuple[float, int]], after: dict[str, tuple[float, int]], wall_s: float) -> dict[str, float]:
    """Each softmodem's CPU between two readings as % of one core (100 = one core busy all the time)."""
    return {k: round(100 * (after[k][0] - before[k][0]) / wall_s, 1) for k in after if k in before}


def measure(topology: str, bandwidth_mhz: float, count: int, seconds: int,
            udp_mbit: tuple[float | None, float | None] = (None, None)) -> dict[str, Any]:
    spec_path = load(topology).source
    doc = yaml.safe_load(Path(spec_path).read_text())
    doc.setdefault("radio", {}).setdefault("options", {})["bandwidth_mhz"] = bandwidth_mhz
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=f"oai-{bandwidth_mhz:g}mhz-",
                                     delete=False) as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    tmp = Path(f.name)
    try:
        t0 = time.monotonic()
        r = subprocess.run([*EMULAB, "start", str(tmp), "--radio", "oai", "--detach", "--no-services"],
                           capture_output=True, text=True, timeout=300, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"emulab start: {(r.stdout + r.stderr)[-600:]}")
        start_s = time.monotonic() - t0
        st = json.loads(subprocess.run([*EMULAB, "radio", "status", "--json"], capture_output=True, text=True,
                                       check=True, timeout=60).stdout)
        out: dict[str, Any] = {"bandwidth_mhz": bandwidth_mhz, "n_prb": {5: 25, 10: 50, 20: 100}[int(bandwidth_mhz)],
                               "start_s": round(start_s, 1), "attach_s": st.get("attach_s"),
                               "load_before": loadavg()}
        # the softmodems attached and idle (no user traffic): what OAI costs just to keep the cell and the UE up
        cpu0, w0 = softmodem_cpu(), time.monotonic()
        time.sleep(IDLE_S)
        cpu1, w1 = softmodem_cpu(), time.monotonic()
        out["cpu_idle_pct_of_core"] = cpu_share(cpu0, cpu1, w1 - w0)
        cpu0, w0 = cpu1, w1  # the loaded window starts where the idle one ended
        out["rtt"] = rtt(count)
        out["tcp_up"] = iperf(seconds, reverse=False)
        out["tcp_down"] = iperf(seconds, reverse=True)
        offered = udp_mbit[0] or UDP_SATURATE_MBIT[int(bandwidth_mhz)], udp_mbit[1] or UDP_SATURATE_MBIT[int(bandwidth_mhz)]
        for key, reverse, rate in (("udp_up", False, offered[0]), ("udp_down", True, offered[1])):
            # at a rate above the cell's (what the radio carries: its UDP capacity), then at half of what it
            # carried (the loss of a flow the radio can take)
            out[key] = iperf(seconds, reverse=reverse, udp_mbit=rate)
            if out[key].get("mbit_s"):
                out[key + "_half"] = iperf(seconds, reverse=reverse, udp_mbit=round(out[key]["mbit_s"] / 2, 3))
        out["rtt_after_load"] = rtt(max(20, count // 4))
        cpu1, w1 = softmodem_cpu(), time.monotonic()
        # under the measurements above (pings, TCP and UDP both ways): busy softmodems
        out["cpu_pct_of_core"] = cpu_share(cpu0, cpu1, w1 - w0)
        out["cpu_window_s"] = {"idle": IDLE_S, "loaded": round(w1 - w0, 1)}
        out["rss_mb"] = {k: round(v[1] / 1024) for k, v in cpu1.items()}
        out["load_after"] = loadavg()
        out["model"] = model_figures(bandwidth_mhz)
        return out
    finally:
        subprocess.run([*EMULAB, "stop"], capture_output=True, timeout=180, check=False)
        tmp.unlink(missing_ok=True)


MEASUREMENTS = ("tcp_up", "tcp_down", "udp_up", "udp_up_half", "udp_down", "udp_down_half")


def udp_text(r: dict[str, Any] | None) -> str:
    if r is None:
        return "not run"
    if "error" in r:
        return f"FAILED ({r['error'][:120]})"
    return f"{r['mbit_s']} of {r['offered_mbit_s']} Mbit/s offered, {r['lost_pct']} % lost"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 pings and 5 s per iperf3 run (else 300 and 10 s)")
    ap.add_argument("--topology", default="paper-topology")
    ap.add_argument("--prb", type=int, nargs="+", default=[25, 50], choices=[25, 50])
    ap.add_argument("--udp-mbit", type=float, nargs=2, metavar=("UP", "DOWN"), default=(None, None),
                    help="UDP rates to offer, Mbit/s (default: 20 at 25 PRB, 40 at 50: above the cell's)")
    args = ap.parse_args()
    count, seconds = (100, 5) if args.quick else (300, 10)
    cells = []
    for prb in args.prb:
        mhz = {25: 5.0, 50: 10.0}[prb]
        try:
            c = measure(args.topology, mhz, count, seconds, tuple(args.udp_mbit))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"{prb} PRB: FAILED: {exc}", file=sys.stderr)
            cells.append({"n_prb": prb, "error": str(exc)})
            continue
        cells.append(c)
        r, m = c["rtt"], c["model"]
        print(f"{prb} PRB: OAI RTT median {r['median_ms']} ms (p10 {r['p10_ms']}, p90 {r['p90_ms']}), jitter sd "
              f"{r['sd_ms']} ms / ipdv {r['ipdv_ms']} ms; TCP up {c['tcp_up'].get('mbit_s')} down "
              f"{c['tcp_down'].get('mbit_s')} Mbit/s; UDP up {udp_text(c['udp_up'])} / {udp_text(c.get('udp_up_half'))}, "
              f"down {udp_text(c['udp_down'])} / {udp_text(c.get('udp_down_half'))}; "
              f"CPU idle {c['cpu_idle_pct_of_core']}, loaded {c['cpu_pct_of_core']} % of a core, RSS {c['rss_mb']} MB; "
              f"load {c['load_before'][0]} -> {c['load_after'][0]}; "
              f"model: RTT {m['rtt_ms']} ms, jitter {m['jitter_ms']} ms, rate {m['rate_mbit_s']} Mbit/s")
    # a measurement that failed inside a cell (an iperf3 run) is an error of the benchmark too
    failed = {f"{c['n_prb']} PRB {k}": c[k]["error"] for c in cells for k in MEASUREMENTS
              if isinstance(c.get(k), dict) and "error" in c[k]}
    failed.update({f"{c['n_prb']} PRB": c["error"] for c in cells if "error" in c})
    print(json.dumps({"benchmark": "oai_radio", "topology": args.topology, "quick": args.quick,
                      "udp_datagram_bytes": UDP_DATAGRAM_B, "errors": failed,
                      "cells": cells}))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: OpenAirInterface's radio (RF simulator) at 25 and 50 PRB beside the emulated LTE model.

For each cell bandwidth (5 MHz = 25 PRB, 10 MHz = 50 PRB) it starts TOPOLOGY (paper-topology, no
services) with ``--radio oai`` and that bandwidth, then measures over OAI's tunnel (UE
``oaitun_ue1`` ↔ eNB ``oaitun_enb1``: the radio alone, no emulated hop):

* RTT: ``ping -i 0.1`` × COUNT (median, p10, p90, mean) and jitter (standard deviation, and the
  mean difference of consecutive RTTs, RFC 3550's view);
* TCP throughput, uplink and downlink (``iperf3 -t SECONDS``, one stream);
* UDP throughput at an offered rate above the cell's (received rate and loss), both ways;
* CPU of each softmodem over the whole measurement (% of one core, from /proc utime+stime) and RSS.

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

from emulab import paths
from emulab.topology import load

REPO = Path(__file__).resolve().parents[1]
EMULAB = [sys.executable, "-m", "emulab"]
ENB_TUN_ADDR = "10.0.1.1"  # OAI --noS1: oaitun_enb1 10.0.1.1, oaitun_ue1 10.0.1.2
SOFTMODEMS = ("lte-softmodem", "lte-uesoftmodem")


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
    """One iperf3 run from the UE to the eNB's tunnel address (``reverse``: downlink)."""
    argv = ["iperf3", "-c", ENB_TUN_ADDR, "-t", str(seconds), "-J", "--connect-timeout", "5000"]
    if reverse:
        argv.append("-R")
    if udp_mbit is not None:
        argv += ["-u", "-b", f"{udp_mbit}M"]
    p = in_node("ue", *argv, timeout=seconds + 60)
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


def measure(topology: str, bandwidth_mhz: float, count: int, seconds: int) -> dict[str, Any]:
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
        server = subprocess.Popen(["ip", "netns", "exec", paths.netns_name("enb"), "iperf3", "-s", "-B",
                                   ENB_TUN_ADDR], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        cpu0, w0 = softmodem_cpu(), time.monotonic()
        out: dict[str, Any] = {"bandwidth_mhz": bandwidth_mhz, "n_prb": {5: 25, 10: 50, 20: 100}[int(bandwidth_mhz)],
                               "start_s": round(start_s, 1), "attach_s": st.get("attach_s"), "rtt": rtt(count)}
        cap = 40.0 if bandwidth_mhz >= 10 else 20.0
        out["tcp_up"] = iperf(seconds, reverse=False)
        out["tcp_down"] = iperf(seconds, reverse=True)
        out["udp_up"] = iperf(seconds, reverse=False, udp_mbit=cap)
        out["udp_down"] = iperf(seconds, reverse=True, udp_mbit=cap)
        out["rtt_after_load"] = rtt(max(20, count // 4))
        cpu1, w1 = softmodem_cpu(), time.monotonic()
        out["cpu_pct_of_core"] = {k: round(100 * (cpu1[k][0] - cpu0[k][0]) / (w1 - w0), 1) for k in cpu1 if k in cpu0}
        out["rss_mb"] = {k: round(v[1] / 1024) for k, v in cpu1.items()}
        out["model"] = model_figures(bandwidth_mhz)
        server.terminate()
        server.wait(timeout=10)
        return out
    finally:
        subprocess.run([*EMULAB, "stop"], capture_output=True, timeout=180, check=False)
        tmp.unlink(missing_ok=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 pings and 5 s per iperf3 run (else 300 and 10 s)")
    ap.add_argument("--topology", default="paper-topology")
    ap.add_argument("--prb", type=int, nargs="+", default=[25, 50], choices=[25, 50])
    args = ap.parse_args()
    count, seconds = (100, 5) if args.quick else (300, 10)
    cells = []
    for prb in args.prb:
        mhz = {25: 5.0, 50: 10.0}[prb]
        try:
            c = measure(args.topology, mhz, count, seconds)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"{prb} PRB: FAILED: {exc}", file=sys.stderr)
            cells.append({"n_prb": prb, "error": str(exc)})
            continue
        cells.append(c)
        r, m = c["rtt"], c["model"]
        print(f"{prb} PRB: OAI RTT median {r['median_ms']} ms (p10 {r['p10_ms']}, p90 {r['p90_ms']}), jitter sd "
              f"{r['sd_ms']} ms / ipdv {r['ipdv_ms']} ms; TCP up {c['tcp_up'].get('mbit_s')} down "
              f"{c['tcp_down'].get('mbit_s')} Mbit/s; UDP up {c['udp_up'].get('mbit_s')} down "
              f"{c['udp_down'].get('mbit_s')} Mbit/s; CPU {c['cpu_pct_of_core']} % of a core, RSS {c['rss_mb']} MB; "
              f"model: RTT {m['rtt_ms']} ms, jitter {m['jitter_ms']} ms, rate {m['rate_mbit_s']} Mbit/s")
    print(json.dumps({"benchmark": "oai_radio", "topology": args.topology, "quick": args.quick, "cells": cells}))
    return 0 if all("error" not in c for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())

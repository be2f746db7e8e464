"""Benchmark: how long `emulab start TOPOLOGY --detach` takes until the testbed is ready, beside bare
Mininet building the same number of hosts, switches and links (same OVS datapath, no controller
process, no link emulation, no routes), and the ratio. Goal: paper-topology ready in ≤ 10 s.

    .venv/bin/python benchmarks/startup.py [--quick] [--topology paper-topology] [--runs N]

Runs as root; stops and cleans everything it starts. The last line is JSON with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from emulab.topology import load

EMULAB = [sys.executable, "-m", "emulab"]


def time_emulab(topology: str) -> tuple[float, float]:
    t0 = time.monotonic()
    try:
        subprocess.run([*EMULAB, "start", topology, "--detach"], check=True, stdout=subprocess.DEVNULL)
        wall = time.monotonic() - t0
        status = json.loads(subprocess.run([*EMULAB, "status", "--json"], check=True, capture_output=True).stdout)
    finally:  # whatever failed, leave no testbed behind
        subprocess.run([*EMULAB, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([*EMULAB, "clean"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wall, status["ready_s"]


def time_bare_mininet(hosts: int, switches: int, links: list[tuple[str, str]], datapath: str) -> float:
    """Bare Mininet: same element counts, built and started, then stopped (stop time excluded)."""
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import OVSSwitch

    setLogLevel("error")
    t0 = time.monotonic()
    net = Mininet(build=False, controller=None, autoSetMacs=False, waitConnected=False)
    for i in range(hosts):
        net.addHost(f"bh{i}")
    for i in range(switches):
        net.addSwitch(f"em-bs{i}", cls=OVSSwitch, dpid=f"{0xB0000000 + i:016x}", datapath=datapath,
                      failMode="standalone")
    for i, (a, b) in enumerate(links):
        net.addLink(a, b, intfName1=f"em-bl{i}a" if a.startswith("em-") else None,
                    intfName2=f"em-bl{i}b" if b.startswith("em-") else None)
    try:
        net.build()
        net.start()
        return time.monotonic() - t0
    finally:
        net.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one run of each instead of three")
    ap.add_argument("--topology", default="paper-topology")
    ap.add_argument("--runs", type=int, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("startup benchmark: needs root", file=sys.stderr)
        return 2
    runs = args.runs or (1 if args.quick else 3)
    spec = load(args.topology)

    from emulab.capabilities import probe
    from emulab.ovs import ensure_running

    caps = probe()
    ensure_running()
    # Map the topology's links onto bare names with the same shape.
    names = {n: f"bh{i}" for i, n in enumerate(spec.nodes)}
    names |= {s: f"em-bs{i}" for i, s in enumerate(spec.switches)}
    bare_links = [(names[lk.a.node], names[lk.b.node]) for lk in spec.links]

    emulab_wall, emulab_ready, bare = [], [], []
    for run in range(runs):
        wall, ready = time_emulab(args.topology)
        emulab_wall.append(wall)
        emulab_ready.append(ready)
        bare.append(time_bare_mininet(len(spec.nodes), len(spec.switches), bare_links, caps.ovs_datapath))
        print(f"run {run + 1}/{runs}: emulab start --detach {wall:.2f} s (ready {ready:.2f} s in the runner), "
              f"bare Mininet {bare[-1]:.2f} s")
    med_wall, med_bare = statistics.median(emulab_wall), statistics.median(bare)
    print(f"{args.topology}: {len(spec.nodes)} hosts, {len(spec.switches)} switches, {len(spec.links)} links, "
          f"{caps.link_backend} links, {caps.ovs_datapath} datapath")
    print(f"emulab start --detach: median {med_wall:.2f} s (goal ≤ 10 s); bare Mininet: median {med_bare:.2f} s; "
          f"ratio {med_wall / med_bare:.2f}")
    print(json.dumps({
        "topology": args.topology, "hosts": len(spec.nodes), "switches": len(spec.switches),
        "links": len(spec.links), "link_backend": caps.link_backend, "ovs_datapath": caps.ovs_datapath,
        "emulab_start_s": round(med_wall, 3), "emulab_ready_s": round(statistics.median(emulab_ready), 3),
        "bare_mininet_s": round(med_bare, 3), "ratio": round(med_wall / med_bare, 2), "runs": runs,
        "goal_met": med_wall <= 10.0,
    }))
    return 0 if med_wall <= 10.0 else 1


if __name__ == "__main__":
    sys.exit(main())

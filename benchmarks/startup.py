"""Benchmark: how long `emulab start TOPOLOGY --detach` takes until the testbed is ready (services
registered), beside bare Mininet building the same shape (same hosts, switches and links, same OVS
datapath, no controller process, no link emulation, no routes, no services), the ratio, the memory
per node and the start-up phases the runner reports (`emulab status --json`).

    .venv/bin/python benchmarks/startup.py [--topology FILE] [--runs N]        one topology (default
                                                                               paper-topology)
    .venv/bin/python benchmarks/startup.py --sweep [--quick] [--self-check]    generated 10 … 1,000 hosts
    .venv/bin/python benchmarks/startup.py --under-load --repeat 20            starts while 2 CPU hogs run

The sweep's generated topologies: one router and N-1 hosts spread over switches of at most 48 hosts,
each switch behind the router over a 1 ms link (so the link emulation is in the path), no services.
Goals: paper-topology ready in ≤ 3 s; ≤ 1.5x bare Mininet from 50 hosts up; 1,000 hosts in ≤ 60 s.
`--self-check` also builds the largest generated topology and runs the self-check's RTT model
(emulab.selfcheck.check) on a random sample of pairs (--pairs, default 300).
`--under-load` starts each topology (paper-topology and a generated 200-node one) --repeat times
while one CPU-bound process per CPU runs beside it, and records every failure's message; after each
start (failed or not) nothing may be left behind.

One topology: every run's wall time (`emulab start --detach` as from the shell; a failed run is
reported as failed, never timed), their median and maximum, and the phases of the fastest run and
their medians. The load average before and after goes into the JSON.

Runs as root; stops and cleans everything it starts. The plot (--sweep) is written next to the JSON
output (--out). The last line is JSON with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import loadavg

from emulab.topology import load

EMULAB = [sys.executable, "-m", "emulab"]
SIZES = (10, 50, 100, 200, 500, 1000)
HOSTS_PER_SWITCH = 48
#: What `find_leftovers` reported before the first start (another user's hung process, say): a start
#: is charged only with what it adds.
BEFORE: set[str] = set()
START_GOAL_S = 3.0
RATIO_GOAL = 1.5
LARGE_GOAL_S = 60.0


# ---------------------------------------------------------------------------------------------
# generated topologies


def generate(nodes: int, directory: Path) -> Path:
    """A topology file of ``nodes`` nodes: router r0 and hosts h1… on ceil((nodes-1)/48) switches."""
    hosts = nodes - 1
    switches = max(1, math.ceil(hosts / HOSTS_PER_SWITCH))
    lines = [f"name: gen-{nodes}", f"description: generated, {nodes} nodes on {switches} switches",
             "sites:", "  lab: {}", "nodes:", "  r0: {role: router, site: lab}"]
    lines += [f"  h{i}: {{role: host, site: lab}}" for i in range(1, hosts + 1)]
    lines.append("switches:")
    lines += [f"  s{j}: {{site: lab, subnet: 10.{j // 200}.{j % 200}.0/24}}" for j in range(1, switches + 1)]
    lines.append("links:")
    for j in range(1, switches + 1):
        lines.append(f"  - {{ends: [r0, s{j}], addresses: {{r0: 10.{j // 200}.{j % 200}.254}}, delay: 1ms}}")
    lines += [f"  - {{ends: [h{i}, s{(i - 1) % switches + 1}]}}" for i in range(1, hosts + 1)]
    path = directory / f"gen-{nodes}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# measurements


def mem_used_mib() -> float:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) / 1024


def time_emulab(topology: str, timeout: float | None = None) -> dict[str, Any]:
    """One `emulab start --detach`: wall time, the runner's phases, memory; always stopped and cleaned.
    A failed start is returned with its message (``error``), never counted as a time."""
    from emulab.cleanup import find_leftovers

    before = mem_used_mib()
    cmd = [*EMULAB, "start", topology, "--detach"] + (["--timeout", str(timeout)] if timeout else [])
    t0 = time.monotonic()
    out: dict[str, Any] = {}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        out["wall_s"] = time.monotonic() - t0
        if proc.returncode != 0:
            out["error"] = (proc.stderr.strip() or proc.stdout.strip() or "no message").splitlines()[-1]
            out["exit"] = proc.returncode
            return out
        out["mem_mib"] = mem_used_mib() - before
        st = subprocess.run([*EMULAB, "status", "--json"], capture_output=True, text=True)
        status = json.loads(st.stdout) if st.returncode == 0 else {}
        out["ready_s"] = status.get("ready_s")
        out["phases"] = status.get("phases", [])
    finally:  # whatever failed, leave no testbed behind
        stop = subprocess.run([*EMULAB, "stop"], capture_output=True, text=True)
        left = sorted(set(find_leftovers()) - BEFORE)
        if left:
            out["left_behind"] = left
            subprocess.run([*EMULAB, "clean"], capture_output=True)
        out["stop_exit"] = stop.returncode
    return out


def time_bare_mininet(hosts: int, switches: int, links: list[tuple[str, str]], datapath: str) -> tuple[float, float]:
    """Bare Mininet: same element counts, built and started, then stopped (stop time excluded).
    Returns (seconds, MiB of memory in use once started)."""
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import OVSSwitch

    setLogLevel("error")
    before = mem_used_mib()
    t0 = time.monotonic()
    net = Mininet(build=False, controller=None, autoSetMacs=False, waitConnected=False)
    try:
        for i in range(hosts):
            net.addHost(f"bh{i}")
        for i in range(switches):
            net.addSwitch(f"em-bs{i}", cls=OVSSwitch, dpid=f"{0xB0000000 + i:016x}", datapath=datapath,
                          failMode="standalone")
        for i, (a, b) in enumerate(links):
            net.addLink(a, b, intfName1=f"em-bl{i}a" if a.startswith("em-") else None,
                        intfName2=f"em-bl{i}b" if b.startswith("em-") else None)
        net.build()
        net.start()
        return time.monotonic() - t0, mem_used_mib() - before
    finally:
        net.stop()


def bare_shape(topology: str) -> tuple[int, int, list[tuple[str, str]]]:
    spec = load(topology)
    names = {n: f"bh{i}" for i, n in enumerate(spec.nodes)}
    names |= {s: f"em-bs{i}" for i, s in enumerate(spec.switches)}
    return len(spec.nodes), len(spec.switches), [(names[lk.a.node], names[lk.b.node]) for lk in spec.links]


def compare(topology: str, runs: int, datapath: str) -> dict[str, Any]:
    """emulab and bare Mininet on one topology, ``runs`` times each (alternating); medians."""
    hosts, switches, links = bare_shape(topology)
    em: list[dict[str, Any]] = []
    bare: list[tuple[float, float]] = []
    for run in range(runs):
        em.append(time_emulab(topology))
        bare.append(time_bare_mininet(hosts, switches, links, datapath))
        r = em[-1]
        shown = f"{r['wall_s']:.2f} s" if "error" not in r else f"FAILED ({r['error']})"
        print(f"  {Path(topology).stem} run {run + 1}/{runs}: emulab start --detach {shown}, "
              f"bare Mininet {bare[-1][0]:.2f} s", flush=True)
    ok = [r for r in em if "error" not in r]
    failures = [r["error"] for r in em if "error" in r]
    row: dict[str, Any] = {"topology": topology, "hosts": hosts, "switches": switches, "links": len(links),
                           "runs": runs, "failures": failures}
    row["bare_mininet_s"] = round(statistics.median(b[0] for b in bare), 3)
    row["bare_mib_per_node"] = round(statistics.median(b[1] for b in bare) / hosts, 2)
    row["emulab_runs_s"] = [round(r["wall_s"], 3) if "error" not in r else None for r in em]  # None: failed
    if ok:
        row["emulab_start_s"] = round(statistics.median(r["wall_s"] for r in ok), 3)
        row["emulab_max_s"] = round(max(r["wall_s"] for r in ok), 3)
        row["phases_median"] = median_phases([r["phases"] for r in ok])
        row["emulab_ready_s"] = round(statistics.median(r["ready_s"] for r in ok if r.get("ready_s") is not None), 3)
        row["ratio"] = round(row["emulab_start_s"] / row["bare_mininet_s"], 2)
        row["emulab_mib_per_node"] = round(statistics.median(r["mem_mib"] for r in ok) / hosts, 2)
        best = min(ok, key=lambda r: r["wall_s"])
        row["phases"] = best["phases"]
    return row


def median_phases(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each phase's median duration over the runs that report it, in the order of the first run."""
    order = [p["phase"] for p in runs[0]] if runs else []
    return [{"phase": name, "s": round(statistics.median(p["s"] for ps in runs for p in ps if p["phase"] == name), 3)}
            for name in order]


def print_phases(row: dict[str, Any]) -> None:
    for key, what in (("phases", "fastest run"), ("phases_median", "median of the runs")):
        phases = row.get(key) or []
        if phases:
            print(f"  phases ({Path(row['topology']).stem}, {what}): "
                  + ", ".join(f"{p['phase']} {p['s']:.2f}" for p in phases), flush=True)


# ---------------------------------------------------------------------------------------------
# self-check of a large topology (sampled pairs)


def sampled_self_check(topology: str, pairs: int, seed: int = 1) -> dict[str, Any]:
    """Build ``topology`` in this process and run the self-check's model on ``pairs`` random pairs."""
    from emulab import selfcheck
    from emulab.network import marked
    from emulab.runner import StartOptions, build, teardown

    spec = load(topology)
    rng = random.Random(seed)
    names = list(spec.nodes)
    chosen: set[tuple[str, str]] = set()
    while len(chosen) < min(pairs, len(names) * (len(names) - 1)):
        a, b = rng.sample(names, 2)
        chosen.add((a, b))
    with marked(f"bench{os.getpid()}") as run_id:
        testbed = build(StartOptions(topology=topology, services=False), lambda m: None, run_id=run_id)
        try:
            t0 = time.monotonic()
            results = selfcheck.check(testbed, sorted(chosen))
            took = time.monotonic() - t0
        finally:
            teardown(testbed, lambda m: None)
    unreachable = [f"{r.src}->{r.dst}" for r in results if not r.reachable]
    off = [selfcheck.describe(r) for r in results if r.reachable and not r.within_tolerance]
    return {"topology": topology, "nodes": len(names), "pairs": len(results), "unreachable": unreachable,
            "off": off, "passed": not unreachable and not off, "check_s": round(took, 1)}


# ---------------------------------------------------------------------------------------------
# starts under load


def cpu_hogs(n: int, nice: int) -> list[subprocess.Popen[bytes]]:
    code = "while True: pass"
    return [subprocess.Popen([sys.executable, "-c", code], preexec_fn=lambda: os.nice(nice)) for _ in range(n)]


def under_load(topologies: list[str], repeat: int, nice: int) -> dict[str, Any]:
    hogs = cpu_hogs(os.cpu_count() or 2, nice)
    results: dict[str, Any] = {}
    try:
        for topo in topologies:
            runs = []
            for i in range(repeat):
                r = time_emulab(topo)
                runs.append(r)
                what = f"{r['wall_s']:.2f} s" if "error" not in r else f"FAILED (exit {r['exit']}): {r['error']}"
                print(f"  under load: {Path(topo).stem} {i + 1}/{repeat}: {what}"
                      + (f"; LEFT BEHIND: {r['left_behind']}" if r.get("left_behind") else ""), flush=True)
            ok = [r for r in runs if "error" not in r]
            results[Path(topo).stem] = {
                "starts": repeat, "succeeded": len(ok),
                "failures": [r["error"] for r in runs if "error" in r],
                "left_behind": [r["left_behind"] for r in runs if r.get("left_behind")],
                "median_s": round(statistics.median(r["wall_s"] for r in ok), 2) if ok else None,
                "max_s": round(max(r["wall_s"] for r in ok), 2) if ok else None,
            }
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    return results


# ---------------------------------------------------------------------------------------------


def plot(rows: list[dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "emulab_start_s" in r]
    x = [r["hosts"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(x, [r["emulab_start_s"] for r in rows], "o-", label="emulab start --detach")
    ax1.plot(x, [r["bare_mininet_s"] for r in rows], "s--", label="bare Mininet")
    ax1.set(xscale="log", yscale="log", xlabel="nodes", ylabel="seconds to ready", title="start-up time")
    ax1.legend()
    ax2.plot(x, [r["ratio"] for r in rows], "o-")
    ax2.axhline(RATIO_GOAL, color="grey", ls=":", label=f"goal ≤ {RATIO_GOAL}x (from 50 nodes)")
    ax2.set(xscale="log", xlabel="nodes", ylabel="emulab / bare Mininet", title="ratio")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topology", default=None, help="one topology (name or file); default paper-topology")
    ap.add_argument("--sweep", action="store_true", help="generated topologies of 10 … 1,000 nodes")
    ap.add_argument("--sizes", default=None, help="comma-separated node counts for --sweep")
    ap.add_argument("--quick", action="store_true", help="one run each; the sweep stops at 100 nodes")
    ap.add_argument("--runs", type=int, default=None, help="runs per topology (default 3, --quick 1; sweep: 1 "
                                                           "from 500 nodes up)")
    ap.add_argument("--self-check", action="store_true", help="self-check the largest swept topology")
    ap.add_argument("--pairs", type=int, default=300, help="pairs the sampled self-check pings")
    ap.add_argument("--under-load", action="store_true", help="starts while every CPU is kept busy")
    ap.add_argument("--repeat", type=int, default=20, help="starts per topology under load")
    ap.add_argument("--load-size", type=int, default=200, help="generated topology started under load")
    ap.add_argument("--load-nice", type=int, default=0, help="nice level of the CPU hogs (0: equal priority)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output; the plot goes beside it (.png)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("startup benchmark: needs root", file=sys.stderr)
        return 2

    from emulab.capabilities import probe
    from emulab.ovs import ensure_running

    caps = probe()
    ensure_running()
    from emulab.cleanup import find_leftovers

    BEFORE.update(find_leftovers())
    if BEFORE:
        print(f"present before the first start (not counted): {sorted(BEFORE)}", flush=True)
    runs = args.runs or (1 if args.quick else 3)
    machine = {"cpus": os.cpu_count(), "kernel": os.uname().release, "link_backend": caps.link_backend,
               "ovs_datapath": caps.ovs_datapath}
    tmp = Path(tempfile.mkdtemp(prefix="emulab-startup-"))
    result: dict[str, Any] = {"machine": machine, "loadavg_before": loadavg()}
    ok = True

    if args.under_load:
        topos = [str(load(args.topology or "paper-topology").source), str(generate(args.load_size, tmp))]
        res = under_load(topos, args.repeat, args.load_nice)
        result["under_load"] = res
        for name, r in res.items():
            print(f"under load ({os.cpu_count()} CPU hogs, nice {args.load_nice}): {name}: {r['succeeded']}/"
                  f"{r['starts']} started, median {r['median_s']} s, max {r['max_s']} s; failures: "
                  f"{r['failures'] or 'none'}; left behind: {r['left_behind'] or 'nothing'}")
            ok &= r["succeeded"] == r["starts"] and not r["left_behind"]
    elif args.sweep:
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(SIZES)
        if args.quick:
            sizes = [s for s in sizes if s <= 100]
        rows = []
        for n in sizes:
            topo = str(generate(n, tmp))
            row = compare(topo, args.runs or (1 if args.quick or n >= 500 else 3), caps.ovs_datapath)
            row["nodes"] = n
            rows.append(row)
            print_phases(row)
        print(f"{'nodes':>6} {'switches':>8} {'emulab s':>9} {'bare s':>7} {'ratio':>6} {'MiB/node':>9} "
              f"{'bare MiB/node':>13}")
        for r in rows:
            print(f"{r['nodes']:>6} {r['switches']:>8} {r.get('emulab_start_s', float('nan')):>9.2f} "
                  f"{r['bare_mininet_s']:>7.2f} {r.get('ratio', float('nan')):>6.2f} "
                  f"{r.get('emulab_mib_per_node', float('nan')):>9.2f} {r['bare_mib_per_node']:>13.2f}"
                  + (f"  failures: {r['failures']}" if r["failures"] else ""))
        result["sweep"] = [{k: v for k, v in r.items() if k != "topology"} for r in rows]
        ratio_ok = all(r.get("ratio", math.inf) <= RATIO_GOAL for r in rows if r["nodes"] >= 50)
        large = [r for r in rows if r["nodes"] >= 1000]
        large_ok = all(r.get("emulab_start_s", math.inf) <= LARGE_GOAL_S for r in large)
        result["ratio_goal_met"] = ratio_ok
        result["large_goal_met"] = large_ok if large else None
        ok &= ratio_ok and large_ok and not any(r["failures"] for r in rows)
        if args.self_check:
            sc = sampled_self_check(str(generate(max(sizes), tmp)), args.pairs)
            print(f"self-check of {sc['nodes']} nodes on {sc['pairs']} sampled pairs: "
                  f"{'passed' if sc['passed'] else 'FAILED'} in {sc['check_s']} s; unreachable {sc['unreachable']}, "
                  f"off {sc['off']}")
            result["self_check"] = sc
            ok &= sc["passed"]
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            png = args.out.with_suffix(".png")
            plot(rows, png)
            result["plot"] = str(png)
            print(f"plot: {png}")
    else:
        topology = args.topology or "paper-topology"
        row = compare(str(load(topology).source), runs, caps.ovs_datapath)
        print_phases(row)
        if "emulab_start_s" not in row:
            print(f"{topology}: every start failed: {row['failures']}")
            print(json.dumps({"topology": topology, "failures": row["failures"], "goal_met": False}))
            return 1
        print(f"{topology}: {row['hosts']} hosts, {row['switches']} switches, {row['links']} links, "
              f"{caps.link_backend} links, {caps.ovs_datapath} datapath")
        print(f"emulab start --detach, {runs} runs: " + ", ".join("FAILED" if t is None else f"{t:.2f}"
                                                               for t in row["emulab_runs_s"])
              + f" s; {len(row['failures'])} failed")
        print(f"emulab start --detach: median {row['emulab_start_s']:.2f} s, max {row['emulab_max_s']:.2f} s "
              f"(goal ≤ {START_GOAL_S:g} s); "
              f"bare Mininet: median {row['bare_mininet_s']:.2f} s; ratio {row['ratio']:.2f}; "
              f"memory {row['emulab_mib_per_node']:.1f} MiB/node (bare {row['bare_mib_per_node']:.1f})")
        result |= {k: v for k, v in row.items() if k != "topology"} | {"topology": topology}
        result["goal_met"] = row["emulab_start_s"] <= START_GOAL_S and not row["failures"]
        ok = result["goal_met"]

    result["loadavg_after"] = loadavg()
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

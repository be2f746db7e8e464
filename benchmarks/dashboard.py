"""Benchmark: what the dashboard costs a running testbed, on the paper topology.

Builds the topology in this process (as the runner does: ``runner.build`` plus its control server),
then runs the self-check's RTT measurement (``emulab.selfcheck.check``, every node pair) three
times: without the dashboard, with it open, and without it again. With it open means ``python -m
emulab.dashboard`` serving, a client reading its live stream and, when Debian's chromium is there,
the page open in headless chromium (Playwright). Reported:

* refresh: state events per second the stream delivered and the server's own refresh time;
* CPU: the dashboard's process tree (server and its in-node helpers) and the browser, in % of one
  core over the measuring window;
* the self-check's RTTs: per path, the median RTT with the dashboard minus the mean of the two runs
  without it; the median and largest |difference| over the paths beside the same figure between
  the two runs without it (the run-to-run noise), and whether every self-check passed.

    .venv/bin/python benchmarks/dashboard.py [--quick] [--topology paper-topology] [--interval 1.0]

Runs as root under the shared lock (flock /tmp/emulab-dev.lock); tears down everything it built.
The last line is JSON with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds user+system) of ``pid``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu(root: int, name_filter: str | None = None) -> float:
    """CPU seconds of ``root`` and its live descendants (optionally only those whose command has ``name_filter``)."""
    procs: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            procs[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if pid not in procs:
            continue
        if name_filter is not None:
            try:
                if name_filter not in Path(f"/proc/{pid}/comm").read_text():
                    continue
            except OSError:
                continue
        total += procs[pid][1]
    return total


class StreamReader(threading.Thread):
    """Reads the dashboard's server-sent events; counts the state events and their spacing."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.times, self.bytes, self.stop = url, [], 0, threading.Event()

    def run(self) -> None:
        with urllib.request.urlopen(self.url, timeout=30) as resp:
            for raw in resp:
                if self.stop.is_set():
                    return
                self.bytes += len(raw)
                if raw.startswith(b"event: state"):
                    self.times.append(time.monotonic())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rtts(testbed: Any, count: int) -> tuple[dict[tuple[str, str], float], bool]:
    from emulab.selfcheck import check

    results = check(testbed, count=count)
    ok = all(r.reachable and r.within_tolerance for r in results)
    return {(r.src, r.dst): r.measured_ms for r in results if r.measured_ms is not None}, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--topology", default="paper-topology")
    ap.add_argument("--interval", type=float, default=1.0, help="the dashboard's refresh interval [s]")
    ap.add_argument("--count", type=int, default=None, help="pings per pair in each self-check")
    ap.add_argument("--quick", action="store_true", help="fewer pings per pair (10 instead of 20)")
    ap.add_argument("--no-browser", action="store_true", help="only a stream client, no chromium page")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/dashboard.py: needs root", file=sys.stderr)
        return 2
    count = args.count or (10 if args.quick else 20)

    from emulab import control, runner

    if control.read_state() is not None:
        print("benchmarks/dashboard.py: a testbed is already running", file=sys.stderr)
        return 2

    def log(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    testbed = runner.build(runner.StartOptions(topology=args.topology), log)
    stop = threading.Event()
    server = runner.ControlServer(testbed, stop)
    server.start()
    dash: subprocess.Popen[bytes] | None = None
    out: dict[str, Any] = {"benchmark": "dashboard", "topology": args.topology, "interval_s": args.interval,
                           "pings_per_pair": count}
    try:
        log("self-check without the dashboard (1/2)")
        before, ok_before = rtts(testbed, count)
        port = free_port()
        dash = subprocess.Popen([sys.executable, "-m", "emulab.dashboard", "--port", str(port), "--interval",
                                 str(args.interval), "--no-fractal"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                state = json.loads(urllib.request.urlopen(f"{base}/api/state", timeout=5).read())
                if state.get("running") and state.get("registrars") and all(r["reachable"] for r in state["registrars"]):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("the dashboard did not show the testbed within 30 s")
        reader = StreamReader(f"{base}/api/stream")
        reader.start()
        browser = pw = None
        if CHROMIUM.exists() and not args.no_browser:
            from playwright.sync_api import sync_playwright

            pw = sync_playwright().start()
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
            browser.new_page(viewport={"width": 1500, "height": 1000}).goto(base + "/")
        time.sleep(3)  # past the page's first load
        cpu0 = (tree_cpu(dash.pid), tree_cpu(os.getpid(), "chrom"), time.monotonic())
        n0, b0 = len(reader.times), reader.bytes
        refresh_ms = []
        log("self-check with the dashboard open")
        during, ok_during = rtts(testbed, count)
        state = json.loads(urllib.request.urlopen(f"{base}/api/state", timeout=5).read())
        refresh_ms.append(state["dashboard"]["refresh_ms"])
        cpu1 = (tree_cpu(dash.pid), tree_cpu(os.getpid(), "chrom"), time.monotonic())
        window = cpu1[2] - cpu0[2]
        times = reader.times[n0:]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        out.update({
            "window_s": round(window, 1),
            "state_events_per_s": round(len(times) / window, 3),
            "state_event_gap_s": {"median": round(statistics.median(gaps), 3), "max": round(max(gaps), 3)} if gaps else None,
            "server_refresh_ms_last": refresh_ms[-1],
            "stream_bytes_per_s": round((reader.bytes - b0) / window, 1),
            "dashboard_cpu_pct": round(100 * (cpu1[0] - cpu0[0]) / window, 2),
            "browser_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / window, 2) if browser is not None else None,
        })
        reader.stop.set()
        if browser is not None:
            browser.close()
            pw.stop()
        dash.terminate()
        dash.wait(timeout=15)
        dash = None
        log("self-check without the dashboard (2/2)")
        after, ok_after = rtts(testbed, count)
        paths = sorted(set(before) & set(during) & set(after))
        delta = [during[p] - (before[p] + after[p]) / 2 for p in paths]
        noise = [after[p] - before[p] for p in paths]
        worst = max(paths, key=lambda p: abs(during[p] - (before[p] + after[p]) / 2))
        out.update({
            "paths": len(paths),
            "rtt_delta_ms": {"median_abs": round(statistics.median(abs(d) for d in delta), 3),
                             "mean": round(statistics.fmean(delta), 3), "max_abs": round(max(abs(d) for d in delta), 3),
                             "max_abs_path": f"{worst[0]}->{worst[1]}"},
            "rtt_noise_without_ms": {"median_abs": round(statistics.median(abs(d) for d in noise), 3),
                                     "max_abs": round(max(abs(d) for d in noise), 3)},
            "self_check_passed": {"without_1": ok_before, "with": ok_during, "without_2": ok_after},
        })
    finally:
        if dash is not None:
            dash.terminate()
            dash.wait(timeout=15)
        runner.teardown(testbed, log, server)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

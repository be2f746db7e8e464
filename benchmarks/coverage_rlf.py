"""Benchmark: coverage loss and return on the testbed's emulated radio, measured with ping.

Starts TOPOLOGY (paper-topology, no services), runs ``ping -D -O -i INTERVAL`` from the UE to the
eNB's radio-link address and, per round, measures

* lose → ping failure: from the `coverage lose` request to the send time of the first unanswered
  echo (≤ 0 means echoes already in flight were dropped too), and to the last reply;
* lose → RLF: until the radio reports ``detached`` (expected N310 × 10 ms + T310 = 1.2 s);
* restore → ping success: from the `coverage restore` request to the first reply (expected the
  attach time, 1 s, + up to one tick + the ping interval);
* dip: a `coverage lose --for DIP` shorter than the RLF time, then the gap without replies.

Requests go straight to the control socket (the CLI's process start-up is not what is measured).

    .venv/bin/python benchmarks/coverage_rlf.py [--quick] [--topology paper-topology] [--rounds N]

Runs as root; stops and cleans everything it starts. The last line is JSON with the figures and
the timers used.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time

from emulab import control
from emulab.topology import load

EMULAB = [sys.executable, "-m", "emulab"]
_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .* icmp_seq=(\d+) ")
_NOANS = re.compile(r"^\[(\d+\.\d+)\] no answer yet for icmp_seq=(\d+)")


class Pinger:
    """ping -D -O in the UE's namespace; keeps (seq → reply wall time) and (seq → 'no answer' time)."""

    def __init__(self, netns: str, target: str, interval: float) -> None:
        self.interval = interval
        self.replies: dict[int, float] = {}
        self.missing: dict[int, float] = {}
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns}", "ping", "-D", "-O", "-n", "-i", str(interval), "-W", "1", target],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if m := _REPLY.match(line):
                self.replies[int(m[2])] = float(m[1])
            elif m := _NOANS.match(line):
                self.missing.setdefault(int(m[2]), float(m[1]))

    def lost_after(self, t: float) -> tuple[int, float] | None:
        """First unanswered echo sent at or after ``t`` - ~one interval: (seq, estimated send time)."""
        for seq in sorted(self.missing):
            sent = self.missing[seq] - self.interval  # "no answer yet" is printed when the next echo goes
            if sent >= t - self.interval and seq not in self.replies:
                return seq, sent
        return None

    def first_reply_after(self, t: float) -> float | None:
        later = [ts for ts in self.replies.values() if ts >= t]
        return min(later) if later else None

    def last_reply_before(self, t: float) -> float | None:
        earlier = [ts for ts in self.replies.values() if ts <= t + 1.0]
        return max(earlier) if earlier else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def radio(action: str, **extra: object) -> dict:
    return control.request({"cmd": "radio", "action": action, **extra})


def one_round(p: Pinger, hold_s: float) -> dict[str, float | None]:
    """One loss/return cycle. Nothing polls the radio meanwhile (a state request advances the model
    itself), so the figures are those of the backend's own tick thread; RLF and attach instants are
    the radio's ``since`` timestamps read afterwards."""
    time.sleep(1.0)  # steady replies first
    t_lose = time.time()
    radio("detach")
    time.sleep(hold_s)
    st = radio("state")
    t_rlf = st["since"] if st["attach"] == "detached" else None
    lost = p.lost_after(t_lose)
    last = p.last_reply_before(t_lose)
    t_restore = time.time()
    radio("attach")
    deadline = time.time() + 10
    while p.first_reply_after(t_restore) is None and time.time() < deadline:
        time.sleep(0.01)
    back = p.first_reply_after(t_restore)
    st = radio("state")
    t_attached = st["since"] if st["attach"] == "attached" else None
    return {
        "lose_to_ping_fail_s": None if lost is None else round(lost[1] - t_lose, 3),
        "lose_to_last_reply_s": None if last is None else round(last - t_lose, 3),
        "lose_to_rlf_s": None if t_rlf is None else round(t_rlf - t_lose, 3),
        "restore_to_attached_s": None if t_attached is None else round(t_attached - t_restore, 3),
        "restore_to_ping_ok_s": None if back is None else round(back - t_restore, 3),
    }


def dip_round(p: Pinger, dip_s: float) -> dict[str, float | None]:
    time.sleep(1.0)
    t0 = time.time()
    radio("detach", for_s=dip_s)
    time.sleep(dip_s + 2.0)
    rlf = radio("state")["attach"] != "attached"
    back = p.first_reply_after(t0 + dip_s)
    return {"dip_s": dip_s, "dip_caused_rlf": rlf, "dip_end_to_ping_ok_s": None if back is None else round(back - t0 - dip_s, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one round instead of three")
    ap.add_argument("--topology", default="paper-topology", help="a topology with a radio link")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--interval", type=float, default=0.02, help="ping interval in seconds (root: ≥ 0.002)")
    ap.add_argument("--hold", type=float, default=3.0, help="seconds without coverage per round (> RLF time)")
    ap.add_argument("--dip", type=float, default=0.5, help="length of the short coverage dip (< RLF time)")
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    from emulab.cleanup import find_leftovers

    if find_leftovers():  # `emulab clean` below would destroy someone else's testbed
        print("a testbed is already running (or crashed): stop or clean it first", file=sys.stderr)
        return 2
    pinger, runner = None, None
    results: list[dict[str, float | None]] = []
    try:
        subprocess.run([*EMULAB, "start", args.topology, "--detach", "--no-services", "--timeout", "120"],
                       check=True, stdout=subprocess.DEVNULL)
        state = control.read_state() or {}
        runner = state.get("runner_pid")
        st = radio("state")
        spec = load(args.topology)
        link = next(lk for lk in spec.links if lk.radio)
        enb_end = next(e for e in (link.a, link.b) if spec.nodes[e.node].role == "enb")
        ue_end = next(e for e in (link.a, link.b) if spec.nodes[e.node].role == "ue")
        pinger = Pinger(control.node_namespace(state, ue_end.node), str(enb_end.address.ip), args.interval)
        for i in range(rounds):
            r = one_round(pinger, args.hold)
            results.append(r)
            print(f"round {i + 1}: " + ", ".join(f"{k} {v}" for k, v in r.items()), file=sys.stderr)
        dip = dip_round(pinger, args.dip)
        print(f"dip: {dip}", file=sys.stderr)
    finally:
        if pinger is not None:
            pinger.stop()
        now = control.read_state()
        if runner is not None and (now is None or now.get("runner_pid") == runner):  # ours only
            subprocess.run([*EMULAB, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run([*EMULAB, "clean"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    timers = st.get("timers") or {}

    def med(key: str) -> float | None:
        vals = [r[key] for r in results if r[key] is not None]
        return round(statistics.median(vals), 3) if vals else None

    out = {
        "benchmark": "radio", "topology": args.topology, "rounds": rounds, "ping_interval_s": args.interval,
        "timers": {**timers, "tick_s": st.get("tick_s"),
                   "expected_rlf_s": round(timers.get("n310", 0) * 0.01 + timers.get("t310_ms", 0) / 1000, 3),
                   "backend": st.get("backend"), "link_backend": state.get("link_backend")},
        **{k: med(k) for k in results[0]},
        "per_round": results,
        **dip,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

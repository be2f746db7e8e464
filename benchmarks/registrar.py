"""Benchmark: handle resolutions per second and latency of one registrar over TCP on loopback.

Set-up (like RSPLIB's ``testregistrator`` + ``hrestest``): a registrar process pinned to one core,
1,000 PEs registered in one pool by a "PE farm" process (which also answers the endpoint
keep-alives, so nothing expires), and client processes that drive ASAP Handle Resolutions over
persistent TCP connections, each connection keeping ``--depth`` requests in flight. Latency is
measured per request (send to response, FIFO per connection). The last line printed is one JSON
object with ``resolutions_per_s``, ``p50_ms`` and ``p99_ms``.

Two modes:

* closed loop (default): every connection keeps ``--depth`` requests in flight, so the registrar
  runs flat out; ``resolutions_per_s`` is its capacity and the latencies are those of a saturated,
  CPU-bound registrar.
* ``--rate R``: open loop, R requests per second in all (spread over the connections, sent every
  millisecond whatever the answers do), the way many independent PUs load a registrar; the
  latencies are those at that load, e.g. at the goal's 10,000/s.

The machine is shared: a registrar preempted by other work answers late whatever its code does.
So the JSON also has ``registrar_cpu_us_per_resolution`` (the registrar process's user+system CPU
time over the run, from /proc, divided by the resolutions answered; it includes the PE farm's
keep-alive traffic, 200 messages/s for 1,000 PEs) and ``loadavg_1m`` at start and end.

Usage: python benchmarks/registrar.py [--quick] [--clients N] [--connections C] [--depth D] [--rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from rserpool.policy import PolicyInfo
from rserpool.policytypes import PolicyType
from rserpool.policywire import policy_to_wire
from rserpool.wire import (
    EndpointKeepAliveAck,
    HandleResolution,
    PoolElement,
    Registration,
    TcpTransport,
    decode_asap,
)

ROOT = Path(__file__).resolve().parent.parent
POOL = b"BenchPool"
_LEN = struct.Struct("!H")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ PE farm


class Farm(asyncio.Protocol):
    """Registers N PEs over one connection and acks every keep-alive."""

    def __init__(self, n: int, done: asyncio.Future[None]) -> None:
        self.n, self.done, self.buf, self.acked = n, done, bytearray(), 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        pol = policy_to_wire(PolicyInfo(PolicyType.ROUND_ROBIN))
        out = []
        for i in range(1, self.n + 1):
            pe = PoolElement(i, 0, 3_600_000, TcpTransport(20000 + i % 40000, ("127.0.0.1",)), pol)
            out.append(Registration(pool_handle=POOL, pool_element=pe).encode())
        transport.write(b"".join(out))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            length = _LEN.unpack_from(self.buf, 2)[0]
            if len(self.buf) < length:
                break
            msg = decode_asap(bytes(self.buf[:length]))
            del self.buf[:length]
            name = type(msg).__name__
            if name == "RegistrationResponse":
                self.acked += 1
                if self.acked == self.n and not self.done.done():
                    self.done.set_result(None)
            elif name == "EndpointKeepAlive":
                ack = EndpointKeepAliveAck(pool_handle=msg.pool_handle, identifier=msg.identifier)  # type: ignore[attr-defined]
                self.t.write(ack.encode())  # type: ignore[attr-defined]


async def farm_main(port: int, n: int) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    await loop.create_connection(lambda: Farm(n, done), "127.0.0.1", port)
    await done
    print("registered", flush=True)
    await asyncio.Event().wait()


# ------------------------------------------------------------------------------------ clients


class Client(asyncio.Protocol):
    """One connection. Closed loop (``depth`` > 0): each answer triggers the next request.
    Paced (``depth`` 0): requests go out only through ``send()``."""

    def __init__(self, depth: int, stats: dict[str, list[float]], req: bytes) -> None:
        self.depth, self.stats, self.req = depth, stats, req
        self.sent: collections.deque[float] = collections.deque()
        self.buf = bytearray()
        self.recording = False
        self.answered = 0  # warm-up included: the registrar's CPU time is divided by all of them

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        now = time.perf_counter()
        for _ in range(self.depth):
            self.sent.append(now)
        if self.depth:
            transport.write(self.req * self.depth)  # type: ignore[attr-defined]

    def send(self, n: int) -> None:
        now = time.perf_counter()
        for _ in range(n):
            self.sent.append(now)
        self.t.write(self.req * n)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, n, done = 0, len(buf), 0
        while n - pos >= 4:
            length = _LEN.unpack_from(buf, pos + 2)[0]
            if pos + length > n:
                break
            if buf[pos] != 0x06 or buf[pos + 1] != 0:
                raise SystemExit(f"unexpected reply type 0x{buf[pos]:02x}")
            pos += length
            done += 1
        if pos:
            del buf[:pos]
        now = time.perf_counter()
        lat = self.stats["lat"]
        self.answered += done
        for _ in range(done):
            t0 = self.sent.popleft()
            if self.recording:
                lat.append(now - t0)
        if done and self.depth:
            for _ in range(done):
                self.sent.append(now)
            self.t.write(self.req * done)  # type: ignore[attr-defined]


async def pace(protos: list[Client], rate: float, stop: asyncio.Event) -> None:
    """Open loop: ``rate`` requests per second over ``protos`` in turn, topped up every millisecond
    (the event loop's timer resolution) to what is due by the clock, so a late wake-up sends more."""
    t0 = time.perf_counter()
    i = 0
    while not stop.is_set():
        due = int((time.perf_counter() - t0) * rate)
        burst = [0] * len(protos)
        while i < due:
            burst[i % len(protos)] += 1
            i += 1
        for p, n in zip(protos, burst, strict=True):
            if n:
                p.send(n)
        await asyncio.sleep(0.001)


async def client_main(port: int, connections: int, depth: int, warmup: float, duration: float,
                      rate: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    stats: dict[str, list[float]] = {"lat": []}
    req = HandleResolution(pool_handle=POOL).encode()
    protos = []
    for _ in range(connections):
        _, p = await loop.create_connection(lambda: Client(0 if rate else depth, stats, req), "127.0.0.1", port)
        protos.append(p)
    stop = asyncio.Event()
    pacer = asyncio.ensure_future(pace(protos, rate, stop)) if rate else None
    await asyncio.sleep(warmup)
    for p in protos:
        p.recording = True
    t0 = time.perf_counter()
    await asyncio.sleep(duration)
    for p in protos:
        p.recording = False
    elapsed = time.perf_counter() - t0
    stop.set()
    if pacer is not None:
        await pacer
    lat = stats["lat"]
    print(json.dumps({"count": len(lat), "elapsed": elapsed, "answered": sum(p.answered for p in protos),
                      "lat": sorted(lat)[:: max(1, len(lat) // 20000)]}), flush=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> float:
    return os.getloadavg()[0]


# ------------------------------------------------------------------------------------ driver


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (3 s)")
    ap.add_argument("--pes", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=1, help="client processes")
    ap.add_argument("--connections", type=int, default=4, help="TCP connections per client")
    ap.add_argument("--depth", type=int, default=2, help="requests in flight per connection (closed loop)")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="open loop: requests per second over all clients (0: closed loop)")
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--event-loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                    help="registrar's event loop (auto: uvloop if installed)")
    ap.add_argument("--role", choices=["driver", "farm", "client"], default="driver", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    duration = args.duration or (3.0 if args.quick else 10.0)

    if args.role == "farm":
        asyncio.run(farm_main(args.port, args.pes))
        return
    if args.role == "client":
        asyncio.run(client_main(args.port, args.connections, args.depth, 1.0, duration, args.rate))
        return

    port = free_port()
    env = dict(os.environ, RSERPOOL_TRANSPORT="tcp", PYTHONPATH=str(ROOT))
    cpus = sorted(os.sched_getaffinity(0))
    reg_cpu, client_cpus = cpus[0], (cpus[1:] or cpus)
    reg_cmd = [sys.executable, "-m", "rserpool", "registrar", "--listen", f"127.0.0.1:{port}",
               "--enrp-listen", "none", "--no-announce", "--transport", "tcp", "--log-level", "warning",
               "--event-loop", args.event_loop]
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(cmd: list[str], cpuset: list[int], out: int | None = None) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.DEVNULL,
                             preexec_fn=lambda: os.sched_setaffinity(0, cpuset))
        procs.append(p)
        return p

    load0 = loadavg()
    try:
        registrar = spawn(reg_cmd, [reg_cpu])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("registrar did not start") from None
                time.sleep(0.05)
        me = [sys.executable, str(Path(__file__).resolve()), "--port", str(port)]
        farm = spawn(me + ["--role", "farm", "--pes", str(args.pes)], client_cpus, subprocess.PIPE)
        assert farm.stdout is not None
        if farm.stdout.readline().strip() != b"registered":
            raise SystemExit("PE farm failed")
        load_desc = (f"open loop, {args.rate:g}/s in all" if args.rate
                     else f"closed loop, depth {args.depth}")
        print(f"registrar on CPU {reg_cpu}, {args.pes} PEs registered; {args.clients} client process(es) x "
              f"{args.connections} connection(s), {load_desc}, {duration:g} s; load average {load0:.2f}",
              flush=True)
        cpu0 = cpu_seconds(registrar.pid)
        clients = [spawn(me + ["--role", "client", "--connections", str(args.connections), "--depth",
                               str(args.depth), "--duration", str(duration), "--rate",
                               str(args.rate / args.clients)], client_cpus, subprocess.PIPE)
                   for _ in range(args.clients)]
        total, answered, elapsed, lat = 0, 0, 0.0, []
        for c in clients:
            out, _ = c.communicate(timeout=duration + 30)
            r = json.loads(out.decode().strip().splitlines()[-1])
            total += r["count"]
            answered += r["answered"]
            elapsed = max(elapsed, r["elapsed"])
            lat += r["lat"]
        cpu = cpu_seconds(registrar.pid) - cpu0
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
    rate = total / elapsed if elapsed else 0.0
    p50, p99 = pct(lat, 0.50) * 1000, pct(lat, 0.99) * 1000
    cpu_us = cpu / answered * 1e6 if answered else float("nan")
    load1 = loadavg()
    print(f"handle resolutions: {total} in {elapsed:.2f} s = {rate:,.0f}/s; latency p50 {p50:.3f} ms, "
          f"p99 {p99:.3f} ms; registrar CPU {cpu_us:.1f} us per resolution; load average {load0:.2f} -> "
          f"{load1:.2f}")
    print(json.dumps({"resolutions_per_s": round(rate, 1), "p50_ms": round(p50, 4), "p99_ms": round(p99, 4),
                      "registrar_cpu_us_per_resolution": round(cpu_us, 2),
                      "mode": "open" if args.rate else "closed", "offered_per_s": args.rate or None,
                      "pes": args.pes, "clients": args.clients, "connections": args.connections,
                      "depth": args.depth, "duration_s": duration, "transport": "tcp",
                      "event_loop": args.event_loop, "loadavg_1m": [round(load0, 2), round(load1, 2)]}))


if __name__ == "__main__":
    main()

"""The load of benchmarks/registrar.py (and benchmarks/flood.py): a PE farm that registers a pool and
answers keep-alives (with load updates for adaptive policies), closed- and open-loop handle-resolution
clients over TCP or SCTP that decode every reply, an ENRP propagation probe, and the process helpers
(start a registrar of either implementation, wait until it listens, read its CPU time).
Run as a script only through benchmarks/registrar.py (``--role farm|client``)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rserpool import transport as tp
from rserpool.policy import PolicyInfo
from rserpool.policytypes import ADAPTIVE_POLICIES, SHORT_NAMES, PolicyType, fraction_to_u32
from rserpool.policywire import policy_to_wire
from rserpool.wire import (
    AsapType,
    EndpointKeepAliveAck,
    HandleResolution,
    HandleResolutionResponse,
    PoolElement,
    Registration,
    SctpTransport,
    TcpTransport,
    decode_asap,
)

ROOT = Path(__file__).resolve().parent.parent
POOL = "BenchPool"
_LEN = struct.Struct("!H")
_TLVH = struct.Struct("!HH")
_U16 = struct.Struct("!H")
POLICIES = {name: pt for pt, name in SHORT_NAMES.items() if pt is not PolicyType.UNDEFINED
            and "DPF" not in name}  # the DPF variants need distances the farm does not have
FULL_DECODE_EVERY = 64
NETNS_ADDR = "10.79.0.1"


def free_port(kind: str = "tcp") -> int:
    # an ephemeral port free for TCP is as good as any for SCTP (separate port spaces)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_policy(name: str, rnd: random.Random) -> PolicyInfo:
    pt = POLICIES[name]
    if pt not in ADAPTIVE_POLICIES:
        return PolicyInfo(pt, weight=1 if name in ("WRR", "WRAND", "PRIO") else 0)
    load = fraction_to_u32(rnd.random() * 0.8)
    degr = fraction_to_u32(0.01) if name in ("LUD", "PLU", "PLUD", "RLUD", "RPLU", "RPLUD") else 0
    return PolicyInfo(pt, load=load, load_degradation=degr)


def classify(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, str | None]:
    """(pool elements, error) of the ASAP message ``buf[pos:end]``: walks its parameters.

    error is None for a Handle Resolution Response with elements and no Operation Error, else a
    short description (the first error cause's code, "no pool element", or the message type)."""
    if buf[pos] != 0x06:
        return 0, f"message type 0x{buf[pos]:02x}"
    p, pes, cause = pos + 4, 0, -1
    while p + 4 <= end:
        t, n = _TLVH.unpack_from(buf, p)
        if n < 4 or p + n > end:
            return 0, "malformed parameter"
        if t == 0x000A:
            pes += 1
        elif t == 0x000C:
            cause = _U16.unpack_from(buf, p + 4)[0] if n >= 6 else 0
        p += (n + 3) & ~3
    if cause >= 0:
        return pes, f"operation error cause 0x{cause:x}"
    if not pes:
        return 0, "no pool element"
    return pes, None


class Tally:
    """What the replies said: resolutions counted, errors by kind, full decodes checked."""

    def __init__(self) -> None:
        self.ok = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.checked = 0

    def reply(self, buf: bytes | bytearray, pos: int, end: int) -> None:
        pes, err = classify(buf, pos, end)
        if err is not None:
            self.errors[err] += 1
            return
        self.ok += 1
        if self.ok % FULL_DECODE_EVERY == 1:
            self.checked += 1
            try:
                msg = decode_asap(bytes(buf[pos:end]))
            except Exception as exc:  # the codec's own verdict on the registrar's bytes
                self.errors[f"undecodable: {exc}"[:80]] += 1
                return
            if not isinstance(msg, HandleResolutionResponse) or len(msg.pool_elements) != pes or msg.reject:
                self.errors["full decode disagrees"] += 1


def host_port(text: str) -> tuple[str, int]:
    host, port = tp.parse_endpoint(text, tp.ASAP_PORT, "127.0.0.1")
    return host, port


# ------------------------------------------------------------------------------------ PE farm


class Farm:
    """Registers N PEs over one association, acks every keep-alive, sends load updates."""

    def __init__(self, n: int, policy: str, kind: str, host: str, pool: bytes, first_id: int = 1) -> None:
        self.n, self.policy, self.kind, self.host, self.pool = n, policy, kind, host, pool
        self.ids = list(range(first_id, first_id + n))
        self.rnd = random.Random(1)
        self.acked = self.rejected = self.updates = self.keepalives = 0
        self._acks: dict[int, bytes] = {}
        self.done = asyncio.get_running_loop().create_future()
        self.conn: tp.MessageConnection | None = None

    def registration(self, ident: int) -> bytes:
        pol = policy_to_wire(make_policy(self.policy, self.rnd))
        cls = SctpTransport if self.kind == "sctp" else TcpTransport
        user = cls(20000 + ident % 40000, (self.host,))
        pe = PoolElement(ident, 0, 3_600_000, user, pol)
        return Registration(pool_handle=self.pool, pool_element=pe).encode()

    def connection_made(self, conn: tp.MessageConnection) -> None:
        self.conn = conn

    def register_all(self) -> None:
        assert self.conn is not None
        for ident in self.ids:
            self.conn.send(self.registration(ident))

    def update(self, count: int) -> None:
        assert self.conn is not None
        for _ in range(count):
            self.conn.send(self.registration(self.rnd.choice(self.ids)))
            self.updates += 1

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        if data[0] == AsapType.ENDPOINT_KEEP_ALIVE:  # 1,000 of them arrive in a burst, answered in place
            ack = self._keepalive_ack(data)
            if ack is not None:
                self.keepalives += 1
                conn.send(ack)
                return
        msg = decode_asap(data)
        name = type(msg).__name__
        if name == "RegistrationResponse":
            if msg.reject:  # type: ignore[attr-defined]
                self.rejected += 1
            self.acked += 1
            if self.acked >= self.n and not self.done.done():
                self.done.set_result(None)
        elif name == "EndpointKeepAlive":
            self.keepalives += 1
            ack = EndpointKeepAliveAck(pool_handle=msg.pool_handle, identifier=msg.identifier)  # type: ignore[attr-defined]
            conn.send(ack.encode())

    def _keepalive_ack(self, data: bytes) -> bytes | None:
        """The Ack of a Keep-Alive for one of our PEs (header, server ID, Pool Handle, PE Identifier:
        RSPLIB's and emulab's layout), from a per-PE cache: a slow farm (Python under qemu TCG, 1,000
        decodes and encodes per keep-alive round) must not let the registrars time its PEs out.
        None: another layout, decoded in full."""
        if len(data) < 12:
            return None
        ptype, plen = struct.unpack_from("!HH", data, 8)
        off = 8 + ((plen + 3) & ~3)
        if ptype != 0x0009 or data[12:8 + plen] != self.pool or len(data) != off + 8:
            return None
        ptype, plen = struct.unpack_from("!HH", data, off)
        if ptype != 0x000E or plen != 8:
            return None
        ident = int.from_bytes(data[off + 4:off + 8], "big")
        ack = self._acks.get(ident)
        if ack is None:
            ack = self._acks[ident] = EndpointKeepAliveAck(pool_handle=self.pool, identifier=ident).encode()
        return ack

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"registrar closed the farm's association: {exc}"))


async def farm_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    host, port = host_port(args.registrar)
    farm = Farm(args.pes, args.policy, args.transport, args.pe_host or host, args.pool.encode())
    await tp.connect(farm, host, port, kind=args.transport, timeout=30)
    t0 = time.perf_counter()
    farm.register_all()
    await asyncio.wait_for(farm.done, 120)
    print(json.dumps({"registered": farm.acked, "rejected": farm.rejected,
                      "registration_s": time.perf_counter() - t0}), flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    t0, sent = time.perf_counter(), 0
    while not stop.is_set():
        if args.load_updates > 0:
            due = int((time.perf_counter() - t0) * args.load_updates)
            if due > sent:
                farm.update(due - sent)
                sent = due
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.01)
    print(json.dumps({"updates": farm.updates, "acked": farm.acked - args.pes, "rejected": farm.rejected,
                      "keepalives": farm.keepalives}), flush=True)


# ------------------------------------------------------------------------------------ clients


class TcpClient(asyncio.Protocol):
    """One TCP connection. Closed loop (``depth`` > 0): each answer triggers the next request.
    Paced (``depth`` 0): requests go out only through ``send()``. Answers of one read leave
    their follow-ups in one write."""

    def __init__(self, depth: int, lat: list[float], req: bytes, tally: Tally) -> None:
        self.depth, self.lat, self.req, self.tally = depth, lat, req, tally
        self.sent: collections.deque[float] = collections.deque()
        self.buf = bytearray()
        self.recording = False
        self.answered = 0  # warm-up included: the registrar's CPU time is divided by all of them

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        if self.depth:
            self.send(self.depth)

    def send(self, n: int) -> None:
        now = time.perf_counter()
        self.sent.extend([now] * n)
        self.t.write(self.req * n)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, n, done = 0, len(buf), 0
        tally = self.tally
        while n - pos >= 4:
            length = _LEN.unpack_from(buf, pos + 2)[0]
            if length < 4:
                raise SystemExit("framing lost: ASAP message length < 4")
            if pos + length > n:
                break
            if self.recording:
                tally.reply(buf, pos, pos + length)
            pos += length
            done += 1
        if pos:
            del buf[:pos]
        self.answered += done
        now = time.perf_counter()
        sent = self.sent
        if self.recording:
            lat = self.lat
            for _ in range(done):
                lat.append(now - sent.popleft())
        else:
            for _ in range(done):
                sent.popleft()
        if done and self.depth:
            self.send(done)


class SctpClient:
    """One SCTP association (``rserpool.transport``: one user message per ASAP message)."""

    def __init__(self, depth: int, lat: list[float], req: bytes, tally: Tally) -> None:
        self.depth, self.lat, self.req, self.tally = depth, lat, req, tally
        self.sent: collections.deque[float] = collections.deque()
        self.recording = False
        self.answered = 0
        self.conn: tp.MessageConnection | None = None

    def connection_made(self, conn: tp.MessageConnection) -> None:
        self.conn = conn

    def send(self, n: int) -> None:
        assert self.conn is not None
        for _ in range(n):
            self.sent.append(time.perf_counter())
            self.conn.send(self.req)

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        now = time.perf_counter()
        t0 = self.sent.popleft()
        self.answered += 1
        if self.recording:
            self.tally.reply(data, 0, len(data))
            self.lat.append(now - t0)
        if self.depth:
            self.send(1)

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        pass


async def pace(protos: list[Any], rate: float, stop: asyncio.Event) -> None:
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


async def client_main(args: argparse.Namespace, warmup: float, duration: float) -> None:
    loop = asyncio.get_running_loop()
    host, port = host_port(args.registrar)
    lat: list[float] = []
    tally = Tally()
    req = HandleResolution(pool_handle=args.pool.encode()).encode()
    depth = 0 if args.rate else args.depth
    protos: list[Any] = []
    for _ in range(args.connections):
        if args.transport == "tcp":
            _, p = await loop.create_connection(lambda: TcpClient(depth, lat, req, tally), host, port)
            p.t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            p = SctpClient(depth, lat, req, tally)
            await tp.connect(p, host, port, kind="sctp", timeout=30)
            if depth:
                p.send(depth)
        protos.append(p)
    stop = asyncio.Event()
    pacer = asyncio.ensure_future(pace(protos, args.rate, stop)) if args.rate else None
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
    print(json.dumps({"ok": tally.ok, "errors": dict(tally.errors), "checked": tally.checked,
                      "elapsed": elapsed, "answered": sum(p.answered for p in protos),
                      "lat": sorted(lat)[:: max(1, len(lat) // 20000)]}), flush=True)


# ------------------------------------------------------------------------------------ ENRP probe


class Probe:
    """A minimal ASAP endpoint: sends what it is told, hands every reply to a queue."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.conn: tp.MessageConnection | None = None

    def connection_made(self, conn: tp.MessageConnection) -> None:
        self.conn = conn

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        if data[0] == AsapType.ENDPOINT_KEEP_ALIVE:  # for the probe PE: ack it
            msg = decode_asap(data)
            conn.send(EndpointKeepAliveAck(pool_handle=msg.pool_handle,  # type: ignore[attr-defined]
                                           identifier=msg.identifier).encode())  # type: ignore[attr-defined]
            return
        self.replies.put_nowait(data)

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        pass


async def enrp_propagation(a: tuple[str, int], b: tuple[str, int], kind: str, pe_host: str, samples: int,
                           first_timeout: float) -> list[float]:
    """Seconds from a PE's registration at ``a`` until a Handle Resolution at ``b`` finds it.

    Each sample registers a new PE in a pool of its own and resolves that pool at ``b`` in a
    closed loop until an answer carries it (before that, b answers "unknown pool"). The first
    sample waits for the peering itself and is not counted."""
    pa, pb = Probe(), Probe()
    await tp.connect(pa, *a, kind=kind, timeout=30)
    await tp.connect(pb, *b, kind=kind, timeout=30)
    assert pa.conn is not None and pb.conn is not None
    rnd = random.Random(2)
    out: list[float] = []
    for i in range(samples + 1):
        pool = f"EnrpProbe{os.getpid()}-{i}".encode()
        ident = 0x70000000 + i
        farm = Farm(1, "RR", kind, pe_host, pool, ident)
        farm.rnd = rnd
        t0 = time.perf_counter()
        pa.conn.send(farm.registration(ident))
        limit = t0 + (first_timeout if i == 0 else 30.0)
        req = HandleResolution(pool_handle=pool).encode()
        while True:
            pb.conn.send(req)
            try:
                data = await asyncio.wait_for(pb.replies.get(), 2)
            except TimeoutError:
                data = b"\x00"  # no answer yet: ask again (a late answer is read by a later turn)
            pes, err = classify(data, 0, len(data))
            if err is None and pes:
                break
            if time.perf_counter() > limit:
                raise SystemExit(f"ENRP: PE registered at {a} not visible at {b} after {limit - t0:.0f} s")
            await asyncio.sleep(0.0005)
        if i:
            out.append(time.perf_counter() - t0)
        while not pa.replies.empty():
            pa.replies.get_nowait()
    pa.conn.close()
    pb.conn.close()
    return out


# ------------------------------------------------------------------------------------ processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Procs:
    """The processes a run started; all stopped (TERM, then KILL) by ``close``."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        cpus = sorted(os.sched_getaffinity(0))
        self.reg_cpus, self.client_cpus = [cpus[0]], (cpus[1:] or cpus)

    def spawn(self, cmd: list[str], cpuset: list[int], out: int | None = None) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.PIPE if out else subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, preexec_fn=lambda: os.sched_setaffinity(0, cpuset))
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes]) -> bytes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        return out or b""

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_listening(host: str, port: int, kind: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"registrar exited with status {proc.returncode} before listening on {host}:{port}")
        proto = tp.IPPROTO_SCTP if kind == "sctp" else 0
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto) as s:
                s.settimeout(1.0)
                s.connect((host, port))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"registrar not listening on {host}:{port} after {timeout:.0f} s") from None
            time.sleep(0.05)


def registrar_cmd(impl: str, host: str, port: int, enrp_port: int | None, kind: str, event_loop: str,
                  peer: int | None = None) -> list[str]:
    if impl == "rsplib":
        cmd = ["rspregistrar", f"-asap={host}:{port}", f"-enrp={host}:{enrp_port}", "-asapannounce=off",
               "-enrpannounce=off", "-loglevel=0", "-logcolor=off", "-quiet", "-minaddressscope=loopback"]
        if peer:
            cmd.append(f"-peer={host}:{peer}")
        return cmd
    cmd = [sys.executable, "-m", "rserpool", "registrar", "--listen", f"{host}:{port}",
           "--enrp-listen", f"{host}:{enrp_port}" if enrp_port else "none", "--no-announce",
           "--transport", kind, "--log-level", "warning", "--event-loop", event_loop]
    if peer:
        cmd += ["--peer", f"{host}:{peer}"]
    return cmd

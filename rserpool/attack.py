"""Malformed-input attacker for a registrar on loopback, and the legitimate PE and PU that watch it.

RFC 5355 lists what a registrar must survive; this module produces the wire side of it, over TCP
(ASAP's stream framing) or SCTP (one SCTP message per ASAP/ENRP message, with its PPID; ``Channel``):

* ``malformed_asap`` / ``malformed_enrp``: one bad message of a ``CASES`` kind (truncated,
  oversized, garbage, unknown message type, unknown parameter with "report" action bits,
  out-of-order messages such as unsolicited responses and acks for unknown PEs, unframeable).
* ``check_answers``: one connection per rule, each checking that the registrar answers as the RFCs
  say (ASAP / ENRP Error with the right cause, RFC 5351 / 5353 / 5354 section 2.1), aborts an
  unframeable stream (SCTP: a message beyond the 64 KiB limit) and aborts an association that keeps
  sending junk (``max_bad_messages``; SCTP also: messages with a foreign PPID).
* ``flood``: many connections sending a seeded mix of all kinds to the ASAP and ENRP ports.
* ``LegitElement`` / ``LegitUser``: a real PE (acks keep-alives) and a real PU (measures handle
  resolution latency and whether the PE is still in the answers) kept running during an attack.

Targets are restricted to 127.0.0.0/8 (``require_loopback``): this is a test tool for registrars
the caller started itself. Every loop is bounded in messages and in time.

Usage: python -m rserpool.attack --registrar 127.0.0.1:PORT [--enrp 127.0.0.1:PORT] [--transport tcp|sctp]
       [--connections N] [--messages M] [--duration S] [--seed X]   (last line: JSON)
The transport defaults to the one this kernel's registrars use (``rserpool.transport.transport_kind``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import ipaddress
import json
import random
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from rserpool import transport as tp
from rserpool.policy import PolicyInfo
from rserpool.policytypes import PolicyType
from rserpool.policywire import policy_to_wire
from rserpool.wire import (
    ASAP_MESSAGES,
    ENRP_MESSAGES,
    CodecError,
    Deregistration,
    EndpointKeepAliveAck,
    EndpointUnreachable,
    HandleResolution,
    HandleTableRequest,
    HandleUpdate,
    PoolElement,
    Presence,
    Registration,
    RegistrationResponse,
    SctpTransport,
    TcpTransport,
    UnknownParameter,
    decode_asap,
    decode_enrp,
)

CASES = ("truncated", "oversized", "garbage", "unknown-type", "unknown-param", "out-of-order", "unframeable")
_HDR = struct.Struct("!BBH")
MAX_MESSAGES = 1_000_000  # hard bound of any flood, whatever is asked
MAX_DURATION = 600.0  # seconds, likewise


def require_loopback(host: str) -> None:
    """Refuse any target outside 127.0.0.0/8: only registrars we started ourselves are attacked."""
    if ipaddress.ip_address(host) not in ipaddress.ip_network("127.0.0.0/8"):
        raise ValueError(f"refusing to attack {host}: only 127.0.0.0/8 targets are allowed")


def element(ident: int, port: int = 7, host: str = "127.0.0.1", kind: str = "tcp") -> PoolElement:
    user = SctpTransport(port, (host,)) if kind == "sctp" else TcpTransport(port, (host,))
    return PoolElement(ident, 0, 3_600_000, user, policy_to_wire(PolicyInfo(PolicyType.ROUND_ROBIN)))


def _frame(mtype: int, body: bytes, flags: int = 0) -> bytes:
    return _HDR.pack(mtype, flags, 4 + len(body)) + body


def _truncate(msg: bytes, rnd: random.Random) -> bytes:
    """A message cut short, with the header length fixed so that the stream stays framed."""
    n = rnd.randrange(4, len(msg))
    return _HDR.pack(msg[0], msg[1], n) + msg[4:n]


def asap_templates(rnd: random.Random, pool: bytes) -> list[bytes]:
    ident = rnd.randrange(1, 1 << 32)
    return [Registration(pool_handle=pool, pool_element=element(ident)).encode(),
            HandleResolution(pool_handle=pool).encode(),
            Deregistration(pool_handle=pool, identifier=ident).encode(),
            EndpointUnreachable(pool_handle=pool, identifier=ident).encode()]


def malformed_asap(case: str, rnd: random.Random, pool: bytes = b"AttackPool") -> bytes:
    """One bad ASAP message (or stream piece) of kind ``case``."""
    if case == "truncated":
        return _truncate(rnd.choice(asap_templates(rnd, pool)), rnd)
    if case == "oversized":
        if rnd.random() < 0.9:  # a pool handle beyond any limit (RFC 5354: answered Invalid Values)
            return HandleResolution(pool_handle=rnd.randbytes(rnd.randrange(300, 4000))).encode()
        # the largest frame there is, full of junk parameters
        return _frame(0x01, b"".join(struct.pack("!HH", 0x0009, 4 + 252) + rnd.randbytes(252)
                                     for _ in range(255)))
    if case == "garbage":
        return _frame(rnd.choice(sorted(ASAP_MESSAGES)), rnd.randbytes(rnd.randrange(0, 120)), rnd.randrange(256))
    if case == "unknown-type":
        unused = [t for t in range(0x10, 0x100) if t not in ASAP_MESSAGES]
        return _frame(rnd.choice(unused), rnd.randbytes(rnd.randrange(0, 40)))
    if case == "unknown-param":  # action bits 01: stop and report (RFC 5354 section 2.1)
        return HandleResolution(pool_handle=pool, extra=(UnknownParameter(0x4000 | rnd.randrange(0x100, 0x3FFF),
                                                                          b"xyz"),)).encode()
    if case == "out-of-order":
        ident = rnd.randrange(1, 1 << 32)
        return rnd.choice([EndpointKeepAliveAck(pool_handle=pool, identifier=ident).encode(),
                           RegistrationResponse(pool_handle=pool, identifier=ident).encode(),
                           Deregistration(pool_handle=pool, identifier=ident).encode(),
                           EndpointUnreachable(pool_handle=pool, identifier=ident).encode()])
    if case == "unframeable":
        return _HDR.pack(0x05, 0, rnd.randrange(0, 4)) + rnd.randbytes(8)
    raise ValueError(case)


def malformed_enrp(case: str, rnd: random.Random, sender: int = 0x0BADBAD0, pool: bytes = b"AttackPool") -> bytes:
    """One bad ENRP message of kind ``case``, from an unknown peer ``sender``."""
    ids = struct.pack("!II", sender, 0)
    if case == "truncated":
        tpl = rnd.choice([Presence(sender_id=sender, checksum=0).encode(),
                          HandleUpdate(sender_id=sender, pool_handle=pool, pool_element=element(1)).encode()])
        return _truncate(tpl, rnd)
    if case == "oversized":
        return _frame(0x05, ids + struct.pack("!HH", 0, 0) + b"".join(
            struct.pack("!HH", 0x0009, 4 + 252) + rnd.randbytes(252) for _ in range(255)))
    if case == "garbage":
        return _frame(rnd.choice(sorted(ENRP_MESSAGES)), ids + rnd.randbytes(rnd.randrange(0, 120)))
    if case == "unknown-type":
        unused = [t for t in range(0x10, 0x100) if t not in ENRP_MESSAGES]
        return _frame(rnd.choice(unused), ids + rnd.randbytes(rnd.randrange(0, 40)))
    if case == "unknown-param":
        return Presence(sender_id=sender, checksum=0,
                        extra=(UnknownParameter(0x4000 | rnd.randrange(0x100, 0x3FFF), b"xyz"),)).encode()
    if case == "out-of-order":  # answers nobody asked for, from a registrar nobody knows
        return rnd.choice([
            _frame(0x03, ids),  # Handle Table Response, empty
            _frame(0x08, ids + struct.pack("!I", rnd.randrange(1 << 32))),  # Init Takeover Ack
            HandleUpdate(sender_id=sender, update_action=1, pool_handle=pool,
                         pool_element=element(rnd.randrange(1, 1 << 32))).encode(),
            HandleTableRequest(sender_id=sender).encode()])
    if case == "unframeable":
        return _HDR.pack(0x01, 0, rnd.randrange(0, 4)) + rnd.randbytes(8)
    raise ValueError(case)


# ------------------------------------------------------------------------------------ associations


class Closed(ConnectionError):
    """The registrar closed or aborted the association."""


async def read_message(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    n = _HDR.unpack(head)[2]
    return head + await reader.readexactly(n - 4)


class Channel:
    """One association to a registrar's ASAP or ENRP port, over TCP or SCTP.

    TCP carries ASAP's stream framing (the header's length cuts the stream, so a batch of messages
    is one write); SCTP carries one message per send, tagged with the protocol's PPID (``ppid``
    overrides it: a foreign PPID is abuse too). ``recv`` raises ``Closed`` once the registrar
    closed or aborted the association."""

    def __init__(self, kind: str, protocol: str) -> None:
        self.kind, self.protocol = kind, protocol
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._conn: tp.MessageConnection | None = None
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.ppid = tp.PPID_ASAP if protocol == "asap" else tp.PPID_ENRP

    @classmethod
    async def open(cls, host: str, port: int, protocol: str = "asap", kind: str = "tcp",
                   timeout: float = 10.0) -> Channel:
        require_loopback(host)
        ch = cls(kind, protocol)
        if kind == "sctp":
            ch._conn = await tp.connect(ch, host, port, kind="sctp", timeout=timeout)
        else:
            ch._reader, ch._writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        return ch

    # the SCTP connection's handler (rserpool.transport.MessageHandler)
    def connection_made(self, conn: tp.MessageConnection) -> None:
        pass

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        self._queue.put_nowait(data)

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        self._queue.put_nowait(None)

    async def recv(self) -> bytes:
        if self._reader is not None:
            try:
                return await read_message(self._reader)
            except (asyncio.IncompleteReadError, OSError) as exc:
                raise Closed(str(exc)) from exc
        data = await self._queue.get()
        if data is None:
            self._queue.put_nowait(None)  # every later recv sees the close as well
            raise Closed("association closed")
        return data

    def send(self, *messages: bytes, ppid: int | None = None) -> None:
        if self._writer is not None:
            self._writer.write(b"".join(messages))
            return
        assert self._conn is not None
        if self._conn.is_closing():
            raise Closed("association closed")
        for m in messages:
            self._conn.send(m, self.ppid if ppid is None else ppid)

    async def drain(self) -> None:
        """Wait until what was sent left this process (the kernel took it)."""
        if self._writer is not None:
            try:
                await self._writer.drain()
            except OSError as exc:
                raise Closed(str(exc)) from exc
            return
        assert self._conn is not None
        while getattr(self._conn, "pending", 0):
            if self._conn.is_closing():
                raise Closed("association closed")
            await asyncio.sleep(0.002)
        if self._conn.is_closing():
            raise Closed("association closed")
        await asyncio.sleep(0)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._conn is not None:
            self._conn.close()


# ------------------------------------------------------------------------------------ replies


def error_causes(data: bytes, protocol: str) -> list[int] | None:
    """The cause codes of an ASAP or ENRP Error message, None for any other message."""
    try:
        msg: Any = decode_asap(data) if protocol == "asap" else decode_enrp(data)
    except CodecError:
        return None
    if type(msg).__name__ not in ("AsapError", "EnrpError"):
        return None
    return [c.code for c in msg.error.causes]


async def _closed_by_peer(ch: Channel, timeout: float) -> bool:
    """True once the other side closed or reset the association (within ``timeout``)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ch.recv()
    except TimeoutError:
        return False
    except Closed:
        return True


async def _expect_error(host: str, port: int, data: bytes, protocol: str, timeout: float,
                        kind: str = "tcp") -> list[int] | None:
    ch = await Channel.open(host, port, protocol, kind)
    try:
        ch.send(data)
        async with asyncio.timeout(timeout):
            while True:
                causes = error_causes(await ch.recv(), protocol)
                if causes is not None:
                    return causes
    except (TimeoutError, ConnectionError):
        return None
    finally:
        ch.close()


async def _abused_closed(host: str, port: int, messages: list[bytes], timeout: float, kind: str,
                         ppid: int | None = None) -> bool:
    """Send ``messages`` on one association; True if the registrar closed it within ``timeout``."""
    ch = await Channel.open(host, port, "asap", kind)
    try:
        with contextlib.suppress(ConnectionError):
            ch.send(*messages, ppid=ppid)
            await ch.drain()
        return await _closed_by_peer(ch, timeout)
    finally:
        ch.close()


async def check_answers(host: str, port: int, enrp_port: int | None, bad_messages: int = 64,
                        timeout: float = 3.0, seed: int = 1, kind: str = "tcp") -> dict[str, Any]:
    """Check each rule on its own association; returns what was seen per rule (expected in comments)."""
    require_loopback(host)
    rnd = random.Random(seed)
    out: dict[str, Any] = {}
    # RFC 5351 / 5354: an unknown message type is answered with an Error, cause Unrecognized Message (2)
    out["asap_unknown_type"] = await _expect_error(host, port, malformed_asap("unknown-type", rnd), "asap", timeout,
                                                   kind)
    # RFC 5354 section 2.1: an unknown parameter with action 01 stops processing and is reported (1)
    out["asap_unknown_param"] = await _expect_error(host, port, malformed_asap("unknown-param", rnd), "asap",
                                                    timeout, kind)
    # an over-long pool handle: Invalid Values (3)
    out["asap_oversized_handle"] = await _expect_error(
        host, port, HandleResolution(pool_handle=b"x" * 600).encode(), "asap", timeout, kind)
    if enrp_port is not None:
        out["enrp_unknown_type"] = await _expect_error(host, enrp_port, malformed_enrp("unknown-type", rnd), "enrp",
                                                       timeout, kind)
    if kind == "tcp":  # a stream that cannot be framed is aborted
        out["unframeable_closed"] = await _abused_closed(host, port, [malformed_asap("unframeable", rnd)],
                                                         timeout, kind)
    else:
        # SCTP frames the messages itself; what it cannot carry is one beyond RSPLIB's 64 KiB buffer
        big = _HDR.pack(0x05, 0, 0xFFFF) + bytes(tp.MAX_MESSAGE_SIZE + 4096)  # (the length field cannot say it)
        out["overlong_message_closed"] = await _abused_closed(host, port, [big], timeout, kind)
        # well-formed ASAP under a foreign PPID (ENRP's) is not ASAP: dropped, and abuse when it goes on
        hr = HandleResolution(pool_handle=b"AttackPool").encode()
        out["wrong_ppid_closed"] = await _abused_closed(host, port, [hr] * (bad_messages + 1), timeout, kind,
                                                        ppid=tp.PPID_ENRP)
    # an association that keeps sending junk is aborted (max_bad_messages)
    out["abusive_closed"] = await _abused_closed(
        host, port, [malformed_asap("garbage", rnd) for _ in range(bad_messages + 1)], timeout, kind)
    return out


# ------------------------------------------------------------------------------------ flood


@dataclass
class FloodStats:
    sent: int = 0
    bytes: int = 0
    connections: int = 0
    closed_by_registrar: int = 0
    errors_received: collections.Counter[str] = field(default_factory=collections.Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "bytes": self.bytes, "connections": self.connections,
                "closed_by_registrar": self.closed_by_registrar, "errors_received": dict(self.errors_received)}


async def _drain_replies(ch: Channel, protocol: str, stats: FloodStats) -> None:
    with contextlib.suppress(ConnectionError):
        while True:
            causes = error_causes(await ch.recv(), protocol)
            if causes:
                stats.errors_received[f"{protocol}:{causes[0]}"] += 1


async def _attacker(host: str, port: int, protocol: str, rnd: random.Random, messages: int, deadline: float,
                    stats: FloodStats, cases: tuple[str, ...], kind: str = "tcp") -> None:
    """One association after another until ``messages`` were sent or the deadline: each sends junk
    until the registrar closes it (then the next one is opened)."""
    make = malformed_asap if protocol == "asap" else malformed_enrp
    left = messages
    while left > 0 and time.monotonic() < deadline:
        try:
            ch = await Channel.open(host, port, protocol, kind)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.01)
            continue
        stats.connections += 1
        drain = asyncio.ensure_future(_drain_replies(ch, protocol, stats))
        try:
            while left > 0 and time.monotonic() < deadline and not drain.done():
                batch = [make(rnd.choice(cases), rnd) for _ in range(min(32, left))]
                ch.send(*batch)
                stats.sent += len(batch)
                stats.bytes += sum(map(len, batch))
                left -= len(batch)
                await ch.drain()
            if not drain.done():  # sent all: did the registrar close it meanwhile?
                await asyncio.wait([drain], timeout=0.2)
        except ConnectionError:
            stats.closed_by_registrar += 1
        else:
            if drain.done():
                stats.closed_by_registrar += 1
        drain.cancel()
        ch.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await drain


async def flood(host: str, port: int, enrp_port: int | None = None, connections: int = 16, messages: int = 2000,
                duration: float = 10.0, seed: int = 1,
                cases: tuple[str, ...] = tuple(c for c in CASES if c != "unframeable"), kind: str = "tcp") -> FloodStats:
    """``connections`` attackers in parallel (half on the ENRP port if given), each sending up to
    ``messages`` bad messages within ``duration`` seconds. Unframeable streams are left out by
    default: the registrar aborts them at once, so they test little beyond reconnecting."""
    require_loopback(host)
    messages = min(messages, MAX_MESSAGES // max(1, connections))
    deadline = time.monotonic() + min(duration, MAX_DURATION)
    stats = FloodStats()
    rnd = random.Random(seed)
    jobs = []
    for i in range(connections):
        proto, p = ("enrp", enrp_port) if enrp_port is not None and i % 2 else ("asap", port)
        jobs.append(_attacker(host, p, proto, random.Random(rnd.getrandbits(64)), messages, deadline, stats, cases,
                              kind))
    await asyncio.gather(*jobs)
    return stats


# ------------------------------------------------------------------------------------ the legitimate side


class LegitElement:
    """A real PE: registers over its own association and acks every keep-alive."""

    def __init__(self, host: str, port: int, pool: bytes, ident: int, kind: str = "tcp") -> None:
        self.host, self.port, self.pool, self.ident, self.kind = host, port, pool, ident, kind
        self.keepalives = 0
        self.registered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ch: Channel | None = None

    async def start(self, timeout: float = 10.0) -> None:
        self._ch = await Channel.open(self.host, self.port, "asap", self.kind, timeout)
        self._ch.send(Registration(pool_handle=self.pool, pool_element=element(self.ident, kind=self.kind)).encode())
        self._task = asyncio.ensure_future(self._serve(self._ch))
        await asyncio.wait_for(self.registered.wait(), timeout)

    async def _serve(self, ch: Channel) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                data = await ch.recv()
                if data[0] == 0x03:  # Registration Response
                    self.registered.set()
                elif data[0] == 0x07:
                    msg: Any = decode_asap(data)
                    self.keepalives += 1
                    ch.send(EndpointKeepAliveAck(pool_handle=msg.pool_handle, identifier=msg.identifier).encode())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ch is not None:
            self._ch.close()


class LegitUser:
    """A real PU: resolves ``pool`` every ``interval`` seconds over one association and records the
    latency; a resolution succeeds if its answer comes within ``timeout`` and names ``expect``."""

    def __init__(self, host: str, port: int, pool: bytes, expect: set[int], interval: float = 0.01,
                 timeout: float = 1.0, kind: str = "tcp") -> None:
        self.host, self.port, self.pool, self.expect, self.kind = host, port, pool, expect, kind
        self.interval, self.timeout = interval, timeout
        self.latencies: list[float] = []
        self.failures: collections.Counter[str] = collections.Counter()
        self.missing_element = 0  # answers without one of ``expect``

    @property
    def attempts(self) -> int:
        return len(self.latencies) + sum(self.failures.values())

    async def run(self, duration: float) -> None:
        require_loopback(self.host)
        deadline = time.monotonic() + min(duration, MAX_DURATION)
        hr = HandleResolution(pool_handle=self.pool, items=len(self.expect) + 3).encode()
        ch = await Channel.open(self.host, self.port, "asap", self.kind)
        try:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                ch.send(hr)
                try:
                    data = await asyncio.wait_for(ch.recv(), self.timeout)
                except TimeoutError:
                    self.failures["timeout"] += 1
                    # the late answer would be taken for the next one's: start over on a new association
                    ch.close()
                    ch = await Channel.open(self.host, self.port, "asap", self.kind)
                    continue
                dt = time.perf_counter() - t0
                msg: Any = decode_asap(data)
                got = {pe.identifier for pe in getattr(msg, "pool_elements", ())}
                if getattr(msg, "error", None) is not None or not got:
                    self.failures["error answer"] += 1
                elif not self.expect <= got:
                    self.missing_element += 1
                    self.failures["element missing"] += 1
                else:
                    self.latencies.append(dt)
                await asyncio.sleep(max(0.0, self.interval - (time.perf_counter() - t0)))
        except ConnectionError as exc:
            self.failures[f"connection: {type(exc).__name__}"] += 1
        finally:
            ch.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def attack_with_watch(host: str, port: int, enrp_port: int | None, connections: int, messages: int,
                            duration: float, seed: int, kind: str = "tcp",
                            bad_messages: int = 64) -> dict[str, Any]:
    """A legitimate PE and PU, the answer checks, then the flood; what the PU saw throughout.
    ``bad_messages``: the registrar's ``max_bad_messages`` (what the abuse checks send beyond)."""
    pool = b"LegitPool"
    pe = LegitElement(host, port, pool, 0x600D, kind)
    await pe.start()
    pu = LegitUser(host, port, pool, {0x600D}, kind=kind)
    watch = asyncio.ensure_future(pu.run(duration + 1.0))
    try:
        answers = await check_answers(host, port, enrp_port, bad_messages=bad_messages, seed=seed, kind=kind)
        stats = await flood(host, port, enrp_port, connections, messages, duration, seed, kind=kind)
        await watch
    finally:
        watch.cancel()
        await pe.stop()
    lat = pu.latencies
    return {"transport": kind, "answers": answers, "flood": stats.to_dict(), "legit_resolutions": len(lat),
            "legit_attempts": pu.attempts, "legit_failures": dict(pu.failures),
            "legit_p50_ms": round((percentile(lat, 0.5) or 0) * 1000, 3),
            "legit_p99_ms": round((percentile(lat, 0.99) or 0) * 1000, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--registrar", required=True, help="ASAP endpoint HOST:PORT (127.0.0.0/8 only)")
    ap.add_argument("--enrp", default=None, help="ENRP endpoint HOST:PORT (127.0.0.0/8 only)")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--messages", type=int, default=2000, help="bad messages per connection slot")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--transport", choices=("tcp", "sctp"), default=None,
                    help="default: what this kernel's registrars use (SCTP where the kernel has it)")
    ap.add_argument("--max-bad-messages", type=int, default=64,
                    help="the registrar's --max-bad-messages (the abuse checks send one more)")
    a = ap.parse_args(argv)
    host, port = a.registrar.rsplit(":", 1)
    enrp_port = int(a.enrp.rsplit(":", 1)[1]) if a.enrp else None
    try:
        require_loopback(host)
        if a.enrp:
            require_loopback(a.enrp.rsplit(":", 1)[0])
    except ValueError as exc:
        ap.error(str(exc))
    kind = a.transport or tp.transport_kind()
    report = asyncio.run(attack_with_watch(host, int(port), enrp_port, a.connections, a.messages, a.duration, a.seed,
                                           kind, a.max_bad_messages))
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Malformed-input attacker for a registrar on loopback, and the legitimate PE and PU that watch it.

RFC 5355 lists what a registrar must survive; this module produces the wire side of it over TCP:

* ``malformed_asap`` / ``malformed_enrp``: one bad message of a ``CASES`` kind (truncated,
  oversized, garbage, unknown message type, unknown parameter with "report" action bits,
  out-of-order messages such as unsolicited responses and acks for unknown PEs, unframeable).
* ``check_answers``: one connection per rule, each checking that the registrar answers as the RFCs
  say (ASAP / ENRP Error with the right cause, RFC 5351 / 5353 / 5354 section 2.1), aborts an
  unframeable stream and aborts an association that keeps sending junk (``max_bad_messages``).
* ``flood``: many connections sending a seeded mix of all kinds to the ASAP and ENRP ports.
* ``LegitElement`` / ``LegitUser``: a real PE (acks keep-alives) and a real PU (measures handle
  resolution latency and whether the PE is still in the answers) kept running during an attack.

Targets are restricted to 127.0.0.0/8 (``require_loopback``): this is a test tool for registrars
the caller started itself. Every loop is bounded in messages and in time.

Usage: python -m rserpool.attack --registrar 127.0.0.1:PORT [--enrp 127.0.0.1:PORT]
       [--connections N] [--messages M] [--duration S] [--seed X]   (last line: JSON)
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


def element(ident: int, port: int = 7, host: str = "127.0.0.1") -> PoolElement:
    return PoolElement(ident, 0, 3_600_000, TcpTransport(port, (host,)),
                       policy_to_wire(PolicyInfo(PolicyType.ROUND_ROBIN)))


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


# ------------------------------------------------------------------------------------ replies


async def read_message(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    n = _HDR.unpack(head)[2]
    return head + await reader.readexactly(n - 4)


def error_causes(data: bytes, protocol: str) -> list[int] | None:
    """The cause codes of an ASAP or ENRP Error message, None for any other message."""
    try:
        msg: Any = decode_asap(data) if protocol == "asap" else decode_enrp(data)
    except CodecError:
        return None
    if type(msg).__name__ not in ("AsapError", "EnrpError"):
        return None
    return [c.code for c in msg.error.causes]


async def _closed_by_peer(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True once the other side closed or reset the connection (within ``timeout``)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
        return True
    except TimeoutError:  # (a subclass of OSError: first)
        return False
    except OSError:
        return True


async def _expect_error(host: str, port: int, data: bytes, protocol: str, timeout: float) -> list[int] | None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        async with asyncio.timeout(timeout):
            while True:
                causes = error_causes(await read_message(reader), protocol)
                if causes is not None:
                    return causes
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        return None
    finally:
        writer.close()


async def check_answers(host: str, port: int, enrp_port: int | None, bad_messages: int = 64,
                        timeout: float = 3.0, seed: int = 1) -> dict[str, Any]:
    """Check each rule on its own connection; returns what was seen per rule (expected in comments)."""
    require_loopback(host)
    rnd = random.Random(seed)
    out: dict[str, Any] = {}
    # RFC 5351 / 5354: an unknown message type is answered with an Error, cause Unrecognized Message (2)
    out["asap_unknown_type"] = await _expect_error(host, port, malformed_asap("unknown-type", rnd), "asap", timeout)
    # RFC 5354 section 2.1: an unknown parameter with action 01 stops processing and is reported (1)
    out["asap_unknown_param"] = await _expect_error(host, port, malformed_asap("unknown-param", rnd), "asap", timeout)
    # an over-long pool handle: Invalid Values (3)
    out["asap_oversized_handle"] = await _expect_error(
        host, port, HandleResolution(pool_handle=b"x" * 600).encode(), "asap", timeout)
    if enrp_port is not None:
        out["enrp_unknown_type"] = await _expect_error(host, enrp_port, malformed_enrp("unknown-type", rnd), "enrp",
                                                       timeout)
    # a stream that cannot be framed is aborted
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(malformed_asap("unframeable", rnd))
    out["unframeable_closed"] = await _closed_by_peer(reader, timeout)
    writer.close()
    # an association that keeps sending junk is aborted (max_bad_messages)
    reader, writer = await asyncio.open_connection(host, port)
    with contextlib.suppress(ConnectionError):
        for _ in range(bad_messages + 1):
            writer.write(malformed_asap("garbage", rnd))
        await writer.drain()
    out["abusive_closed"] = await _closed_by_peer(reader, timeout)
    writer.close()
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


async def _drain_replies(reader: asyncio.StreamReader, protocol: str, stats: FloodStats) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, OSError):
        while True:
            causes = error_causes(await read_message(reader), protocol)
            if causes:
                stats.errors_received[f"{protocol}:{causes[0]}"] += 1


async def _attacker(host: str, port: int, protocol: str, rnd: random.Random, messages: int, deadline: float,
                    stats: FloodStats, cases: tuple[str, ...]) -> None:
    """One connection after another until ``messages`` were sent or the deadline: each sends junk
    until the registrar closes it (then the next one is opened)."""
    make = malformed_asap if protocol == "asap" else malformed_enrp
    left = messages
    while left > 0 and time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        stats.connections += 1
        drain = asyncio.ensure_future(_drain_replies(reader, protocol, stats))
        try:
            while left > 0 and time.monotonic() < deadline and not drain.done():
                batch = b"".join(make(rnd.choice(cases), rnd) for _ in range(min(32, left)))
                writer.write(batch)
                stats.sent += min(32, left)
                stats.bytes += len(batch)
                left -= min(32, left)
                await writer.drain()
            if not drain.done():  # sent all: did the registrar close it meanwhile?
                await asyncio.wait([drain], timeout=0.2)
        except (ConnectionError, OSError):
            stats.closed_by_registrar += 1
        else:
            if drain.done():
                stats.closed_by_registrar += 1
        drain.cancel()
        writer.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await drain


async def flood(host: str, port: int, enrp_port: int | None = None, connections: int = 16, messages: int = 2000,
                duration: float = 10.0, seed: int = 1,
                cases: tuple[str, ...] = tuple(c for c in CASES if c != "unframeable")) -> FloodStats:
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
        jobs.append(_attacker(host, p, proto, random.Random(rnd.getrandbits(64)), messages, deadline, stats, cases))
    await asyncio.gather(*jobs)
    return stats


# ------------------------------------------------------------------------------------ the legitimate side


class LegitElement:
    """A real PE: registers over its own association and acks every keep-alive."""

    def __init__(self, host: str, port: int, pool: bytes, ident: int) -> None:
        self.host, self.port, self.pool, self.ident = host, port, pool, ident
        self.keepalives = 0
        self.registered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self, timeout: float = 10.0) -> None:
        require_loopback(self.host)
        reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(Registration(pool_handle=self.pool, pool_element=element(self.ident)).encode())
        self._task = asyncio.ensure_future(self._serve(reader, self._writer))
        await asyncio.wait_for(self.registered.wait(), timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, OSError):
            while True:
                data = await read_message(reader)
                if data[0] == 0x03:  # Registration Response
                    self.registered.set()
                elif data[0] == 0x07:
                    msg: Any = decode_asap(data)
                    self.keepalives += 1
                    writer.write(EndpointKeepAliveAck(pool_handle=msg.pool_handle, identifier=msg.identifier).encode())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()


class LegitUser:
    """A real PU: resolves ``pool`` every ``interval`` seconds over one association and records the
    latency; a resolution succeeds if its answer comes within ``timeout`` and names ``expect``."""

    def __init__(self, host: str, port: int, pool: bytes, expect: set[int], interval: float = 0.01,
                 timeout: float = 1.0) -> None:
        self.host, self.port, self.pool, self.expect = host, port, pool, expect
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
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                writer.write(hr)
                try:
                    data = await asyncio.wait_for(read_message(reader), self.timeout)
                except TimeoutError:
                    self.failures["timeout"] += 1
                    # the late answer would be taken for the next one's: start over on a new association
                    writer.close()
                    reader, writer = await asyncio.open_connection(self.host, self.port)
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
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.failures[f"connection: {type(exc).__name__}"] += 1
        finally:
            writer.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def attack_with_watch(host: str, port: int, enrp_port: int | None, connections: int, messages: int,
                            duration: float, seed: int) -> dict[str, Any]:
    """A legitimate PE and PU, the answer checks, then the flood; what the PU saw throughout."""
    pool = b"LegitPool"
    pe = LegitElement(host, port, pool, 0x600D)
    await pe.start()
    pu = LegitUser(host, port, pool, {0x600D})
    watch = asyncio.ensure_future(pu.run(duration + 1.0))
    try:
        answers = await check_answers(host, port, enrp_port, seed=seed)
        stats = await flood(host, port, enrp_port, connections, messages, duration, seed)
        await watch
    finally:
        watch.cancel()
        await pe.stop()
    lat = pu.latencies
    return {"answers": answers, "flood": stats.to_dict(), "legit_resolutions": len(lat),
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
    a = ap.parse_args(argv)
    host, port = a.registrar.rsplit(":", 1)
    enrp_port = int(a.enrp.rsplit(":", 1)[1]) if a.enrp else None
    try:
        require_loopback(host)
        if a.enrp:
            require_loopback(a.enrp.rsplit(":", 1)[0])
    except ValueError as exc:
        ap.error(str(exc))
    report = asyncio.run(attack_with_watch(host, int(port), enrp_port, a.connections, a.messages, a.duration, a.seed))
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Registrar logic over TCP on loopback, driven by raw ASAP clients (short timers, in-process)."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from rserpool.hsdump import fetch_handlespace
from rserpool.policy import PolicyInfo
from rserpool.policytypes import PolicyType, fraction_to_u32
from rserpool.policywire import policy_to_wire
from rserpool.registrar import HsEvent, Registrar, RegistrarConfig
from rserpool.wire import (
    AsapError,
    Deregistration,
    DeregistrationResponse,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    EndpointUnreachable,
    HandleResolution,
    HandleResolutionResponse,
    PoolElement,
    Registration,
    RegistrationResponse,
    ServerAnnounce,
    TcpTransport,
    UnknownParameter,
    decode_asap,
)

POOL = b"TestPool"


def cfg(**kw: Any) -> RegistrarConfig:
    base: dict[str, Any] = dict(listen=[("127.0.0.1", 0)], enrp_listen=("127.0.0.1", 0), announce=False,
                                transport="tcp", keepalive_interval=30.0, keepalive_timeout=30.0)
    base.update(kw)
    return RegistrarConfig(**base)


def run(config: RegistrarConfig, body: Callable[[Registrar], Awaitable[None]]) -> None:
    async def main() -> None:
        reg = Registrar(config)
        await reg.start()
        try:
            await asyncio.wait_for(body(reg), 20)
        finally:
            await reg.stop()
    asyncio.run(main())


class Client:
    """A raw ASAP-over-TCP client: send messages, read decoded replies in order."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    @classmethod
    async def open(cls, reg: Registrar) -> Client:
        r, w = await asyncio.open_connection("127.0.0.1", reg.port)
        return cls(r, w)

    def send(self, data: bytes) -> None:
        self.w.write(data)

    async def recv(self, timeout: float = 3.0) -> Any:
        hdr = await asyncio.wait_for(self.r.readexactly(4), timeout)
        length = struct.unpack("!H", hdr[2:])[0]
        body = await asyncio.wait_for(self.r.readexactly(length - 4), timeout)
        return decode_asap(hdr + body)

    async def recv_type(self, cls: type, timeout: float = 3.0) -> Any:
        while True:
            m = await self.recv(timeout)
            if isinstance(m, cls):
                return m

    async def register(self, ident: int, policy: PolicyInfo | None = None, life_ms: int = 60_000,
                       port: int = 5000, handle: bytes = POOL) -> RegistrationResponse:
        pe = PoolElement(ident, 0, life_ms, TcpTransport(port, ("127.0.0.1",)),
                         policy_to_wire(policy or PolicyInfo(PolicyType.ROUND_ROBIN)))
        self.send(Registration(pool_handle=handle, pool_element=pe).encode())
        return await self.recv_type(RegistrationResponse)

    async def resolve(self, handle: bytes = POOL, items: int | None = None) -> HandleResolutionResponse:
        self.send(HandleResolution(pool_handle=handle, items=items).encode())
        return await self.recv_type(HandleResolutionResponse)

    def close(self) -> None:
        self.w.close()


def ids(resp: HandleResolutionResponse) -> list[int]:
    return [pe.identifier for pe in resp.pool_elements]


async def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------------------


def test_registration_resolution_and_dump() -> None:
    async def body(reg: Registrar) -> None:
        pe = await Client.open(reg)
        for i in (11, 12, 13, 14):
            resp = await pe.register(i, port=6000 + i)
            assert not resp.reject and resp.error is None and resp.identifier == i
        pu = await Client.open(reg)
        r = await pu.resolve()
        assert len(r.pool_elements) == 3  # RSPLIB default max handle resolution items
        assert r.policy is not None and r.policy.policy_type == PolicyType.ROUND_ROBIN
        assert all(pe.home_registrar == reg.identifier for pe in r.pool_elements)
        assert len((await pu.resolve(items=10)).pool_elements) == 4
        dump = await fetch_handlespace("127.0.0.1", reg.enrp_port, kind="tcp")
        assert dump.registrar_id == reg.identifier
        assert sorted(p.identifier for p, _ in dump.pools[POOL]) == [11, 12, 13, 14]
        assert {p.port for p, _ in dump.pools[POOL]} == {6011, 6012, 6013, 6014}
        unknown = await pu.resolve(b"NoSuchPool")
        assert not unknown.pool_elements and unknown.error is not None
        assert unknown.error.causes[0].code == 0x9
        pe.close()
        pu.close()
    run(cfg(), body)


def test_reregistration_with_new_load_changes_plu_choice() -> None:
    async def body(reg: Registrar) -> None:
        c = await Client.open(reg)
        low = PolicyInfo.make(PolicyType.PRIORITY_LEAST_USED, load=0.1, load_degradation=0.05)
        high = PolicyInfo.make(PolicyType.PRIORITY_LEAST_USED, load=0.6, load_degradation=0.05)
        await c.register(1, low)
        await c.register(2, high)
        assert ids(await c.resolve(items=1)) == [1]
        resp = await c.register(1, PolicyInfo.make(PolicyType.PRIORITY_LEAST_USED, load=0.9, load_degradation=0.05))
        assert not resp.reject
        r = await c.resolve(items=1)
        assert ids(r) == [2]
        assert r.pool_elements[0].policy.load == fraction_to_u32(0.6)
        assert reg.handlespace.get(POOL, 1).policy.load == fraction_to_u32(0.9)  # type: ignore[union-attr]
        c.close()
    run(cfg(), body)


def test_inconsistent_policy_is_rejected_with_cause() -> None:
    async def body(reg: Registrar) -> None:
        c = await Client.open(reg)
        await c.register(1, PolicyInfo(PolicyType.ROUND_ROBIN))
        resp = await c.register(2, PolicyInfo.make(PolicyType.LEAST_USED, load=0.2))
        assert resp.reject and resp.error is not None and resp.error.causes[0].code == 0x5
        assert reg.handlespace.get(POOL, 2) is None
        c.close()
    run(cfg(), body)


def test_deregistration_and_unknown_deregistration_succeed() -> None:
    events: list[HsEvent] = []

    async def body(reg: Registrar) -> None:
        reg.listeners.append(events.append)
        c = await Client.open(reg)
        await c.register(7)
        await c.register(7)  # re-registration = update
        c.send(Deregistration(pool_handle=POOL, identifier=7).encode())
        resp = await c.recv_type(DeregistrationResponse)
        assert resp.identifier == 7 and resp.error is None
        assert len(reg.handlespace) == 0
        c.send(Deregistration(pool_handle=POOL, identifier=99).encode())
        assert (await c.recv_type(DeregistrationResponse)).error is None
        c.close()
    run(cfg(), body)
    assert [(e.action, e.reason) for e in events] == [("add", "registration"), ("update", "registration"),
                                                      ("remove", "deregistration")]


def test_keepalive_timeout_removes_silent_pe_and_acks_keep_it() -> None:
    async def body(reg: Registrar) -> None:
        silent = await Client.open(reg)
        await silent.register(1)
        alive = await Client.open(reg)
        await alive.register(2)

        async def answer() -> None:
            while True:
                m = await alive.recv(10)
                if isinstance(m, EndpointKeepAlive):
                    assert m.server_id == reg.identifier and not m.home
                    alive.send(EndpointKeepAliveAck(pool_handle=m.pool_handle, identifier=m.identifier).encode())

        task = asyncio.create_task(answer())
        ka = await silent.recv_type(EndpointKeepAlive)
        assert ka.identifier == 1
        await eventually(lambda: reg.handlespace.get(POOL, 1) is None)
        assert await asyncio.wait_for(silent.r.read(), 3) == b""  # registrar aborted the association
        await asyncio.sleep(0.6)
        assert reg.handlespace.get(POOL, 2) is not None
        assert reg.stats["keepalive_ack"] >= 2
        task.cancel()
        alive.close()
    run(cfg(keepalive_interval=0.2, keepalive_timeout=0.6), body)


def test_unreachable_reports_remove_after_max_bad_pe_reports() -> None:
    async def body(reg: Registrar) -> None:
        pe = await Client.open(reg)
        await pe.register(5)
        pu = await Client.open(reg)
        for n in range(1, 4):
            pu.send(EndpointUnreachable(pool_handle=POOL, identifier=5).encode())
            if n < 3:
                await eventually(lambda n=n: reg.stats["endpoint_unreachable"] == n)
                assert reg.handlespace.get(POOL, 5) is not None
        await eventually(lambda: reg.handlespace.get(POOL, 5) is None)
        assert reg.stats["removed_unreachable"] == 1
        pe.close()
        pu.close()
    run(cfg(), body)


def test_registration_life_expiry_and_connection_loss() -> None:
    async def body(reg: Registrar) -> None:
        c = await Client.open(reg)
        await c.register(1, life_ms=200)
        await c.register(2, life_ms=60_000)
        await eventually(lambda: reg.handlespace.get(POOL, 1) is None)
        assert reg.stats["removed_expired"] == 1
        assert reg.handlespace.get(POOL, 2) is not None
        c.close()
        await eventually(lambda: len(reg.handlespace) == 0)
        assert reg.stats["removed_connection-lost"] == 1
    run(cfg(), body)


def test_malformed_and_hostile_input_does_not_stop_the_registrar() -> None:
    async def body(reg: Registrar) -> None:
        good = await Client.open(reg)
        await good.register(1)
        bad = await Client.open(reg)
        # unknown message type -> ASAP Error "Unrecognized Message"
        bad.send(struct.pack("!BBH", 0x7F, 0, 8) + b"abcd")
        err = await bad.recv()
        assert isinstance(err, AsapError) and err.error.causes[0].code == 0x2
        # unknown parameter with "stop and report" action bits -> error cause 1, message dropped
        hr = HandleResolution(pool_handle=POOL, extra=(UnknownParameter(0x4123, b"xx"),)).encode()
        bad.send(hr)
        err = await bad.recv()
        assert isinstance(err, AsapError) and err.error.causes[0].code == 0x1
        # "skip" action bits: processed normally
        bad.send(HandleResolution(pool_handle=POOL, extra=(UnknownParameter(0x8123, b"yy"),)).encode())
        assert ids(await bad.recv_type(HandleResolutionResponse)) == [1]
        # truncated parameter, responses sent by a PE, overlong pool handle: dropped / error
        bad.send(struct.pack("!BBH", 0x05, 0, 12) + b"\x00\x09\x00\x20abcd")
        bad.send(RegistrationResponse(pool_handle=POOL, identifier=1).encode())
        bad.send(HandleResolution(pool_handle=b"x" * 300).encode())
        assert isinstance(await bad.recv(), AsapError)
        # random garbage with valid framing
        rnd = random.Random(5)
        for _ in range(300):
            body_len = rnd.randrange(0, 60)
            bad.send(struct.pack("!BBH", rnd.randrange(1, 15), rnd.randrange(256), 4 + body_len)
                     + rnd.randbytes(body_len))
        # a client sending an unframeable stream and vanishing
        junk = await Client.open(reg)
        junk.send(b"\x01\x00\x00\x01" + b"\xff" * 50)
        junk.close()
        await asyncio.sleep(0.2)
        r = await good.resolve()
        assert ids(r) == [1]
        assert reg.handlespace.get(POOL, 1) is not None
        bad.close()
        good.close()
    run(cfg(), body)


def test_handle_resolution_rate_limit() -> None:
    async def body(reg: Registrar) -> None:
        pe = await Client.open(reg)
        await pe.register(1)
        pu = await Client.open(reg)
        answers = [await pu.resolve() for _ in range(30)]
        refused = [a for a in answers if a.error is not None]
        assert refused and refused[0].error.causes[0].code == 0xA  # type: ignore[union-attr]
        assert ids(answers[0]) == [1]
        other = await Client.open(reg)  # limits are per PU
        assert ids(await other.resolve()) == [1]
        for c in (pe, pu, other):
            c.close()
    run(cfg(max_hr_rate=20.0), body)


def test_unreachable_rate_limit_protects_pe() -> None:
    async def body(reg: Registrar) -> None:
        pe = await Client.open(reg)
        await pe.register(1)
        attacker = await Client.open(reg)
        for _ in range(10):
            attacker.send(EndpointUnreachable(pool_handle=POOL, identifier=1).encode())
        await eventually(lambda: reg.stats["endpoint_unreachable"] == 10)
        assert reg.stats["endpoint_unreachable_refused"] >= 7
        assert reg.handlespace.get(POOL, 1) is not None
        pe.close()
        attacker.close()
    run(cfg(max_eu_rate=1.0), body)


def test_handle_table_dump_in_parts() -> None:
    async def body(reg: Registrar) -> None:
        c = await Client.open(reg)
        for i in range(1, 8):
            await c.register(i)
        await c.register(1, handle=b"Other")
        dump = await fetch_handlespace("127.0.0.1", reg.enrp_port, kind="tcp")
        assert dump.element_count == 8
        assert sorted(p.identifier for p, _ in dump.pools[POOL]) == list(range(1, 8))
        assert reg.stats["handle_table_request"] >= 4  # 8 entries, 2 per response
        c.close()
    run(cfg(max_elements_per_ht_request=2), body)


def test_announce_message_and_peer_warning(caplog: pytest.LogCaptureFixture) -> None:
    async def body(reg: Registrar) -> None:
        msg = decode_asap(reg.announce_message())
        assert isinstance(msg, ServerAnnounce) and msg.server_id == reg.identifier
        assert [(t.port, t.addresses) for t in msg.transports] == [(reg.port, ("127.0.0.1",))]

    with caplog.at_level(logging.WARNING):
        run(cfg(peers=[("10.9.9.9", 9901)], identifier=0x1234), body)
    assert not any("not implemented" in r.getMessage() for r in caplog.records)


def test_pipelined_requests_are_answered_in_order_in_one_write() -> None:
    """Answers to what one read delivered leave together (one send() instead of one per answer)."""
    async def body(reg: Registrar) -> None:
        pe = await Client.open(reg)
        for i in (1, 2, 3):
            assert not (await pe.register(i, port=7000 + i)).reject
        pu = await Client.open(reg)
        await pu.resolve()  # the registrar now knows this connection
        (peer,) = [p for p in reg._peers if not p.entries]
        raw = peer.conn.conn  # type: ignore[union-attr]  # the TCP protocol under the coalescing wrapper
        writes: list[bytes] = []
        send = raw.send
        raw.send = lambda data, ppid=11: (writes.append(data), send(data, ppid))  # type: ignore[method-assign]
        pu.send(HandleResolution(pool_handle=POOL).encode() + HandleResolution(pool_handle=b"Nope").encode()
                + b"\x3f\x00\x00\x04" + HandleResolution(pool_handle=POOL, items=1).encode())
        first = await pu.recv()
        assert isinstance(first, HandleResolutionResponse) and len(first.pool_elements) == 3
        unknown = await pu.recv()
        assert isinstance(unknown, HandleResolutionResponse) and unknown.error is not None
        assert unknown.error.causes[0].code == 0x9
        assert isinstance(await pu.recv(), AsapError)  # unrecognized message type 0x3f
        last = await pu.recv()
        assert isinstance(last, HandleResolutionResponse) and len(last.pool_elements) == 1
        assert len(writes) == 1
        pe.close()
        pu.close()
    run(cfg(), body)

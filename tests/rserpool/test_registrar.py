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

from helpers.c_extension import need_c_extension

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


def test_load_reports_take_the_fast_path_with_the_full_paths_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-registration that changes only the policy values is applied without the codec, with
    what the full path does (reply, order, counters, timers, listeners); any other change, or a
    PE that went away meanwhile, takes the full path again."""
    import rserpool.registrar_asap as ra

    decoded: list[int] = []
    real_decode = ra.decode_asap
    monkeypatch.setattr(ra, "decode_asap", lambda data: (decoded.append(data[0]), real_decode(data))[1])

    async def body(reg: Registrar) -> None:
        events: list[HsEvent] = []
        reg.listeners.append(events.append)
        c = await Client.open(reg)
        lu = PolicyType.LEAST_USED
        assert not (await c.register(1, PolicyInfo.make(lu, load=0.2))).reject
        assert not (await c.register(2, PolicyInfo.make(lu, load=0.5))).reject
        assert ids(await c.resolve(items=1)) == [1]
        assert decoded == [0x01, 0x01]
        timer, expiry = reg._ka_timers[(POOL, 1)], reg._expiry_timers[(POOL, 1)]
        before, expiry_before = timer.when, expiry.when
        await asyncio.sleep(0.01)  # the loop's clock moves on: a moved deadline is a later one
        resp = await c.register(1, PolicyInfo.make(lu, load=0.9))  # a load report
        assert decoded == [0x01, 0x01], "the load report went through the codec"
        assert resp == RegistrationResponse(pool_handle=POOL, identifier=1)
        assert reg.stats["registration"] == 3
        assert reg.handlespace.get(POOL, 1).policy.load == fraction_to_u32(0.9)  # type: ignore[union-attr]
        r = await c.resolve(items=2)
        assert ids(r) == [2, 1] and r.pool_elements[1].policy.load == fraction_to_u32(0.9)
        assert reg._ka_timers[(POOL, 1)] is timer and timer.when > before  # moved, not re-created
        # the registration life counts from the load report too (as the full path's _arm_expiry)
        assert reg._expiry_timers[(POOL, 1)] is expiry and expiry.when > expiry_before and expiry.live
        assert [(e.action, e.reason, e.entry.identifier) for e in events][-1] == ("update", "registration", 1)
        # another change (the port): the full path, whose bytes the next load report is compared with
        await c.register(1, PolicyInfo.make(lu, load=0.1), port=5001)
        assert decoded == [0x01] * 3
        assert reg.handlespace.get(POOL, 1).user_transport.port == 5001  # type: ignore[union-attr]
        await c.register(1, PolicyInfo.make(lu, load=0.3), port=5001)
        assert decoded == [0x01] * 3
        # gone and back (a new entry): the full path
        reg.remove_entry(reg.handlespace.get(POOL, 1), "test")  # type: ignore[arg-type]
        await c.register(1, PolicyInfo.make(lu, load=0.3), port=5001)
        assert decoded == [0x01] * 4
        # keep-alive acks are parsed in place too
        c.send(EndpointKeepAliveAck(pool_handle=POOL, identifier=2).encode())
        await eventually(lambda: reg.stats["keepalive_ack"] == 1)
        assert decoded == [0x01] * 4
        c.close()
    run(cfg(), body)


def test_deadline_timer_moves_later_cheaply_and_earlier_anew() -> None:
    """No assertion depends on how late the loop runs a timer (a loaded CI host): the order of
    what fired and "not before its deadline" are what is checked."""
    from rserpool.registrar_asap import set_deadline

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []
        timers: dict[tuple[bytes, int], Any] = {}
        key = (b"p", 1)

        async def until(n: int) -> None:
            for _ in range(500):
                if len(fired) >= n:
                    return
                await asyncio.sleep(0.01)

        t0 = loop.time()
        set_deadline(timers, loop, key, 0.1, lambda k: fired.append(("a", loop.time() - t0)))
        first = timers[key]
        set_deadline(timers, loop, key, 0.4, lambda k: fired.append(("b", loop.time() - t0)))
        assert timers[key] is first  # moved later: the same timer
        await until(1)
        # not at the first deadline (its loop timer ran then and re-armed itself), at the second
        assert [n for n, _ in fired] == ["b"] and fired[0][1] >= 0.4
        set_deadline(timers, loop, key, 0.3, lambda k: fired.append(("c", 0)))
        moved = timers[key]
        set_deadline(timers, loop, key, 0.02, lambda k: fired.append(("d", 0)))  # earlier: a new timer
        assert timers[key] is not moved and not moved.live
        await until(2)
        await asyncio.sleep(0.5)  # past the replaced deadline: it must not fire as well
        assert [n for n, _ in fired] == ["b", "d"]
        set_deadline(timers, loop, key, 0.02, lambda k: fired.append(("e", 0)))
        timers[key].cancel()
        await asyncio.sleep(0.1)
        assert [n for n, _ in fired] == ["b", "d"]
    asyncio.run(main())


class _Sink:
    """Stands in for a peer's connection: records what the registrar sends."""

    kind, peer, local, user_data = "tcp", ("127.0.0.1", 5000), ("127.0.0.1", 3863), None

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def send(self, data: bytes, ppid: int = 11) -> None:
        self.out.append(data)

    def close(self) -> None: ...
    def abort(self) -> None: ...
    def is_closing(self) -> bool:
        return False


def _cancel_timers(reg: Registrar) -> None:
    for h in [*reg._ka_timers.values(), *reg._expiry_timers.values()]:
        h.cancel()


def test_c_handle_resolution_matches_the_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_selector.hr_reply`` answers what it answers with the same bytes and the same selection
    side effects as the Python path, for the policies it takes and the ones it leaves to Python,
    through load reports, options asking for more or fewer PEs, unknown pools and new entries."""
    import rserpool.registrar_asap as ra
    from rserpool.registrar_asap import AsapPeer

    need_c_extension(ra.hr_reply, "hr_reply")
    c_hr = ra.hr_reply
    in_c: list[bool] = []

    def counted(*args: Any) -> bytes | None:
        r = c_hr(*args)
        in_c.append(r is not None)
        return r

    def state(reg: Registrar) -> list[tuple[Any, ...]]:
        out = []
        for handle in reg.handlespace.pools():
            sel = reg.handlespace.pool(handle).selection  # type: ignore[union-attr]
            out.append((handle, sel.global_seq, [(e.identifier, e.seq, e.selection_counter, e.degradation,
                                                  sel.selector.key(e.identifier)) for e in sel.ordered()]))
        return out

    async def main() -> None:
        loop = asyncio.get_running_loop()
        regs, sinks, peers = [], [], []
        for _ in range(2):
            reg = Registrar(cfg(enrp_listen=None, identifier=0x5E1EC7))
            reg._loop = loop
            reg.handlespace.rng.seed(3)  # the same draws for the randomised policies
            sink = _Sink()
            peer = AsapPeer(reg)
            peer.conn, peer.peer_host = sink, "127.0.0.1"  # type: ignore[assignment]
            regs.append(reg)
            sinks.append(sink)
            peers.append(peer)
        rnd = random.Random(7)
        pools = {b"rr": PolicyType.ROUND_ROBIN, b"lu": PolicyType.LEAST_USED, b"plu": PolicyType.PRIORITY_LEAST_USED,
                 b"prio": PolicyType.PRIORITY, b"lud": PolicyType.LEAST_USED_DEGRADATION,
                 b"wrr": PolicyType.WEIGHTED_ROUND_ROBIN, b"rand": PolicyType.RANDOM}

        def registration(handle: bytes, ident: int) -> bytes:
            pt = pools[handle]
            pol = PolicyInfo(pt, weight=rnd.randint(1, 3), load=fraction_to_u32(rnd.random() * 0.5),
                             load_degradation=fraction_to_u32(0.01))
            pe = PoolElement(ident, 0, 60_000, TcpTransport(4000 + ident, ("127.0.0.1",)), policy_to_wire(pol))
            return Registration(pool_handle=handle, pool_element=pe).encode()

        msgs = [registration(h, i) for h in pools for i in range(1, 8)]
        for _ in range(600):
            x = rnd.random()
            h = rnd.choice(list(pools))
            if x < 0.15:
                msgs.append(registration(h, rnd.randint(1, 10)))  # load report, or a new PE
            elif x < 0.2:
                msgs.append(HandleResolution(pool_handle=b"none").encode())
            else:
                msgs.append(HandleResolution(pool_handle=h, items=rnd.choice([None, None, 1, 2, 5, 200])).encode())
        for data in msgs:
            for k, (reg, peer) in enumerate(zip(regs, peers, strict=True)):
                monkeypatch.setattr(ra, "hr_reply", counted if k == 0 else None)
                reg._handle_asap(peer, data, 11)
            assert sinks[0].out == sinks[1].out
            assert state(regs[0]) == state(regs[1])
        assert regs[0].stats == regs[1].stats
        assert 200 < sum(in_c) < len(in_c)  # both paths were exercised
        for reg in regs:
            _cancel_timers(reg)

    asyncio.run(main())


def test_c_handle_resolution_is_taken_for_plain_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    import rserpool.registrar_asap as ra

    need_c_extension(ra.hr_reply, "hr_reply")
    calls: list[bool] = []
    real = ra.hr_reply
    monkeypatch.setattr(ra, "hr_reply", lambda *a: (r := real(*a), calls.append(r is not None))[0])

    async def body(reg: Registrar) -> None:
        c = await Client.open(reg)
        await c.register(1, PolicyInfo.make(PolicyType.LEAST_USED, load=0.2))
        await c.register(2, PolicyInfo.make(PolicyType.LEAST_USED, load=0.1))
        assert ids(await c.resolve()) == [2, 1]  # first one: the TLVs are not cached yet, Python answers
        assert ids(await c.resolve(items=1)) == [2]
        assert calls == [False, True]
        assert reg.stats["handle_resolution"] == 2
        c.close()
    run(cfg(), body)


def test_c_batch_answers_a_read_bursts_plain_resolutions_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """``AsapPeer.answer_batch`` (the SCTP read burst's hook) answers the plain Handle Resolutions
    up to the first other message, with the bytes the Python path sends, and counts them."""
    import socket

    import rserpool.registrar_asap as ra
    from rserpool.registrar_asap import AsapPeer

    need_c_extension(ra.hr_batch, "hr_batch")

    class Sink:
        kind, peer, local, user_data = "sctp", ("127.0.0.1", 5000), ("127.0.0.1", 3863), None

        def __init__(self) -> None:
            self.out: list[bytes] = []

        def send(self, data: bytes, ppid: int = 11) -> None:
            self.out.append(data)

        def is_closing(self) -> bool:
            return False

    async def main() -> None:
        regs, peers, sinks = [], [], []
        for _ in range(2):
            reg = Registrar(cfg(enrp_listen=None, identifier=0x5E1EC7))
            reg._loop = asyncio.get_running_loop()
            peer, sink = AsapPeer(reg), Sink()
            peer.conn, peer.peer_host = sink, "127.0.0.1"  # type: ignore[assignment]
            for i in range(1, 6):
                pe = PoolElement(i, 0, 60_000, TcpTransport(4000 + i, ("127.0.0.1",)),
                                 policy_to_wire(PolicyInfo.make(PolicyType.LEAST_USED, load=i / 10)))
                reg._handle_asap(peer, Registration(pool_handle=POOL, pool_element=pe).encode(), 11)
            reg._handle_asap(peer, HandleResolution(pool_handle=POOL).encode(), 11)  # fills the TLV caches
            regs.append(reg)
            peers.append(peer)
            sinks.append(sink)
        eor = socket.MSG_EOR
        hr, hr1 = HandleResolution(pool_handle=POOL).encode(), HandleResolution(pool_handle=POOL, items=1).encode()
        msgs = [(hr, eor, 11), (hr1, eor, 0), (HandleResolution(pool_handle=b"none").encode(), eor, 11), (hr, eor, 11)]
        out: list[tuple[bytes, int]] = []
        assert peers[0].answer_batch(sinks[0], msgs, 0, out) == 2  # type: ignore[arg-type]
        assert peers[0].answer_batch(sinks[0], msgs, 3, out) == 4  # type: ignore[arg-type]
        monkeypatch.setattr(ra, "hr_reply", None)
        for data in (hr, hr1, hr):
            regs[1]._handle_asap(peers[1], data, 11)
        assert out == [(d, 11) for d in sinks[1].out[-3:]]
        assert regs[0].stats["handle_resolution"] == regs[1].stats["handle_resolution"] == 4
        for stop in ([(hr, 0, 11)], [(hr, eor | 0x8000, 11)], [(hr, eor, 12)]):  # a piece, a notification, ENRP
            assert peers[0].answer_batch(sinks[0], stop, 0, out) == 0  # type: ignore[arg-type]
        for reg in regs:
            _cancel_timers(reg)

    asyncio.run(main())


def _in_process_registrar(loop: asyncio.AbstractEventLoop) -> tuple[Registrar, Any, _Sink]:
    from rserpool.registrar_asap import AsapPeer

    reg = Registrar(cfg(enrp_listen=None))
    reg._loop = loop
    peer, sink = AsapPeer(reg), _Sink()
    peer.conn, peer.peer_host = sink, "127.0.0.1"
    return reg, peer, sink


def _registration(port: int, load: float, life_ms: int = 60_000, skip_param: bool = False) -> bytes:
    pe = PoolElement(1, 0, life_ms, TcpTransport(port, ("127.0.0.1",)),
                     policy_to_wire(PolicyInfo.make(PolicyType.LEAST_USED, load=load)))
    data = Registration(pool_handle=POOL, pool_element=pe).encode()
    if skip_param:  # an unknown parameter whose action bits say "skip": accepted, but not cacheable
        data += b"\x8f\xff\x00\x04"
        data = data[:2] + struct.pack("!H", len(data)) + data[4:]
    return data


def test_a_newer_uncacheable_registration_is_not_undone_by_an_older_layouts_load_report(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A: cached for load reports; B (new port and life, an unknown skip parameter): accepted
    by the full path and not cacheable; A' (A's layout, a new load): must not pass for a load
    report of A and keep B's port and life with A's bytes answered: the full path takes it."""
    import rserpool.registrar_asap as ra

    async def main() -> None:
        reg, peer, sink = _in_process_registrar(asyncio.get_running_loop())
        try:
            reg._handle_asap(peer, _registration(5000, 0.1), 11)
            assert (POOL, 1) in peer.reg_cache
            reg._handle_asap(peer, _registration(6000, 0.2, life_ms=5000, skip_param=True), 11)
            e = reg.handlespace.get(POOL, 1)
            assert e is not None and e.user_transport.port == 6000 and e.registration_life == 5000
            assert decode_asap(sink.out[-1]) == RegistrationResponse(pool_handle=POOL, identifier=1)
            assert (POOL, 1) not in peer.reg_cache
            decoded: list[int] = []
            real = ra.decode_asap
            monkeypatch.setattr(ra, "decode_asap", lambda d: (decoded.append(d[0]), real(d))[1])
            reg._handle_asap(peer, _registration(5000, 0.3), 11)
            e = reg.handlespace.get(POOL, 1)
            assert decoded == [0x01], "an older layout passed for a load report"
            assert e is not None and e.user_transport.port == 5000 and e.registration_life == 60_000
            assert e.policy.load == fraction_to_u32(0.3)
            assert (POOL, 1) in peer.reg_cache  # cacheable again: the next load report is fast
            reg._handle_asap(peer, _registration(5000, 0.4), 11)
            assert decoded == [0x01] and e.policy.load == fraction_to_u32(0.4)
            # a refused registration (a policy the handlespace rejects) leaves nothing cached either
            bad = PoolElement(1, 0, 60_000, TcpTransport(5000, ("127.0.0.1",)),
                              policy_to_wire(PolicyInfo(PolicyType.ROUND_ROBIN)))
            reg._handle_asap(peer, Registration(pool_handle=POOL, pool_element=bad).encode(), 11)
            assert decode_asap(sink.out[-1]).reject and (POOL, 1) not in peer.reg_cache
        finally:
            _cancel_timers(reg)
    asyncio.run(main())


def test_a_takeover_drops_the_old_registrators_load_report_cache() -> None:
    """The cache holds the entry and its pool's selection: once another peer monitors the entry
    (``monitor_via``, a takeover) the old peer's cached registration goes."""
    from rserpool.registrar_asap import AsapPeer

    async def main() -> None:
        reg, peer, _ = _in_process_registrar(asyncio.get_running_loop())
        try:
            reg._handle_asap(peer, _registration(5000, 0.1), 11)
            assert (POOL, 1) in peer.reg_cache
            other = AsapPeer(reg)
            other.conn, other.peer_host = _Sink(), "127.0.0.2"
            entry = reg.handlespace.get(POOL, 1)
            assert entry is not None
            reg.monitor_via(entry, other)
            assert (POOL, 1) not in peer.reg_cache and entry.registrator is other
        finally:
            _cancel_timers(reg)
    asyncio.run(main())


def test_a_fast_path_bug_costs_one_message_not_the_caller(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The load-report and keep-alive-ack fast paths run under ``_handle_asap``'s guard as the
    decoded handlers do: an exception is logged, the next message is handled."""
    async def main() -> None:
        reg, peer, sink = _in_process_registrar(asyncio.get_running_loop())
        try:
            reg._handle_asap(peer, _registration(5000, 0.1), 11)

            def broken(*args: Any) -> Any:
                raise RuntimeError("fast path bug")
            monkeypatch.setattr(reg, "_fast_reregistration", broken)
            monkeypatch.setattr(reg, "_keepalive_acked", broken)
            with caplog.at_level(logging.ERROR, logger="rserpool.registrar_asap"):
                reg._handle_asap(peer, _registration(5000, 0.2), 11)
                reg._handle_asap(peer, EndpointKeepAliveAck(pool_handle=POOL, identifier=1).encode(), 11)
            assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
                "error handling ASAP message type 0x01 from 127.0.0.1",
                "error handling ASAP message type 0x08 from 127.0.0.1"]
            n = len(sink.out)
            reg._handle_asap(peer, HandleResolution(pool_handle=POOL).encode(), 11)
            assert len(sink.out) == n + 1 and [pe.identifier for pe in decode_asap(sink.out[-1]).pool_elements] == [1]
        finally:
            _cancel_timers(reg)
    asyncio.run(main())


def test_c_batch_failure_keeps_its_answers_and_leaves_the_rest_to_python(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """``answer_batch``: if ``hr_batch`` raises after answering some messages, those answers stand
    (one each) and it returns the index of the message it failed on, for the Python path."""
    import rserpool.registrar_asap as ra

    need_c_extension(ra.hr_batch, "hr_batch")

    def fails_on_second(msgs: list[Any], start: int, out: list[tuple[bytes, int]], *rest: Any) -> int:
        out.append((b"first", 11))
        raise RuntimeError("C bug")

    monkeypatch.setattr(ra, "hr_batch", fails_on_second)

    async def main() -> None:
        reg, peer, sink = _in_process_registrar(asyncio.get_running_loop())
        hr = HandleResolution(pool_handle=POOL).encode()
        msgs = [(hr, 0x80, 11)] * 3  # 0x80: MSG_EOR
        out: list[tuple[bytes, int]] = []
        with caplog.at_level(logging.ERROR, logger="rserpool.registrar_asap"):
            assert peer.answer_batch(sink, msgs, 0, out) == 1  # type: ignore[arg-type]
        assert out == [(b"first", 11)] and reg.stats["handle_resolution"] == 1
        assert any("C handle resolution failed" in r.getMessage() for r in caplog.records)
    asyncio.run(main())


@pytest.mark.parametrize("handle_size", [0, 1, 31, 32, 33, 255])
def test_keepalive_ack_fast_parse_agrees_with_the_decoder(handle_size: int) -> None:
    """The in-place parse takes exactly what the decoder takes, with the same values (an empty or
    over-long pool handle included: the decoder accepts those in an ack too); anything else is
    left to the decoder."""
    from rserpool.registrar_asap import _keepalive_ack_ids

    handle = bytes(range(handle_size))
    data = EndpointKeepAliveAck(pool_handle=handle, identifier=0x01020304).encode()
    msg = decode_asap(data)
    assert _keepalive_ack_ids(data) == (msg.pool_handle, msg.identifier) == (handle, 0x01020304)
    variants = [data[:-1], data + b"\x00\x00\x00\x00", data[:1] + b"\x01" + data[2:],
                data[:2] + struct.pack("!H", len(data) + 4) + data[4:] + b"\x80\x01\x00\x04"]
    for v in variants:
        assert _keepalive_ack_ids(v) is None

"""What this package does the way RSPLIB 3.4.4 does, so that the two interoperate (host tests: TCP
on loopback, asyncio in one process; the same against RSPLIB's programs over SCTP is in
``tests/realkernel/test_rsplib_interop.py``).

* PEs register Transport Use "data plus control" by default, as every RSPLIB PE does, and a pool
  refuses a PE whose control-channel use differs with cause 0x8, as RSPLIB's registrar does.
* ENRP Presences name a concrete ENRP address, the connection's local one when the registrar
  listens on the wildcard (RSPLIB ignores a Presence whose address is not the association's).
* A Presence naming its connection's source endpoint is a client (hsdump) only if it asks for no
  reply and stays the only one; a registrar starting its associations from its ENRP port (RSPLIB)
  is a peer.
* A takeover's Home Keep-Alive goes first to the PE's ASAP endpoint (the registrator transport,
  where RSPLIB's PEs listen), then to its user transport (where this package's PEs answer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from rserpool import transport as tp
from rserpool.hsdump import EnrpCollector
from rserpool.pe import PEConfig, PoolElement, RegistrationRejected
from rserpool.policy import PolicyInfo
from rserpool.registrar import Registrar, RegistrarConfig
from rserpool.wire import (
    CodecError,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    ListRequest,
    ListResponse,
    PoolPolicy,
    Presence,
    ServerInformation,
    TcpTransport,
    TransportUse,
    decode_asap,
)
from rserpool.wire import PoolElement as WirePE

POOL = b"CompatPool"
FAST: dict[str, Any] = dict(announce=False, transport="tcp", keepalive_interval=0.3, keepalive_timeout=0.6,
                            peer_heartbeat_cycle=0.2, peer_max_time_last_heard=0.5, peer_max_time_no_response=0.5)


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 30))


async def eventually(pred: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timeout waiting for {what}")
        await asyncio.sleep(0.02)


async def registrar(host: str = "127.0.0.1", **kw: Any) -> Registrar:
    r = Registrar(RegistrarConfig(listen=[(host, 0)], enrp_listen=(host, 0), **{"identifier": 0x7001, **FAST, **kw}))
    await r.start()
    return r


def pe(r: Registrar, ident: int, **kw: Any) -> PoolElement:
    return PoolElement(PEConfig(POOL, PolicyInfo.parse("RoundRobin"), identifier=ident,
                                registrars=[("127.0.0.1", r.port)], listen=("127.0.0.1", 0), transport="tcp",
                                request_timeout=1.0, retry_delay=0.2, **kw))


class Quiet:
    """A message connection's handler that keeps the connection and ignores what arrives (subclasses
    answer what they care about)."""

    def __init__(self) -> None:
        self.conn: tp.MessageConnection | None = None

    def connection_made(self, conn: tp.MessageConnection) -> None:
        self.conn = conn

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        pass

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        pass


# ---- control channel ------------------------------------------------------------------------

def test_pe_registers_data_plus_control_and_mixed_pools_are_refused_with_cause_8() -> None:
    async def body() -> None:
        r = await registrar()
        a, b = pe(r, 0xA), pe(r, 0xB, control_channel=False)
        try:
            await a.start()
            entry = r.handlespace.get(POOL, 0xA)
            assert entry is not None and entry.user_transport.transport_use == TransportUse.DATA_PLUS_CONTROL
            pool = r.handlespace.pool(POOL)
            assert pool is not None and pool.control_channel
            with pytest.raises(RegistrationRejected) as rejected:
                await b.start()
            assert rejected.value.cause == 0x8  # inconsistent data/control configuration, as RSPLIB
            assert r.handlespace.get(POOL, 0xB) is None
        finally:
            await a.kill()
            await b.kill()
            await r.stop()
    run(body)


def test_pe_data_only_on_request() -> None:
    async def body() -> None:
        r = await registrar()
        p = pe(r, 0xC, control_channel=False)
        try:
            await p.start()
            entry = r.handlespace.get(POOL, 0xC)
            assert entry is not None and entry.user_transport.transport_use == TransportUse.DATA_ONLY
        finally:
            await p.kill()
            await r.stop()
    run(body)


# ---- ENRP Presence ----------------------------------------------------------------------------

async def _presence_exchange(r: Registrar, reply_required: bool, *, name_source: bool,
                             count: int = 1) -> tuple[EnrpCollector, list[Presence]]:
    """Connect to ``r``'s ENRP port, send ``count`` Presences; the Presences that come back."""
    raw = EnrpCollector()
    port = r.enrp_port
    assert port is not None
    conn = await tp.connect(raw, "127.0.0.1", port, tp.Framing.ASAP, kind="tcp")
    src = conn.local
    assert src is not None
    info = ServerInformation(0x9001, TcpTransport(src[1] if name_source else 4444, (src[0],)))
    for _ in range(count):
        conn.send(Presence(sender_id=0x9001, checksum=0xFFFF, server_info=info,
                           reply_required=reply_required).encode(), tp.PPID_ENRP)
    # A List Request last: its answer comes after the Presences have been handled.
    conn.send(ListRequest(sender_id=0x9001).encode(), tp.PPID_ENRP)
    answers: list[Presence] = []
    while True:
        msg = await asyncio.wait_for(raw.queue.get(), 5.0)
        if isinstance(msg, CodecError):
            raise msg
        if isinstance(msg, Presence):
            answers.append(msg)
        elif isinstance(msg, ListResponse):
            return raw, answers


def test_presence_names_the_connections_local_address_when_listening_on_the_wildcard() -> None:
    async def body() -> None:
        r = await registrar(host="0.0.0.0")
        try:
            raw, answers = await _presence_exchange(r, True, name_source=False)
            assert len(answers) == 1 and answers[0].server_info is not None
            assert answers[0].server_info.transport == TcpTransport(r.enrp_port or 0, ("127.0.0.1",))
            assert raw.conn is not None
            raw.conn.close()
        finally:
            await r.stop()
    run(body)


@pytest.mark.parametrize(("reply_required", "count", "peer"), [
    (False, 1, False),  # hsdump: one Presence, no reply wanted, its own ephemeral endpoint
    (True, 1, True),  # a registrar greeting a new peer from its ENRP port (RSPLIB)
    (False, 2, True),  # a registrar's Presences from its ENRP port: greeting a static peer, answer
])
def test_presence_from_the_named_endpoint_client_or_registrar(reply_required: bool, count: int, peer: bool) -> None:
    async def body() -> None:
        r = await registrar()
        try:
            raw, answers = await _presence_exchange(r, reply_required, name_source=True, count=count)
            assert r.enrp is not None
            assert (0x9001 in r.enrp.peers) is peer, r.enrp.peer_list()
            # A greeting without reply required is answered with a Presence that requires one (a
            # registrar answers it, a client does not); one with reply required gets the reply.
            assert [a.reply_required for a in answers][:1] == [not reply_required], answers
            assert raw.conn is not None
            raw.conn.close()
        finally:
            await r.stop()
    run(body)


# ---- takeover -------------------------------------------------------------------------------

def _mirrored(r: Registrar, ident: int, user: TcpTransport, registrator: TcpTransport | None, owner: int) -> None:
    pol = PoolPolicy(1)
    ok = r.add_mirrored(POOL, WirePE(ident, owner, 60_000, user, pol, registrator), owner)
    assert ok


def test_takeover_targets_registrator_transport_first() -> None:
    async def body() -> None:
        r = await registrar()
        try:
            _mirrored(r, 0xD, TcpTransport(5000, ("127.0.0.5",), TransportUse.DATA_PLUS_CONTROL),
                      TcpTransport(6000, ("127.0.0.6",)), owner=0x42)
            e = r.handlespace.get(POOL, 0xD)
            assert e is not None
            assert r.takeover.targets(e) == (("127.0.0.6", 6000, tp.Framing.ASAP),
                                              ("127.0.0.5", 5000, tp.Framing.TAGGED))
        finally:
            await r.stop()
    run(body)


def test_takeover_reaches_an_rsplib_style_pe_at_its_asap_endpoint() -> None:
    """The PE listens on its ASAP endpoint (as RSPLIB's registrar hunt socket does) and acks there."""
    async def body() -> None:
        r = await registrar()
        homes: list[bool] = []

        class AsapEndpoint(Quiet):
            def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
                msg = decode_asap(data)
                if isinstance(msg, EndpointKeepAlive):
                    homes.append(msg.home)
                    conn.send(EndpointKeepAliveAck(pool_handle=msg.pool_handle, identifier=0xE).encode())

        srv = await tp.start_server(AsapEndpoint, "127.0.0.7", 0, tp.Framing.ASAP, kind="tcp")
        try:
            _mirrored(r, 0xE, TcpTransport(1, ("127.0.0.8",), TransportUse.DATA_PLUS_CONTROL),
                      TcpTransport(srv.port, ("127.0.0.7",)), owner=0x42)
            r.takeover.take_over(list(r.handlespace.owned_by(0x42)))
            # the Home Keep-Alive, then regular ones, all acked: the PE stays, owned by us
            await eventually(lambda: len(homes) >= 3, "three keep-alives at the ASAP endpoint")
            assert homes[0] is True and not any(homes[1:]), homes
            e = r.handlespace.get(POOL, 0xE)
            assert e is not None and e.home_pr == r.identifier
        finally:
            srv.close()
            await r.stop()
    run(body)


def test_takeover_falls_back_to_the_user_transport_of_our_pes() -> None:
    """Our PEs do not listen on their ASAP endpoint (an ephemeral port): the user transport answers."""
    async def body() -> None:
        old = await registrar()
        new = await registrar(host="127.0.0.2", identifier=0x7002)
        p = pe(old, 0xF)
        try:
            await p.start()
            entry = old.handlespace.get(POOL, 0xF)
            assert entry is not None and entry.registrator_transport is not None
            wire = old.wire_element(entry)
            assert new.add_mirrored(POOL, wire, old.identifier)
            await old.stop()  # the PE's ASAP endpoint goes away with the old registrar's connection
            new.takeover.take_over(list(new.handlespace.owned_by(old.identifier)))
            await eventually(lambda: p.home_registrar == new.identifier, "the PE to adopt the new registrar")
            # keep-alive rounds over the user transport, each acked (the keep-alive timeout is 2 rounds)
            answered = p.stats["keepalives"]
            await eventually(lambda: p.stats["keepalives"] >= answered + 3, "three more keep-alives answered")
            e = new.handlespace.get(POOL, 0xF)
            assert e is not None and e.home_pr == new.identifier
        finally:
            await p.kill()
            await new.stop()
    run(body)

"""ENRP between registrars: registrars in one process (asyncio, TCP on loopback, short timers).

Registrar i listens on 127.0.0.i, its PE on 127.0.0.(10+i), so a partition can be emulated by the
fault-injection hooks (``EnrpNode.blocked_ids``, ``Registrar.blocked_hosts``). A crash is abrupt
(``hard_crash``: every socket aborted, no code of the registrar runs any more), not a clean stop.
Protocol details (handle-table download races, the table cursor, ENRP Errors) are driven through a
bare ENRP connection (``RawEnrp``) that plays a peer or a client byte by byte. Every test builds and
tears down its own registrars and PEs (``Lab``), also when an assertion fails.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rserpool import transport as tp
from rserpool.hsdump import EnrpCollector
from rserpool.pe import PEConfig, PoolElement
from rserpool.policy import PolicyInfo
from rserpool.pu import PoolUser, PUConfig
from rserpool.registrar import Registrar, RegistrarConfig
from rserpool.wire import (
    EnrpError,
    HandleTableEntry,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    ListRequest,
    ListResponse,
    PoolPolicy,
    Presence,
    ServerInformation,
    TcpTransport,
    UnknownParameter,
)
from rserpool.wire import PoolElement as WirePE
from rserpool.wire.enrp import EnrpMessage, UpdateAction

POOL = b"EnrpPool"
FAST: dict[str, Any] = dict(
    peer_heartbeat_cycle=0.2, peer_max_time_last_heard=0.5, peer_max_time_no_response=0.5, takeover_expiry=0.5,
    keepalive_interval=0.3, keepalive_timeout=0.6, announce=False, transport="tcp",
)
# detection + takeover + keep-alive timeout, with slack for a loaded 2-core machine
DEAD = 0.5 + 0.5 + 0.5 + 0.6 + 3.0


async def eventually(pred: Callable[[], bool], timeout: float = 8.0, what: str = "") -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timeout waiting for {what or pred}")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


class Lab:
    def __init__(self) -> None:
        self.regs: dict[int, Registrar] = {}
        self.pes: list[PoolElement] = []

    async def registrar(self, i: int, peers: list[int] | None = None, **kw: Any) -> Registrar:
        peer_addrs = [self.enrp_addr(j) for j in (peers if peers is not None else sorted(self.regs))]
        cfg = RegistrarConfig(identifier=0x1000 + i, listen=[(f"127.0.0.{i}", 0)],
                              enrp_listen=(f"127.0.0.{i}", 0), peers=peer_addrs, **{**FAST, **kw})
        r = Registrar(cfg)
        await r.start()
        self.regs[i] = r
        return r

    def enrp_addr(self, i: int) -> tuple[str, int]:
        port = self.regs[i].enrp_port
        assert port is not None
        return (f"127.0.0.{i}", port)

    async def crash(self, i: int) -> None:
        """Registrar i dies abruptly (``hard_crash``): no goodbye, no deregistration, sockets gone."""
        hard_crash(self.regs.pop(i))

    async def pe(self, i: int, ident: int, **kw: Any) -> PoolElement:
        r = self.regs[i]
        cfg = PEConfig(POOL, PolicyInfo.parse("RoundRobin"), identifier=ident,
                       registrars=[(f"127.0.0.{i}", r.port)], listen=(f"127.0.0.{10 + i}", 0),
                       transport="tcp", request_timeout=1.0, retry_delay=0.2, **kw)
        pe = PoolElement(cfg)
        await pe.start()
        self.pes.append(pe)
        return pe

    async def close(self) -> None:
        for pe in self.pes:
            await pe.kill()
        for r in list(self.regs.values()):
            await r.stop()
        self.regs.clear()

    def meshed(self) -> bool:
        n = len(self.regs)
        return all(r.enrp is not None and len(r.enrp.peers) == n - 1 for r in self.regs.values())


def hard_crash(r: Registrar) -> None:
    """End registrar ``r`` the way SIGKILL ends a process, not the way ``stop()`` does.

    Nothing of it runs any more: its tasks and timers are cancelled before they fire, so no Handle
    Update, Presence, keep-alive or announce goes out; its listening sockets close and every
    connection (ENRP peers, PEs, PUs) is aborted at once, with no orderly close and no
    deregistration. Peers learn of the death only from silence, as with a real crash."""
    r.listeners.clear()
    if r.enrp is not None:
        r.enrp.abort()
    if r._announcer is not None:
        r._announcer.cancel()
    for task in list(r._tasks):
        task.cancel()
    for h in [*r._ka_timers.values(), *r._expiry_timers.values()]:
        h.cancel()
    if r._sender is not None:
        r._sender.close()
    for srv in r._servers:
        srv.close()
    for peer in list(r._peers):
        if peer.conn is not None:
            peer.conn.abort()


class RawEnrp(EnrpCollector):
    """A bare ENRP connection to a registrar: the test sends exactly the bytes it wants and reads
    every message that comes back, in order (a peer or a client played by hand)."""

    @classmethod
    async def open(cls, addr: tuple[str, int]) -> RawEnrp:
        raw = cls()
        await tp.connect(raw, addr[0], addr[1], tp.Framing.ASAP, kind="tcp", timeout=2.0)
        return raw

    def send(self, msg: EnrpMessage | bytes) -> None:
        assert self.conn is not None
        self.conn.send(msg if isinstance(msg, bytes) else msg.encode(), tp.PPID_ENRP)

    async def next(self, timeout: float = 3.0) -> EnrpMessage:
        item = await asyncio.wait_for(self.queue.get(), timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    async def expect(self, kind: type[Any], timeout: float = 3.0) -> Any:
        """The next message of type ``kind``; the ones before it are returned in ``self.skipped``."""
        self.skipped: list[EnrpMessage] = []
        end = time.monotonic() + timeout
        while True:
            msg = await self.next(max(0.01, end - time.monotonic()))
            if isinstance(msg, kind):
                return msg
            self.skipped.append(msg)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.abort()


def wire_pe(ident: int, home: int) -> WirePE:
    """A Pool Element parameter as a peer registrar would send it."""
    t = TcpTransport(7000 + ident % 1000, ("127.0.0.1",))
    return WirePE(ident, home, 30_000, t, PoolPolicy(1), TcpTransport(40000, ("127.0.0.1",)))


def table(sender: int, receiver: int, idents: list[int], more: bool) -> HandleTableResponse:
    return HandleTableResponse(sender_id=sender, receiver_id=receiver, more_to_send=more,
                               pools=(HandleTableEntry(POOL, tuple(wire_pe(k, sender) for k in idents)),))


def ids_of(msg: HandleTableResponse) -> list[int]:
    return [pe.identifier for entry in msg.pools for pe in entry.pool_elements]


def view(r: Registrar) -> dict[int, int]:
    """PE identifier -> home registrar, as registrar r sees the pool."""
    return {e.identifier: e.home_pr for e in r.handlespace.entries(POOL)}


def run(body: Callable[[Lab], Awaitable[None]], timeout: float = 60.0) -> None:
    """Run ``body(lab)``; every registrar and PE started is stopped, also on failure."""
    async def main() -> None:
        lab = Lab()
        try:
            await asyncio.wait_for(body(lab), timeout)
        finally:
            await lab.close()
    asyncio.run(main())


async def mesh(lab: Lab) -> None:
    for i in (1, 2, 3):
        await lab.registrar(i)
    await eventually(lab.meshed, what="full mesh")


async def _registration_propagates_and_pu_sees_all(lab: Lab) -> None:
    await mesh(lab)
    r1, r2, r3 = lab.regs[1], lab.regs[2], lab.regs[3]
    await lab.pe(1, 101)
    # one Handle Update, no heartbeat needed: well under one heartbeat cycle
    took = await eventually(lambda: 101 in view(r2) and 101 in view(r3), 2.0, "PE 101 mirrored")
    assert took < FAST["peer_heartbeat_cycle"] + 0.3
    await lab.pe(2, 102)
    await lab.pe(3, 103)
    want = {101: r1.identifier, 102: r2.identifier, 103: r3.identifier}
    await eventually(lambda: all(view(r) == want for r in lab.regs.values()), 3.0, "all mirrored")
    for i in (1, 2, 3):
        async with PoolUser(PUConfig(registrars=[(f"127.0.0.{i}", lab.regs[i].port)], transport="tcp",
                                     request_timeout=1.0)) as pu:
            pes = await pu.resolve(POOL, items=10, use_cache=False)
        assert sorted(p.identifier for p in pes) == [101, 102, 103]
    # deregistration propagates as DEL_PE
    pe = lab.pes.pop(0)
    await pe.stop(deregister=True)
    await eventually(lambda: all(101 not in view(r) for r in lab.regs.values()), 2.0, "PE 101 gone")
    # the checksums agree once settled
    for r in lab.regs.values():
        for other in lab.regs.values():
            assert r.handlespace.checksum_of(other.identifier) == other.handlespace.ownership_checksum()


async def _crash_takeover_restart_resync(lab: Lab) -> None:
    await mesh(lab)
    r2, r3 = lab.regs[2], lab.regs[3]
    id1 = lab.regs[1].identifier
    for i in (1, 2, 3):
        await lab.pe(i, 100 + i)
    await eventually(lambda: all(len(view(r)) == 3 for r in lab.regs.values()), 3.0, "mirrored")
    await lab.crash(1)
    t0 = time.monotonic()
    # the survivor that initiates first wins (ties: lower ID); the other learns it by Takeover Server
    def agreed() -> bool:
        h2, h3 = view(r2).get(101), view(r3).get(101)
        return h2 == h3 and h2 in (r2.identifier, r3.identifier)
    await eventually(agreed, DEAD, "takeover of PE 101")
    took = time.monotonic() - t0
    assert took < DEAD
    winner = r2 if view(r2)[101] == r2.identifier else r3
    assert r2.stats["takeover"] + r3.stats["takeover"] == 1 and winner.stats["takeover"] == 1
    # the PE accepted the new home (Keep-Alive with the Home flag) and answers its keep-alives
    pe1 = lab.pes[0]
    await eventually(lambda: pe1.home_registrar == winner.identifier, 3.0, "PE's new home")
    acks = winner.stats["keepalive_ack"]
    await asyncio.sleep(3 * FAST["keepalive_interval"])
    assert winner.stats["keepalive_ack"] > acks
    # nothing lost or duplicated, everything selectable at both survivors
    for r in (r2, r3):
        assert sorted(view(r)) == [101, 102, 103]
        assert len(r.handlespace) == 3
        assert sorted(e.identifier for e in r.handlespace.select(POOL, 10)) == [101, 102, 103]
    assert id1 not in view(r2).values() and id1 not in view(r3).values()
    # registrar 1 comes back (same ID, no PEs of its own): it downloads the handlespace
    r1 = await lab.registrar(1, peers=[2, 3])
    await eventually(lab.meshed, 5.0, "mesh after restart")
    await eventually(lambda: view(r1) == view(r2) == view(r3), 5.0, "resync after restart")
    assert r1.stats["handle_table_sync"] >= 1


async def _partition_and_heal(lab: Lab) -> None:
    await mesh(lab)
    r1, r2, r3 = lab.regs[1], lab.regs[2], lab.regs[3]
    for i in (1, 2, 3):
        await lab.pe(i, 100 + i)
    await eventually(lambda: all(len(view(r)) == 3 for r in lab.regs.values()), 3.0, "mirrored")
    # cut registrar 3 (the UE's) and its PE off from the rest
    assert r1.enrp and r2.enrp and r3.enrp
    r3.enrp.blocked_ids |= {r1.identifier, r2.identifier}
    r3.blocked_hosts |= {"127.0.0.11", "127.0.0.12"}
    for r in (r1, r2):
        assert r.enrp is not None
        r.enrp.blocked_ids.add(r3.identifier)
        r.blocked_hosts.add("127.0.0.13")
    t0 = time.monotonic()
    await eventually(lambda: set(view(r3)) == {103} and set(view(r1)) == set(view(r2)) == {101, 102}, DEAD + 2,
                     "both sides drop what they cannot reach")
    assert time.monotonic() - t0 < DEAD + 2
    # the UE side hands out its own PE only, the other side never the UE's
    assert [e.identifier for e in r3.handlespace.select(POOL, 10)] == [103]
    assert sorted(e.identifier for e in r1.handlespace.select(POOL, 10)) == [101, 102]
    # heal
    r3.enrp.blocked_ids.clear()
    r3.blocked_hosts.clear()
    for r in (r1, r2):
        r.enrp.blocked_ids.clear()  # type: ignore[union-attr]
        r.blocked_hosts.clear()
    want = {101: r1.identifier, 102: r2.identifier, 103: r3.identifier}
    await eventually(lambda: lab.meshed() and all(view(r) == want for r in lab.regs.values()), 8.0,
                     "convergence after heal")


def _fill(r: Registrar, n: int, owner: int, handle: bytes = POOL, first: int = 1) -> None:
    for k in range(first, first + n):
        t = TcpTransport(4000 + k % 1000, ("127.0.0.1",))
        cause, _ = r.handlespace.register(handle, k, PolicyInfo(1), (t,), home_pr=owner, user_transport=t,
                                          protocol=6)
        assert cause == 0


async def _checksum_drift_resync(lab: Lab) -> None:
    await mesh(lab)
    r1, r2 = lab.regs[1], lab.regs[2]
    _fill(r1, 20, r1.identifier)  # behind the listeners' back: peers learn it only from the checksum
    await eventually(lambda: len(view(r2)) == 20, 3.0, "drift repaired by handle table")
    # lose one mirrored entry and invent one: the next Presence repairs both
    r2.handlespace.deregister(POOL, 5)
    _fill(r2, 1, r1.identifier, first=999)
    assert r2.handlespace.checksum_of(r1.identifier) != r1.handlespace.ownership_checksum()
    syncs = r2.stats["handle_table_sync"]
    await eventually(lambda: sorted(view(r2)) == list(range(1, 21)), 3.0, "resync after drift")
    assert r2.stats["handle_table_sync"] > syncs


async def _handle_table_in_pieces(lab: Lab) -> None:
    r1 = await lab.registrar(1, max_elements_per_ht_request=50)
    _fill(r1, 260, r1.identifier)
    r2 = await lab.registrar(2, peers=[1])
    await eventually(lambda: len(r2.handlespace) == 260, 5.0, "download")
    assert r1.stats["handle_table_request"] >= 6  # 260 / 50 -> 6 pieces
    assert r2.handlespace.checksum_of(r1.identifier) == r1.handlespace.ownership_checksum()


async def _mirrored_entries_expire(lab: Lab) -> None:
    r1 = await lab.registrar(1)
    r2 = await lab.registrar(2, peers=[1], mirror_lifetime=0.3)
    await eventually(lab.meshed, what="mesh")
    await lab.pe(1, 101)
    await eventually(lambda: 101 in view(r2), 2.0, "mirrored")
    e = r2.handlespace.get(POOL, 101)
    assert e is not None and r2.mirrored_entry_lifetime(e) == 0.3
    # registrar 1 stops announcing changes (e.g. a lost update): the mirror runs out
    assert r1.enrp is not None
    r1.enrp.blocked_ids.add(r2.identifier)
    await eventually(lambda: 101 not in view(r2), 2.0, "expired")


async def _hsdump_and_list_still_work(lab: Lab) -> None:
    from rserpool.hsdump import fetch_handlespace

    await mesh(lab)
    await lab.pe(2, 102)
    await eventually(lambda: 102 in view(lab.regs[1]), 2.0, "mirrored")
    host, port = lab.enrp_addr(1)
    dump = await fetch_handlespace(host, port, kind="tcp", timeout=2.0)
    assert dump.element_count == 1
    await asyncio.sleep(0.3)
    assert len(lab.regs[1].enrp.peers) == 2  # type: ignore[union-attr]  # hsdump did not become a peer
    from rserpool.hsdump import fetch_peers

    info = await fetch_peers(host, port, kind="tcp", timeout=2.0)
    assert info["element_count"] == 1
    assert sorted(p["identifier"] for p in info["peers"]) == [lab.regs[2].identifier, lab.regs[3].identifier]


def test_registration_propagates_and_pu_sees_all() -> None:
    run(_registration_propagates_and_pu_sees_all)


def test_crash_takeover_restart_resync() -> None:
    run(_crash_takeover_restart_resync)


def test_partition_and_heal() -> None:
    run(_partition_and_heal)


def test_checksum_drift_resync() -> None:
    run(_checksum_drift_resync)


def test_handle_table_in_pieces() -> None:
    run(_handle_table_in_pieces)


def test_mirrored_entries_expire() -> None:
    run(_mirrored_entries_expire)


def test_hsdump_and_list_still_work() -> None:
    run(_hsdump_and_list_still_work)


async def _multicast_presence_finds_peers(lab: Lab) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mc: dict[str, Any] = dict(enrp_multicast=True, enrp_group_port=port, announce_interface="127.0.0.1")
    r1 = await lab.registrar(1, peers=[], **mc)
    r2 = await lab.registrar(2, peers=[], **mc)
    await eventually(lab.meshed, 5.0, "peers found by multicast Presence")
    await lab.pe(1, 101)
    await eventually(lambda: view(r2) == {101: r1.identifier}, 2.0, "mirrored")


def test_multicast_presence_finds_peers() -> None:
    run(_multicast_presence_finds_peers)


# ------------------------------------------------------------------------------ peer lists, mentor


async def _chain_meshes_through_peer_lists(lab: Lab) -> None:
    # Each registrar knows only the one started before it: 1 <- 2 <- 3 <- 4 ("the UE's" is 4).
    await lab.registrar(1, peers=[])
    for i in (2, 3, 4):
        await lab.registrar(i, peers=[i - 1])
    for i in (1, 2, 4):
        await lab.pe(i, 100 + i)
    await eventually(lab.meshed, 8.0, "full mesh from peer lists")
    want = {100 + i: lab.regs[i].identifier for i in (1, 2, 4)}
    await eventually(lambda: all(view(r) == want for r in lab.regs.values()), 5.0, "every PE everywhere")
    r1, r4 = lab.regs[1], lab.regs[4]
    # Static config gives 3 of the 6 links (1-2, 2-3, 3-4); the other 3 came from List Responses
    # (which side learnt a link first depends on timing).
    assert sum(r.stats["peer_from_list"] for r in lab.regs.values()) >= 3
    # List Responses carry every peer with its ENRP endpoint
    assert r1.enrp is not None
    got = {s.server_id: (s.transport.addresses[0], s.transport.port)  # type: ignore[union-attr]
           for s in r1.enrp.peer_lists.response(0).servers}
    assert got == {lab.regs[j].identifier: lab.enrp_addr(j) for j in (2, 3, 4)}
    # a Handle Update from 1 now reaches 4 directly
    await lab.pe(1, 111)
    await eventually(lambda: 111 in view(r4), 2.0, "update from a peer learnt from a list")
    async with PoolUser(PUConfig(registrars=[("127.0.0.4", r4.port)], transport="tcp", request_timeout=1.0)) as pu:
        pes = await pu.resolve(POOL, items=10, use_cache=False)
    assert sorted(p.identifier for p in pes) == [101, 102, 104, 111]


def test_chain_meshes_through_peer_lists() -> None:
    run(_chain_meshes_through_peer_lists)


async def _list_does_not_revive_dead_peer(lab: Lab) -> None:
    await mesh(lab)
    r2, r3 = lab.regs[2], lab.regs[3]
    assert r2.enrp is not None and r3.enrp is not None
    id1 = lab.regs[1].identifier
    await lab.crash(1)
    await eventually(lambda: id1 not in r2.enrp.peers, DEAD, "registrar 1 declared dead")  # type: ignore[union-attr]
    # r3 has not noticed yet and still names 1 in its list: r2 must not take it back
    stale = ListResponse(sender_id=r3.identifier, receiver_id=r2.identifier,
                         servers=(ServerInformation(id1, TcpTransport(9, ("127.0.0.1",))),))
    r2.enrp.peer_lists.on_list(stale)
    assert id1 not in r2.enrp.peers


def test_list_does_not_revive_dead_peer() -> None:
    run(_list_does_not_revive_dead_peer)


async def _mentor_download_then_ready(lab: Lab) -> None:
    await mesh(lab)
    r1, r2 = lab.regs[1], lab.regs[2]
    await lab.pe(1, 101)
    await lab.pe(2, 102)
    await eventually(lambda: all(len(view(r)) == 2 for r in lab.regs.values()), 3.0, "mirrored")
    # a new registrar that knows only registrar 1; a long hunt so that only the mentor can end it
    r4 = await lab.registrar(4, peers=[1], mentor_hunt_timeout=30.0)
    assert r4.enrp is not None
    await asyncio.wait_for(r4.enrp.ready.wait(), 5.0)
    assert r4.enrp.startup_ended_by == "mentor" and r4.enrp.mentor == r1.identifier
    assert r4.stats["mentor_sync"] == 1
    # the mentor's whole table, each entry with its own home (102 is registrar 2's, not the mentor's)
    assert view(r4) == {101: r1.identifier, 102: r2.identifier}
    await eventually(lab.meshed, 5.0, "mesh with the newcomer")


def test_mentor_download_then_ready() -> None:
    run(_mentor_download_then_ready)


async def _mentor_hunt_timeout_holds_back_announces(lab: Lab) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ann: dict[str, Any] = dict(announce=True, announce_cycle=0.02, announce_port=port, announce_interface="127.0.0.1")
    # its only static peer does not exist: no mentor, so the hunt times out
    r = Registrar(RegistrarConfig(identifier=0x1009, listen=[("127.0.0.9", 0)], enrp_listen=("127.0.0.9", 0),
                                  peers=[("127.0.0.9", 1)], **{**FAST, **ann, "mentor_hunt_timeout": 0.6}))
    await r.start()
    lab.regs[9] = r
    assert r.enrp is not None

    def ready() -> bool:
        assert r.enrp is not None
        if not r.enrp.ready.is_set():
            assert r.stats["announce"] == 0, "announced during the mentor hunt"
        return r.enrp.ready.is_set()

    await eventually(ready, 3.0, "end of the mentor hunt")
    assert r.enrp.startup_ended_by == "timeout" and r.enrp.mentor is None
    assert r.enrp.ready_at is not None and r.enrp.ready_at - r.enrp.started_at >= 0.6
    await eventually(lambda: r.stats["announce"] > 0, 2.0, "announces after the hunt")
    # a registrar with nobody to hunt for (no static peer, no multicast) is ready at once
    alone = await lab.registrar(8, peers=[])
    assert alone.enrp is not None and alone.enrp.ready.is_set() and alone.enrp.startup_ended_by == "no-peers"


def test_mentor_hunt_timeout_holds_back_announces() -> None:
    run(_mentor_hunt_timeout_holds_back_announces)


# ------------------------------------------------------------------------------ handle-table download

PEER = 0x9999  # the identifier of the registrar a RawEnrp plays
SLOW_LIVENESS: dict[str, Any] = dict(peer_max_time_last_heard=30.0, peer_max_time_no_response=30.0)


async def _as_peer(lab: Lab, i: int, checksum: int) -> RawEnrp:
    """Connect to registrar i as registrar PEER (ENRP endpoint 127.0.0.99:9, which is never there)."""
    r = lab.regs[i]
    raw = await RawEnrp.open(lab.enrp_addr(i))
    raw.send(Presence(sender_id=PEER, receiver_id=r.identifier, checksum=checksum,
                      server_info=ServerInformation(PEER, TcpTransport(9, ("127.0.0.99",)))))
    return raw


async def _update_during_download_is_kept(lab: Lab) -> None:
    r = await lab.registrar(2, peers=[], **SLOW_LIVENESS)
    raw = await _as_peer(lab, 2, checksum=0x1234)  # differs from r's view of PEER: r downloads
    try:
        req = await raw.expect(HandleTableRequest)
        assert req.own_children_only and req.sender_id == r.identifier
        raw.send(table(PEER, r.identifier, [1, 2, 3], more=True))
        await raw.expect(HandleTableRequest)  # "more", please
        # Meanwhile PE 50 registers at PEER (after its table snapshot) and PE 2 leaves.
        for action, ident in ((UpdateAction.ADD_PE, 50), (UpdateAction.DEL_PE, 2)):
            raw.send(HandleUpdate(sender_id=PEER, receiver_id=r.identifier, update_action=action,
                                  pool_handle=POOL, pool_element=wire_pe(ident, PEER)))
        raw.send(table(PEER, r.identifier, [4, 5], more=False))
        assert r.enrp is not None
        await eventually(lambda: not r.enrp.peers[PEER].syncing, 2.0, "download complete")  # type: ignore[union-attr]
        assert view(r) == {k: PEER for k in (1, 3, 4, 5, 50)}
        assert r.stats["removed_enrp-resync"] == 0
    finally:
        raw.close()


def test_update_during_download_is_kept() -> None:
    run(_update_during_download_is_kept)


async def _stalled_table_cursor_restarts(lab: Lab) -> None:
    r = await lab.registrar(1, peers=[], max_elements_per_ht_request=3, peer_max_time_no_response=0.3)
    _fill(r, 10, r.identifier)
    raw = await RawEnrp.open(lab.enrp_addr(1))
    try:
        def request(own: bool = True) -> None:
            raw.send(HandleTableRequest(sender_id=PEER, receiver_id=r.identifier, own_children_only=own))

        request()
        first = await raw.expect(HandleTableResponse)
        assert first.more_to_send and len(ids_of(first)) == 3
        # The requester gives up (no "more" request within peer_max_time_no_response); its next
        # request is a new download and must get the table from the start, not the stale rest.
        await asyncio.sleep(r.config.peer_max_time_no_response * 1.5)
        request()
        again = await raw.expect(HandleTableResponse)
        assert ids_of(again) == ids_of(first) and r.stats["handle_table_restart"] == 1
        # A request for another table (whole handlespace, not own PEs) also starts afresh.
        request(own=False)
        other = await raw.expect(HandleTableResponse)
        assert ids_of(other) == ids_of(first) and r.stats["handle_table_restart"] == 2
        # Prompt "more" requests continue the cursor: every entry once, no gap, no repeat.
        got = ids_of(other)
        msg = other
        while msg.more_to_send:
            request(own=False)
            msg = await raw.expect(HandleTableResponse)
            got += ids_of(msg)
        assert sorted(got) == list(range(1, 11)) and r.stats["handle_table_restart"] == 2
    finally:
        raw.close()


def test_stalled_table_cursor_restarts() -> None:
    run(_stalled_table_cursor_restarts)


async def _stalled_download_resumes_whole(lab: Lab) -> None:
    # End to end: the requester's download stalls after the first piece (the "more" request is
    # lost), it gives up after peer_max_time_no_response and asks again; nothing is purged.
    r1 = await lab.registrar(1, peers=[], max_elements_per_ht_request=50, peer_max_time_no_response=0.5)
    _fill(r1, 260, r1.identifier)
    assert r1.enrp is not None
    node = r1.enrp
    orig = node._received
    answered: list[int] = []

    def lossy(c: Any, data: bytes) -> None:
        if data[0] == HandleTableRequest.TYPE:
            answered.append(1)
            if len(answered) == 2:
                return  # the second request (the first "more") is lost
        orig(c, data)

    node._received = lossy  # type: ignore[method-assign]
    r2 = await lab.registrar(2, peers=[1], peer_max_time_no_response=0.5)
    await eventually(lambda: len(r2.handlespace) == 260, 6.0, "download after the stall")
    assert len(answered) >= 3 and r1.stats["handle_table_restart"] >= 1
    assert r2.stats["removed_enrp-resync"] == 0
    assert r2.handlespace.checksum_of(r1.identifier) == r1.handlespace.ownership_checksum()


def test_stalled_download_resumes_whole() -> None:
    run(_stalled_download_resumes_whole)


# ------------------------------------------------------------------------------ ENRP Error


async def _unknown_message_type_gets_error(lab: Lab) -> None:
    r = await lab.registrar(1, peers=[])
    raw = await RawEnrp.open(lab.enrp_addr(1))
    try:
        odd = struct.pack("!BBHII", 0x7F, 0, 12, PEER, r.identifier)
        raw.send(odd)
        err = await raw.next()
        assert isinstance(err, EnrpError)
        assert (err.sender_id, err.receiver_id) == (r.identifier, PEER)
        assert [(c.code, c.info) for c in err.error.causes] == [(0x2, odd)]  # Unrecognized Message
        # An ENRP Error is never answered with one (no error ping-pong): the List Request sent
        # after it gets the first answer on the connection.
        raw.send(EnrpError(sender_id=PEER, receiver_id=r.identifier, error=err.error))
        raw.send(ListRequest(sender_id=PEER, receiver_id=r.identifier))
        assert isinstance(await raw.next(), ListResponse)
        assert r.stats["enrp_error_received"] == 1 and r.stats["enrp_error_sent"] == 1
    finally:
        raw.close()


def test_unknown_message_type_gets_error() -> None:
    run(_unknown_message_type_gets_error)


async def _unknown_parameters_by_action_bits(lab: Lab) -> None:
    r = await lab.registrar(1, peers=[], **SLOW_LIVENESS)
    assert r.enrp is not None
    raw = await RawEnrp.open(lab.enrp_addr(1))
    try:
        def presence(sender: int, ptype: int) -> tuple[Presence, UnknownParameter]:
            odd = UnknownParameter(ptype, b"\xde\xad\xbe\xef")
            # a registrar's endpoint (not the connection's own), so the Presence introduces a peer
            info = ServerInformation(sender, TcpTransport(9, ("127.0.0.99",)))
            return Presence(sender_id=sender, receiver_id=r.identifier, checksum=0, server_info=info,
                            extra=(odd,)), odd

        async def answers_until_list_response(msg: Presence) -> list[Any]:
            raw.send(msg)
            raw.send(ListRequest(sender_id=PEER, receiver_id=r.identifier))
            await raw.expect(ListResponse)
            return raw.skipped

        # RFC 5354 section 2.1: the upper two bits of the type say stop/skip and report or not.
        cases = {0x40F0: ("stop+report", True, False), 0xC0F0: ("skip+report", True, True),
                 0x00F0: ("stop", False, False), 0x80F0: ("skip", False, True)}
        for n, (ptype, (name, reported, processed)) in enumerate(cases.items()):
            sender = 0x5000 + n
            msg, odd = presence(sender, ptype)
            before = [m for m in await answers_until_list_response(msg) if isinstance(m, EnrpError)]
            if reported:
                assert len(before) == 1, name
                assert before[0].receiver_id == sender, name
                assert [(c.code, c.info) for c in before[0].error.causes] == [(0x1, odd.encode())], name
            else:
                assert before == [], name
            # processed: the Presence introduced a peer; stopped: it was discarded
            assert (sender in r.enrp.peers) == processed, name
    finally:
        raw.close()


def test_unknown_parameters_by_action_bits() -> None:
    run(_unknown_parameters_by_action_bits)


async def _nested_unknown_parameter(lab: Lab) -> None:
    # Unknown parameters count wherever they are, e.g. inside the Pool Element of a Handle Update.
    r = await lab.registrar(2, peers=[], **SLOW_LIVENESS)
    raw = await _as_peer(lab, 2, checksum=0)
    try:
        await raw.expect(ListRequest)  # r has taken PEER as a peer
        for ident, ptype, applied in ((60, 0x40F1, False), (61, 0xC0F1, True)):  # stop+report, skip+report
            odd = UnknownParameter(ptype, b"\x01\x02")
            pe = wire_pe(ident, PEER)
            pe = WirePE(pe.identifier, pe.home_registrar, pe.registration_life, pe.user_transport, pe.policy,
                        pe.registrator_transport, (odd,))
            raw.send(HandleUpdate(sender_id=PEER, receiver_id=r.identifier, update_action=UpdateAction.ADD_PE,
                                  pool_handle=POOL, pool_element=pe))
            err = await raw.expect(EnrpError)
            assert [(c.code, c.info) for c in err.error.causes] == [(0x1, odd.encode())]
            # a List Request after it: once answered, the update has been dealt with
            raw.send(ListRequest(sender_id=PEER, receiver_id=r.identifier))
            await raw.expect(ListResponse)
            assert (ident in view(r)) == applied
    finally:
        raw.close()


def test_nested_unknown_parameter() -> None:
    run(_nested_unknown_parameter)

"""ENRP between registrars (see helpers.enrp_lab): propagation, crash/takeover/resync, partition and heal,
checksums, handle tables in pieces, expiry of mirrored entries, hsdump, multicast Presence."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from rserpool.pu import PoolUser, PUConfig

from helpers.enrp_lab import DEAD, FAST, POOL, Lab, _fill, eventually, mesh, run, view


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

"""ENRP peer lists and the mentor hunt (see helpers.enrp_lab)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from rserpool.pu import PoolUser, PUConfig
from rserpool.registrar import Registrar, RegistrarConfig
from rserpool.wire import ListResponse, ServerInformation, TcpTransport

from helpers.enrp_lab import DEAD, FAST, POOL, Lab, eventually, mesh, run, view

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

"""ENRP handle-table download races and ENRP Error answers, driven byte by byte (see helpers.enrp_lab)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from rserpool.wire import (
    EnrpError,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    ListRequest,
    ListResponse,
    Presence,
    ServerInformation,
    TcpTransport,
    UnknownParameter,
)
from rserpool.wire import PoolElement as WirePE
from rserpool.wire.enrp import UpdateAction

from helpers.enrp_lab import (
    PEER,
    POOL,
    SLOW_LIVENESS,
    Lab,
    RawEnrp,
    _as_peer,
    _fill,
    eventually,
    ids_of,
    run,
    table,
    view,
    wire_pe,
)


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

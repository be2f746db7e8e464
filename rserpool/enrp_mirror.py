"""ENRP handlespace mirroring (RFC 5353, RSPLIB 3.4.4 ``rspregistrar-enrp.c``): handle table
downloads and Handle Updates, the part of ``EnrpNode`` that keeps the registrars' handlespaces in step.

* **Mirroring.** Every Presence carries the checksum of the sender's *own* PEs (``home_pr`` = sender).
  A receiver compares it with ``handlespace.checksum_of(sender)``; on a mismatch (new peer, restarted
  peer, lost update, drift) it sends a Handle Table Request with "own children only" and replaces
  that peer's entries with the answer, which comes in pieces of at most
  ``max_elements_per_ht_request`` (128) PEs with "more to send". Handle Updates from that peer that
  arrive during the download count as part of it (an ADD is not purged as stale at the end, a DEL
  is not brought back). The sender keeps a cursor per connection; a request that follows a piece
  after more than ``peer_max_time_no_response`` (when the requester has given the download up as
  stalled), or that asks for a different table, starts the table afresh instead of continuing a
  stale cursor. Changes of our own PEs go out as Handle Updates (ADD_PE on registration /
  re-registration, DEL_PE on removal). Mirrored entries expire after
  ``Registrar.mirrored_entry_lifetime()`` (the PE's registration life) unless refreshed.
* **Mentor download** (RSPLIB's start-up phase, see ``rserpool.enrp``): the mentor is asked for its
  *whole* handle table (no "own children only"); every entry keeps the home registrar the mentor
  names, and the end of that download ends the start-up phase.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from rserpool.wire import HandleTableEntry, HandleTableRequest, HandleTableResponse, HandleUpdate
from rserpool.wire.enrp import UpdateAction

if TYPE_CHECKING:
    from rserpool.enrp import EnrpNode, PeerState, _Conn
    from rserpool.handlespace import PoolEntry
    from rserpool.registrar import HsEvent

# The registrar's ENRP messages keep one logger, whichever of its files logs them.
log = logging.getLogger("rserpool.enrp")


class HandlespaceMirror:
    """Handle table serving and downloading, and Handle Updates, of one ``EnrpNode``."""

    def __init__(self, node: EnrpNode) -> None:
        self.node = node

    def mentor_query(self, peer: PeerState) -> None:
        """Make ``peer`` our mentor: ask for its peer list and its whole handle table."""
        node = self.node
        if not node.send(peer, HandleTableRequest(sender_id=node.id, receiver_id=peer.identifier,
                                                  own_children_only=False).encode()):
            return
        log.info("registrar $%08x: trying peer $%08x as mentor", node.id, peer.identifier)
        node.mentor = peer.identifier
        node.reg.stats["mentor_sync"] += 1
        node.reg.stats["handle_table_sync"] += 1
        self._start_sync(peer, full=True)
        node.peer_lists.request(peer)

    def _start_sync(self, peer: PeerState, full: bool) -> None:
        peer.syncing = True
        peer.sync_full = full
        peer.sync_keys = set()
        peer.sync_started = time.monotonic()

    def request_table(self, peer: PeerState) -> None:
        node = self.node
        if node.send(peer, HandleTableRequest(sender_id=node.id, receiver_id=peer.identifier,
                                              own_children_only=True).encode()):
            log.info("registrar $%08x: checksum of peer $%08x differs -> requesting its handle table",
                     node.id, peer.identifier)
            node.reg.stats["handle_table_sync"] += 1
            self._start_sync(peer, full=False)

    # ---------------------------------------------------------------- handle table

    def handle_table(self, c: _Conn, req: HandleTableRequest) -> HandleTableResponse:
        """The next piece (<= max_elements_per_ht_request PEs) of our table for connection ``c``.

        A request continues the connection's cursor only if it asks for the same table and comes
        within ``peer_max_time_no_response`` of the last piece; otherwise the requester has given
        that download up (or started another one), and continuing would hand it a tail whose end it
        would take for the whole table. Starting afresh costs at worst some repeated entries."""
        node = self.node
        limit = max(1, node.cfg.max_elements_per_ht_request)
        hs = node.reg.handlespace
        now = time.monotonic()
        if c.cursor is not None and (c.cursor_own != req.own_children_only
                                     or now - c.cursor_time > node.cfg.peer_max_time_no_response):
            node.reg.stats["handle_table_restart"] += 1
            log.info("registrar $%08x: handle table request from $%08x after a stalled one -> starting afresh",
                     node.id, req.sender_id)
            c.cursor = None
        if c.cursor is None:
            c.cursor = list(hs.owned_by(node.id) if req.own_children_only else hs)
            c.cursor_pos = 0
            c.cursor_own = req.own_children_only
        c.cursor_time = now
        chunk: list[PoolEntry] = []
        entries = c.cursor
        while c.cursor_pos < len(entries) and len(chunk) < limit:
            e = entries[c.cursor_pos]
            c.cursor_pos += 1
            if hs.get(e.pool_handle, e.identifier) is e:  # skip what went away meanwhile
                chunk.append(e)
        more = c.cursor_pos < len(entries)
        if not more:
            c.cursor = None
        pools: list[HandleTableEntry] = []
        for e in chunk:
            pe = node.reg.wire_element(e)
            if pools and pools[-1].pool_handle == e.pool_handle:
                pools[-1] = HandleTableEntry(e.pool_handle, pools[-1].pool_elements + (pe,))
            else:
                pools.append(HandleTableEntry(e.pool_handle, (pe,)))
        return HandleTableResponse(sender_id=node.id, receiver_id=req.sender_id, pools=tuple(pools),
                                   more_to_send=more)

    def on_table(self, c: _Conn, msg: HandleTableResponse) -> None:
        node = self.node
        peer = node.peers.get(msg.sender_id)
        if peer is None:
            return
        if msg.reject:
            peer.syncing = peer.sync_full = False  # RSPLIB: the synchronisation is over
            return
        hs = node.reg.handlespace
        full = peer.sync_full
        for entry in msg.pools:
            for pe in entry.pool_elements:
                # Entries of a peer's own table are its own, whatever the PE parameter says.
                owner = msg.sender_id
                if full:
                    # The mentor's whole table: every entry keeps its home registrar, except that a
                    # copy never takes a PE away from us (only a newer registration elsewhere does).
                    owner = pe.home_registrar or msg.sender_id
                    local = hs.get(entry.pool_handle, pe.identifier)
                    if owner == node.id or (local is not None and local.home_pr == node.id):
                        continue
                if node.reg.add_mirrored(entry.pool_handle, pe, owner, "enrp-table"):
                    peer.sync_keys.add((entry.pool_handle, pe.identifier))
        if not peer.syncing:
            return  # a late piece of a download given up as stalled: nothing to continue or conclude
        if msg.more_to_send:
            node.reply(c, HandleTableRequest(sender_id=node.id, receiver_id=msg.sender_id,
                                             own_children_only=not full).encode())
            peer.sync_started = time.monotonic()
            return
        # Complete: whatever we hold as that peer's and it did not send is stale.
        for e in list(hs.owned_by(msg.sender_id)):
            if (e.pool_handle, e.identifier) not in peer.sync_keys:
                node.reg.remove_entry(e, "enrp-resync")
        peer.syncing = peer.sync_full = False
        peer.sync_keys = set()
        log.info("registrar $%08x: handle table of $%08x synchronised (%d PEs of its own)", node.id,
                 msg.sender_id, sum(1 for _ in hs.owned_by(msg.sender_id)))
        if full and msg.sender_id == node.mentor:
            node.end_startup("mentor")

    # ---------------------------------------------------------------- handle updates

    def on_hs_event(self, ev: HsEvent) -> None:
        node = self.node
        e = ev.entry
        if ev.reason.startswith("enrp"):
            return  # learnt from a peer: the owner tells the others itself
        if e.home_pr != node.id:
            return
        action = UpdateAction.DEL_PE if ev.action == "remove" else UpdateAction.ADD_PE
        pe = node.reg.wire_element(e)
        for p in node.live_peers():
            node.send(p, HandleUpdate(sender_id=node.id, receiver_id=p.identifier, update_action=action,
                                      pool_handle=e.pool_handle, pool_element=pe).encode())

    def on_update(self, msg: HandleUpdate) -> None:
        node = self.node
        node.reg.stats["handle_update"] += 1
        key = (msg.pool_handle, msg.pool_element.identifier)
        peer = node.peers.get(msg.sender_id)
        # Keys of the table being downloaded from the sender, if a download is running.
        keys = peer.sync_keys if peer is not None and peer.syncing else None
        if msg.update_action == UpdateAction.DEL_PE:
            e = node.reg.handlespace.get(*key)
            # Only the owner may delete (a stale DEL must not remove a PE that moved to us).
            if e is not None and e.home_pr == msg.sender_id:
                node.reg.remove_entry(e, "enrp-update")
            if keys is not None:
                keys.discard(key)
        elif node.reg.add_mirrored(msg.pool_handle, msg.pool_element, msg.sender_id, "enrp-update"):
            if keys is not None:
                # Part of the table being downloaded even if no piece carries it (it came after the
                # sender took its snapshot): the end of the download must not purge it as stale.
                keys.add(key)


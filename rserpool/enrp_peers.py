"""What an ENRP node knows of its peer registrars (``PeerState``) and how it learns of them from
peer lists (RFC 5353 List Request / List Response, as RSPLIB's ``rspregistrar-enrp.c``).

The first Presence heard from a peer over a connection makes us ask it for its peer list; every
registrar in the answer we do not know yet is added with the ENRP transport address given there,
connected to and greeted, and is asked for *its* list in turn, so a registrar that knows a single
peer ends up meshed with all of them. A List Request is answered with every peer we have heard
from (one Server Information each). Beyond RSPLIB, which asks each peer once, the lists are asked
for again every ``LIST_REFRESH_CYCLES`` heartbeat cycles (``rserpool.enrp``): two registrars that
joined through the same peer at the same moment would otherwise never hear of each other. A peer
we declared dead is not brought back by another peer's list until that peer could have noticed too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rserpool import transport as tp
from rserpool.wire import ListRequest, ListResponse, SctpTransport, ServerInformation, TcpTransport

if TYPE_CHECKING:
    from rserpool.enrp import EnrpNode

# The registrar's ENRP messages keep one logger, whichever of its files logs them.
log = logging.getLogger("rserpool.enrp")


@dataclass
class PeerState:
    """What we know of one peer registrar."""

    identifier: int
    address: tuple[str, int] | None = None
    out_conn: tp.MessageConnection | None = None  # our connection to it (unsolicited messages)
    in_conn: tp.MessageConnection | None = None  # its connection to us (fallback)
    last_heard: float = 0.0
    probe_sent: float | None = None  # Presence with reply-required sent, no answer yet
    checksum: int | None = None  # its own-PE checksum from its last Presence
    heard: bool = True  # a Presence of its own seen (False: only named in another peer's list)
    list_asked: float | None = None  # when we last sent it a List Request
    syncing: bool = False
    sync_full: bool = False  # the download is the mentor's whole handle table, not its own PEs
    sync_keys: set[tuple[bytes, int]] = field(default_factory=set)
    sync_started: float = 0.0

    def conn(self) -> tp.MessageConnection | None:
        for c in (self.out_conn, self.in_conn):
            if c is not None and not c.is_closing():
                return c
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"identifier": self.identifier, "identifier_hex": f"0x{self.identifier:08x}",
                "address": tp.format_endpoint(*self.address) if self.address else None,
                "checksum": self.checksum, "syncing": self.syncing, "heard": self.heard}


def endpoint_of(info: ServerInformation) -> tuple[str, int] | None:
    """The ENRP endpoint a Server Information names (its first address), if it names one."""
    t = info.transport
    if t is None or not t.addresses or t.addresses[0] in ("", "0.0.0.0", "::"):
        return None
    return (t.addresses[0], t.port)


class PeerLists:
    """The peer-list exchange of one ``EnrpNode``."""

    def __init__(self, node: EnrpNode) -> None:
        self.node = node
        self._dead_at: dict[int, float] = {}  # peers we declared dead, and when

    def note_dead(self, peer_id: int) -> None:
        """``peer_id`` was declared dead: keep it out of what other peers' lists name for a while."""
        node = self.node
        now = time.monotonic()
        horizon = node.cfg.peer_max_time_last_heard + node.cfg.peer_max_time_no_response
        self._dead_at = {k: v for k, v in self._dead_at.items() if now - v < horizon}
        self._dead_at[peer_id] = now

    def request(self, peer: PeerState) -> None:
        node = self.node
        if node.send(peer, ListRequest(sender_id=node.id, receiver_id=peer.identifier).encode()):
            peer.list_asked = time.monotonic()
            node.reg.stats["list_request_sent"] += 1

    def _transport_of(self, p: PeerState) -> Any:
        node = self.node
        if p.address is None:
            return None
        cls = SctpTransport if node.reg.kind == "sctp" else TcpTransport
        return cls(p.address[1], (p.address[0],))

    def response(self, receiver: int) -> ListResponse:
        """Our peer list: every peer we have heard from ourselves, with its ENRP endpoint."""
        node = self.node
        servers = tuple(ServerInformation(p.identifier, self._transport_of(p))
                        for p in sorted(node.live_peers(), key=lambda p: p.identifier)
                        if p.heard and p.address is not None)
        return ListResponse(sender_id=node.id, receiver_id=receiver, servers=servers)

    def on_list(self, msg: ListResponse) -> None:
        """Add the registrars of a peer's list we do not know yet, and connect to them."""
        node = self.node
        node.reg.stats["list_response"] += 1
        if msg.reject:
            return
        now = time.monotonic()
        # A peer we declared dead may still be in a slower peer's list: do not bring it back until
        # that peer could have noticed too (RSPLIB's own detection time).
        quarantine = node.cfg.peer_max_time_last_heard + node.cfg.peer_max_time_no_response
        own = (node.cfg.enrp_listen[0], node.port) if node.cfg.enrp_listen is not None else None
        learnt = 0
        for info in msg.servers:
            sid = info.server_id
            if sid in (0, node.id) or sid in node.peers or sid in node.blocked_ids:
                continue
            if node.takeover.involves(sid):
                continue
            if sid in self._dead_at and now - self._dead_at[sid] < quarantine:
                continue
            address = endpoint_of(info)
            if address is None or address == own:
                continue
            node.peers[sid] = PeerState(sid, address, last_heard=now, heard=False)
            node.reg.stats["peer_from_list"] += 1
            learnt += 1
            log.info("registrar $%08x: peer $%08x at %s learnt from the list of $%08x", node.id, sid,
                     tp.format_endpoint(*address), msg.sender_id)
        if learnt:
            node.maintain()  # connect and greet them (Presence, reply required)

"""ENRP between registrars (RFC 5353, RSPLIB 3.4.4 behaviour): peers, handlespace mirror, takeover.

One ``EnrpNode`` per ``Registrar`` serves the ENRP port (9901) and keeps the handlespace of all
registrars of the operation scope in step:

* **Finding peers.** Static addresses (``RegistrarConfig.peers``, CLI ``--peer``) are connected to
  and greeted with a Presence (reply required); Presences multicast to 239.0.0.51:9901 (if enabled)
  introduce the rest (multicast is off by default, CLI ``--enrp-multicast``, so that test
  registrars sharing a host do not peer by accident). A Presence whose Server Information names the very endpoint the connection
  comes from is a client such as ``hsdump`` (it advertises its ephemeral port), not a registrar.
* **Mirroring.** Every Presence carries the checksum of the sender's *own* PEs (``home_pr`` = sender).
  A receiver compares it with ``handlespace.checksum_of(sender)``; on a mismatch (new peer, restarted
  peer, lost update, drift) it sends a Handle Table Request with "own children only" and replaces
  that peer's entries with the answer, which comes in pieces of at most
  ``max_elements_per_ht_request`` (128) PEs with "more to send". Changes of our own PEs go out as
  Handle Updates (ADD_PE on registration / re-registration, DEL_PE on removal). Mirrored entries
  expire after ``Registrar.mirrored_entry_lifetime()`` (the PE's registration life) unless refreshed.
* **Liveness** (RSPLIB timers): a Presence to every peer each ``peer_heartbeat_cycle`` (2.444 s);
  a peer not heard of for ``peer_max_time_last_heard`` (5 s) gets a Presence with reply required;
  no answer within ``peer_max_time_no_response`` (5 s) declares it dead.
* **Takeover.** For a dead peer that still owns entries: Init Takeover to all live peers; each
  answers Init Takeover Ack, unless it is running its own takeover of the same target and has the
  lower ID (RSPLIB ``rspregistrar-takeover.c``: the lower ID wins; the target itself answers with
  Presences to stop it). With every ack in, or when ``takeover_expiry`` (5 s) runs out (peers that
  do not answer are presumed gone too), the initiator sends Takeover Server, becomes the entries'
  home registrar, sends each PE an Endpoint Keep-Alive with the Home flag (over a new connection to
  the PE's own user transport) and monitors it; no ack within the keep-alive timeout removes the PE
  (and a Handle Update DEL_PE tells the others). A registrar that acked but sees no Takeover Server
  within takeover expiry + no-response time starts its own takeover.

**Partition (coverage loss).** A registrar cut off from its peers declares them dead after
last-heard + no-response (10 s by default) and *takes over* their entries; the Home keep-alives
cannot reach PEs behind the cut, so those entries are removed one keep-alive timeout later (15 s in
all), and never handed out afterwards. PEs it can still reach (e.g. the UE's own PE registered with
it) stay and are chosen. The far side does the same with the cut registrar's PEs. Taking over
rather than dropping keeps PEs that are still reachable (a crashed registrar, or an asymmetric cut).
When the cut heals the Presences resume, each side sees a checksum mismatch for the other's own
PEs and downloads them: both converge to the union of what each side can monitor. Known limit: a
PE reachable from both sides during the cut may be owned twice until it re-registers.

Fault injection for tests: ``EnrpNode.blocked_ids`` (ENRP messages to/from these registrar IDs are
dropped) and ``Registrar.blocked_hosts`` (takeover keep-alives to these PE hosts fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rserpool import transport as tp
from rserpool.wire import (
    ENRP_MESSAGES,
    CodecError,
    HandleTableEntry,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    InitTakeover,
    InitTakeoverAck,
    ListRequest,
    ListResponse,
    Presence,
    SctpTransport,
    ServerInformation,
    TakeoverServer,
    TcpTransport,
    decode_enrp,
)
from rserpool.wire.enrp import UpdateAction

if TYPE_CHECKING:
    from rserpool.handlespace import PoolElement as HsEntry
    from rserpool.registrar import HsEvent, Registrar

log = logging.getLogger(__name__)


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
    syncing: bool = False
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
                "checksum": self.checksum, "syncing": self.syncing}


@dataclass
class _Takeover:
    target: int
    acks_needed: set[int]
    timer: asyncio.TimerHandle | None = None


class _Conn:
    """Handler of one ENRP connection (accepted, or ours to a peer / static address)."""

    def __init__(self, node: EnrpNode, static: tuple[str, int] | None = None) -> None:
        self.node = node
        self.static = static
        self.conn: tp.MessageConnection | None = None
        self.peer_id = 0
        self.outbound = static is not None
        self.cursor: list[HsEntry] | None = None  # handle-table snapshot being sent in pieces
        self.cursor_pos = 0

    def connection_made(self, conn: tp.MessageConnection) -> None:
        self.conn = conn

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        self.node._received(self, data)

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        self.node._conn_lost(self)


class EnrpNode:
    """The ENRP side of a registrar. Created and started by ``Registrar.start()``."""

    def __init__(self, registrar: Registrar) -> None:
        self.reg = registrar
        self.cfg = registrar.config
        self.id = registrar.identifier
        self.peers: dict[int, PeerState] = {}
        self.blocked_ids: set[int] = set()
        self.takeovers: dict[int, _Takeover] = {}
        self._acked: dict[int, asyncio.TimerHandle] = {}  # target -> watchdog after our ack
        self._static: dict[tuple[str, int], _Conn | None] = {a: None for a in self.cfg.peers}
        self._connecting: set[tuple[str, int]] = set()
        self._server: tp.MessageServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._mc_sender: tp.MulticastSender | None = None
        self._mc_listener: tp.MulticastListener | None = None
        self._conns: set[_Conn] = set()
        self._running = False

    # ---------------------------------------------------------------- life cycle

    async def start(self) -> None:
        cfg = self.cfg
        assert cfg.enrp_listen is not None
        host, port = cfg.enrp_listen
        self._server = await tp.start_server(self._accept, host, port, tp.Framing.ASAP, kind=self.reg.kind)
        self._running = True
        self.reg.listeners.append(self._on_hs_event)
        if cfg.enrp_multicast:
            self._mc_sender = tp.MulticastSender(cfg.enrp_group, cfg.enrp_group_port, cfg.announce_interface,
                                                 cfg.announce_ttl)
            try:
                self._mc_listener = await tp.listen_multicast(self._on_datagram, cfg.enrp_group,
                                                              cfg.enrp_group_port, cfg.announce_interface)
            except OSError as exc:
                log.warning("cannot listen for ENRP presences on %s:%d: %s", cfg.enrp_group, cfg.enrp_group_port,
                            exc)
        self._tasks = [asyncio.create_task(self._presence_loop()), asyncio.create_task(self._check_loop())]

    async def stop(self) -> None:
        """Stop silently (like a crash as far as peers are concerned: no goodbye exists in ENRP)."""
        self._running = False
        if self._on_hs_event in self.reg.listeners:
            self.reg.listeners.remove(self._on_hs_event)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        for to in self.takeovers.values():
            if to.timer is not None:
                to.timer.cancel()
        for h in self._acked.values():
            h.cancel()
        self.takeovers.clear()
        self._acked.clear()
        if self._server is not None:
            self._server.close()
            self._server = None
        for c in list(self._conns):
            if c.conn is not None:
                c.conn.abort()
        if self._mc_sender is not None:
            self._mc_sender.close()
        if self._mc_listener is not None:
            self._mc_listener.close()

    @property
    def port(self) -> int | None:
        return self._server.port if self._server is not None else None

    def _accept(self) -> _Conn:
        c = _Conn(self)
        self._conns.add(c)
        return c

    # ---------------------------------------------------------------- sending

    def server_info(self) -> ServerInformation:
        assert self.cfg.enrp_listen is not None
        host = self.cfg.enrp_listen[0]
        cls = SctpTransport if self.reg.kind == "sctp" else TcpTransport
        addrs = () if host in ("", "0.0.0.0", "::") else (host,)
        return ServerInformation(self.id, cls(self.port or tp.ENRP_PORT, addrs))

    def presence(self, receiver: int = 0, reply_required: bool = False) -> Presence:
        return Presence(sender_id=self.id, receiver_id=receiver, checksum=self.reg.handlespace.ownership_checksum(),
                        server_info=self.server_info(), reply_required=reply_required)

    def _send(self, peer: PeerState, data: bytes) -> bool:
        if peer.identifier in self.blocked_ids:
            return False
        conn = peer.conn()
        if conn is None:
            return False
        conn.send(data, tp.PPID_ENRP)
        self.reg.stats["enrp_sent"] += 1
        return True

    def _reply(self, c: _Conn, data: bytes) -> None:
        if c.conn is not None and not c.conn.is_closing() and c.peer_id not in self.blocked_ids:
            c.conn.send(data, tp.PPID_ENRP)

    def _live_peers(self) -> list[PeerState]:
        return list(self.peers.values())

    # ---------------------------------------------------------------- periodic work

    async def _presence_loop(self) -> None:
        while True:
            self._maintain()
            for p in self._live_peers():
                self._send(p, self.presence(p.identifier).encode())
            for c in self._static.values():  # greet static peers whose ID we do not know yet
                if c is not None and c.conn is not None and not c.peer_id and not c.conn.is_closing():
                    c.conn.send(self.presence(0, reply_required=True).encode(), tp.PPID_ENRP)
            if self._mc_sender is not None:
                self._mc_sender.send(self.presence().encode())
            await asyncio.sleep(self.cfg.peer_heartbeat_cycle * random.uniform(0.9, 1.1))

    async def _check_loop(self) -> None:
        tick = max(0.02, min(self.cfg.peer_max_time_last_heard, self.cfg.peer_max_time_no_response) / 10)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for p in self._live_peers():
                if p.probe_sent is None:
                    if now - p.last_heard > self.cfg.peer_max_time_last_heard:
                        p.probe_sent = now
                        self._send(p, self.presence(p.identifier, reply_required=True).encode())
                elif now - p.probe_sent > self.cfg.peer_max_time_no_response:
                    self._peer_dead(p)
                if p.syncing and now - p.sync_started > self.cfg.peer_max_time_no_response:
                    p.syncing = False  # the download stalled; the next Presence retries it

    def _maintain(self) -> None:
        """(Re)connect to static addresses and to known peers we have no connection to."""
        targets: list[tuple[tuple[str, int], _Conn | None, int]] = []
        for addr, c in self._static.items():
            if c is None or c.conn is None or c.conn.is_closing():
                targets.append((addr, None, 0))
        for p in self._live_peers():
            if p.out_conn is None or p.out_conn.is_closing():
                if p.address is not None and p.address not in self._static:
                    targets.append((p.address, None, p.identifier))
        for addr, _, pid in targets:
            if addr not in self._connecting and pid not in self.blocked_ids:
                self._connecting.add(addr)
                self._tasks.append(asyncio.create_task(self._connect(addr, pid)))
        self._tasks = [t for t in self._tasks if not t.done()]

    async def _connect(self, addr: tuple[str, int], peer_id: int) -> None:
        c = _Conn(self, addr)
        c.peer_id = peer_id
        local = None
        assert self.cfg.enrp_listen is not None
        lhost = self.cfg.enrp_listen[0]
        if lhost not in ("", "0.0.0.0", "::"):
            local = (lhost, 0)  # so that peers see our ENRP address as the source
        try:
            await tp.connect(c, addr[0], addr[1], tp.Framing.ASAP, kind=self.reg.kind,
                             timeout=self.cfg.peer_max_time_no_response, local=local)
        except (TimeoutError, OSError) as exc:
            log.debug("cannot connect to ENRP peer %s: %s", tp.format_endpoint(*addr), exc)
            return
        finally:
            self._connecting.discard(addr)
        if not self._running:
            if c.conn is not None:
                c.conn.abort()
            return
        self._conns.add(c)
        if addr in self._static:
            self._static[addr] = c
        peer = self.peers.get(peer_id)
        if peer is not None:
            peer.out_conn = c.conn
        assert c.conn is not None
        c.conn.send(self.presence(peer_id, reply_required=True).encode(), tp.PPID_ENRP)

    def _conn_lost(self, c: _Conn) -> None:
        self._conns.discard(c)
        for p in self.peers.values():
            if p.out_conn is c.conn:
                p.out_conn = None
            if p.in_conn is c.conn:
                p.in_conn = None

    def _on_datagram(self, data: bytes, src: tuple[str, int]) -> None:
        try:
            msg = decode_enrp(data)
        except CodecError:
            return
        if isinstance(msg, Presence) and msg.sender_id != self.id and msg.sender_id not in self.blocked_ids:
            self._on_presence(None, msg, src[0])

    # ---------------------------------------------------------------- receiving

    def _received(self, c: _Conn, data: bytes) -> None:
        if not data or data[0] not in ENRP_MESSAGES:
            self.reg._log_once(c.conn.peer[0] if c.conn and c.conn.peer else "?", "enrp-type",
                               "unrecognized ENRP message type 0x%02x", data[0] if data else -1)
            return
        try:
            msg: Any = decode_enrp(data)
        except CodecError as exc:
            self.reg._log_once(c.conn.peer[0] if c.conn and c.conn.peer else "?", "enrp-malformed",
                               "malformed ENRP message: %s", exc)
            return
        sender = msg.sender_id
        if sender in self.blocked_ids or sender == self.id:
            return
        self.reg.stats["enrp_received"] += 1
        peer = self.peers.get(sender)
        if peer is not None:
            peer.last_heard = time.monotonic()
            peer.probe_sent = None
            if c.outbound:
                if peer.out_conn is None or peer.out_conn.is_closing():
                    peer.out_conn = c.conn
            elif c.conn is not peer.out_conn:
                peer.in_conn = c.conn
        if c.peer_id == 0 and not isinstance(msg, (HandleTableRequest, ListRequest)):
            c.peer_id = sender
        try:
            if isinstance(msg, Presence):
                self._on_presence(c, msg, c.conn.peer[0] if c.conn and c.conn.peer else "")
            elif isinstance(msg, HandleTableRequest):
                self.reg.stats["handle_table_request"] += 1
                self._reply(c, self.handle_table(c, msg).encode())
            elif isinstance(msg, HandleTableResponse):
                self._on_table(c, msg)
            elif isinstance(msg, HandleUpdate):
                self._on_update(msg)
            elif isinstance(msg, ListRequest):
                servers = tuple(ServerInformation(p.identifier, self._transport_of(p)) for p in self._live_peers())
                self._reply(c, ListResponse(sender_id=self.id, receiver_id=sender, servers=servers).encode())
            elif isinstance(msg, InitTakeover):
                self._on_init_takeover(c, msg)
            elif isinstance(msg, InitTakeoverAck):
                self._on_takeover_ack(msg)
            elif isinstance(msg, TakeoverServer):
                self._on_takeover_server(msg)
            # ListResponse / EnrpError: nothing to do
        except Exception:  # a bug in one handler must not take the registrar down
            log.exception("error handling %s from $%08x", type(msg).__name__, sender)

    def _transport_of(self, p: PeerState) -> Any:
        if p.address is None:
            return None
        cls = SctpTransport if self.reg.kind == "sctp" else TcpTransport
        return cls(p.address[1], (p.address[0],))

    def _on_presence(self, c: _Conn | None, msg: Presence, src_host: str) -> None:
        sender = msg.sender_id
        peer = self.peers.get(sender)
        if peer is None:
            address = None
            t = msg.server_info.transport if msg.server_info is not None else None
            if t is not None:
                host = t.addresses[0] if t.addresses and t.addresses[0] not in ("0.0.0.0", "::") else src_host
                address = (host, t.port)
            if c is not None and not c.outbound and c.conn is not None and address == c.conn.peer:
                return  # a client (hsdump) introducing itself from its own ephemeral endpoint
            if c is not None and c.static is not None:
                address = c.static
            if address is None:
                return
            peer = self.peers[sender] = PeerState(sender, address, last_heard=time.monotonic())
            if c is not None and c.conn is not None:
                if c.outbound:
                    peer.out_conn = c.conn
                else:
                    peer.in_conn = c.conn
            log.info("registrar $%08x: new peer $%08x at %s", self.id, sender, tp.format_endpoint(*address))
            self._cancel_takeover_of(sender)
            self._maintain()
        peer.checksum = msg.checksum
        if msg.reply_required:
            data = self.presence(sender).encode()
            if c is not None and c.conn is not None:
                self._reply(c, data)
            else:
                self._send(peer, data)
        if msg.checksum != self.reg.handlespace.checksum_of(sender) and not peer.syncing:
            self._request_table(peer)

    def _request_table(self, peer: PeerState) -> None:
        if self._send(peer, HandleTableRequest(sender_id=self.id, receiver_id=peer.identifier,
                                               own_children_only=True).encode()):
            log.info("registrar $%08x: checksum of peer $%08x differs -> requesting its handle table",
                     self.id, peer.identifier)
            self.reg.stats["handle_table_sync"] += 1
            peer.syncing = True
            peer.sync_keys = set()
            peer.sync_started = time.monotonic()

    # ---------------------------------------------------------------- handle table

    def handle_table(self, c: _Conn, req: HandleTableRequest) -> HandleTableResponse:
        """The next piece (<= max_elements_per_ht_request PEs) of our table for connection ``c``."""
        limit = max(1, self.cfg.max_elements_per_ht_request)
        hs = self.reg.handlespace
        if c.cursor is None:
            c.cursor = list(hs.owned_by(self.id) if req.own_children_only else hs)
            c.cursor_pos = 0
        chunk: list[HsEntry] = []
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
            pe = self.reg.wire_element(e)
            if pools and pools[-1].pool_handle == e.pool_handle:
                pools[-1] = HandleTableEntry(e.pool_handle, pools[-1].pool_elements + (pe,))
            else:
                pools.append(HandleTableEntry(e.pool_handle, (pe,)))
        return HandleTableResponse(sender_id=self.id, receiver_id=req.sender_id, pools=tuple(pools),
                                   more_to_send=more)

    def _on_table(self, c: _Conn, msg: HandleTableResponse) -> None:
        peer = self.peers.get(msg.sender_id)
        if peer is None or msg.reject:
            return
        for entry in msg.pools:
            for pe in entry.pool_elements:
                # Entries of a peer's own table are its own, whatever the PE parameter says.
                if self.reg.add_mirrored(entry.pool_handle, pe, msg.sender_id, "enrp-table"):
                    peer.sync_keys.add((entry.pool_handle, pe.identifier))
        if msg.more_to_send:
            self._reply(c, HandleTableRequest(sender_id=self.id, receiver_id=msg.sender_id,
                                              own_children_only=True).encode())
            peer.sync_started = time.monotonic()
            return
        # Complete: whatever we hold as that peer's and it did not send is stale.
        for e in list(self.reg.handlespace.owned_by(msg.sender_id)):
            if (e.pool_handle, e.identifier) not in peer.sync_keys:
                self.reg.remove_entry(e, "enrp-resync")
        peer.syncing = False
        peer.sync_keys = set()
        log.info("registrar $%08x: handle table of $%08x synchronised (%d PEs)", self.id, msg.sender_id,
                 sum(1 for _ in self.reg.handlespace.owned_by(msg.sender_id)))

    # ---------------------------------------------------------------- handle updates

    def _on_hs_event(self, ev: HsEvent) -> None:
        e = ev.entry
        if ev.reason.startswith("enrp"):
            return  # learnt from a peer: the owner tells the others itself
        if e.home_pr != self.id:
            return
        action = UpdateAction.DEL_PE if ev.action == "remove" else UpdateAction.ADD_PE
        pe = self.reg.wire_element(e)
        for p in self._live_peers():
            self._send(p, HandleUpdate(sender_id=self.id, receiver_id=p.identifier, update_action=action,
                                       pool_handle=e.pool_handle, pool_element=pe).encode())

    def _on_update(self, msg: HandleUpdate) -> None:
        self.reg.stats["handle_update"] += 1
        if msg.update_action == UpdateAction.DEL_PE:
            e = self.reg.handlespace.get(msg.pool_handle, msg.pool_element.identifier)
            # Only the owner may delete (a stale DEL must not remove a PE that moved to us).
            if e is not None and e.home_pr == msg.sender_id:
                self.reg.remove_entry(e, "enrp-update")
        else:
            self.reg.add_mirrored(msg.pool_handle, msg.pool_element, msg.sender_id, "enrp-update")

    # ---------------------------------------------------------------- takeover

    def _peer_dead(self, peer: PeerState) -> None:
        log.warning("registrar $%08x: peer $%08x is dead (no response)", self.id, peer.identifier)
        self.reg.stats["peer_dead"] += 1
        self.peers.pop(peer.identifier, None)
        for c in (peer.out_conn, peer.in_conn):
            if c is not None:
                c.abort()
        target = peer.identifier
        for to in self.takeovers.values():  # a dead peer owes no acks
            to.acks_needed.discard(target)
        for t in list(self.takeovers.values()):
            if not t.acks_needed:
                self._finish_takeover(t.target)
        if target in self._acked or target in self.takeovers:
            return
        self._start_takeover(target)

    def _start_takeover(self, target: int) -> None:
        if not any(True for _ in self.reg.handlespace.owned_by(target)):
            return
        loop = asyncio.get_running_loop()
        to = _Takeover(target, {p.identifier for p in self._live_peers()})
        self.takeovers[target] = to
        log.info("registrar $%08x: initiating takeover of $%08x (%d acks needed)", self.id, target,
                 len(to.acks_needed))
        for p in self._live_peers():
            self._send(p, InitTakeover(sender_id=self.id, receiver_id=p.identifier, target_id=target).encode())
        if not to.acks_needed:
            self._finish_takeover(target)
        else:
            to.timer = loop.call_later(self.cfg.takeover_expiry, self._finish_takeover, target)

    def _on_init_takeover(self, c: _Conn, msg: InitTakeover) -> None:
        target = msg.target_id
        if target == self.id:
            # We are alive: answer with Presences so that the initiator hears us (RSPLIB).
            for p in self._live_peers():
                self._send(p, self.presence(p.identifier).encode())
            self._reply(c, self.presence(msg.sender_id).encode())
            return
        mine = self.takeovers.get(target)
        if mine is not None:
            if msg.sender_id < self.id:  # lower ID wins
                if mine.timer is not None:
                    mine.timer.cancel()
                del self.takeovers[target]
            else:
                return  # we continue ours; the other side will yield
        self._reply(c, InitTakeoverAck(sender_id=self.id, receiver_id=msg.sender_id, target_id=target).encode())
        old = self._acked.pop(target, None)
        if old is not None:
            old.cancel()
        # If the winner dies before Takeover Server, take over ourselves.
        loop = asyncio.get_running_loop()
        self._acked[target] = loop.call_later(self.cfg.takeover_expiry + self.cfg.peer_max_time_no_response,
                                              self._ack_watchdog, target)

    def _ack_watchdog(self, target: int) -> None:
        self._acked.pop(target, None)
        if target not in self.peers and target not in self.takeovers:
            self._start_takeover(target)

    def _on_takeover_ack(self, msg: InitTakeoverAck) -> None:
        to = self.takeovers.get(msg.target_id)
        if to is None:
            return
        to.acks_needed.discard(msg.sender_id)
        if not to.acks_needed:
            self._finish_takeover(msg.target_id)

    def _finish_takeover(self, target: int) -> None:
        to = self.takeovers.pop(target, None)
        if to is None:
            return
        if to.timer is not None:
            to.timer.cancel()
        if target in self.peers:
            return  # it came back meanwhile
        for p in self._live_peers():
            self._send(p, TakeoverServer(sender_id=self.id, receiver_id=p.identifier, target_id=target).encode())
        entries = list(self.reg.handlespace.owned_by(target))
        log.warning("registrar $%08x: taking over %d PEs of $%08x", self.id, len(entries), target)
        self.reg.stats["takeover"] += 1
        self.reg.take_over(entries)

    def _on_takeover_server(self, msg: TakeoverServer) -> None:
        target = msg.target_id
        h = self._acked.pop(target, None)
        if h is not None:
            h.cancel()
        mine = self.takeovers.pop(target, None)
        if mine is not None and mine.timer is not None:
            mine.timer.cancel()
        for e in list(self.reg.handlespace.owned_by(target)):
            self.reg.handlespace.set_owner(e.pool_handle, e.identifier, msg.sender_id)
            self.reg.refresh_mirrored(e)
        if target in self.peers:  # still alive for us: it will resync by checksum
            pass

    def _cancel_takeover_of(self, target: int) -> None:
        to = self.takeovers.pop(target, None)
        if to is not None and to.timer is not None:
            to.timer.cancel()
        h = self._acked.pop(target, None)
        if h is not None:
            h.cancel()

    # ---------------------------------------------------------------- views

    def peer_list(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in sorted(self.peers.values(), key=lambda p: p.identifier)]

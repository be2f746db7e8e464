"""ENRP between registrars (RFC 5353, RSPLIB 3.4.4 behaviour): peers, handlespace mirror, takeover.

One ``EnrpNode`` per ``Registrar`` serves the ENRP port (9901) and keeps the handlespace of all
registrars of the operation scope in step:

* **Finding peers.** Static addresses (``RegistrarConfig.peers``, CLI ``--peer``) are connected to
  and greeted with a Presence (reply required); Presences multicast to 239.0.0.51:9901 (if enabled)
  introduce the rest (multicast is off by default, CLI ``--enrp-multicast``, so that test
  registrars sharing a host do not peer by accident). A client such as ``hsdump`` introduces
  itself with one Presence naming the ephemeral endpoint its connection comes from and asks for no
  reply; it does not become a peer (``_is_client``). Such a Presence is answered with one that
  requires a reply: a registrar greeting us that way (RSPLIB's, for a static peer) answers it and
  so becomes a peer at once; a client ignores it.
* **RSPLIB interoperability (SCTP).** RSPLIB's registrar sends and receives ENRP on one
  one-to-many socket bound to its ENRP endpoint, and ignores a Presence ("contains no usable ENRP
  endpoint addresses") unless the ENRP address *and port* in its Server Information are among the
  association's peer addresses. So over SCTP our associations to peers also start from our ENRP
  port (the listener shares it by SO_REUSEPORT; ``transport.connect(share_port=True)``), and the
  Server Information names a concrete address (the connection's local one when we listen on the
  wildcard). Two registrars doing so share one association per pair: where the peer's association
  to us is up we use it instead of opening our own (the kernel would refuse a second one).
* **Peer lists** (RFC 5353 List Request / List Response, as RSPLIB's ``rspregistrar-enrp.c``): the
  first Presence heard from a peer over a connection makes us ask it for its peer list; every
  registrar in the answer we do not know yet is added with the ENRP transport address given there,
  connected to and greeted, and is asked for *its* list in turn, so a registrar that knows a single
  peer ends up meshed with all of them. A List Request is answered with every peer we have heard
  from (one Server Information each). Beyond RSPLIB, which asks each peer once, the lists are asked
  for again every ``LIST_REFRESH_CYCLES`` heartbeat cycles: two registrars that joined through the
  same peer at the same moment would otherwise never hear of each other.
* **Mentor hunt** (RSPLIB's start-up phase): a registrar starts "not ready". The first peer heard
  from during ``mentor_hunt_timeout`` (5 s) becomes its mentor: it is asked for its peer list and
  for its *whole* handle table (Handle Table Request without "own children only"; every entry keeps
  the home registrar the mentor names). When that download is complete, or when the timeout runs
  out first, the registrar is ready (``EnrpNode.ready``) and starts sending ASAP Server Announces,
  so PEs and PUs that find registrars by multicast do not use one with an empty handlespace. As in
  RSPLIB, a direct ASAP request is served at any time. A registrar with neither static peers nor
  multicast Presences has nobody to hunt for and is ready at once (RSPLIB would idle out the timeout).
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
* **Errors** (RFC 5353 ENRP_ERROR, RFC 5354 section 2.1): a message of an unknown type is answered
  with an ENRP Error "Unrecognized Message"; unrecognised parameters are handled by their action
  bits (stop / stop + report / skip / skip + report), the reported ones in one ENRP Error of
  "Unrecognized Parameter" causes. Nothing is reported for multicast Presences or for an ENRP Error.
* **Liveness** (RSPLIB timers): a Presence to every peer each ``peer_heartbeat_cycle`` (2.444 s);
  a peer not heard of for ``peer_max_time_last_heard`` (5 s) gets a Presence with reply required;
  no answer within ``peer_max_time_no_response`` (5 s) declares it dead.
* **Takeover.** For a dead peer that still owns entries: Init Takeover to all live peers; each
  answers Init Takeover Ack, unless it is running its own takeover of the same target and has the
  lower ID (RSPLIB ``rspregistrar-takeover.c``: the lower ID wins; the target itself answers with
  Presences to stop it). With every ack in, or when ``takeover_expiry`` (5 s) runs out (peers that
  do not answer are presumed gone too), the initiator sends Takeover Server, becomes the entries'
  home registrar, sends each PE an Endpoint Keep-Alive with the Home flag over a new connection
  (to the PE's ASAP endpoint, where RSPLIB's PEs listen, else to its user transport, where ours
  answer: ``Registrar.takeover_targets``) and monitors it; no ack within the keep-alive timeout removes the PE
  (and a Handle Update DEL_PE tells the others). A registrar that acked but sees no Takeover Server
  within takeover expiry + no-response time starts its own takeover.

**Partition (coverage loss).** A registrar cut off from its peers declares them dead after
last-heard + no-response (10 s by default) and *takes over* their entries; the Home keep-alives
cannot reach PEs behind the cut, so those entries are removed one keep-alive timeout later (15 s in
all), and never handed out afterwards. PEs it can still reach (e.g. the UE's own PE registered with
it) stay and are chosen. The far side does the same with the cut registrar's PEs. Taking over
rather than dropping keeps PEs that are still reachable (a crashed registrar, or an asymmetric cut).
When the cut heals the Presences resume (static peers are reconnected to; peers known only from a
peer list are learnt again from a static peer's list), each side sees a checksum mismatch for the
other's own PEs and downloads them: both converge to the union of what each side can monitor.
Known limit: a PE reachable from both sides during the cut may be owned twice until it re-registers.

Fault injection for tests: ``EnrpNode.blocked_ids`` (ENRP messages to/from these registrar IDs are
dropped) and ``Registrar.blocked_hosts`` (takeover keep-alives to these PE hosts fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rserpool import transport as tp
from rserpool.wire import (
    ENRP_MESSAGES,
    Action,
    CauseCode,
    CodecError,
    EnrpError,
    ErrorCause,
    HandleTableEntry,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    InitTakeover,
    InitTakeoverAck,
    ListRequest,
    ListResponse,
    OperationError,
    Presence,
    SctpTransport,
    ServerInformation,
    TakeoverServer,
    TcpTransport,
    decode_enrp,
)
from rserpool.wire.enrp import UpdateAction, peek_ids, unrecognized_parameters

if TYPE_CHECKING:
    from rserpool.handlespace import PoolElement as HsEntry
    from rserpool.registrar import HsEvent, Registrar

log = logging.getLogger(__name__)

# Peer lists are asked for again after this many heartbeat cycles (RSPLIB asks once per peer).
LIST_REFRESH_CYCLES = 10
# Cause-specific information of an "Unrecognized Message" error: the message, cut to this size.
MAX_ERROR_INFO = 1024


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


@dataclass
class _Takeover:
    target: int
    acks_needed: set[int]
    timer: asyncio.TimerHandle | None = None


class _Conn:
    """Handler of one ENRP connection (accepted, or ours to a peer / static address)."""

    def __init__(self, node: EnrpNode, static: tuple[str, int] | None = None) -> None:
        self.node = node
        self.static = static  # the address we dialled (outbound connections only)
        self.conn: tp.MessageConnection | None = None
        self.peer_id = 0
        self.outbound = static is not None
        # Handle-table snapshot being sent in pieces, which table it is and when a piece last went out.
        self.cursor: list[HsEntry] | None = None
        self.cursor_pos = 0
        self.cursor_own = False
        self.cursor_time = 0.0
        self.presences = 0  # Presences received over this connection

    def connection_made(self, conn: tp.MessageConnection) -> None:
        self.conn = conn

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        self.node._received(self, data)

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        self.node._conn_lost(self)


def _endpoint_of(info: ServerInformation) -> tuple[str, int] | None:
    """The ENRP endpoint a Server Information names (its first address), if it names one."""
    t = info.transport
    if t is None or not t.addresses or t.addresses[0] in ("", "0.0.0.0", "::"):
        return None
    return (t.addresses[0], t.port)


class EnrpNode:
    """The ENRP side of a registrar. Created and started by ``Registrar.start()``."""

    def __init__(self, registrar: Registrar) -> None:
        self.reg = registrar
        self.cfg = registrar.config
        self.id = registrar.identifier
        self.peers: dict[int, PeerState] = {}
        self.blocked_ids: set[int] = set()
        self.takeovers: dict[int, _Takeover] = {}
        # Start-up phase: set once the mentor's handlespace is in or the mentor hunt timed out.
        self.ready = asyncio.Event()
        self.mentor: int | None = None
        self.startup_ended_by: str | None = None  # "mentor", "timeout" or "no-peers"
        self.started_at = 0.0
        self.ready_at: float | None = None
        self._startup_timer: asyncio.TimerHandle | None = None
        self._acked: dict[int, asyncio.TimerHandle] = {}  # target -> watchdog after our ack
        self._dead_at: dict[int, float] = {}  # peers we declared dead, and when
        self._static: dict[tuple[str, int], _Conn | None] = {a: None for a in self.cfg.peers}
        self._connecting: set[tuple[str, int]] = set()
        self._server: tp.MessageServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._mc_sender: tp.MulticastSender | None = None
        self._mc_listener: tp.MulticastListener | None = None
        self._conns: set[_Conn] = set()
        self._running = False
        self._share_port = True  # SCTP: start associations from our ENRP port (cleared if the kernel refuses)

    # ---------------------------------------------------------------- life cycle

    async def start(self) -> None:
        cfg = self.cfg
        assert cfg.enrp_listen is not None
        host, port = cfg.enrp_listen
        # SCTP: our associations to peers start from this very port (see _connect)
        self._server = await tp.start_server(self._accept, host, port, tp.Framing.ASAP, kind=self.reg.kind,
                                             share_port=self.reg.kind == "sctp")
        self._running = True
        self.started_at = time.monotonic()
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
        if not cfg.peers and not cfg.enrp_multicast:
            self._end_startup("no-peers")  # nobody could become our mentor
        elif cfg.mentor_hunt_timeout <= 0:
            self._end_startup("timeout")
        else:
            self._startup_timer = asyncio.get_running_loop().call_later(
                cfg.mentor_hunt_timeout, self._end_startup, "timeout")
        self._tasks = [asyncio.create_task(self._presence_loop()), asyncio.create_task(self._check_loop())]

    def abort(self) -> None:
        """End at once, as a crash would: no further timer or task of ours runs, every ENRP
        connection is aborted, nothing is said to the peers (ENRP has no goodbye anyway)."""
        self._running = False
        if self._on_hs_event in self.reg.listeners:
            self.reg.listeners.remove(self._on_hs_event)
        for t in self._tasks:
            t.cancel()
        handles = [to.timer for to in self.takeovers.values()] + list(self._acked.values()) + [self._startup_timer]
        for h in handles:
            if h is not None:
                h.cancel()
        self.takeovers.clear()
        self._acked.clear()
        self._startup_timer = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for c in list(self._conns):
            if c.conn is not None:
                c.conn.abort()
        if self._mc_sender is not None:
            self._mc_sender.close()
            self._mc_sender = None
        if self._mc_listener is not None:
            self._mc_listener.close()
            self._mc_listener = None

    async def stop(self) -> None:
        """Stop silently (like a crash as far as peers are concerned: no goodbye exists in ENRP)."""
        tasks = self._tasks
        self.abort()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    @property
    def port(self) -> int | None:
        return self._server.port if self._server is not None else None

    def _accept(self) -> _Conn:
        c = _Conn(self)
        self._conns.add(c)
        return c

    def _end_startup(self, reason: str) -> None:
        """Leave the start-up phase (RSPLIB ``registrarBeginNormalOperation``)."""
        if self.ready.is_set():
            return
        if self._startup_timer is not None:
            self._startup_timer.cancel()
            self._startup_timer = None
        self.startup_ended_by = reason
        self.ready_at = time.monotonic()
        self.ready.set()
        if reason == "mentor":
            log.info("registrar $%08x: handlespace obtained from mentor $%08x (%d PEs): ready", self.id,
                     self.mentor or 0, len(self.reg.handlespace))
        elif reason == "timeout":
            log.info("registrar $%08x: no mentor within the mentor hunt timeout (%g s): ready on its own",
                     self.id, self.cfg.mentor_hunt_timeout)
        else:
            log.info("registrar $%08x: no static peers and no ENRP multicast, no mentor to hunt for: ready",
                     self.id)

    # ---------------------------------------------------------------- sending

    def server_info(self, conn: tp.MessageConnection | None = None) -> ServerInformation:
        """Our Server Information: registrar ID and ENRP endpoint.

        RSPLIB's registrar accepts a Presence only if the ENRP address in it is one of the
        association's peer addresses *with the same port* (``transportAddressBlockFilter``, port
        filtering on); so the address is a concrete one even when we listen on the wildcard: the
        local address of ``conn``, the connection the Presence goes out on."""
        assert self.cfg.enrp_listen is not None
        host = self.cfg.enrp_listen[0]
        cls = SctpTransport if self.reg.kind == "sctp" else TcpTransport
        if host in ("", "0.0.0.0", "::") and conn is not None and conn.local is not None:
            host = conn.local[0]
        addrs = () if host in ("", "0.0.0.0", "::") else (host,)
        return ServerInformation(self.id, cls(self.port or tp.ENRP_PORT, addrs))

    def presence(self, receiver: int = 0, reply_required: bool = False,
                 conn: tp.MessageConnection | None = None) -> Presence:
        return Presence(sender_id=self.id, receiver_id=receiver, checksum=self.reg.handlespace.ownership_checksum(),
                        server_info=self.server_info(conn), reply_required=reply_required)

    def _send(self, peer: PeerState, data: bytes) -> bool:
        if peer.identifier in self.blocked_ids:
            return False
        conn = peer.conn()
        if conn is None:
            return False
        conn.send(data, tp.PPID_ENRP)
        self.reg.stats["enrp_sent"] += 1
        return True

    def _send_presence(self, peer: PeerState, reply_required: bool = False) -> bool:
        """A Presence to ``peer`` over its connection (the Server Information names that one's address)."""
        if peer.identifier in self.blocked_ids:
            return False
        conn = peer.conn()
        if conn is None:
            return False
        conn.send(self.presence(peer.identifier, reply_required, conn).encode(), tp.PPID_ENRP)
        self.reg.stats["enrp_sent"] += 1
        return True

    def _reply_presence(self, c: _Conn, receiver: int) -> None:
        if c.conn is not None:
            self._reply(c, self.presence(receiver, conn=c.conn).encode())

    def _reply(self, c: _Conn, data: bytes) -> None:
        if c.conn is not None and not c.conn.is_closing() and c.peer_id not in self.blocked_ids:
            c.conn.send(data, tp.PPID_ENRP)

    def _send_error(self, c: _Conn, receiver: int, causes: list[ErrorCause]) -> None:
        """Report to the sender of a message what we could not process (ENRP_ERROR, RFC 5353)."""
        self.reg.stats["enrp_error_sent"] += 1
        self._reply(c, EnrpError(sender_id=self.id, receiver_id=receiver,
                                 error=OperationError(tuple(causes))).encode())

    def _live_peers(self) -> list[PeerState]:
        return list(self.peers.values())

    def _request_list(self, peer: PeerState) -> None:
        if self._send(peer, ListRequest(sender_id=self.id, receiver_id=peer.identifier).encode()):
            peer.list_asked = time.monotonic()
            self.reg.stats["list_request_sent"] += 1

    # ---------------------------------------------------------------- periodic work

    async def _presence_loop(self) -> None:
        while True:
            self._maintain()
            now = time.monotonic()
            refresh = LIST_REFRESH_CYCLES * self.cfg.peer_heartbeat_cycle
            for p in self._live_peers():
                self._send_presence(p)
                if p.heard and p.list_asked is not None and now - p.list_asked > refresh:
                    self._request_list(p)
            for c in self._static.values():  # greet static peers whose ID we do not know yet
                if c is not None and c.conn is not None and not c.peer_id and not c.conn.is_closing():
                    c.conn.send(self.presence(0, True, c.conn).encode(), tp.PPID_ENRP)
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
                        self._send_presence(p, reply_required=True)
                elif now - p.probe_sent > self.cfg.peer_max_time_no_response:
                    self._peer_dead(p)
                if p.syncing and now - p.sync_started > self.cfg.peer_max_time_no_response:
                    # The download stalled; the next Presence with a checksum mismatch retries it.
                    p.syncing = p.sync_full = False

    def _inbound_from(self, addr: tuple[str, int]) -> bool:
        """Whether a peer's association from its ENRP endpoint ``addr`` to us is up.

        Over SCTP both sides start their associations from their ENRP ports (``_connect``), so
        such an association already is the one we would open: the kernel refuses a second one
        between the same endpoints (EADDRNOTAVAIL), and we use that one instead."""
        return any(not c.outbound and c.conn is not None and not c.conn.is_closing() and c.conn.peer == addr
                   for c in self._conns)

    def _maintain(self) -> None:
        """(Re)connect to static addresses and to known peers we have no connection to."""
        targets: list[tuple[tuple[str, int], int]] = []
        for addr, c in self._static.items():
            if (c is None or c.conn is None or c.conn.is_closing()) and not self._inbound_from(addr):
                targets.append((addr, 0))
        for p in self._live_peers():
            if p.out_conn is None or p.out_conn.is_closing():
                if p.address is not None and p.address not in self._static and not self._inbound_from(p.address):
                    targets.append((p.address, p.identifier))
        for addr, pid in targets:
            if addr not in self._connecting and pid not in self.blocked_ids:
                self._connecting.add(addr)
                self._tasks.append(asyncio.create_task(self._connect(addr, pid)))
        self._tasks = [t for t in self._tasks if not t.done()]

    def _local_endpoint(self, addr: tuple[str, int], share: bool) -> tuple[str, int] | None:
        """Where an association to the peer at ``addr`` starts from (None: the kernel chooses)."""
        assert self.cfg.enrp_listen is not None
        lhost = self.cfg.enrp_listen[0]
        wildcard = lhost in ("", "0.0.0.0", "::")
        if share:
            # From our ENRP endpoint itself, as RSPLIB's one-to-many ENRP socket does: RSPLIB's
            # registrar ignores a Presence unless the ENRP endpoint in its Server Information
            # (address *and* port) is one the association comes from.
            assert self.port is not None
            return ("::" if ":" in addr[0] else "0.0.0.0") if wildcard else lhost, self.port
        return None if wildcard else (lhost, 0)  # so that peers see our ENRP address as the source

    async def _connect(self, addr: tuple[str, int], peer_id: int) -> None:
        share = self.reg.kind == "sctp" and self._share_port and self.port is not None
        try:
            for attempt_share in (True, False) if share else (False,):
                c = _Conn(self, addr)
                c.peer_id = peer_id
                try:
                    await tp.connect(c, addr[0], addr[1], tp.Framing.ASAP, kind=self.reg.kind,
                                     timeout=self.cfg.peer_max_time_no_response,
                                     local=self._local_endpoint(addr, attempt_share), share_port=attempt_share)
                    break
                except OSError as exc:
                    if not attempt_share or exc.errno != errno.EADDRINUSE:
                        raise
                    # a kernel without SO_REUSEPORT for SCTP: fall back to an ephemeral port
                    log.warning("cannot start ENRP associations from port %s (%s): using ephemeral ports; "
                                "RSPLIB registrars will ignore our Presences", self.port, exc)
                    self._share_port = False
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
        c.conn.send(self.presence(peer_id, True, c.conn).encode(), tp.PPID_ENRP)

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
        if not isinstance(msg, Presence) or msg.sender_id == self.id or msg.sender_id in self.blocked_ids:
            return
        # Unknown parameters: apply their action bits, but never report over multicast.
        if any(p.type & 0xC000 in (Action.STOP, Action.STOP_AND_REPORT) for p in unrecognized_parameters(msg)):
            return
        self._on_presence(None, msg, src[0])

    # ---------------------------------------------------------------- receiving

    def _received(self, c: _Conn, data: bytes) -> None:
        host = c.conn.peer[0] if c.conn and c.conn.peer else "?"
        if not data or data[0] not in ENRP_MESSAGES:
            self.reg.stats["enrp_unrecognized_message"] += 1
            self.reg._log_once(host, "enrp-type", "unrecognized ENRP message type 0x%02x",
                               data[0] if data else -1)
            ids = peek_ids(data)
            if data and (ids is None or ids[0] not in self.blocked_ids):
                self._send_error(c, ids[0] if ids else 0,
                                 [ErrorCause(CauseCode.UNRECOGNIZED_MESSAGE, data[:MAX_ERROR_INFO])])
            return
        try:
            msg: Any = decode_enrp(data)
        except CodecError as exc:
            self.reg._log_once(host, "enrp-malformed", "malformed ENRP message: %s", exc)
            return
        sender = msg.sender_id
        if sender in self.blocked_ids or sender == self.id:
            return
        if not self._check_unknown_params(c, msg, host):
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
                c.presences += 1
                self._on_presence(c, msg, c.conn.peer[0] if c.conn and c.conn.peer else "")
            elif isinstance(msg, HandleTableRequest):
                self.reg.stats["handle_table_request"] += 1
                self._reply(c, self.handle_table(c, msg).encode())
            elif isinstance(msg, HandleTableResponse):
                self._on_table(c, msg)
            elif isinstance(msg, HandleUpdate):
                self._on_update(msg)
            elif isinstance(msg, ListRequest):
                self.reg.stats["list_request"] += 1
                self._reply(c, self.list_response(sender).encode())
            elif isinstance(msg, ListResponse):
                self._on_list(msg)
            elif isinstance(msg, InitTakeover):
                self._on_init_takeover(c, msg)
            elif isinstance(msg, InitTakeoverAck):
                self._on_takeover_ack(msg)
            elif isinstance(msg, TakeoverServer):
                self._on_takeover_server(msg)
            elif isinstance(msg, EnrpError):
                self.reg.stats["enrp_error_received"] += 1
                self.reg._log_once(host, "enrp-error", "ENRP Error from $%08x: %s", sender,
                                   ", ".join(f"cause 0x{e.code:x}" for e in msg.error.causes))
        except Exception:  # a bug in one handler must not take the registrar down
            log.exception("error handling %s from $%08x", type(msg).__name__, sender)

    def _check_unknown_params(self, c: _Conn, msg: Any, host: str) -> bool:
        """Apply RFC 5354 section 2.1 action bits to unrecognised parameters; False = discard.

        Parameters are looked at in message order: "report" ones are collected into one ENRP Error
        (an Unrecognized Parameter cause each, holding the parameter); the first "stop" one ends
        the processing, so what follows it is neither reported nor used."""
        unknown = unrecognized_parameters(msg)
        if not unknown:
            return True
        report: list[ErrorCause] = []
        keep = True
        for p in unknown:
            action = p.type & 0xC000
            if action in (Action.STOP_AND_REPORT, Action.SKIP_AND_REPORT):
                report.append(ErrorCause(CauseCode.UNRECOGNIZED_PARAMETER, p.encode()))
            if action in (Action.STOP, Action.STOP_AND_REPORT):
                keep = False
                break
        if report and not isinstance(msg, EnrpError):  # never answer an error with an error
            self._send_error(c, msg.sender_id, report)
        if not keep:
            self.reg._log_once(host, "enrp-param", "unrecognized parameter type 0x%04x: %s discarded",
                               unknown[0].type, type(msg).__name__)
        return keep

    def _transport_of(self, p: PeerState) -> Any:
        if p.address is None:
            return None
        cls = SctpTransport if self.reg.kind == "sctp" else TcpTransport
        return cls(p.address[1], (p.address[0],))

    def list_response(self, receiver: int) -> ListResponse:
        """Our peer list: every peer we have heard from ourselves, with its ENRP endpoint."""
        servers = tuple(ServerInformation(p.identifier, self._transport_of(p))
                        for p in sorted(self._live_peers(), key=lambda p: p.identifier)
                        if p.heard and p.address is not None)
        return ListResponse(sender_id=self.id, receiver_id=receiver, servers=servers)

    def _on_list(self, msg: ListResponse) -> None:
        """Add the registrars of a peer's list we do not know yet, and connect to them."""
        self.reg.stats["list_response"] += 1
        if msg.reject:
            return
        now = time.monotonic()
        # A peer we declared dead may still be in a slower peer's list: do not bring it back until
        # that peer could have noticed too (RSPLIB's own detection time).
        quarantine = self.cfg.peer_max_time_last_heard + self.cfg.peer_max_time_no_response
        own = (self.cfg.enrp_listen[0], self.port) if self.cfg.enrp_listen is not None else None
        learnt = 0
        for info in msg.servers:
            sid = info.server_id
            if sid in (0, self.id) or sid in self.peers or sid in self.blocked_ids:
                continue
            if sid in self.takeovers or sid in self._acked:
                continue
            if sid in self._dead_at and now - self._dead_at[sid] < quarantine:
                continue
            address = _endpoint_of(info)
            if address is None or address == own:
                continue
            self.peers[sid] = PeerState(sid, address, last_heard=now, heard=False)
            self.reg.stats["peer_from_list"] += 1
            learnt += 1
            log.info("registrar $%08x: peer $%08x at %s learnt from the list of $%08x", self.id, sid,
                     tp.format_endpoint(*address), msg.sender_id)
        if learnt:
            self._maintain()  # connect and greet them (Presence, reply required)

    def _on_presence(self, c: _Conn | None, msg: Presence, src_host: str) -> None:
        sender = msg.sender_id
        peer = self.peers.get(sender)
        if peer is None:
            address = None
            t = msg.server_info.transport if msg.server_info is not None else None
            if t is not None:
                host = t.addresses[0] if t.addresses and t.addresses[0] not in ("0.0.0.0", "::") else src_host
                address = (host, t.port)
            if self._is_client(c, msg, address):
                # Or a registrar that greets a static peer without asking for a reply (RSPLIB): ask
                # it for one. A registrar answers, and its answer makes it a peer; a client never does.
                if c is not None and c.conn is not None and c.presences == 1:
                    self._reply(c, self.presence(sender, reply_required=True, conn=c.conn).encode())
                return
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
        elif not peer.heard:  # learnt from a list, now heard from itself
            peer.heard = True
            log.info("registrar $%08x: peer $%08x answered", self.id, sender)
            self._cancel_takeover_of(sender)
        peer.checksum = msg.checksum
        if msg.reply_required:
            if c is not None and c.conn is not None:
                self._reply_presence(c, sender)
            else:
                self._send_presence(peer)
        if c is not None:  # over a connection, so we can ask it things (RSPLIB: SCTP Presences only)
            if not self.ready.is_set() and self.mentor is None:
                self._mentor_query(peer)
            if peer.list_asked is None:
                self._request_list(peer)
        if msg.checksum != self.reg.handlespace.checksum_of(sender) and not peer.syncing:
            self._request_table(peer)

    def _is_client(self, c: _Conn | None, msg: Presence, address: tuple[str, int] | None) -> bool:
        """Whether a Presence from an unknown sender comes from a client such as ``hsdump``.

        A client introduces itself once, without asking for a reply, and names the endpoint its
        connection comes from (its ephemeral port). A registrar may name its connection's source
        too (RSPLIB's and ours start their associations from their ENRP ports), but it asks for a
        reply when it greets a new peer, is one of our static peers, or sends more Presences over
        the same connection (the answer to ours with reply required, its heartbeats)."""
        if c is None or c.outbound or c.conn is None or address != c.conn.peer:
            return False
        return not msg.reply_required and c.presences <= 1 and address not in self._static

    def _mentor_query(self, peer: PeerState) -> None:
        """Make ``peer`` our mentor: ask for its peer list and its whole handle table."""
        if not self._send(peer, HandleTableRequest(sender_id=self.id, receiver_id=peer.identifier,
                                                   own_children_only=False).encode()):
            return
        log.info("registrar $%08x: trying peer $%08x as mentor", self.id, peer.identifier)
        self.mentor = peer.identifier
        self.reg.stats["mentor_sync"] += 1
        self.reg.stats["handle_table_sync"] += 1
        self._start_sync(peer, full=True)
        self._request_list(peer)

    def _start_sync(self, peer: PeerState, full: bool) -> None:
        peer.syncing = True
        peer.sync_full = full
        peer.sync_keys = set()
        peer.sync_started = time.monotonic()

    def _request_table(self, peer: PeerState) -> None:
        if self._send(peer, HandleTableRequest(sender_id=self.id, receiver_id=peer.identifier,
                                               own_children_only=True).encode()):
            log.info("registrar $%08x: checksum of peer $%08x differs -> requesting its handle table",
                     self.id, peer.identifier)
            self.reg.stats["handle_table_sync"] += 1
            self._start_sync(peer, full=False)

    # ---------------------------------------------------------------- handle table

    def handle_table(self, c: _Conn, req: HandleTableRequest) -> HandleTableResponse:
        """The next piece (<= max_elements_per_ht_request PEs) of our table for connection ``c``.

        A request continues the connection's cursor only if it asks for the same table and comes
        within ``peer_max_time_no_response`` of the last piece; otherwise the requester has given
        that download up (or started another one), and continuing would hand it a tail whose end it
        would take for the whole table. Starting afresh costs at worst some repeated entries."""
        limit = max(1, self.cfg.max_elements_per_ht_request)
        hs = self.reg.handlespace
        now = time.monotonic()
        if c.cursor is not None and (c.cursor_own != req.own_children_only
                                     or now - c.cursor_time > self.cfg.peer_max_time_no_response):
            self.reg.stats["handle_table_restart"] += 1
            log.info("registrar $%08x: handle table request from $%08x after a stalled one -> starting afresh",
                     self.id, req.sender_id)
            c.cursor = None
        if c.cursor is None:
            c.cursor = list(hs.owned_by(self.id) if req.own_children_only else hs)
            c.cursor_pos = 0
            c.cursor_own = req.own_children_only
        c.cursor_time = now
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
        if peer is None:
            return
        if msg.reject:
            peer.syncing = peer.sync_full = False  # RSPLIB: the synchronisation is over
            return
        hs = self.reg.handlespace
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
                    if owner == self.id or (local is not None and local.home_pr == self.id):
                        continue
                if self.reg.add_mirrored(entry.pool_handle, pe, owner, "enrp-table"):
                    peer.sync_keys.add((entry.pool_handle, pe.identifier))
        if not peer.syncing:
            return  # a late piece of a download given up as stalled: nothing to continue or conclude
        if msg.more_to_send:
            self._reply(c, HandleTableRequest(sender_id=self.id, receiver_id=msg.sender_id,
                                              own_children_only=not full).encode())
            peer.sync_started = time.monotonic()
            return
        # Complete: whatever we hold as that peer's and it did not send is stale.
        for e in list(hs.owned_by(msg.sender_id)):
            if (e.pool_handle, e.identifier) not in peer.sync_keys:
                self.reg.remove_entry(e, "enrp-resync")
        peer.syncing = peer.sync_full = False
        peer.sync_keys = set()
        log.info("registrar $%08x: handle table of $%08x synchronised (%d PEs of its own)", self.id,
                 msg.sender_id, sum(1 for _ in hs.owned_by(msg.sender_id)))
        if full and msg.sender_id == self.mentor:
            self._end_startup("mentor")

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
        key = (msg.pool_handle, msg.pool_element.identifier)
        peer = self.peers.get(msg.sender_id)
        # Keys of the table being downloaded from the sender, if a download is running.
        keys = peer.sync_keys if peer is not None and peer.syncing else None
        if msg.update_action == UpdateAction.DEL_PE:
            e = self.reg.handlespace.get(*key)
            # Only the owner may delete (a stale DEL must not remove a PE that moved to us).
            if e is not None and e.home_pr == msg.sender_id:
                self.reg.remove_entry(e, "enrp-update")
            if keys is not None:
                keys.discard(key)
        elif self.reg.add_mirrored(msg.pool_handle, msg.pool_element, msg.sender_id, "enrp-update"):
            if keys is not None:
                # Part of the table being downloaded even if no piece carries it (it came after the
                # sender took its snapshot): the end of the download must not purge it as stale.
                keys.add(key)

    # ---------------------------------------------------------------- takeover

    def _peer_dead(self, peer: PeerState) -> None:
        log.warning("registrar $%08x: peer $%08x is dead (no response)", self.id, peer.identifier)
        self.reg.stats["peer_dead"] += 1
        self.peers.pop(peer.identifier, None)
        now = time.monotonic()
        horizon = self.cfg.peer_max_time_last_heard + self.cfg.peer_max_time_no_response
        self._dead_at = {k: v for k, v in self._dead_at.items() if now - v < horizon}
        self._dead_at[peer.identifier] = now
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
        # Acks are awaited from the peers that have shown themselves alive; one only named in a
        # peer list may not exist any more.
        to = _Takeover(target, {p.identifier for p in self._live_peers() if p.heard})
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
                self._send_presence(p)
            self._reply_presence(c, msg.sender_id)
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

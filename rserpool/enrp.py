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
* **Peer lists** (RFC 5353 List Request / List Response): every peer's list is asked for, so
  that a registrar that knows a single peer ends up meshed with all of them (``rserpool.enrp_peers``).
* **Mentor hunt** (RSPLIB's start-up phase): a registrar starts "not ready". The first peer heard
  from during ``mentor_hunt_timeout`` (5 s) becomes its mentor: it is asked for its peer list and
  for its *whole* handle table (Handle Table Request without "own children only"; every entry keeps
  the home registrar the mentor names). When that download is complete, or when the timeout runs
  out first, the registrar is ready (``EnrpNode.ready``) and starts sending ASAP Server Announces,
  so PEs and PUs that find registrars by multicast do not use one with an empty handlespace. As in
  RSPLIB, a direct ASAP request is served at any time. A registrar with neither static peers nor
  multicast Presences has nobody to hunt for and is ready at once (RSPLIB would idle out the timeout).
* **Mirroring.** Presences carry a checksum of the sender's own PEs; a mismatch makes the receiver
  download that peer's handle table; changes of our own PEs go out as Handle Updates
  (``rserpool.enrp_mirror``, ``EnrpNode.mirror``).
* **Errors** (RFC 5353 ENRP_ERROR, RFC 5354 section 2.1): a message of an unknown type is answered
  with an ENRP Error "Unrecognized Message"; unrecognised parameters are handled by their action
  bits (stop / stop + report / skip / skip + report), the reported ones in one ENRP Error of
  "Unrecognized Parameter" causes. Nothing is reported for multicast Presences or for an ENRP Error.
* **Liveness** (RSPLIB timers): a Presence to every peer each ``peer_heartbeat_cycle`` (2.444 s);
  a peer not heard of for ``peer_max_time_last_heard`` (5 s) gets a Presence with reply required;
  no answer within ``peer_max_time_no_response`` (5 s) declares it dead.
* **Takeover** of a dead peer's PEs, and what a partition (coverage loss) leads to: see
  ``rserpool.takeover`` (``EnrpNode.takeover`` is its ENRP half).

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
from typing import TYPE_CHECKING, Any

from rserpool import multicast
from rserpool import transport as tp
from rserpool.enrp_mirror import HandlespaceMirror
from rserpool.enrp_peers import PeerLists, PeerState
from rserpool.takeover import TakeoverAgreement
from rserpool.wire import (
    ENRP_MESSAGES,
    Action,
    CauseCode,
    CodecError,
    EnrpError,
    ErrorCause,
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
from rserpool.wire.enrp import peek_ids, unrecognized_parameters

if TYPE_CHECKING:
    from rserpool.handlespace import PoolEntry
    from rserpool.registrar import Registrar

log = logging.getLogger(__name__)

# Peer lists are asked for again after this many heartbeat cycles (RSPLIB asks once per peer).
LIST_REFRESH_CYCLES = 10
# Cause-specific information of an "Unrecognized Message" error: the message, cut to this size.
MAX_ERROR_INFO = 1024


class _Conn:
    """Handler of one ENRP connection (accepted, or ours to a peer / static address)."""

    def __init__(self, node: EnrpNode, static: tuple[str, int] | None = None) -> None:
        self.node = node
        self.static = static  # the address we dialled (outbound connections only)
        self.conn: tp.MessageConnection | None = None
        self.peer_id = 0
        self.outbound = static is not None
        # Handle-table snapshot being sent in pieces, which table it is and when a piece last went out.
        self.cursor: list[PoolEntry] | None = None
        self.cursor_pos = 0
        self.cursor_own = False
        self.cursor_time = 0.0
        self.presences = 0  # Presences received over this connection
        self.bad = 0  # messages of it we had to drop (``RegistrarConfig.max_bad_messages``)

    def connection_made(self, conn: tp.MessageConnection) -> None:
        self.conn = conn
        host = conn.peer[0] if conn.peer else "?"
        if not self.outbound and not self.node.host_allowed(host):
            self.node.reg.stats["enrp_refused_host"] += 1
            self.node.reg._log_once(host, "enrp-host", "ENRP association from a host that is no static peer: aborted")
            conn.abort()

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
        self.takeover = TakeoverAgreement(self)
        self.mirror = HandlespaceMirror(self)
        self.peer_lists = PeerLists(self)
        # Start-up phase: set once the mentor's handlespace is in or the mentor hunt timed out.
        self.ready = asyncio.Event()
        self.mentor: int | None = None
        self.startup_ended_by: str | None = None  # "mentor", "timeout" or "no-peers"
        self.started_at = 0.0
        self.ready_at: float | None = None
        self._startup_timer: asyncio.TimerHandle | None = None
        self._static: dict[tuple[str, int], _Conn | None] = {a: None for a in self.cfg.peers}
        self._connecting: set[tuple[str, int]] = set()
        self._server: tp.MessageServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._mc_sender: multicast.MulticastSender | None = None
        self._mc_listener: multicast.MulticastListener | None = None
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
        self.reg.listeners.append(self.mirror.on_hs_event)
        if cfg.enrp_multicast:
            self._mc_sender = multicast.MulticastSender(cfg.enrp_group, cfg.enrp_group_port, cfg.announce_interface,
                                                        cfg.announce_ttl)
            try:
                self._mc_listener = await multicast.listen_multicast(self._on_datagram, cfg.enrp_group,
                                                                     cfg.enrp_group_port, cfg.announce_interface)
            except OSError as exc:
                log.warning("cannot listen for ENRP presences on %s:%d: %s", cfg.enrp_group, cfg.enrp_group_port,
                            exc)
        if not cfg.peers and not cfg.enrp_multicast:
            self.end_startup("no-peers")  # nobody could become our mentor
        elif cfg.mentor_hunt_timeout <= 0:
            self.end_startup("timeout")
        else:
            self._startup_timer = asyncio.get_running_loop().call_later(
                cfg.mentor_hunt_timeout, self.end_startup, "timeout")
        self._tasks = [asyncio.create_task(self._presence_loop()), asyncio.create_task(self._check_loop())]

    def abort(self) -> None:
        """End at once, as a crash would: no further timer or task of ours runs, every ENRP
        connection is aborted, nothing is said to the peers (ENRP has no goodbye anyway)."""
        self._running = False
        if self.mirror.on_hs_event in self.reg.listeners:
            self.reg.listeners.remove(self.mirror.on_hs_event)
        for t in self._tasks:
            t.cancel()
        self.takeover.clear()
        if self._startup_timer is not None:
            self._startup_timer.cancel()
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

    def host_allowed(self, host: str) -> bool:
        """With ``enrp_peers_only`` (emulab's, off by default) only the static peers' hosts may speak
        ENRP to us (and ask for the handlespace): RFC 5355's forged peers, without authentication."""
        return not self.cfg.enrp_peers_only or any(host == h for h, _ in self.cfg.peers)

    def _accept(self) -> _Conn:
        c = _Conn(self)
        self._conns.add(c)
        return c

    def end_startup(self, reason: str) -> None:
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

    def send(self, peer: PeerState, data: bytes) -> bool:
        if peer.identifier in self.blocked_ids:
            return False
        conn = peer.conn()
        if conn is None:
            return False
        conn.send(data, tp.PPID_ENRP)
        self.reg.stats["enrp_sent"] += 1
        return True

    def send_presence(self, peer: PeerState, reply_required: bool = False) -> bool:
        """A Presence to ``peer`` over its connection (the Server Information names that one's address)."""
        if peer.identifier in self.blocked_ids:
            return False
        conn = peer.conn()
        if conn is None:
            return False
        conn.send(self.presence(peer.identifier, reply_required, conn).encode(), tp.PPID_ENRP)
        self.reg.stats["enrp_sent"] += 1
        return True

    def reply_presence(self, c: _Conn, receiver: int) -> None:
        if c.conn is not None:
            self.reply(c, self.presence(receiver, conn=c.conn).encode())

    def reply(self, c: _Conn, data: bytes) -> None:
        if c.conn is not None and not c.conn.is_closing() and c.peer_id not in self.blocked_ids:
            c.conn.send(data, tp.PPID_ENRP)

    def _send_error(self, c: _Conn, receiver: int, causes: list[ErrorCause]) -> None:
        """Report to the sender of a message what we could not process (ENRP_ERROR, RFC 5353)."""
        self.reg.stats["enrp_error_sent"] += 1
        self.reply(c, EnrpError(sender_id=self.id, receiver_id=receiver,
                                error=OperationError(tuple(causes))).encode())

    def live_peers(self) -> list[PeerState]:
        return list(self.peers.values())

    # ---------------------------------------------------------------- periodic work

    async def _presence_loop(self) -> None:
        while True:
            self.maintain()
            now = time.monotonic()
            refresh = LIST_REFRESH_CYCLES * self.cfg.peer_heartbeat_cycle
            for p in self.live_peers():
                self.send_presence(p)
                if p.heard and p.list_asked is not None and now - p.list_asked > refresh:
                    self.peer_lists.request(p)
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
            for p in self.live_peers():
                if p.probe_sent is None:
                    if now - p.last_heard > self.cfg.peer_max_time_last_heard:
                        p.probe_sent = now
                        self.send_presence(p, reply_required=True)
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

    def maintain(self) -> None:
        """(Re)connect to static addresses and to known peers we have no connection to."""
        targets: list[tuple[tuple[str, int], int]] = []
        for addr, c in self._static.items():
            if (c is None or c.conn is None or c.conn.is_closing()) and not self._inbound_from(addr):
                targets.append((addr, 0))
        for p in self.live_peers():
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
        if not self.host_allowed(src[0]):
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
            self._penalize(c, host)
            return
        try:
            msg: Any = decode_enrp(data)
        except CodecError as exc:
            self.reg._log_once(host, "enrp-malformed", "malformed ENRP message: %s", exc)
            self._penalize(c, host)
            return
        sender = msg.sender_id
        if sender in self.blocked_ids or sender == self.id:
            return
        if not self._check_unknown_params(c, msg, host):
            self._penalize(c, host)
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
                self.reply(c, self.mirror.handle_table(c, msg).encode())
            elif isinstance(msg, HandleTableResponse):
                self.mirror.on_table(c, msg)
            elif isinstance(msg, HandleUpdate):
                self.mirror.on_update(msg)
            elif isinstance(msg, ListRequest):
                self.reg.stats["list_request"] += 1
                self.reply(c, self.peer_lists.response(sender).encode())
            elif isinstance(msg, ListResponse):
                self.peer_lists.on_list(msg)
            elif isinstance(msg, InitTakeover):
                self.takeover.on_init_takeover(c, msg)
            elif isinstance(msg, InitTakeoverAck):
                self.takeover.on_takeover_ack(msg)
            elif isinstance(msg, TakeoverServer):
                self.takeover.on_takeover_server(msg)
            elif isinstance(msg, EnrpError):
                self.reg.stats["enrp_error_received"] += 1
                self.reg._log_once(host, "enrp-error", "ENRP Error from $%08x: %s", sender,
                                   ", ".join(f"cause 0x{e.code:x}" for e in msg.error.causes))
        except Exception:  # a bug in one handler must not take the registrar down
            log.exception("error handling %s from $%08x", type(msg).__name__, sender)

    def _penalize(self, c: _Conn, host: str) -> None:
        """Count a message of ``c`` we dropped; abort the association at ``max_bad_messages``.

        Why: without ``enrp_peers_only`` anyone may open ENRP associations to us, and decoding
        and answering a stream of junk costs time the registrar's users wait for (as on the ASAP
        side, ``AsapRole._penalize``). A conforming peer never gets here; an aborted peer
        connection of ours is re-established by ``maintain``."""
        c.bad += 1
        limit = self.cfg.max_bad_messages
        if 0 < limit <= c.bad and c.conn is not None and not c.conn.is_closing():
            self.reg.stats["enrp_aborted_abusive"] += 1
            self.reg._log_once(host, "enrp-aborted", "aborting the ENRP association: %d messages dropped",
                               c.bad)
            c.conn.abort()

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
                    self.reply(c, self.presence(sender, reply_required=True, conn=c.conn).encode())
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
            self.takeover.cancel(sender)
            self.maintain()
        elif not peer.heard:  # learnt from a list, now heard from itself
            peer.heard = True
            log.info("registrar $%08x: peer $%08x answered", self.id, sender)
            self.takeover.cancel(sender)
        peer.checksum = msg.checksum
        if msg.reply_required:
            if c is not None and c.conn is not None:
                self.reply_presence(c, sender)
            else:
                self.send_presence(peer)
        if c is not None:  # over a connection, so we can ask it things (RSPLIB: SCTP Presences only)
            if not self.ready.is_set() and self.mentor is None:
                self.mirror.mentor_query(peer)
            if peer.list_asked is None:
                self.peer_lists.request(peer)
        if msg.checksum != self.reg.handlespace.checksum_of(sender) and not peer.syncing:
            self.mirror.request_table(peer)

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

    # ---------------------------------------------------------------- liveness

    def _peer_dead(self, peer: PeerState) -> None:
        log.warning("registrar $%08x: peer $%08x is dead (no response)", self.id, peer.identifier)
        self.reg.stats["peer_dead"] += 1
        self.peers.pop(peer.identifier, None)
        self.peer_lists.note_dead(peer.identifier)
        for c in (peer.out_conn, peer.in_conn):
            if c is not None:
                c.abort()
        self.takeover.peer_dead(peer.identifier)

    # ---------------------------------------------------------------- views

    def peer_list(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in sorted(self.peers.values(), key=lambda p: p.identifier)]

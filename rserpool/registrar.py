"""The RSerPool registrar (PR): ASAP server side, endpoint monitoring, announces, handlespace dump.

Behaviour follows RSPLIB 3.4.4's ``rspregistrar`` (``src/rspregistrar-asap.c``, ``-core.c``,
``-security.c``, ``rspregistrar.h`` defaults):

* Registration adds or updates a PE (the handlespace does the checks and picks the error cause);
  the Registration Response carries the cause and the reject flag. The PE's home registrar is us.
* Deregistration answers success even for an unknown PE ("it seems to be already gone").
* Handle resolution returns up to ``max_hr_items`` (3) PEs, or as many as the PU's Handle
  Resolution Option asks for (capped at 128); the overall policy is the first PE's.
* Endpoint keep-alive: ``keepalive_interval`` (5 s) after (re-)registration or the last ack a
  Keep-Alive is sent over the PE's own connection; no ack within ``keepalive_timeout`` (5 s) removes
  the PE and aborts its connection (RSPLIB sends an SCTP ABORT). A closed connection removes every
  PE registered over it (RSPLIB: SCTP_COMM_LOST / SHUTDOWN_COMP).
* ``max_bad_pe_reports`` (3) Endpoint Unreachable reports remove a PE.
* A PE not re-registered within its registration life is removed.
* Optional per-PU rate limits (``max_hr_rate``, ``max_eu_rate``, per second; off = -1 as in RSPLIB),
  tracked per PU connection and pool handle over the last 16 requests (RSPLIB's table depth).
* Server announces go to 239.0.0.50:3863 every ``announce_cycle`` (1 s).

Robustness: every message is decoded inside a guard. An unknown message type is answered with an
ASAP Error (cause "Unrecognized Message"); unknown parameters are handled by their action bits (RFC
5354 §2.1: stop / stop+report / skip / skip+report); anything else malformed is dropped. Problems
are logged once per peer address and kind. A stream that cannot be framed is aborted.

Handlespace changes are published to ``Registrar.listeners`` (callables taking an ``HsEvent``),
separate from the ASAP handling, so the ENRP issue can mirror them to peers; entries owned by
other registrars can be added with ``Registrar.handlespace.register(home_pr=...)``.

ENRP (``rserpool.enrp``): with ``enrp_listen`` set, an ``EnrpNode`` serves the ENRP port (9901):
peering (static ``peers`` and, with ``enrp_multicast``, Presences to 239.0.0.51:9901), handlespace
mirroring by Handle Table / Handle Update, peer liveness and takeover; see that module for the
partition behaviour. It also answers ``hsdump`` (Presence, List Request, Handle Table Request).
Entries owned by peers ("mirrored") expire after ``mirrored_entry_lifetime()`` unless refreshed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rserpool import transport as tp
from rserpool.handlespace import IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, MAX_POOL_HANDLE_SIZE, Handlespace
from rserpool.handlespace import ErrorCause as HsCause
from rserpool.handlespace import PoolElement as HsEntry
from rserpool.policy import PolicyInfo
from rserpool.policytypes import PolicyType
from rserpool.wire import (
    ASAP_MESSAGES,
    Action,
    AsapError,
    CauseCode,
    CodecError,
    Deregistration,
    DeregistrationResponse,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    EndpointUnreachable,
    ErrorCause,
    HandleResolution,
    OperationError,
    PoolElement,
    PoolPolicy,
    Registration,
    RegistrationResponse,
    SctpTransport,
    ServerAnnounce,
    TcpTransport,
    TransportUse,
    UdpTransport,
    UnknownParameter,
    decode_asap,
)
from rserpool.wire.params import encode_tlv

if TYPE_CHECKING:
    from rserpool.enrp import EnrpNode

log = logging.getLogger(__name__)

MAX_MAX_HANDLE_RESOLUTION_ITEMS = 128  # cap for the PU's Handle Resolution Option
RATE_TABLE_ENTRIES = 16  # RSPLIB TSHT_ENTRIES: timestamps kept per PU and pool
RATE_TABLE_POOLS = 64  # RSPLIB TSHT_BUCKETS: pools tracked per PU (oldest evicted)
UNDEFINED_REGISTRAR = 0

_HDR = struct.Struct("!BBH")
_TLVH = struct.Struct("!HH")
_U32 = struct.Struct("!I")


@dataclass
class RegistrarConfig:
    """Registrar settings; defaults are RSPLIB 3.4.4's (``rspregistrar.h``)."""

    identifier: int = 0  # 0 = random
    listen: list[tuple[str, int]] = field(default_factory=lambda: [("0.0.0.0", tp.ASAP_PORT)])
    enrp_listen: tuple[str, int] | None = ("0.0.0.0", tp.ENRP_PORT)
    transport: str | None = None  # None = transport_kind()
    max_hr_items: int = 3
    max_increment: int = 0
    max_bad_pe_reports: int = 3
    keepalive_interval: float = 5.0
    keepalive_timeout: float = 5.0
    announce: bool = True
    announce_cycle: float = 1.0
    announce_group: str = tp.ASAP_ANNOUNCE_GROUP
    announce_port: int = tp.ASAP_PORT
    announce_interface: str | None = None
    announce_ttl: int = tp.DEFAULT_ANNOUNCE_TTL
    max_hr_rate: float = -1.0  # handle resolutions per second per PU and pool; <= 0: unlimited
    max_eu_rate: float = -1.0  # endpoint-unreachable reports per second per PU and pool
    max_elements_per_ht_request: int = 128
    peers: list[tuple[str, int]] = field(default_factory=list)
    # ENRP (RSPLIB 3.4.4 defaults); seconds
    peer_heartbeat_cycle: float = 2.444
    peer_max_time_last_heard: float = 5.0
    peer_max_time_no_response: float = 5.0
    takeover_expiry: float = 5.0
    mentor_hunt_timeout: float = 5.0  # wait for a mentor's handlespace before announcing (rserpool.enrp)
    enrp_multicast: bool = False  # Presences to/from enrp_group (off: static peers only)
    enrp_group: str = tp.ENRP_ANNOUNCE_GROUP
    enrp_group_port: int = tp.ENRP_PORT
    mirror_lifetime: float | None = None  # life of mirrored entries [s]; None = the PE's registration life

    def describe(self) -> list[str]:
        """Start-up lines in the spirit of RSPLIB's registrar banner."""
        def rate(r: float) -> str:
            return "unlimited" if r <= 0 else f"{r:g}/s"
        return [
            f"Max Handle Resolution Items     = {self.max_hr_items}",
            f"Max Increment                   = {self.max_increment}",
            f"Max Bad PE Reports              = {self.max_bad_pe_reports}",
            f"Endpoint Keep-Alive Interval    = {self.keepalive_interval * 1000:.0f} ms",
            f"Endpoint Keep-Alive Timeout     = {self.keepalive_timeout * 1000:.0f} ms",
            f"Server Announce Cycle           = {self.announce_cycle * 1000:.0f} ms"
            + ("" if self.announce else " (announces off)"),
            f"Max Elements per HT Request     = {self.max_elements_per_ht_request}",
            f"Peer Heartbeat Cycle            = {self.peer_heartbeat_cycle * 1000:.0f} ms",
            f"Peer Max Time Last Heard        = {self.peer_max_time_last_heard * 1000:.0f} ms",
            f"Peer Max Time No Response       = {self.peer_max_time_no_response * 1000:.0f} ms",
            f"Takeover Expiry Interval        = {self.takeover_expiry * 1000:.0f} ms",
            f"Mentor Hunt Timeout             = {self.mentor_hunt_timeout * 1000:.0f} ms",
            "ENRP Multicast Presence         = "
            + (f"{self.enrp_group}:{self.enrp_group_port}" if self.enrp_multicast else "off"),
            "Static Peers                    = "
            + (", ".join(tp.format_endpoint(h, p) for h, p in self.peers) or "none"),
            f"Max Handle Resolution Rate      = {rate(self.max_hr_rate)}",
            f"Max Endpoint Unreachable Rate   = {rate(self.max_eu_rate)}",
        ]


@dataclass(frozen=True, slots=True)
class HsEvent:
    """A handlespace change: ``action`` is "add", "update" or "remove"; ``reason`` says why."""

    action: str
    entry: HsEntry
    reason: str


HsListener = Callable[[HsEvent], None]


# ---------------------------------------------------------------------------------------------
# Conversions between the wire parameters and the handlespace's policy information


def policy_from_wire(p: PoolPolicy) -> PolicyInfo:
    weight = p.priority if p.policy_type == PolicyType.PRIORITY else p.weight
    return PolicyInfo(int(p.policy_type), weight=weight, load=p.load, load_degradation=p.load_degradation,
                      load_dpf=p.load_dpf, weight_dpf=p.weight_dpf, distance=p.distance)


def policy_to_wire(info: PolicyInfo) -> PoolPolicy:
    from rserpool.wire.params import POLICY_FIELDS

    names = POLICY_FIELDS.get(int(info.policy_type), ())
    values = {
        "weight": info.weight, "priority": info.weight, "load": info.load,
        "load_degradation": info.load_degradation, "load_dpf": info.load_dpf,
        "weight_dpf": info.weight_dpf, "distance": info.distance,
    }
    return PoolPolicy(int(info.policy_type), **{n: values[n] for n in names})


def transport_protocol(t: object) -> int:
    if isinstance(t, SctpTransport):
        return IPPROTO_SCTP
    if isinstance(t, TcpTransport):
        return IPPROTO_TCP
    if isinstance(t, UdpTransport):
        return IPPROTO_UDP
    return 0


def _is_unspecified(addr: str) -> bool:
    return addr in ("0.0.0.0", "::", "")


def operation_error(cause: int, info: bytes = b"") -> OperationError:
    return OperationError((ErrorCause(int(cause), info),))


# ---------------------------------------------------------------------------------------------
# Rate limiting (RSPLIB rspregistrar-security.c shape)


class RateTracker:
    """Request rate of one PU per pool handle over its last ``RATE_TABLE_ENTRIES`` requests."""

    __slots__ = ("_pools",)

    def __init__(self) -> None:
        self._pools: collections.OrderedDict[tuple[int, bytes], collections.deque[float]] = collections.OrderedDict()

    def note(self, action: int, handle: bytes, now: float) -> float:
        """Record one request; return the current rate (requests per second)."""
        key = (action, handle)
        q = self._pools.get(key)
        if q is None:
            q = self._pools[key] = collections.deque(maxlen=RATE_TABLE_ENTRIES)
            if len(self._pools) > RATE_TABLE_POOLS:
                self._pools.popitem(last=False)
        else:
            self._pools.move_to_end(key)
        q.append(now)
        if len(q) < 2:
            return 0.0
        span = now - q[0]
        return float("inf") if span <= 0 else (len(q) - 1) / span


# ---------------------------------------------------------------------------------------------
# Per-connection handlers


class _CoalescingConn:
    """A TCP ASAP connection whose outgoing messages of one event-loop iteration leave in one write.

    Why: a PU keeping several Handle Resolutions in flight gets several answered per ``recv``, and
    writing each answer on its own cost one ``send()`` system call per resolution (strace of
    benchmarks/registrar.py: two ``sendto`` per ``recvfrom``); coalescing cut the registrar's
    system CPU time per resolution by about 40 % there. The flush is queued with ``call_soon``, so
    it runs right after the callbacks of this iteration (one non-blocking ``epoll_wait`` later):
    order is kept, latency grows by microseconds. A burst of keep-alives to one PE farm connection
    leaves in one write too. Only ``Framing.ASAP`` over TCP is wrapped, where each message carries
    its own length (and the PPID is implied); SCTP (one user message per ASAP message) and tagged
    framing are not.
    """

    __slots__ = ("conn", "_out", "_loop")
    kind = "tcp"

    def __init__(self, conn: tp.TCPMessageProtocol, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self._out: list[bytes] = []
        self._loop = loop

    @property
    def peer(self) -> tuple[str, int] | None:
        return self.conn.peer

    @property
    def local(self) -> tuple[str, int] | None:
        return self.conn.local

    @property
    def user_data(self) -> object:
        return self.conn.user_data

    def send(self, data: bytes, ppid: int = tp.PPID_ASAP) -> None:
        out = self._out
        if not out:
            self._loop.call_soon(self._flush)
        out.append(data)

    def _flush(self) -> None:
        out = self._out
        if out:
            self.conn.send(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def close(self) -> None:
        self._flush()  # a graceful close delivers what was said before it
        self.conn.close()

    def abort(self) -> None:
        self._out.clear()  # an abort (RSPLIB: SCTP ABORT) drops it, as the kernel would
        self.conn.abort()

    def is_closing(self) -> bool:
        return self.conn.is_closing()


class _Peer:
    """State of one ASAP connection (a PE's or a PU's association with us)."""

    __slots__ = ("registrar", "conn", "entries", "rates", "peer_host", "outbound", "__weakref__")

    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar
        self.conn: tp.MessageConnection | None = None
        self.entries: set[tuple[bytes, int]] = set()
        self.rates: RateTracker | None = None
        self.peer_host = "?"
        self.outbound = False  # our connection to a taken-over PE's user transport

    def connection_made(self, conn: tp.MessageConnection) -> None:
        loop = self.registrar._loop
        if isinstance(conn, tp.TCPMessageProtocol) and conn.framing is tp.Framing.ASAP and loop is not None:
            conn = _CoalescingConn(conn, loop)
        self.conn = conn
        self.peer_host = conn.peer[0] if conn.peer else "?"
        self.registrar._peers.add(self)

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        self.registrar._handle_asap(self, data, ppid)

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        self.registrar._peers.discard(self)
        self.registrar._connection_gone(self)


# ---------------------------------------------------------------------------------------------
# The registrar


class Registrar:
    """An asyncio registrar. ``await start()``, then ``await stop()``."""

    def __init__(self, config: RegistrarConfig | None = None) -> None:
        self.config = cfg = config or RegistrarConfig()
        self.identifier = cfg.identifier or random.randint(1, 0xFFFFFFFF)
        self.handlespace = Handlespace(own_pr=self.identifier, max_increment=cfg.max_increment)
        self.listeners: list[HsListener] = []
        self.stats: collections.Counter[str] = collections.Counter()
        self.kind = cfg.transport or tp.transport_kind()
        self._servers: list[tp.MessageServer] = []
        self.enrp: EnrpNode | None = None
        self.blocked_hosts: set[str] = set()  # fault injection: takeover keep-alives to these fail
        self._peers: set[_Peer] = set()
        self._ka_timers: dict[tuple[bytes, int], asyncio.TimerHandle] = {}
        self._expiry_timers: dict[tuple[bytes, int], asyncio.TimerHandle] = {}
        self._pe_cache: dict[tuple[bytes, int], tuple[bytes, bytes]] = {}
        self._hr_heads: dict[bytes, bytes] = {}  # pool handle -> its Pool Handle TLV (handle resolution)
        self._announcer: asyncio.Task[None] | None = None
        self._sender: tp.MulticastSender | None = None
        self._logged: set[tuple[str, str]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatch: dict[int, Callable[[_Peer, Any, bytes], None]] = {
            0x01: self._on_registration,
            0x02: self._on_deregistration,
            0x05: self._on_handle_resolution,
            0x08: self._on_keepalive_ack,
            0x09: self._on_unreachable,
        }

    # ---------------------------------------------------------------- life cycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        for host, port in cfg.listen:
            srv = await tp.start_server(lambda: _Peer(self), host, port, tp.Framing.ASAP, kind=self.kind)
            self._servers.append(srv)
        if cfg.enrp_listen is not None:
            from rserpool.enrp import EnrpNode

            node = EnrpNode(self)
            try:
                await node.start()
                self.enrp = node
            except OSError as exc:
                log.warning("ENRP port %s unavailable (%s): no peering, hsdump will not work",
                            cfg.enrp_listen[1], exc)
        elif cfg.peers:
            log.warning("ENRP is disabled (no ENRP endpoint): ignoring the static peers")
        if cfg.announce:
            self._sender = tp.MulticastSender(cfg.announce_group, cfg.announce_port, cfg.announce_interface,
                                              cfg.announce_ttl)
            self._announcer = asyncio.create_task(self._announce_loop())
        log.info("registrar $%08x listening on %s (%s)", self.identifier,
                 ", ".join(tp.format_endpoint(h, p) for h, p in self.addresses()), self.kind)

    async def stop(self) -> None:
        if self.enrp is not None:
            await self.enrp.stop()
            self.enrp = None
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer
            self._announcer = None
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        for srv in self._servers:
            srv.close()
        self._servers.clear()
        for peer in list(self._peers):
            if peer.conn is not None:
                peer.conn.close()
        for task in list(self._tasks):
            task.cancel()
        for h in list(self._ka_timers.values()) + list(self._expiry_timers.values()):
            h.cancel()
        self._ka_timers.clear()
        self._expiry_timers.clear()
        await asyncio.sleep(0)

    async def __aenter__(self) -> Registrar:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def addresses(self) -> list[tuple[str, int]]:
        """The bound ASAP endpoints (with the real port if 0 was asked for)."""
        return [a for srv in self._servers for a in srv.addresses()]

    @property
    def port(self) -> int:
        return self._servers[0].port

    @property
    def enrp_port(self) -> int | None:
        return self.enrp.port if self.enrp is not None else None

    # ---------------------------------------------------------------- helpers

    def _log_once(self, host: str, kind: str, msg: str, *args: object) -> None:
        self.stats["dropped_" + kind] += 1
        key = (host, kind)
        if key in self._logged:
            return
        if len(self._logged) > 10000:  # bound memory under a spoofing flood
            self._logged.clear()
        self._logged.add(key)
        log.warning("from %s: " + msg + " (further ones from this peer are not logged)", host, *args)

    def _notify(self, action: str, entry: HsEntry, reason: str) -> None:
        if not self.listeners:
            return
        ev = HsEvent(action, entry, reason)
        for cb in list(self.listeners):
            try:
                cb(ev)
            except Exception:
                log.exception("handlespace listener failed")

    def _now_ms(self) -> float:
        return time.monotonic() * 1000.0

    # ---------------------------------------------------------------- ASAP dispatch

    def _handle_asap(self, peer: _Peer, data: bytes, ppid: int) -> None:
        if ppid not in (tp.PPID_ASAP, 0):
            self._log_once(peer.peer_host, "ppid", "PPID %d on the ASAP port", ppid)
            return
        mtype = data[0]
        if mtype == 0x05:
            # Hot path: a plain Handle Resolution (pool handle [+ option]) is parsed in place.
            handle, items = _fast_hr(data)
            if handle is not None:
                self._resolve(peer, handle, items)
                return
        if mtype not in ASAP_MESSAGES:
            self.stats["unrecognized_message"] += 1
            self._log_once(peer.peer_host, "unrecognized", "unrecognized ASAP message type 0x%02x", mtype)
            self._send_error(peer, CauseCode.UNRECOGNIZED_MESSAGE, data[:1024])
            return
        try:
            msg = decode_asap(data)
        except CodecError as exc:
            self._log_once(peer.peer_host, "malformed", "malformed ASAP message: %s", exc)
            return
        if not self._check_unknown_params(peer, msg):
            return
        handler = self._dispatch.get(mtype)
        if handler is None:
            self._log_once(peer.peer_host, f"type{mtype}", "unexpected %s at a registrar", type(msg).__name__)
            return
        try:
            handler(peer, msg, data)
        except Exception:  # a bug in one handler must not take the registrar down
            log.exception("error handling %s from %s", type(msg).__name__, peer.peer_host)

    def _check_unknown_params(self, peer: _Peer, msg: Any) -> bool:
        """Apply RFC 5354 §2.1 action bits to unrecognised parameters; False = discard message."""
        unknown = [p for p in msg.extra if isinstance(p, UnknownParameter)]
        pe = getattr(msg, "pool_element", None)
        if pe is not None:
            unknown += [p for p in pe.extra if isinstance(p, UnknownParameter)]
        if not unknown:
            return True
        keep = True
        for p in unknown:
            action = p.type & 0xC000
            if action in (Action.STOP_AND_REPORT, Action.SKIP_AND_REPORT):
                self._send_error(peer, CauseCode.UNRECOGNIZED_PARAMETER, p.encode())
            if action in (Action.STOP, Action.STOP_AND_REPORT):
                keep = False
        if not keep:
            self._log_once(peer.peer_host, "param", "unrecognized parameter type 0x%04x: message discarded",
                           unknown[0].type)
        return keep

    def _send_error(self, peer: _Peer, cause: int, info: bytes) -> None:
        if peer.conn is not None:
            peer.conn.send(AsapError(error=operation_error(cause, info)).encode())

    # ---------------------------------------------------------------- registration

    def _on_registration(self, peer: _Peer, msg: Registration, data: bytes) -> None:
        self.stats["registration"] += 1
        pe = msg.pool_element
        handle = msg.pool_handle
        ident = pe.identifier
        user = pe.user_transport
        # A PE that registers a wildcard (or no) address means "the address you see me at".
        if (not user.addresses or any(_is_unspecified(a) for a in user.addresses)) and peer.conn and peer.conn.peer:
            user = type(user)(user.port, (peer.conn.peer[0],), *_transport_tail(user))
        try:
            policy = policy_from_wire(pe.policy)
        except ValueError:
            self._reply_registration(peer, handle, ident, HsCause.INVALID_VALUES)
            return
        existing = self.handlespace.get(handle, ident)
        if existing is not None and existing.registrator is not peer and isinstance(existing.registrator, _Peer):
            old: _Peer = existing.registrator
            # The same host re-registering over a new association (reconnect) takes the entry over;
            # another host claiming the identifier is refused by the handlespace (non-unique ID).
            if old.peer_host == peer.peer_host or old.conn is None or old.conn.is_closing():
                old.entries.discard((handle, ident))
                existing.registrator = peer
        registrator_transport = self._registrator_transport(peer)
        cause, entry = self.handlespace.register(
            handle, ident, policy, (user,),
            home_pr=self.identifier,
            registration_life=pe.registration_life,
            now=self._now_ms(),
            registrator=peer,
            user_transport=user,
            registrator_transport=registrator_transport,
            protocol=transport_protocol(user),
            control_channel=getattr(user, "transport_use", 0) == TransportUse.DATA_PLUS_CONTROL,
        )
        self._reply_registration(peer, handle, ident, cause)
        if cause != HsCause.OKAY or entry is None:
            self.stats["registration_rejected"] += 1
            log.info("registration of $%08x in %r rejected: %s", ident, handle, cause.name)
            return
        key = (handle, ident)
        self._pe_cache.pop(key, None)
        is_new = key not in peer.entries and existing is None
        peer.entries.add(key)
        self._arm_keepalive(entry, self.config.keepalive_interval)
        self._arm_expiry(entry)
        log.info("%s $%08x in pool %r (%s)", "registered" if is_new else "re-registered", ident, handle,
                 policy.to_dict()["name"])
        self._notify("add" if existing is None else "update", entry, "registration")

    def _reply_registration(self, peer: _Peer, handle: bytes, ident: int, cause: HsCause) -> None:
        if peer.conn is None:
            return
        if cause == HsCause.OKAY:
            resp = RegistrationResponse(pool_handle=handle, identifier=ident)
        else:
            resp = RegistrationResponse(pool_handle=handle, identifier=ident, reject=True,
                                        error=operation_error(int(cause)))
        try:
            peer.conn.send(resp.encode())
        except CodecError:  # e.g. an over-long pool handle cannot be echoed
            resp = RegistrationResponse(pool_handle=b"?", identifier=ident & 0xFFFFFFFF, reject=True,
                                        error=operation_error(int(CauseCode.INVALID_VALUES)))
            peer.conn.send(resp.encode())

    def _registrator_transport(self, peer: _Peer) -> object:
        if peer.conn is None or peer.conn.peer is None:
            return None
        host, port = peer.conn.peer
        cls = SctpTransport if self.kind == "sctp" else TcpTransport
        return cls(port, (host,), TransportUse.DATA_ONLY)

    def _on_deregistration(self, peer: _Peer, msg: Deregistration, data: bytes) -> None:
        self.stats["deregistration"] += 1
        entry = self.handlespace.get(msg.pool_handle, msg.identifier)
        if entry is not None:
            self._remove(entry, "deregistration")
        if peer.conn is not None:
            peer.conn.send(DeregistrationResponse(pool_handle=msg.pool_handle, identifier=msg.identifier).encode())

    def _remove(self, entry: HsEntry, reason: str) -> None:
        key = (entry.pool_handle, entry.identifier)
        removed = self.handlespace.deregister(*key)
        if removed is None:
            return
        self._pe_cache.pop(key, None)
        for timers in (self._ka_timers, self._expiry_timers):
            h = timers.pop(key, None)
            if h is not None:
                h.cancel()
        reg = removed.registrator
        if isinstance(reg, _Peer):
            reg.entries.discard(key)
        self.stats["removed_" + reason] += 1
        log.info("removed $%08x from pool %r (%s)", entry.identifier, entry.pool_handle, reason)
        self._notify("remove", removed, reason)

    def _connection_gone(self, peer: _Peer) -> None:
        for key in list(peer.entries):
            entry = self.handlespace.get(*key)
            if entry is not None and entry.registrator is peer:
                self._remove(entry, "connection-lost")
        peer.entries.clear()

    # ---------------------------------------------------------------- handle resolution

    def _on_handle_resolution(self, peer: _Peer, msg: HandleResolution, data: bytes) -> None:
        self._resolve(peer, msg.pool_handle, msg.items or 0)

    def _resolve(self, peer: _Peer, handle: bytes, items: int) -> None:
        self.stats["handle_resolution"] += 1
        conn = peer.conn
        if conn is None:
            return
        cfg = self.config
        if cfg.max_hr_rate > 0:
            if peer.rates is None:
                peer.rates = RateTracker()
            if peer.rates.note(0x05, handle, time.monotonic()) > cfg.max_hr_rate:
                self.stats["handle_resolution_refused"] += 1
                self._log_once(peer.peer_host, "hr-rate", "handle resolution rate above %g/s: refused",
                               cfg.max_hr_rate)
                conn.send(self._hr_error(handle, CauseCode.REJECTED_SECURITY))
                return
        if len(handle) > MAX_POOL_HANDLE_SIZE:
            self._log_once(peer.peer_host, "handle", "pool handle of %d bytes", len(handle))
            self._send_error(peer, CauseCode.INVALID_VALUES, b"")
            return
        n = items if items else cfg.max_hr_items
        if n > MAX_MAX_HANDLE_RESOLUTION_ITEMS:
            n = MAX_MAX_HANDLE_RESOLUTION_ITEMS
        selected = self.handlespace.select(handle, n)
        if not selected:
            conn.send(self._hr_error(handle, CauseCode.UNKNOWN_POOL_HANDLE))
            return
        # Everything but the selection is cached bytes: the Pool Handle TLV per pool, the Pool
        # Element and Pool Policy TLVs per entry (until it changes); one join builds the message.
        heads = self._hr_heads
        head = heads.get(handle)
        if head is None:
            if len(heads) >= 4096:  # only existing pools get here; bound it anyway as pools come and go
                heads.clear()
            head = heads[handle] = encode_tlv(0x0009, handle)
        cache = self._pe_cache
        parts = [b"", head]
        size = 4 + len(head)
        for e in selected:
            key = (handle, e.identifier)
            c = cache.get(key)
            if c is None:
                c = cache[key] = self._encode_entry(e)
            if len(parts) == 2:  # the pool's policy is the first PE's (RSPLIB)
                parts.append(c[1])
                size += len(c[1])
            parts.append(c[0])
            size += len(c[0])
        parts[0] = _HDR.pack(0x06, 0, size)
        conn.send(b"".join(parts))

    def _hr_error(self, handle: bytes, cause: int) -> bytes:
        body = encode_tlv(0x0009, handle) + operation_error(cause).encode()
        return _HDR.pack(0x06, 0, 4 + len(body)) + body

    def _encode_entry(self, e: HsEntry) -> tuple[bytes, bytes]:
        """(Pool Element TLV, Pool Policy TLV) of an entry, cached until it changes."""
        pol = policy_to_wire(e.policy)
        pe = PoolElement(e.identifier, e.home_pr, e.registration_life, e.user_transport, pol)  # type: ignore[arg-type]
        return pe.encode(), pol.encode()

    # ---------------------------------------------------------------- monitoring

    def _arm_keepalive(self, entry: HsEntry, delay: float) -> None:
        key = (entry.pool_handle, entry.identifier)
        old = self._ka_timers.pop(key, None)
        if old is not None:
            old.cancel()
        assert self._loop is not None
        self._ka_timers[key] = self._loop.call_later(delay, self._keepalive_due, key)

    def _keepalive_due(self, key: tuple[bytes, int]) -> None:
        entry = self.handlespace.get(*key)
        if entry is None:
            return
        self.send_keepalive(entry, home=False)
        assert self._loop is not None
        self._ka_timers[key] = self._loop.call_later(self.config.keepalive_timeout, self._keepalive_timeout, key)

    def send_keepalive(self, entry: HsEntry, home: bool = False) -> bool:
        """Send an Endpoint Keep-Alive (``home=True``: "I am your new home registrar", for takeover)."""
        reg = entry.registrator
        if not isinstance(reg, _Peer) or reg.conn is None:
            return False
        self.stats["keepalive_sent"] += 1
        reg.conn.send(EndpointKeepAlive(server_id=self.identifier, pool_handle=entry.pool_handle,
                                        identifier=entry.identifier, home=home).encode())
        return True

    def _keepalive_timeout(self, key: tuple[bytes, int]) -> None:
        self._ka_timers.pop(key, None)
        entry = self.handlespace.get(*key)
        if entry is None:
            return
        log.info("keep-alive timeout for $%08x of pool %r -> removing it", key[1], key[0])
        reg = entry.registrator
        self._remove(entry, "keepalive-timeout")
        if isinstance(reg, _Peer) and reg.conn is not None:
            reg.conn.abort()  # as RSPLIB: ABORT the PE's association

    def _on_keepalive_ack(self, peer: _Peer, msg: EndpointKeepAliveAck, data: bytes) -> None:
        self.stats["keepalive_ack"] += 1
        entry = self.handlespace.get(msg.pool_handle, msg.identifier)
        if entry is None:
            self._log_once(peer.peer_host, "ka-unknown", "keep-alive ack for unknown PE $%08x", msg.identifier)
            return
        log.debug("keep-alive ack for $%08x of pool %r", msg.identifier, msg.pool_handle)
        self._arm_keepalive(entry, self.config.keepalive_interval)

    def _arm_expiry(self, entry: HsEntry) -> None:
        key = (entry.pool_handle, entry.identifier)
        old = self._expiry_timers.pop(key, None)
        if old is not None:
            old.cancel()
        life = (entry.registration_life / 1000.0 if entry.home_pr == self.identifier
                else self.mirrored_entry_lifetime(entry))
        if life:
            assert self._loop is not None
            self._expiry_timers[key] = self._loop.call_later(life, self._expired, key)

    def _expired(self, key: tuple[bytes, int]) -> None:
        self._expiry_timers.pop(key, None)
        entry = self.handlespace.get(*key)
        if entry is not None:
            log.info("registration life of $%08x in pool %r ran out -> removing it", key[1], key[0])
            self._remove(entry, "expired")

    def _on_unreachable(self, peer: _Peer, msg: EndpointUnreachable, data: bytes) -> None:
        self.stats["endpoint_unreachable"] += 1
        cfg = self.config
        if cfg.max_eu_rate > 0:
            if peer.rates is None:
                peer.rates = RateTracker()
            if peer.rates.note(0x09, msg.pool_handle, time.monotonic()) > cfg.max_eu_rate:
                self.stats["endpoint_unreachable_refused"] += 1
                self._log_once(peer.peer_host, "eu-rate", "unreachable-report rate above %g/s: refused",
                               cfg.max_eu_rate)
                return
        entry = self.handlespace.get(msg.pool_handle, msg.identifier)
        if entry is None:
            return
        entry.unreachability_reports += 1
        if entry.unreachability_reports >= cfg.max_bad_pe_reports:
            log.info("%d unreachability reports for $%08x -> removing it", entry.unreachability_reports,
                     msg.identifier)
            self._remove(entry, "unreachable")

    # ---------------------------------------------------------------- announces

    def announce_message(self) -> bytes:
        """The ASAP Server Announce we send (with our transport if it is not RSPLIB's default)."""
        transports: list[Any] = []
        cls = SctpTransport if self.kind == "sctp" else TcpTransport
        by_port: dict[int, list[str]] = {}
        for host, port in self.addresses():
            by_port.setdefault(port, [])
            if not _is_unspecified(host):
                by_port[port].append(host)
        for port, hosts in by_port.items():
            # RSPLIB announces carry no transport; receivers then use the source address and 3863.
            if self.kind == "sctp" and port == tp.ASAP_PORT and not hosts:
                continue
            transports.append(cls(port, tuple(hosts), TransportUse.DATA_ONLY))
        return ServerAnnounce(server_id=self.identifier, transports=tuple(transports)).encode()

    async def _announce_loop(self) -> None:
        assert self._sender is not None
        if self.enrp is not None:  # RSPLIB: no announces before the mentor hunt is over
            await self.enrp.ready.wait()
        while True:
            self._sender.send(self.announce_message())
            self.stats["announce"] += 1
            # jitter so that several registrars do not announce in lock-step
            await asyncio.sleep(self.config.announce_cycle * random.uniform(0.75, 1.25))

    # ---------------------------------------------------------------- ENRP support (rserpool.enrp)

    def wire_element(self, e: HsEntry) -> PoolElement:
        """An entry as the Pool Element parameter of Handle Updates and Handle Table Responses."""
        return PoolElement(e.identifier, e.home_pr, e.registration_life, e.user_transport,  # type: ignore[arg-type]
                           policy_to_wire(e.policy), e.registrator_transport)  # type: ignore[arg-type]

    def mirrored_entry_lifetime(self, entry: HsEntry) -> float | None:
        """Seconds a mirrored entry (owned by a peer) lives without a refresh; None = forever.

        ``config.mirror_lifetime`` if set, else the PE's registration life (RSPLIB: a peer's
        entries expire like registrations; the owner's Handle Updates on re-registration and
        handle-table resyncs refresh them)."""
        if self.config.mirror_lifetime is not None:
            return self.config.mirror_lifetime
        return entry.registration_life / 1000.0 if entry.registration_life else None

    def add_mirrored(self, handle: bytes, pe: PoolElement, owner: int, reason: str = "enrp") -> bool:
        """Add or refresh an entry owned by peer ``owner`` (Handle Update / Handle Table)."""
        key = (handle, pe.identifier)
        existing = self.handlespace.get(*key)
        if existing is not None and isinstance(existing.registrator, _Peer):
            # The PE re-registered at the peer (fail-over): it is no longer ours to monitor.
            self._detach(existing)
        user = pe.user_transport
        try:
            policy = policy_from_wire(pe.policy)
        except ValueError:
            return False
        cause, entry = self.handlespace.register(
            handle, pe.identifier, policy, (user,), home_pr=owner, registration_life=pe.registration_life,
            now=self._now_ms(), registrator=None, user_transport=user,
            registrator_transport=pe.registrator_transport, protocol=transport_protocol(user),
            control_channel=getattr(user, "transport_use", 0) == TransportUse.DATA_PLUS_CONTROL)
        if cause != HsCause.OKAY or entry is None:
            self._log_once(f"${owner:08x}", "mirror-" + cause.name, "mirrored PE rejected: %s", cause.name)
            return False
        self._pe_cache.pop(key, None)
        self._arm_expiry(entry)
        self._notify("add" if existing is None else "update", entry, reason)
        return True

    def refresh_mirrored(self, entry: HsEntry) -> None:
        """Restart a mirrored entry's lifetime (e.g. after its owner changed by takeover)."""
        entry.updated_at = self._now_ms()
        self._pe_cache.pop((entry.pool_handle, entry.identifier), None)
        self._arm_expiry(entry)

    def remove_entry(self, entry: HsEntry, reason: str) -> None:
        """Remove an entry (listeners see ``reason``)."""
        self._remove(entry, reason)

    def _detach(self, entry: HsEntry) -> None:
        key = (entry.pool_handle, entry.identifier)
        reg = entry.registrator
        entry.registrator = None
        h = self._ka_timers.pop(key, None)
        if h is not None:
            h.cancel()
        if isinstance(reg, _Peer):
            reg.entries.discard(key)
            if reg.outbound and not reg.entries and reg.conn is not None:
                reg.conn.close()  # a takeover connection with nothing left to monitor

    def takeover_targets(self, e: HsEntry) -> tuple[tuple[str, int, tp.Framing], ...]:
        """Where to send a taken-over PE its Home Keep-Alive, in the order tried.

        First the PE's ASAP endpoint (the registrator transport its home registrar recorded):
        RSPLIB's PEs (``asapinstance.c``) listen there on their registrar hunt socket, take an
        association on which a Keep-Alive with the Home flag arrives as their new registrar
        connection and ack there; RSPLIB's registrar sends its takeover Keep-Alives there too.
        Then the PE's user transport, where this package's PEs answer (their ASAP endpoint is the
        ephemeral port of their registrar connection, where nobody listens: that attempt fails at
        once)."""
        out: list[tuple[str, int, tp.Framing]] = []
        reg = e.registrator_transport
        if isinstance(reg, SctpTransport if self.kind == "sctp" else TcpTransport) and reg.port \
                and reg.addresses and not _is_unspecified(reg.addresses[0]):
            out.append((reg.addresses[0], reg.port, tp.Framing.ASAP))
        user = e.user_transport
        addrs = getattr(user, "addresses", ())
        if addrs:
            out.append((addrs[0], user.port, tp.Framing.TAGGED))  # type: ignore[union-attr]
        return tuple(out)

    def take_over(self, entries: list[HsEntry]) -> None:
        """Become home registrar of ``entries``: Keep-Alive with the Home flag, then monitor them."""
        groups: dict[tuple[tuple[str, int, tp.Framing], ...], list[tuple[bytes, int]]] = {}
        for e in entries:
            if self.handlespace.get(e.pool_handle, e.identifier) is not e:
                continue
            self.handlespace.set_owner(e.pool_handle, e.identifier, self.identifier)
            self._pe_cache.pop((e.pool_handle, e.identifier), None)
            self._arm_expiry(e)
            targets = self.takeover_targets(e)
            if not targets:
                continue
            groups.setdefault(targets, []).append((e.pool_handle, e.identifier))
        assert self._loop is not None
        for targets, keys in groups.items():
            task = self._loop.create_task(self._takeover_contact(targets, keys))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _takeover_contact(self, targets: tuple[tuple[str, int, tp.Framing], ...],
                                keys: list[tuple[bytes, int]]) -> None:
        peer = _Peer(self)
        peer.outbound = True
        peer.peer_host = targets[0][0]
        assert self._loop is not None
        for key in keys:
            entry = self.handlespace.get(*key)
            if entry is None or entry.home_pr != self.identifier:
                continue
            self._detach(entry)
            entry.registrator = peer
            peer.entries.add(key)
            old = self._ka_timers.pop(key, None)
            if old is not None:
                old.cancel()
            # no ack within the keep-alive timeout (unreachable PE) removes it
            self._ka_timers[key] = self._loop.call_later(self.config.keepalive_timeout,
                                                         self._keepalive_timeout, key)
        for host, port, framing in targets:
            if not peer.entries:
                return  # timed out meanwhile (the keep-alive timeout removed them)
            if host in self.blocked_hosts:
                continue
            try:
                await tp.connect(peer, host, port, framing, kind=self.kind, timeout=self.config.keepalive_timeout)
                break
            except (TimeoutError, OSError) as exc:
                log.info("takeover: cannot reach PE at %s: %s", tp.format_endpoint(host, port), exc)
        else:
            return
        if not peer.entries and peer.conn is not None:  # timed out while connecting
            peer.conn.close()
            return
        for key in list(peer.entries):
            entry = self.handlespace.get(*key)
            if entry is not None and entry.registrator is peer:
                self.send_keepalive(entry, home=True)

def _transport_tail(t: Any) -> tuple[Any, ...]:
    """Positional fields after (port, addresses) of a transport parameter, to rebuild it."""
    if isinstance(t, (SctpTransport, TcpTransport)):
        return (t.transport_use, t.extra)
    if isinstance(t, UdpTransport):
        return (t.reserved, t.extra)
    return ()


def _fast_hr(data: bytes) -> tuple[bytes | None, int]:
    """Parse ``Handle Resolution = Pool Handle [+ Handle Resolution Option]`` without the codec.

    Returns (None, 0) for anything else so the full decoder (with its checks) takes over.
    """
    n = len(data)
    if n < 8 or data[1] != 0:
        return None, 0
    _, _, length = _HDR.unpack_from(data, 0)
    if length != n:
        return None, 0
    t, plen = _TLVH.unpack_from(data, 4)
    if t != 0x0009 or plen < 4 or 4 + plen > n:
        return None, 0
    handle = data[8:4 + plen]
    off = 4 + ((plen + 3) & ~3)
    if off == n or (4 + plen == n):
        return handle, 0
    if off + 8 == n and data[off:off + 4] == b"\x80\x3f\x00\x08":
        return handle, _U32.unpack_from(data, off + 4)[0]
    return None, 0


async def run_registrar(config: RegistrarConfig, ready: Callable[[Registrar], None] | None = None) -> None:
    """Run a registrar until cancelled (the CLI wraps this with signal handling)."""
    reg = Registrar(config)
    await reg.start()
    try:
        if ready is not None:
            ready(reg)
        await asyncio.Event().wait()
    finally:
        await reg.stop()

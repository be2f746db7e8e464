"""The RSerPool registrar (PR): its core, i.e. configuration, life cycle, the handlespace and its
listeners, registration lifetimes, server announces and what ENRP and takeover need of it.

Behaviour follows RSPLIB 3.4.4's ``rspregistrar``, whose roles this package keeps in one file each
as RSPLIB does (``src/rspregistrar-core.c``, ``-asap.c``, ``-enrp.c``, ``-takeover.c``,
``-security.c``, ``rspregistrar.h`` defaults):

* ``rserpool.registrar`` (this module, core): ``Registrar`` and ``RegistrarConfig``.
* ``rserpool.registrar_asap``: the ASAP side (connections of PEs and PUs, registration,
  handle resolution, endpoint keep-alives, unreachability reports), a base class of ``Registrar``.
* ``rserpool.enrp``: ENRP between registrars (``Registrar.enrp``).
* ``rserpool.takeover``: taking over a dead registrar's PEs (``Registrar.takeover`` and ENRP's half).
* ``rserpool.ratelimit``: the per-PU rate limits ``max_hr_rate`` and ``max_eu_rate`` (and
  emulab's ``max_reg_rate``).
* ``rserpool.policywire``: wire parameters <-> policy information.

What a registrar does:

* Registration adds or updates a PE (the handlespace does the checks and picks the error cause);
  the Registration Response carries the cause and the reject flag. The PE's home registrar is us.
* Deregistration answers success even for an unknown PE ("it seems to be already gone").
* Handle resolution returns up to ``max_hr_items`` (3) PEs, or as many as the PU's Handle
  Resolution Option asks for (capped at 128); the overall policy is the first PE's.
* Endpoint keep-alive: ``keepalive_interval`` (5 s) after (re-)registration or the last ack a
  Keep-Alive is sent over the PE's own connection; no ack within ``keepalive_timeout`` (5 s) removes
  the PE and aborts its connection (RSPLIB sends an SCTP ABORT). A closed connection removes every
  PE registered over it (RSPLIB: SCTP_COMM_LOST / SHUTDOWN_COMP).
* ``max_bad_pe_reports`` (3) Endpoint Unreachable reports remove a PE. With ``audit_unreachable``
  (emulab's, off by default) they make the registrar send the PE a keep-alive instead, and only
  its timeout removes it: forged reports cannot remove a live PE.
* A PE not re-registered within its registration life is removed.
* Optional per-PU rate limits (``max_hr_rate``, ``max_eu_rate``, per second; off = -1 as in RSPLIB),
  tracked per PU connection and pool handle over the last 16 requests (RSPLIB's table depth).
* Server announces go to 239.0.0.50:3863 every ``announce_cycle`` (1 s).

Robustness: every message is decoded inside a guard. An unknown message type is answered with an
ASAP Error (cause "Unrecognized Message"); unknown parameters are handled by their action bits (RFC
5354 §2.1: stop / stop+report / skip / skip+report); anything else malformed is dropped. Problems
are logged once per peer address and kind. A stream that cannot be framed is aborted, and so is
an association that sent ``max_bad_messages`` (64; 0 = never) messages that were dropped or refused
(malformed, unrecognized, over a rate limit), on the ASAP port and on the ENRP port alike (which
accepts anyone unless ``enrp_peers_only``). docs/security.md says what this does and does not
defend against.

Handlespace changes are published to ``Registrar.listeners`` (callables taking an ``HsEvent``),
separate from the ASAP handling, so that ENRP can mirror them to peers; entries owned by
other registrars can be added with ``Registrar.handlespace.register(home_pr=...)``.

ENRP (``rserpool.enrp``): with ``enrp_listen`` set, an ``EnrpNode`` serves the ENRP port (9901):
peering (static ``peers`` and, with ``enrp_multicast``, Presences to 239.0.0.51:9901), handlespace
mirroring by Handle Table / Handle Update, peer liveness and takeover (``rserpool.takeover``, which
also describes the partition behaviour). It also answers ``hsdump`` (Presence, List Request, Handle
Table Request). Entries owned by peers ("mirrored") expire after ``mirrored_entry_lifetime()``
unless refreshed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rserpool import csp, multicast
from rserpool import transport as tp
from rserpool.handlespace import ErrorCause as HsCause
from rserpool.handlespace import Handlespace, PoolEntry
from rserpool.policywire import policy_from_wire, policy_to_wire, transport_protocol
from rserpool.ratelimit import describe_rate
from rserpool.registrar_asap import AsapPeer, AsapRole, DeadlineTimer, set_deadline
from rserpool.takeover import HomeTakeover
from rserpool.wire import (
    PoolElement,
    SctpTransport,
    ServerAnnounce,
    TcpTransport,
    TransportUse,
)

if TYPE_CHECKING:
    from rserpool.enrp import EnrpNode

log = logging.getLogger(__name__)


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
    # emulab's countermeasures beyond RSPLIB (docs/security.md)
    max_reg_rate: float = -1.0  # registrations per second per association; <= 0: unlimited
    max_bad_messages: int = 64  # dropped/refused messages before an ASAP or ENRP association is aborted; 0: never
    audit_unreachable: bool = False  # check a reported PE with a keep-alive instead of removing it
    enrp_peers_only: bool = False  # ENRP (and hsdump) only from the static peers' hosts
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
            f"Max Handle Resolution Rate      = {describe_rate(self.max_hr_rate)}",
            f"Max Endpoint Unreachable Rate   = {describe_rate(self.max_eu_rate)}",
            f"Max Registration Rate           = {describe_rate(self.max_reg_rate)}",
            f"Max Bad Messages                = {self.max_bad_messages or 'unlimited'}",
            f"Audit Unreachable Reports       = {'on' if self.audit_unreachable else 'off'}",
            f"ENRP from Static Peers Only     = {'on' if self.enrp_peers_only else 'off'}",
        ]


@dataclass(frozen=True, slots=True)
class HsEvent:
    """A handlespace change: ``action`` is "add", "update" or "remove"; ``reason`` says why."""

    action: str
    entry: PoolEntry
    reason: str


HsListener = Callable[[HsEvent], None]


# ---------------------------------------------------------------------------------------------
# Per-connection handlers


# ---------------------------------------------------------------------------------------------
# The registrar


class Registrar(AsapRole):
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
        self.takeover = HomeTakeover(self)
        self._peers: set[AsapPeer] = set()
        self._ka_timers: dict[tuple[bytes, int], DeadlineTimer] = {}
        self._expiry_timers: dict[tuple[bytes, int], DeadlineTimer] = {}
        self._pe_cache: dict[tuple[bytes, int], tuple[bytes, bytes]] = {}
        self._hr_heads: dict[bytes, bytes] = {}  # pool handle -> its Pool Handle TLV (handle resolution)
        self._ka_msgs: dict[tuple[bytes, int, int], bytes] = {}  # (handle, PE, our id) -> its Keep-Alive
        self._audits: dict[tuple[bytes, int], float] = {}  # PEs asked after unreachability reports
        self._announcer: asyncio.Task[None] | None = None
        self._sender: multicast.MulticastSender | None = None
        self._logged: set[tuple[str, str]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._csp: csp.CSPReporter | None = None  # component status reports, if a monitor is configured
        self._dispatch: dict[int, Callable[[AsapPeer, Any, bytes], None]] = {
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
            srv = await tp.start_server(lambda: AsapPeer(self), host, port, tp.Framing.ASAP, kind=self.kind)
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
            self._sender = multicast.MulticastSender(cfg.announce_group, cfg.announce_port, cfg.announce_interface,
                                                     cfg.announce_ttl)
            self._announcer = asyncio.create_task(self._announce_loop())
        log.info("registrar $%08x listening on %s (%s)", self.identifier,
                 ", ".join(tp.format_endpoint(h, p) for h, p in self.addresses()), self.kind)
        self._csp = csp.attach(self)

    async def stop(self) -> None:
        await csp.detach(self._csp)
        self._csp = None
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

    def _notify(self, action: str, entry: PoolEntry, reason: str) -> None:
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

    def _remove(self, entry: PoolEntry, reason: str) -> None:
        key = (entry.pool_handle, entry.identifier)
        removed = self.handlespace.deregister(*key)
        if removed is None:
            return
        self._pe_cache.pop(key, None)
        self._audits.pop(key, None)
        for timers in (self._ka_timers, self._expiry_timers):
            h = timers.pop(key, None)
            if h is not None:
                h.cancel()
        reg = removed.registrator
        if isinstance(reg, AsapPeer):
            reg.forget(key)
        self.stats["removed_" + reason] += 1
        log.info("removed $%08x from pool %r (%s)", entry.identifier, entry.pool_handle, reason)
        self._notify("remove", removed, reason)

    def _arm_expiry(self, entry: PoolEntry) -> None:
        key = (entry.pool_handle, entry.identifier)
        life = (entry.registration_life / 1000.0 if entry.home_pr == self.identifier
                else self.mirrored_entry_lifetime(entry))
        if life:
            assert self._loop is not None
            set_deadline(self._expiry_timers, self._loop, key, life, self._expired)
        else:
            old = self._expiry_timers.pop(key, None)
            if old is not None:
                old.cancel()

    def _expired(self, key: tuple[bytes, int]) -> None:
        self._expiry_timers.pop(key, None)
        entry = self.handlespace.get(*key)
        if entry is not None:
            log.info("registration life of $%08x in pool %r ran out -> removing it", key[1], key[0])
            self._remove(entry, "expired")

    # ---------------------------------------------------------------- announces

    def announce_message(self) -> bytes:
        """The ASAP Server Announce we send (with our transport if it is not RSPLIB's default)."""
        transports: list[Any] = []
        cls = SctpTransport if self.kind == "sctp" else TcpTransport
        by_port: dict[int, list[str]] = {}
        for host, port in self.addresses():
            by_port.setdefault(port, [])
            if not tp.is_unspecified(host):
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

    def wire_element(self, e: PoolEntry) -> PoolElement:
        """An entry as the Pool Element parameter of Handle Updates and Handle Table Responses."""
        return PoolElement(e.identifier, e.home_pr, e.registration_life, e.user_transport,  # type: ignore[arg-type]
                           policy_to_wire(e.policy), e.registrator_transport)  # type: ignore[arg-type]

    def mirrored_entry_lifetime(self, entry: PoolEntry) -> float | None:
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
        if existing is not None and isinstance(existing.registrator, AsapPeer):
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

    def refresh_mirrored(self, entry: PoolEntry) -> None:
        """Restart a mirrored entry's lifetime (e.g. after its owner changed by takeover)."""
        entry.updated_at = self._now_ms()
        self.owner_changed(entry)

    def owner_changed(self, entry: PoolEntry) -> None:
        """``entry``'s home registrar changed: re-encode it, and its lifetime is the new owner's."""
        self._pe_cache.pop((entry.pool_handle, entry.identifier), None)
        self._arm_expiry(entry)

    def remove_entry(self, entry: PoolEntry, reason: str) -> None:
        """Remove an entry (listeners see ``reason``)."""
        self._remove(entry, reason)

    # ---------------------------------------------------------------- takeover support (rserpool.takeover)

    def outbound_peer(self, host: str) -> AsapPeer:
        """A handler for our own connection to a taken-over PE at ``host``."""
        peer = AsapPeer(self)
        peer.outbound = True
        peer.peer_host = host
        return peer

    def monitor_via(self, entry: PoolEntry, peer: AsapPeer) -> None:
        """Monitor ``entry`` over ``peer`` (a takeover connection): its ack must come within the
        keep-alive timeout, or the entry is removed."""
        key = (entry.pool_handle, entry.identifier)
        self._detach(entry)
        entry.registrator = peer
        peer.entries.add(key)
        self._set_ka_timer(key, self.config.keepalive_timeout, self._keepalive_timeout)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task of ours (cancelled by ``stop()``)."""
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _detach(self, entry: PoolEntry) -> None:
        key = (entry.pool_handle, entry.identifier)
        reg = entry.registrator
        entry.registrator = None
        h = self._ka_timers.pop(key, None)
        if h is not None:
            h.cancel()
        if isinstance(reg, AsapPeer):
            reg.forget(key)
            if reg.outbound and not reg.entries and reg.conn is not None:
                reg.conn.close()  # a takeover connection with nothing left to monitor


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

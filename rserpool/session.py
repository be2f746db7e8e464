"""ASAP session layer shared by pool elements and pool users.

* ``RegistrarDiscovery``: candidate registrars from a static list (``--registrar``) and/or from
  ASAP Server Announces heard on the multicast group (RSPLIB: 239.0.0.50:3863; an announce is
  trusted for ``announce_timeout`` = 5 s, RSPLIB's ASAP_DEFAULT_REGISTRAR_ANNOUNCE_TIMEOUT).
* ``RegistrarChannel``: one ASAP connection to a registrar, with request/response matching and a
  callback for unsolicited messages (Endpoint Keep-Alive). Timeouts follow RSPLIB 3.4.4's
  ``asapinstance.h``: connect 7.5 s, request/response 3 s.
* ``SessionChannel``: the PU<->PE data channel. ASAP control messages (Business Card, Cookie, Cookie
  Echo, PPID 11) share it with application data (any other PPID); over TCP each message is tagged
  with its PPID (``transport.Framing.TAGGED``), over SCTP the PPID is native.
* ``PEInfo``: a pool element as the PU sees it (from a Handle Resolution Response, a cache or a
  Business Card).
* ``business_card_candidates``: the fail-over targets a received Business Card still offers.

Business cards (RFC 5352 section 2.2.13): a PE may tell its PU which PEs of its pool the PU should
fail over to, and a PU that is itself a PE tells the PE it contacts its own pool handle and
alternates the same way. The PU side (``rserpool.pu.PoolSession``) tries a card's candidates before
the ordinary cache/handle-resolution path. RSPLIB 3.4.4 only logs "Got business card" and never
sends one (its send in ``rsp_forcefailover`` is ``#if 0``), so against RSPLIB peers fail-over is
handle resolution exactly as there; ``rserpool.pe`` sends cards only when configured to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from rserpool import multicast
from rserpool import transport as tp
from rserpool.policy import PolicyInfo
from rserpool.policywire import policy_from_wire, policy_to_wire
from rserpool.wire import (
    AsapMessage,
    BusinessCard,
    CodecError,
    CookieEcho,
    CookieMessage,
    PoolElement,
    SctpTransport,
    ServerAnnounce,
    TcpTransport,
    decode_asap,
)

log = logging.getLogger(__name__)

ANNOUNCE_TIMEOUT = 5.0  # ASAP_DEFAULT_REGISTRAR_ANNOUNCE_TIMEOUT (RSPLIB 3.4.4)
CONNECT_TIMEOUT = 7.5  # ASAP_DEFAULT_REGISTRAR_CONNECT_TIMEOUT
REQUEST_TIMEOUT = 3.0  # ASAP_DEFAULT_REGISTRAR_REQUEST_TIMEOUT / RESPONSE_TIMEOUT


class NoRegistrarError(ConnectionError):
    """No registrar could be reached (none configured, none announced, or all refused).
    ``refused``: every candidate refused the connection (nothing listens there yet or any more)."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


# ---------------------------------------------------------------------------------------------
# Discovery


@dataclass
class _Announced:
    server_id: int
    endpoints: list[tuple[str, int]]
    last_seen: float


class RegistrarDiscovery:
    """Where the registrars are: a static list, multicast announces, or both."""

    def __init__(self, static: list[tuple[str, int]] | None = None, *, use_announce: bool | None = None,
                 group: str = tp.ASAP_ANNOUNCE_GROUP, port: int = tp.ASAP_PORT, interface: str | None = None,
                 announce_timeout: float = ANNOUNCE_TIMEOUT, kind: str | None = None) -> None:
        self.static = list(static or [])
        self.use_announce = (not self.static) if use_announce is None else use_announce
        self.group = group
        self.port = port
        self.interface = interface
        self.announce_timeout = announce_timeout
        self.kind = kind or tp.transport_kind()
        self._announced: dict[int, _Announced] = {}
        self._listener: multicast.MulticastListener | None = None
        self._heard = asyncio.Event()

    async def start(self) -> None:
        if self.use_announce and self._listener is None:
            self._listener = await multicast.listen_multicast(self._on_announce, self.group, self.port, self.interface)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _on_announce(self, data: bytes, src: tuple[str, int]) -> None:
        try:
            msg = decode_asap(data)
        except CodecError:
            return
        if not isinstance(msg, ServerAnnounce):
            return
        want = SctpTransport if self.kind == "sctp" else TcpTransport
        endpoints: list[tuple[str, int]] = []
        for t in msg.transports:
            if isinstance(t, want):
                hosts = [a for a in t.addresses if a not in ("0.0.0.0", "::")] or [src[0]]
                endpoints += [(h, t.port) for h in hosts]
        if not endpoints:
            # RSPLIB announces carry no transport: use the sender's address and the ASAP port
            endpoints = [(src[0], tp.ASAP_PORT)]
        self._announced[msg.server_id] = _Announced(msg.server_id, endpoints, time.monotonic())
        self._heard.set()

    def announced(self) -> dict[int, list[tuple[str, int]]]:
        now = time.monotonic()
        return {sid: a.endpoints for sid, a in self._announced.items() if now - a.last_seen <= self.announce_timeout}

    def candidates(self) -> list[tuple[str, int]]:
        """Endpoints to try, static ones first, then announced ones (most recently heard first)."""
        out = list(self.static)
        now = time.monotonic()
        for a in sorted(self._announced.values(), key=lambda a: -a.last_seen):
            if now - a.last_seen <= self.announce_timeout:
                out += [e for e in a.endpoints if e not in out]
        return out

    async def wait_for_candidates(self, timeout: float) -> list[tuple[str, int]]:
        deadline = time.monotonic() + timeout
        while not self.candidates():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.use_announce:
                break
            self._heard.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._heard.wait(), remaining)
        return self.candidates()


# ---------------------------------------------------------------------------------------------
# Registrar channel


class RegistrarChannel:
    """An ASAP association with one registrar (PE or PU side)."""

    def __init__(self, on_message: Callable[[AsapMessage], None] | None = None,
                 on_lost: Callable[[RegistrarChannel], None] | None = None) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.conn: tp.MessageConnection | None = None
        self.endpoint: tuple[str, int] | None = None
        self.closed = asyncio.Event()
        self._pending: list[tuple[Callable[[AsapMessage], bool], asyncio.Future[AsapMessage]]] = []
        self._lock = asyncio.Lock()

    # -- MessageHandler
    def connection_made(self, conn: tp.MessageConnection) -> None:
        self.conn = conn

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        try:
            msg = decode_asap(data)
        except CodecError as exc:
            log.warning("malformed ASAP message from registrar %s: %s", self.endpoint, exc)
            return
        for i, (match, fut) in enumerate(self._pending):
            if not fut.done() and match(msg):
                del self._pending[i]
                fut.set_result(msg)
                return
        if self.on_message is not None:
            self.on_message(msg)

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        for _, fut in self._pending:
            if not fut.done():
                fut.set_exception(ConnectionError(f"registrar {self.endpoint} closed the connection"))
        self._pending.clear()
        self.closed.set()
        if self.on_lost is not None:
            self.on_lost(self)

    # -- API
    @classmethod
    async def connect_any(cls, discovery: RegistrarDiscovery, *, kind: str | None = None,
                          wait: float = ANNOUNCE_TIMEOUT, connect_timeout: float = CONNECT_TIMEOUT,
                          avoid: set[tuple[str, int]] | None = None,
                          on_message: Callable[[AsapMessage], None] | None = None,
                          on_lost: Callable[[RegistrarChannel], None] | None = None) -> RegistrarChannel:
        """Connect to the first reachable candidate (those in ``avoid`` are tried last)."""
        cands = await discovery.wait_for_candidates(wait)
        if avoid:
            cands = [c for c in cands if c not in avoid] + [c for c in cands if c in avoid]
        errors = []
        refused = 0
        for host, port in cands:
            ch = cls(on_message, on_lost)
            ch.endpoint = (host, port)
            try:
                await tp.connect(ch, host, port, tp.Framing.ASAP, kind=kind or discovery.kind,
                                 timeout=connect_timeout)
            except (TimeoutError, OSError) as exc:
                refused += isinstance(exc, ConnectionRefusedError)
                errors.append(f"{tp.format_endpoint(host, port)}: {exc or type(exc).__name__}")
                continue
            return ch
        if not cands:
            raise NoRegistrarError("no registrar known: give --registrar or run one that announces")
        raise NoRegistrarError("no registrar reachable (" + "; ".join(errors) + ")", refused=refused == len(cands))

    def send(self, data: bytes) -> None:
        if self.conn is None or self.conn.is_closing():
            raise ConnectionError(f"registrar {self.endpoint} not connected")
        self.conn.send(data)

    async def request(self, data: bytes, match: Callable[[AsapMessage], bool],
                      timeout: float = REQUEST_TIMEOUT) -> AsapMessage:
        fut: asyncio.Future[AsapMessage] = asyncio.get_running_loop().create_future()
        self._pending.append((match, fut))
        try:
            self.send(data)
            return await asyncio.wait_for(fut, timeout)
        finally:
            with contextlib.suppress(ValueError):
                self._pending.remove((match, fut))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    @property
    def is_open(self) -> bool:
        return self.conn is not None and not self.conn.is_closing() and not self.closed.is_set()


# ---------------------------------------------------------------------------------------------
# Pool element information as a PU sees it


@dataclass(frozen=True)
class PEInfo:
    pool_handle: bytes
    identifier: int
    addresses: tuple[str, ...]
    port: int
    protocol: str  # "sctp", "tcp", "udp", ...
    policy: PolicyInfo
    home_pr: int
    registration_life: int
    transport: Any = field(repr=False, compare=False, default=None)

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.addresses[0] if self.addresses else "0.0.0.0", self.port)

    @classmethod
    def from_wire(cls, handle: bytes, pe: PoolElement) -> PEInfo:
        t = pe.user_transport
        proto = {"SctpTransport": "sctp", "TcpTransport": "tcp", "UdpTransport": "udp",
                 "UdpLiteTransport": "udplite", "DccpTransport": "dccp"}.get(type(t).__name__, "?")
        return cls(handle, pe.identifier, tuple(t.addresses), t.port, proto, policy_from_wire(pe.policy),
                   pe.home_registrar, pe.registration_life, t)

    def to_wire(self) -> PoolElement:
        """Back to a Pool Element parameter (e.g. for a PE's ``failover_candidates``)."""
        if self.transport is None:
            raise ValueError(f"PE ${self.identifier:08x} has no wire transport to encode")
        return PoolElement(self.identifier, self.home_pr, self.registration_life, self.transport,
                           policy_to_wire(self.policy))

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool_handle": self.pool_handle.decode("utf-8", "replace"),
            "identifier": self.identifier,
            "identifier_hex": f"0x{self.identifier:08x}",
            "addresses": list(self.addresses),
            "port": self.port,
            "protocol": self.protocol,
            "endpoint": tp.format_endpoint(*self.endpoint),
            "policy": self.policy.to_dict(),
            "home_pr": self.home_pr,
            "registration_life_ms": self.registration_life,
        }


def business_card_candidates(card: BusinessCard, received_at: float, *, now: float | None = None,
                             exclude: Collection[int] = ()) -> list[PEInfo]:
    """The PEs of ``card`` a PU may still fail over to, in the card's (the sender's preference) order.

    A candidate stays valid for its registration life counted from ``received_at`` (the
    ``time.monotonic()`` at which the card arrived): that is how long its registrar would keep it
    without hearing from it, so after that the card's word is no better than a guess. Identifiers
    in ``exclude`` (the failed PE, ones already tried) are left out.
    """
    age_ms = ((time.monotonic() if now is None else now) - received_at) * 1000.0
    out = []
    for pe in card.pool_elements:
        if pe.identifier in exclude or pe.registration_life <= age_ms:
            continue
        try:
            out.append(PEInfo.from_wire(card.pool_handle, pe))
        except ValueError:  # a policy we cannot represent: the peer's card must not break fail-over
            log.info("skipping business card candidate $%08x: unusable policy", pe.identifier)
    return out


# ---------------------------------------------------------------------------------------------
# PU <-> PE session channel


class SessionChannel:
    """One PU<->PE connection: application data plus ASAP Cookie / Cookie Echo / Business Card.

    ``on_data(channel, data, ppid)`` gets application messages; ``on_cookie_echo`` (PE side) the
    state a PU brings from a failed PE; the PU side keeps the last ``cookie`` it received. Either
    side keeps the last ``business_card`` the peer sent (and when: ``business_card_at``,
    ``time.monotonic()``) and passes it to ``on_business_card``.
    """

    def __init__(self, on_data: Callable[[SessionChannel, bytes, int], None] | None = None,
                 on_cookie_echo: Callable[[SessionChannel, bytes], None] | None = None,
                 on_closed: Callable[[SessionChannel], None] | None = None,
                 on_business_card: Callable[[SessionChannel, BusinessCard], None] | None = None) -> None:
        self.on_data = on_data
        self.on_cookie_echo = on_cookie_echo
        self.on_closed = on_closed
        self.on_business_card = on_business_card
        self.conn: tp.MessageConnection | None = None
        self.cookie: bytes | None = None
        self.business_card: BusinessCard | None = None
        self.business_card_at: float | None = None
        self.closed = asyncio.Event()
        self.user_data: Any = None

    def connection_made(self, conn: tp.MessageConnection) -> None:
        self.conn = conn

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        if ppid == tp.PPID_ASAP:
            try:
                msg = decode_asap(data)
            except CodecError as exc:
                log.warning("malformed ASAP message on session channel %s: %s", conn.peer, exc)
                return
            if isinstance(msg, CookieMessage):
                self.cookie = msg.cookie
            elif isinstance(msg, CookieEcho):
                if self.on_cookie_echo is not None:
                    self.on_cookie_echo(self, msg.cookie)
            elif isinstance(msg, BusinessCard):
                self.business_card, self.business_card_at = msg, time.monotonic()
                if self.on_business_card is not None:
                    self.on_business_card(self, msg)
            return
        if self.on_data is not None:
            self.on_data(self, data, ppid)

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        self.closed.set()
        if self.on_closed is not None:
            self.on_closed(self)

    def send(self, data: bytes, ppid: int) -> None:
        if self.conn is None or self.conn.is_closing():
            raise ConnectionError("session channel closed")
        self.conn.send(data, ppid)

    def send_cookie(self, cookie: bytes) -> None:
        """PE side: hand the PU state it can echo to another PE after a fail-over."""
        self.send(CookieMessage(cookie=cookie).encode(), tp.PPID_ASAP)

    def send_cookie_echo(self, cookie: bytes) -> None:
        self.send(CookieEcho(cookie=cookie).encode(), tp.PPID_ASAP)

    def send_business_card(self, card: BusinessCard) -> None:
        """Tell the peer our pool handle and the PEs it should fail over to (RFC 5352 2.2.13)."""
        self.send(card.encode(), tp.PPID_ASAP)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def abort(self) -> None:
        """Drop the connection at once (the peer is gone): ``closed`` is set, nothing more is sent."""
        if self.conn is not None:
            self.conn.abort()

    @property
    def is_open(self) -> bool:
        return self.conn is not None and not self.conn.is_closing() and not self.closed.is_set()

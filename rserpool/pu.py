"""Pool user (PU): handle resolution with a cache, unreachability reports, and fail-over sessions.

* ``PoolUser.resolve(handle)`` asks a registrar (static list or multicast announce) for up to N
  PEs; answers are cached for ``stale_cache`` seconds (5 s: RSPLIB's ASAP cache element timeout
  of ``asapinstance.h``; RSPLIB 3.x lets the application pass it per call, so it is a parameter).
* ``PoolUser.report_unreachable(handle, id)`` sends ASAP Endpoint Unreachable and drops the PE
  from the cache (the registrar removes it after MAX-BAD-PE-REPORT reports).
* ``PoolUser.connect(handle)`` returns a ``PoolSession``: a data channel to one PE that fails over
  to another PE when the current one breaks (report it, re-select, reconnect, Cookie Echo the last
  cookie the failed PE sent), so the application keeps its state (the ASAP session layer RSPLIB
  calls "enhanced mode").

Re-selection on fail-over: first the still-valid candidates of the last ASAP Business Card a PE of
the session's pool sent (RFC 5352 section 2.2.13: the PE's own fail-over preference; see
``session.business_card_candidates``), in the card's order; then, as RSPLIB's
``rsp_forcefailover`` does, the pool's PEs from the cache or a new handle resolution. RSPLIB 3.4.4
ignores received cards and its PEs send none, so with RSPLIB PEs (and with ours unless configured
to send cards) fail-over is exactly RSPLIB's. A PU that is itself a PE
(``PoolUser(own_pe=...)``) sends that PE's Business Card to each PE it connects to.

Network changes (``PUConfig.watch_routes``, on by default): when this host's routes, addresses or
links change (``routewatch.RouteWatcher``), connects under way and open sessions whose PE has no
route any more fail at once (ENETUNREACH) instead of running into the connect timeout or the
application's keep-alive timeout, as a mobile application reacts to a connectivity change. A UE
that loses its bearer (radio link failure) thus fails over to its own PE as soon as it knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rserpool import csp, routewatch
from rserpool import transport as tp
from rserpool.session import (
    ANNOUNCE_TIMEOUT,
    REQUEST_TIMEOUT,
    PEInfo,
    RegistrarChannel,
    RegistrarDiscovery,
    SessionChannel,
    business_card_candidates,
)
from rserpool.wire import BusinessCard, EndpointUnreachable, HandleResolution, HandleResolutionResponse

if TYPE_CHECKING:
    from rserpool.pe import PoolElement

log = logging.getLogger(__name__)

DEFAULT_STALE_CACHE = 5.0
MORE_ITEMS = 3  # PEs asked for beyond those already tried when every one named so far failed


class HandleResolutionError(LookupError):
    """The registrar answered with an error (``cause``: 0x9 = unknown pool handle)."""

    def __init__(self, handle: bytes, cause: int) -> None:
        super().__init__(f"handle resolution for {handle!r} failed (cause 0x{cause:x})")
        self.handle = handle
        self.cause = cause


class NoPoolElementError(ConnectionError):
    """No PE of the pool could be reached."""


@dataclass
class PUConfig:
    registrars: list[tuple[str, int]] = field(default_factory=list)
    announce: bool | None = None
    announce_group: str = tp.ASAP_ANNOUNCE_GROUP
    announce_port: int = tp.ASAP_PORT
    announce_interface: str | None = None
    transport: str | None = None
    stale_cache: float = DEFAULT_STALE_CACHE
    request_timeout: float = REQUEST_TIMEOUT
    discovery_wait: float = ANNOUNCE_TIMEOUT
    connect_timeout: float = 3.0
    watch_routes: bool = True


class PoolUser:
    """ASAP client for pool users. ``own_pe``: the PE this PU also is (its Business Card is sent to
    every PE the PU connects to)."""

    def __init__(self, config: PUConfig | None = None, *, own_pe: PoolElement | None = None) -> None:
        self.config = cfg = config or PUConfig()
        self.own_pe = own_pe
        self._tasks: set[asyncio.Task[None]] = set()
        self.kind = cfg.transport or tp.transport_kind()
        self.discovery = RegistrarDiscovery(cfg.registrars, use_announce=cfg.announce, group=cfg.announce_group,
                                            port=cfg.announce_port, interface=cfg.announce_interface,
                                            kind=self.kind)
        self._channel: RegistrarChannel | None = None
        self._channel_lock = asyncio.Lock()
        self._cache: dict[bytes, tuple[float, list[PEInfo]]] = {}
        self._failed_registrars: set[tuple[str, int]] = set()
        self.stats: dict[str, int] = {"resolutions": 0, "cache_hits": 0, "unreachable_reports": 0,
                                      "failovers": 0, "route_losses": 0}
        self.routes: routewatch.RouteWatcher | None = None  # the event loop's shared watcher, once started
        self._sessions: weakref.WeakSet[PoolSession] = weakref.WeakSet()
        self._csp: csp.CSPReporter | None = None  # component status reports, if a monitor is configured

    async def start(self) -> None:
        await self.discovery.start()
        if self._csp is None:
            self._csp = csp.attach(self)
        if self.config.watch_routes and self.routes is None:
            self.routes = routewatch.RouteWatcher.shared()
            if self.routes.active:
                self.spawn(self._watch_routes())

    async def close(self) -> None:
        await csp.detach(self._csp)
        self._csp = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.routes is not None:
            self.routes.release()
            self.routes = None
        self.discovery.close()

    async def _watch_routes(self) -> None:
        """Close every open session whose PE lost its route, so that it fails over now."""
        assert self.routes is not None
        while True:
            await self.routes.changed()
            for session in list(self._sessions):
                ch, pe = session.channel, session.pe
                if ch is not None and pe is not None and ch.is_open and not routewatch.routable(pe.endpoint[0]):
                    log.info("no route to PE $%08x at %s any more: its session fails over", pe.identifier,
                             pe.endpoint[0])
                    self.stats["route_losses"] += 1
                    ch.abort()

    async def connect_routed(self, handler: SessionChannel, host: str, port: int, kind: str) -> None:
        """``transport.connect`` to a PE, given up at once (ENETUNREACH) if there is no route to it or
        the route goes away while connecting."""
        # TCP's connect fails at once without a route; SCTP's does not: it sends its INIT into the
        # void and retransmits it (initial RTO 3 s), so a UE out of coverage would spend the whole
        # connect timeout on every remote PE before reaching its own element.
        if not routewatch.routable(host):
            self.stats["route_losses"] += 1
            raise OSError(errno.ENETUNREACH, f"no route to {host}")
        attempt = asyncio.ensure_future(tp.connect(handler, host, port, tp.Framing.TAGGED, kind=kind,
                                                   timeout=self.config.connect_timeout))
        routes = self.routes
        if routes is None or not routes.active:
            await attempt
            return
        try:
            while True:
                change = asyncio.ensure_future(routes.changed())
                done, _ = await asyncio.wait({attempt, change}, return_when=asyncio.FIRST_COMPLETED)
                change.cancel()
                if attempt in done:
                    attempt.result()
                    return
                if not routewatch.routable(host):
                    self.stats["route_losses"] += 1
                    raise OSError(errno.ENETUNREACH, f"route to {host} lost while connecting")
        finally:
            if not attempt.done():
                attempt.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await attempt

    async def __aenter__(self) -> PoolUser:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------- registrar

    async def _registrar(self) -> RegistrarChannel:
        async with self._channel_lock:
            if self._channel is not None and self._channel.is_open:
                return self._channel
            self._channel = await RegistrarChannel.connect_any(
                self.discovery, kind=self.kind, wait=self.config.discovery_wait, avoid=self._failed_registrars)
            return self._channel

    async def _ask(self, data: bytes, match: Callable[[object], bool]) -> object:
        """One request with one retry on another registrar if the first fails."""
        last: BaseException | None = None
        for _ in range(2):
            ch = await self._registrar()
            try:
                return await ch.request(data, match, self.config.request_timeout)
            except (TimeoutError, OSError) as exc:
                last = exc
                if ch.endpoint:
                    self._failed_registrars.add(ch.endpoint)
                ch.close()
                self._channel = None
        raise ConnectionError(f"registrar request failed: {last}")

    # ---------------------------------------------------------------- handle resolution

    async def resolve(self, pool_handle: bytes | str, items: int | None = None,
                      use_cache: bool = True) -> list[PEInfo]:
        """PEs of the pool, by the pool's policy (cached for ``stale_cache`` seconds)."""
        handle = pool_handle.encode() if isinstance(pool_handle, str) else bytes(pool_handle)
        if use_cache and self.config.stale_cache > 0:
            hit = self._cache.get(handle)
            if hit is not None and time.monotonic() - hit[0] <= self.config.stale_cache and hit[1]:
                self.stats["cache_hits"] += 1
                return list(hit[1])
        msg = HandleResolution(pool_handle=handle, items=items).encode()
        resp = await self._ask(msg, lambda m: isinstance(m, HandleResolutionResponse) and m.pool_handle == handle)
        assert isinstance(resp, HandleResolutionResponse)
        self.stats["resolutions"] += 1
        if resp.error is not None and resp.error.causes and not resp.pool_elements:
            self._cache.pop(handle, None)
            raise HandleResolutionError(handle, resp.error.causes[0].code)
        pes = [PEInfo.from_wire(handle, pe) for pe in resp.pool_elements]
        self._cache[handle] = (time.monotonic(), pes)
        return list(pes)

    def forget(self, pool_handle: bytes, identifier: int | None = None) -> None:
        """Drop a PE (or the whole pool) from the cache."""
        hit = self._cache.get(pool_handle)
        if hit is None:
            return
        if identifier is None:
            del self._cache[pool_handle]
        else:
            self._cache[pool_handle] = (hit[0], [p for p in hit[1] if p.identifier != identifier])

    async def report_unreachable(self, pool_handle: bytes, identifier: int) -> None:
        """ASAP Endpoint Unreachable to the registrar; the PE also leaves the cache."""
        self.forget(pool_handle, identifier)
        self.stats["unreachable_reports"] += 1
        try:
            ch = await self._registrar()
            ch.send(EndpointUnreachable(pool_handle=pool_handle, identifier=identifier).encode())
        except (OSError, ConnectionError) as exc:
            log.warning("could not report PE $%08x unreachable: %s", identifier, exc)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background; ``close`` cancels it."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- sessions

    async def connect(self, pool_handle: bytes | str, *, on_data: Callable[[bytes, int], None] | None = None,
                      on_failover: Callable[[PoolSession], None] | None = None,
                      max_attempts: int = 8) -> PoolSession:
        """A fail-over session to the pool (connects to the first reachable PE)."""
        handle = pool_handle.encode() if isinstance(pool_handle, str) else bytes(pool_handle)
        s = PoolSession(self, handle, on_data=on_data, on_failover=on_failover, max_attempts=max_attempts)
        await s.open()
        return s


class PoolSession:
    """PU side of an ASAP session with fail-over, cookie echo and business cards.

    ``pe_source`` says where the current PE came from: "business_card" (a candidate of the last
    card) or "handle_resolution" (the PU's cache or a new resolution).
    """

    def __init__(self, pu: PoolUser, handle: bytes, *, on_data: Callable[[bytes, int], None] | None,
                 on_failover: Callable[[PoolSession], None] | None, max_attempts: int) -> None:
        self.pu = pu
        self.handle = handle
        self.on_data = on_data
        self.on_failover = on_failover
        self.max_attempts = max_attempts
        self.pe: PEInfo | None = None
        self.pe_source: str | None = None
        self.channel: SessionChannel | None = None
        self.cookie: bytes | None = None
        self.business_card: BusinessCard | None = None
        self.business_card_at = 0.0  # time.monotonic() when it arrived
        self.failovers = 0
        self._replies: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue()

    def _data(self, ch: SessionChannel, data: bytes, ppid: int) -> None:
        if self.on_data is not None:
            self.on_data(data, ppid)
        else:
            self._replies.put_nowait((data, ppid))

    def _business_card(self, ch: SessionChannel, card: BusinessCard) -> None:
        if card.pool_handle != self.handle:
            # a card for another pool says nothing about where this session may fail over to
            log.info("ignoring a business card for pool %r on a session to pool %r", card.pool_handle, self.handle)
            return
        # kept across fail-overs: a later PE that sends no card does not void the earlier advice
        self.business_card, self.business_card_at = card, ch.business_card_at or time.monotonic()

    def card_candidates(self, exclude: set[int] | None = None) -> list[PEInfo]:
        """Still-valid fail-over candidates of the last Business Card, without ``exclude``."""
        if self.business_card is None:
            return []
        return business_card_candidates(self.business_card, self.business_card_at, exclude=exclude or ())

    async def open(self, exclude: set[int] | None = None) -> None:
        """Connect to a PE: the business card's candidates first, then cached/resolved PEs in policy
        order (at most ``max_attempts`` tries in all), reporting the ones that cannot be reached."""
        tried: set[int] = set(exclude or ())
        attempts = 0
        for pe in self.card_candidates(tried):
            if attempts >= self.max_attempts:
                break
            attempts += 1
            tried.add(pe.identifier)
            if await self._connect(pe, "business_card"):
                return
        while attempts < self.max_attempts:
            attempts += 1
            try:
                pes = await self.pu.resolve(self.handle)
            except HandleResolutionError:
                pes = []
            pes = [p for p in pes if p.identifier not in tried]
            if not pes:
                # Nothing untried in the cache (or the answer just got): resolve afresh, and once PEs
                # have failed us (or said no) ask for more than we have tried (Handle Resolution
                # Option) instead of giving up. A pool whose preferred PEs are all unreachable at once
                # (a UE out of coverage) then reaches its last resort now, not after the registrar
                # has dropped them one by one on MAX-BAD-PE-REPORT reports.
                more = len(tried) + MORE_ITEMS if tried else None
                pes = [p for p in await self._fresh(items=more) if p.identifier not in tried]
            if not pes:
                break
            pe = pes[0]
            tried.add(pe.identifier)
            if await self._connect(pe, "handle_resolution"):
                return
        raise NoPoolElementError(f"no PE of pool {self.handle!r} reachable")

    async def _connect(self, pe: PEInfo, source: str) -> bool:
        """Open the data channel to ``pe`` (Cookie Echo, our own card); False if it is unreachable."""
        ch = SessionChannel(on_data=self._data, on_business_card=self._business_card)
        try:
            host, port = pe.endpoint
            kind = "sctp" if pe.protocol == "sctp" else "tcp"
            await self.pu.connect_routed(ch, host, port, kind)
        except (TimeoutError, OSError) as exc:
            log.info("PE $%08x at %s unreachable (%s)", pe.identifier, pe.endpoint, exc)
            await self.pu.report_unreachable(self.handle, pe.identifier)
            return False
        self.pe, self.channel, self.pe_source = pe, ch, source
        self.pu._sessions.add(self)
        if source == "business_card":
            log.info("session to pool %r now at PE $%08x, a candidate of the business card", self.handle,
                     pe.identifier)
        if self.cookie is not None:
            ch.send_cookie_echo(self.cookie)
        own = self.pu.own_pe
        if own is not None:
            self.pu.spawn(self._send_own_card(own, ch))
        return True

    async def _send_own_card(self, own: PoolElement, ch: SessionChannel) -> None:
        card = await own.business_card()
        if card is not None and ch.is_open:
            with contextlib.suppress(ConnectionError):
                ch.send_business_card(card)

    async def _fresh(self, items: int | None = None) -> list[PEInfo]:
        try:
            return await self.pu.resolve(self.handle, items=items, use_cache=False)
        except HandleResolutionError:
            return []

    async def failover(self, report: bool = True) -> None:
        """Move to another PE (the current one failed), carrying the last cookie."""
        old = self.pe
        if self.channel is not None and self.channel.cookie is not None:
            self.cookie = self.channel.cookie
        if self.channel is not None:
            self.channel.close()
        self.failovers += 1
        self.pu.stats["failovers"] += 1
        if old is not None and report:
            await self.pu.report_unreachable(self.handle, old.identifier)
        await self.open(exclude={old.identifier} if old is not None else None)
        if self.on_failover is not None:
            self.on_failover(self)

    def send(self, data: bytes, ppid: int = 0) -> None:
        if self.channel is None or not self.channel.is_open:
            raise ConnectionError("session has no PE")
        if self.channel.cookie is not None:
            self.cookie = self.channel.cookie
        self.channel.send(data, ppid)

    async def request(self, data: bytes, ppid: int = 0, timeout: float = 3.0, retries: int = 3) -> bytes:
        """Send and wait for one reply (request/response services such as echo), failing over on error."""
        for attempt in range(retries + 1):
            try:
                while not self._replies.empty():
                    self._replies.get_nowait()
                self.send(data, ppid)
                closed = asyncio.ensure_future(self.channel.closed.wait())  # type: ignore[union-attr]
                reply = asyncio.ensure_future(self._replies.get())
                try:
                    done, _ = await asyncio.wait({closed, reply}, timeout=timeout,
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closed.cancel()
                if reply in done:
                    return reply.result()[0]
                reply.cancel()
                raise ConnectionError("no reply" if not done else "PE closed the session")
            except ConnectionError as exc:
                if attempt == retries:
                    raise
                log.info("session to PE %s failed (%s): failing over",
                         f"${self.pe.identifier:08x}" if self.pe else "?", exc)
                await self.failover()
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.channel is not None:
            with contextlib.suppress(Exception):
                self.channel.close()

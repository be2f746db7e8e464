"""Pool element (PE): registration with a registrar, keep-alive answers, fail-over, and a service.

Life of a ``PoolElement`` (RSPLIB 3.4.4 semantics where they exist):

* find a registrar (static list, else multicast announces), connect, send ASAP Registration with
  the PE's user transport (its service port) and policy information, wait for the response;
* re-register every ``reregistration_interval`` (RSPLIB ``rspserver`` default 30 s) with a
  registration life of three times that (``rsp_register``), and at once when the load changes;
* answer Endpoint Keep-Alives with Keep-Alive Acks; a Keep-Alive with the Home flag from another
  registrar makes that registrar the PE's home (takeover);
* when the home registrar's connection is lost or a request times out, move to another
  registrar and register there;
* on ``stop()`` (SIGINT/SIGTERM in the CLI) deregister and close.

Services: ``echo`` answers every application message with itself on the PE's own port (TCP or
SCTP, with the ASAP session layer alongside: a PU may Cookie-Echo, the PE sends Cookies).
``calcapp`` is ``rserpool.services.calcapp`` (RSPLIB's CalcApp server; it reports its own load),
``fractal`` is ``rserpool.services.fractal`` (RSPLIB's Fractal Generator server; likewise).

Business cards (RFC 5352 section 2.2.13): with ``business_card=True`` the PE sends every PU that
connects an ASAP Business Card naming up to ``business_card_items`` other PEs of its pool for the
PU to fail over to: the application's ``failover_candidates`` if it set them, else the registrar's
handle resolution of the PE's own pool (so the pool policy orders them), reused for
``business_card_refresh`` seconds. Off by default because RSPLIB 3.4.4 never sends cards (so
fail-over targets are chosen by handle resolution, as in RSPLIB) and because each of those
resolutions is a selection with the policy's side effects (round-robin position, LUD/PLU load
increments) that a PU's resolution would otherwise have made. ``business_card()`` also serves a
PU that is itself this PE (``PoolUser(own_pe=...)``) to introduce itself to the PEs it contacts.

Load: with ``max_requests`` > 0 the PE reports load = active sessions / max_requests (RSPSIM's
rule: active jobs / MaxJobs) in its policy information, which matters for the LU/PLU/LUD family.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from rserpool import csp
from rserpool import transport as tp
from rserpool.policy import PolicyInfo
from rserpool.policytypes import fraction_to_u32
from rserpool.policywire import policy_to_wire
from rserpool.session import (
    REQUEST_TIMEOUT,
    NoRegistrarError,
    RegistrarChannel,
    RegistrarDiscovery,
    SessionChannel,
)
from rserpool.wire import (
    AsapMessage,
    BusinessCard,
    CodecError,
    Deregistration,
    DeregistrationResponse,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    HandleResolution,
    HandleResolutionResponse,
    Registration,
    RegistrationResponse,
    SctpTransport,
    TcpTransport,
    TransportUse,
    decode_asap,
)
from rserpool.wire import (
    PoolElement as WirePoolElement,
)

log = logging.getLogger(__name__)

DEFAULT_REREGISTRATION_INTERVAL = 30.0  # rspserver default (seconds)
ECHO_PPID = 0  # the echo service's payload protocol identifier (unspecified)


class RegistrationRejected(RuntimeError):
    """The registrar refused the registration (the error cause is in ``cause``)."""

    def __init__(self, cause: int, text: str) -> None:
        super().__init__(text)
        self.cause = cause


@dataclass
class PEConfig:
    pool_handle: bytes
    policy: PolicyInfo = field(default_factory=lambda: PolicyInfo(1))
    identifier: int = 0  # 0 = random
    registrars: list[tuple[str, int]] = field(default_factory=list)
    announce: bool | None = None  # None: use announces iff no static registrars
    announce_group: str = tp.ASAP_ANNOUNCE_GROUP
    announce_port: int = tp.ASAP_PORT
    announce_interface: str | None = None
    listen: tuple[str, int] = ("0.0.0.0", 0)
    reregistration_interval: float = DEFAULT_REREGISTRATION_INTERVAL
    registration_life: float | None = None  # seconds; None = 3 x reregistration interval
    transport: str | None = None
    service: str | None = "echo"
    max_requests: int = 0  # 0 = unlimited (load stays as configured)
    capacity: float = 1_000_000.0  # for calcapp
    request_timeout: float = REQUEST_TIMEOUT
    retry_delay: float = 1.0  # pause before trying the registrars again when none answered
    # Until the first registration, a refused connect is retried after start_retry_delay, doubling
    # up to retry_delay: a PE started beside its registrar (a testbed's start) is refused while the
    # registrar is a few ms from listening, and need not then wait the full retry_delay; a registrar
    # that stays away is soon tried only every retry_delay.
    start_retry_delay: float = 0.05
    business_card: bool = False  # send each PU a Business Card of alternate PEs (RSPLIB never does)
    business_card_items: int = 3  # alternates per card (RSPLIB's handle-resolution default)
    business_card_refresh: float = 5.0  # reuse the registrar's alternates this long [s] (ASAP cache timeout)
    control_channel: bool = True  # register "data plus control" (RSPLIB's PEs always do); see user_transport()


class PoolElement:
    """An asyncio pool element. ``await start()`` registers (returns once registered or raises)."""

    def __init__(self, config: PEConfig) -> None:
        self.config = config
        self.identifier = config.identifier or random.randint(1, 0xFFFFFFFF)
        self.policy = config.policy
        self.kind = config.transport or tp.transport_kind()
        self.discovery = RegistrarDiscovery(config.registrars, use_announce=config.announce,
                                            group=config.announce_group, port=config.announce_port,
                                            interface=config.announce_interface, kind=self.kind)
        self.channel: RegistrarChannel | None = None
        self.home_registrar = 0
        self.registered = asyncio.Event()
        self.error: BaseException | None = None
        self.stats: dict[str, int] = {"registrations": 0, "keepalives": 0, "registrar_changes": 0,
                                      "sessions": 0}
        self.sessions: set[SessionChannel] = set()
        self.on_data: Callable[[SessionChannel, bytes, int], None] | None = None
        self.on_cookie_echo: Callable[[SessionChannel, bytes], None] | None = None
        self.on_business_card: Callable[[SessionChannel, BusinessCard], None] | None = None
        # the application's own fail-over preference for business cards; None: ask the registrar
        self.failover_candidates: list[WirePoolElement] | None = None
        self._alternates: tuple[float, list[WirePoolElement]] | None = None  # (when fetched, PEs)
        self._alternates_lock = asyncio.Lock()  # one registrar query however many PUs arrive at once
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: tp.MessageServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._rereg = asyncio.Event()
        self._stopping = False
        self._paused = False
        self._outage_logged = False
        self._start_refusals = 0  # refused connects before the first registration (start_retry_delay)
        self._service: Any = None
        self._csp: csp.CSPReporter | None = None  # component status reports, if a monitor is configured

    # ---------------------------------------------------------------- life cycle

    async def start(self, wait: bool = True, timeout: float | None = 30.0) -> None:
        cfg = self.config
        self._setup_service()
        host, port = cfg.listen
        self._server = await tp.start_server(lambda: self._new_session(), host, port, tp.Framing.TAGGED,
                                             kind=self.kind)
        await self.discovery.start()
        self._task = asyncio.create_task(self._registrar_loop(), name=f"pe-{self.identifier:08x}")
        self._csp = csp.attach(self)
        if wait:
            done = asyncio.ensure_future(self.registered.wait())
            try:
                await asyncio.wait({done, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                done.cancel()
            if self.error is not None:
                raise self.error
            if not self.registered.is_set():
                raise TimeoutError("pool element could not register in time")

    async def stop(self, deregister: bool = True) -> None:
        """Deregister (clean shutdown) and close everything."""
        self._stopping = True
        if deregister and self.channel is not None and self.channel.is_open and self.registered.is_set():
            try:
                await self.channel.request(
                    Deregistration(pool_handle=self.config.pool_handle, identifier=self.identifier).encode(),
                    lambda m: isinstance(m, DeregistrationResponse) and m.identifier == self.identifier,
                    self.config.request_timeout)
                log.info("deregistered $%08x", self.identifier)
            except (TimeoutError, OSError) as exc:
                log.warning("deregistration failed: %s", exc)
        await self._kill()

    async def kill(self) -> None:
        """Vanish without deregistering (tests: a crashed PE)."""
        self._stopping = True
        await self._kill()

    async def _kill(self) -> None:
        await csp.detach(self._csp)
        self._csp = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.channel is not None:
            self.channel.close()
        if self._server is not None:
            self._server.close()
        for s in list(self.sessions):
            s.close()
        for t in list(self._tasks):
            t.cancel()
        self.discovery.close()
        if self._service is not None and hasattr(self._service, "close"):
            self._service.close()
        await asyncio.sleep(0)

    async def hang(self) -> None:
        """Stop working but keep every socket open (tests: a hung PE the registrar must time out)."""
        self._paused = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def pause_keepalives(self, paused: bool = True) -> None:
        """Stop answering keep-alives while staying connected (tests: a hung PE)."""
        self._paused = paused

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.port

    # ---------------------------------------------------------------- load

    def set_load(self, load: float) -> None:
        """Report a new load (fraction 0..1); re-registers at once if it changed."""
        new = replace(self.policy, load=fraction_to_u32(load))
        if new != self.policy:
            self.policy = new
            self._rereg.set()

    def set_policy(self, policy: PolicyInfo) -> None:
        if policy != self.policy:
            self.policy = policy
            self._rereg.set()

    def _update_load(self) -> None:
        if self._service is not None and hasattr(self._service, "load"):
            return  # the service reports its own load (calcapp: jobs / max jobs, RSPLIB's setLoad)
        if self.config.max_requests > 0:
            self.set_load(min(1.0, len(self.sessions) / self.config.max_requests))

    # ---------------------------------------------------------------- registration

    def user_transport(self, local_host: str | None = None) -> Any:
        """The user transport parameter we register: our service endpoint and its Transport Use.

        Transport Use is "data plus control" by default: ASAP control messages (Cookie, Cookie
        Echo, Business Card, a new home registrar's Keep-Alive) do arrive on our service port
        beside the application's data, and it is what every RSPLIB 3.4.4 PE registers (its
        enhanced mode sets ``HasControlChannel``, so ``rspserver`` always does). Registrars keep
        a pool's control-channel use uniform (RFC 5352 / RSPLIB: a PE that differs from the pool
        is refused with "inconsistent data/control configuration", cause 0x8), so only PEs
        registering the same way can share a pool with RSPLIB's; ``control_channel=False``
        (CLI ``--no-control-channel``) registers "data only"."""
        host = self.config.listen[0]
        if host in ("0.0.0.0", "::", ""):
            host = local_host or ""
        addrs = (host,) if host else ()
        cls = SctpTransport if self.kind == "sctp" else TcpTransport
        use = TransportUse.DATA_PLUS_CONTROL if self.config.control_channel else TransportUse.DATA_ONLY
        return cls(self.port, addrs, use)

    def registration_message(self, local_host: str | None = None) -> bytes:
        cfg = self.config
        life = cfg.registration_life if cfg.registration_life is not None else 3 * cfg.reregistration_interval
        pe = WirePoolElement(self.identifier, self.home_registrar, int(life * 1000),
                             self.user_transport(local_host), policy_to_wire(self.policy))
        return Registration(pool_handle=cfg.pool_handle, pool_element=pe).encode()

    async def _register(self, ch: RegistrarChannel) -> None:
        local = ch.conn.local[0] if ch.conn is not None and ch.conn.local else None
        handle = self.config.pool_handle
        for _attempt in range(2):
            ident = self.identifier
            # clear before building the message: a change while it is in flight triggers another
            self._rereg.clear()
            resp = await ch.request(
                self.registration_message(local),
                lambda m, i=ident: isinstance(m, RegistrationResponse) and m.identifier == i
                and m.pool_handle == handle,
                self.config.request_timeout)
            assert isinstance(resp, RegistrationResponse)
            if not resp.reject:
                self.stats["registrations"] += 1
                self.registered.set()
                return
            cause = resp.error.causes[0].code if resp.error and resp.error.causes else 0
            if cause == 0x4:  # non-unique PE identifier: pick another one and retry (once)
                self.identifier = random.randint(1, 0xFFFFFFFF)
                continue
            raise RegistrationRejected(cause, f"registration rejected by registrar {ch.endpoint} (cause 0x{cause:x})")

    async def _registrar_loop(self) -> None:
        avoid: set[tuple[str, int]] = set()
        while not self._stopping:
            try:
                ch = await RegistrarChannel.connect_any(self.discovery, kind=self.kind, avoid=avoid,
                                                        on_message=self._on_registrar_message)
            except NoRegistrarError as exc:
                # warn once per outage, then keep trying quietly; a registrar a few hundred ms from
                # listening at start is no outage
                delay = self._retry_delay(exc.refused)
                starting = delay < self.config.retry_delay / 2
                (log.debug if self._outage_logged or starting else log.warning)("%s; retrying", exc)
                self._outage_logged = self._outage_logged or not starting
                avoid.clear()
                await asyncio.sleep(delay)
                continue
            if self.channel is not None and self.channel.endpoint != ch.endpoint:
                self.stats["registrar_changes"] += 1
            self.channel = ch
            try:
                await self._register(ch)
                log.info("PE $%08x registered in pool %r at %s", self.identifier, self.config.pool_handle,
                         tp.format_endpoint(*ch.endpoint) if ch.endpoint else "?")
                avoid.clear()
                self._outage_logged = False
                await self._serve_registrar(ch)
            except RegistrationRejected as exc:
                self.error = exc
                log.error("%s", exc)
                ch.close()
                return
            except (TimeoutError, OSError) as exc:
                log.warning("registrar %s failed (%s): moving on", ch.endpoint, exc or type(exc).__name__)
                if ch.endpoint:
                    avoid.add(ch.endpoint)
                await asyncio.sleep(min(self.config.retry_delay, 0.2))  # never spin on a failing registrar
            ch.close()
            self.registered.clear()

    def _retry_delay(self, refused: bool) -> float:
        """The pause before trying the registrars again: after a refused connect before the first
        registration, start_retry_delay doubling with each refusal up to retry_delay (with the defaults
        the first warning comes after 0.75 s of refusals, see _registrar_loop); else retry_delay."""
        cfg = self.config
        if not refused or self.stats["registrations"]:
            return cfg.retry_delay
        delay = min(cfg.retry_delay, cfg.start_retry_delay * 2 ** min(self._start_refusals, 30))
        self._start_refusals += 1
        return delay

    async def _serve_registrar(self, ch: RegistrarChannel) -> None:
        """Re-register on schedule or on load change until the channel breaks."""
        interval = self.config.reregistration_interval
        while not self._stopping:
            closed = asyncio.ensure_future(ch.closed.wait())
            rereg = asyncio.ensure_future(self._rereg.wait())
            try:
                done, _ = await asyncio.wait({closed, rereg}, timeout=interval,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                rereg.cancel()
            if ch.closed.is_set():
                raise ConnectionError("registrar connection lost")
            await self._register(ch)

    def _on_registrar_message(self, msg: AsapMessage) -> None:
        if isinstance(msg, EndpointKeepAlive):
            self._answer_keepalive(msg, self.channel.conn if self.channel else None)

    def _answer_keepalive(self, msg: EndpointKeepAlive, conn: tp.MessageConnection | None) -> None:
        if self._paused or conn is None:
            return
        if msg.home and msg.server_id != self.home_registrar:
            log.info("registrar $%08x is our new home", msg.server_id)
        if msg.home or not self.home_registrar:
            self.home_registrar = msg.server_id
        ident = msg.identifier if msg.identifier is not None else self.identifier
        self.stats["keepalives"] += 1
        conn.send(EndpointKeepAliveAck(pool_handle=msg.pool_handle, identifier=ident).encode(), tp.PPID_ASAP)

    # ---------------------------------------------------------------- business card

    async def alternates(self) -> list[WirePoolElement]:
        """Other PEs of our pool, most preferred first, for our Business Card (at most
        ``business_card_items``): ``failover_candidates`` if the application set them, else the
        PEs our registrar's handle resolution of our own pool returns (one item more is asked for,
        since we may be among them). Without a registrar the last known list is used."""
        cfg = self.config
        n = max(0, cfg.business_card_items)
        if self.failover_candidates is not None:
            return [pe for pe in self.failover_candidates if pe.identifier != self.identifier][:n]
        async with self._alternates_lock:
            last = self._alternates
            if last is not None and time.monotonic() - last[0] <= cfg.business_card_refresh:
                return list(last[1])
            ch = self.channel
            if n == 0 or ch is None or not ch.is_open or not self.registered.is_set():
                return list(last[1]) if last is not None else []
            handle = cfg.pool_handle
            try:
                resp = await ch.request(
                    HandleResolution(pool_handle=handle, items=n + 1).encode(),
                    lambda m: isinstance(m, HandleResolutionResponse) and m.pool_handle == handle,
                    cfg.request_timeout)
            except (TimeoutError, OSError) as exc:
                log.info("no alternates for the business card (%s)", exc or type(exc).__name__)
                return list(last[1]) if last is not None else []
            assert isinstance(resp, HandleResolutionResponse)
            pes = [pe for pe in resp.pool_elements if pe.identifier != self.identifier][:n]
            self._alternates = (time.monotonic(), pes)
            return list(pes)

    async def business_card(self) -> BusinessCard | None:
        """Our Business Card: pool handle, our policy, ``alternates()``; None when there are no
        alternates (RSPLIB never builds a card without a PE, and its parser refuses one)."""
        alternates = await self.alternates()
        if not alternates:
            return None
        return BusinessCard(pool_handle=self.config.pool_handle, policy=policy_to_wire(self.policy),
                            pool_elements=tuple(alternates))

    async def _send_business_card(self, ch: SessionChannel) -> None:
        card = await self.business_card()
        if card is None or not ch.is_open:
            return
        with contextlib.suppress(ConnectionError):
            ch.send_business_card(card)
            log.debug("business card with %d alternate(s) sent to %s", len(card.pool_elements),
                      ch.conn.peer if ch.conn else "?")

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background; ``stop``/``kill`` cancel it."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _business_card_received(self, ch: SessionChannel, card: BusinessCard) -> None:
        # a PU that is itself a PE introducing its pool (RFC 5352); the application decides what to do
        log.info("business card from %s: pool %r, %d alternate(s)", ch.conn.peer if ch.conn else "?",
                 card.pool_handle, len(card.pool_elements))
        if self.on_business_card is not None:
            self.on_business_card(ch, card)

    # ---------------------------------------------------------------- service

    def _setup_service(self) -> None:
        svc = self.config.service
        if svc in (None, "none", "echo"):
            return
        if svc in ("calcapp", "fractal"):
            self._service = importlib.import_module(f"rserpool.services.{svc}").create_service(self)
            return
        raise ValueError(f"unknown service {svc!r} (echo, calcapp or fractal)")

    def _new_session(self) -> SessionChannel:
        ch = SessionChannel(on_data=self._session_data, on_cookie_echo=self._cookie_echo,
                            on_closed=self._session_closed, on_business_card=self._business_card_received)
        return _PESession(self, ch)  # type: ignore[return-value]

    def _session_data(self, ch: SessionChannel, data: bytes, ppid: int) -> None:
        if self.on_data is not None:
            self.on_data(ch, data, ppid)
        elif self._service is not None and hasattr(self._service, "on_data"):
            self._service.on_data(ch, data, ppid)
        elif self.config.service in (None, "echo"):
            with contextlib.suppress(ConnectionError):
                ch.send(data, ppid)

    def _cookie_echo(self, ch: SessionChannel, cookie: bytes) -> None:
        ch.user_data = cookie
        if self.on_cookie_echo is not None:
            self.on_cookie_echo(ch, cookie)
        elif self._service is not None and hasattr(self._service, "on_cookie_echo"):
            self._service.on_cookie_echo(ch, cookie)

    def _session_closed(self, ch: SessionChannel) -> None:
        self.sessions.discard(ch)
        if self._service is not None and hasattr(self._service, "on_session_closed"):
            self._service.on_session_closed(ch)
        self._update_load()

    def _session_asap(self, ch: SessionChannel, msg: AsapMessage) -> None:
        if isinstance(msg, EndpointKeepAlive):
            # A registrar reaching us on our own port (takeover): answer there.
            self._answer_keepalive(msg, ch.conn)


class _PESession:
    """Adapter: SessionChannel plus PE bookkeeping (session count, load, capacity limit)."""

    def __init__(self, pe: PoolElement, ch: SessionChannel) -> None:
        self.pe = pe
        self.ch = ch

    def connection_made(self, conn: tp.MessageConnection) -> None:
        pe = self.pe
        self.ch.connection_made(conn)
        pe.sessions.add(self.ch)
        pe.stats["sessions"] += 1
        pe._update_load()
        if pe.config.business_card:
            pe.spawn(pe._send_business_card(self.ch))

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        if ppid == tp.PPID_ASAP and data[:1] == b"\x07":
            try:
                msg = decode_asap(data)
            except CodecError:
                return
            self.pe._session_asap(self.ch, msg)
            return
        self.ch.message_received(conn, data, ppid)

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        self.ch.connection_lost(conn, exc)

"""The registrar's ASAP side (RSPLIB 3.4.4 ``rspregistrar-asap.c``): PE and PU connections, message
dispatch, registration, deregistration, handle resolution, endpoint keep-alives and unreachability
reports. ``AsapRole`` holds these handlers; ``rserpool.registrar.Registrar`` is built on it, so they
share the registrar's state as RSPLIB's files share one registrar structure. What the registrar
does is described in ``rserpool.registrar``; the rate limits it applies in ``rserpool.ratelimit``.

Handle resolution is the hot path (``benchmarks/registrar.py``): a plain Handle Resolution is
answered by one call into the C extension (``rserpool._selector.hr_reply``: parse, select, join
the cached TLV bytes) or, where that declines, parsed in place (``_fast_hr``) and answered here;
the answers of one event-loop iteration leave in one write (``_CoalescingConn``; over SCTP the
transport batches them). Load reports (re-registrations that change only the policy values) and
keep-alive acks are applied without the codec (``_fast_reregistration``, ``_keepalive_ack_ids``).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING, Any

from rserpool import transport as tp
from rserpool.handlespace import MAX_POOL_HANDLE_SIZE, PoolEntry
from rserpool.handlespace import ErrorCause as HsCause
from rserpool.policy import PolicyInfo, SelectionPool
from rserpool.policywire import policy_from_wire, policy_to_wire, transport_protocol, transport_tail
from rserpool.ratelimit import (
    RateTracker,
    handle_resolution_refused,
    registration_refused,
    unreachable_report_refused,
)
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
    TcpTransport,
    TransportUse,
    UnknownParameter,
    decode_asap,
)
from rserpool.wire.params import POLICY_FIELDS, encode_tlv

try:
    from rserpool._selector import hr_batch, hr_reply
except ImportError:  # pragma: no cover - the extension is built by `pip install -e .`
    hr_batch = hr_reply = None

if TYPE_CHECKING:
    import collections
    from collections.abc import Callable

    from rserpool.handlespace import Handlespace
    from rserpool.registrar import Registrar, RegistrarConfig

# The registrar's messages keep one logger, whichever of its files logs them.
log = logging.getLogger("rserpool.registrar")

MAX_MAX_HANDLE_RESOLUTION_ITEMS = 128  # cap for the PU's Handle Resolution Option

_HDR = struct.Struct("!BBH")
_TLVH = struct.Struct("!HH")
_U32 = struct.Struct("!I")


def operation_error(cause: int, info: bytes = b"") -> OperationError:
    return OperationError((ErrorCause(int(cause), info),))


# ---------------------------------------------------------------------------------------------
# Timers


class DeadlineTimer:
    """One entry's timer (keep-alive, expiry) that is cheap to move to a later time.

    Why: every re-registration (a load report) and keep-alive ack pushes an entry's timers back;
    cancelling and re-creating an event-loop timer each time cost about a third of a load
    report's handling. Here the loop's timer stays where it is and, if it fires before the
    deadline it then has, re-schedules itself for it: ``callback(key)`` runs at the last deadline
    set, as with ``call_later``. Moving it earlier re-creates the loop's timer."""

    __slots__ = ("_loop", "when", "callback", "key", "_at", "_handle", "live")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float,
                 callback: Callable[[tuple[bytes, int]], None], key: tuple[bytes, int]) -> None:
        self._loop = loop
        self.when = when
        self.callback = callback
        self.key = key
        self._at = when
        self._handle = loop.call_at(when, self._fire)
        self.live = True

    def move(self, when: float, callback: Callable[[tuple[bytes, int]], None]) -> bool:
        """Set a new deadline and callback; False if this timer cannot (it fired, was cancelled,
        or the deadline is earlier than its loop timer): make a new one then."""
        if not self.live or when < self._at:
            return False
        self.when = when
        self.callback = callback
        return True

    def _fire(self) -> None:
        if self.when > self._at:  # moved later since it was scheduled
            self._at = self.when
            self._handle = self._loop.call_at(self.when, self._fire)
            return
        self.live = False
        self.callback(self.key)

    def cancel(self) -> None:
        self.live = False
        self._handle.cancel()


def set_deadline(timers: dict[tuple[bytes, int], DeadlineTimer], loop: asyncio.AbstractEventLoop,
                 key: tuple[bytes, int], delay: float, callback: Callable[[tuple[bytes, int]], None]) -> None:
    """``timers[key]`` calls ``callback(key)`` in ``delay`` s, replacing whatever was pending."""
    when = loop.time() + delay
    old = timers.get(key)
    if old is not None:
        if old.move(when, callback):
            return
        old.cancel()
    timers[key] = DeadlineTimer(loop, when, callback, key)


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


class AsapPeer:
    """State of one ASAP connection (a PE's or a PU's association with us)."""

    __slots__ = ("registrar", "conn", "entries", "rates", "bad", "peer_host", "outbound", "reg_cache", "hr_ctx",
                 "__weakref__")

    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar
        self.conn: tp.MessageConnection | None = None
        self.entries: set[tuple[bytes, int]] = set()
        self.rates: RateTracker | None = None  # its request rates (rserpool.ratelimit), if limited
        self.bad = 0  # messages of it we had to drop or refuse (``RegistrarConfig.max_bad_messages``)
        self.peer_host = "?"
        self.outbound = False  # our connection to a taken-over PE's user transport
        # (pool handle, PE id) -> what a load-only re-registration may skip (``_fast_reregistration``)
        self.reg_cache: dict[tuple[bytes, int], _RegCache] = {}
        # What the transport's C read loop (``_selector.sctp_drain``) answers Handle Resolutions from
        # (the objects ``answer_batch`` passes to ``hr_batch``; the limits are read at each read)
        hs = registrar.handlespace
        self.hr_ctx: tuple[Any, ...] | None = (
            None if hr_batch is None else
            (hs._pools, registrar._pe_cache, registrar._hr_heads, registrar.config, hs, registrar.stats))

    def forget(self, key: tuple[bytes, int]) -> None:
        """This connection no longer registers the entry ``key``: nor may its cached registration
        (which holds the entry and its pool's selection) serve a load report."""
        self.entries.discard(key)
        self.reg_cache.pop(key, None)

    def connection_made(self, conn: tp.MessageConnection) -> None:
        loop = self.registrar._loop
        if isinstance(conn, tp.TCPMessageProtocol) and conn.framing is tp.Framing.ASAP and loop is not None:
            conn = _CoalescingConn(conn, loop)
        self.conn = conn
        self.peer_host = conn.peer[0] if conn.peer else "?"
        self.registrar._peers.add(self)

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        self.registrar._handle_asap(self, data, ppid)

    def answer_batch(self, conn: tp.MessageConnection, msgs: list[tuple[bytes, int, int]], start: int,
                     out: list[tuple[bytes, int]]) -> int:
        """The transport's hook for an SCTP read burst: the plain Handle Resolutions from
        ``msgs[start]`` on are answered in C (``_selector.hr_batch``, as ``_handle_asap`` answers
        them through ``hr_reply``); returns the index of the first message left to
        ``message_received``. Why: per message, the Python dispatch cost more than the answer."""
        reg = self.registrar
        if hr_batch is None or self.conn is not conn or reg.config.max_hr_rate > 0:
            return start
        hs = reg.handlespace
        before = len(out)
        try:
            end: int = hr_batch(msgs, start, out, hs._pools, reg._pe_cache, reg._hr_heads, reg.config.max_hr_items,
                                hs.max_increment)
        except Exception:  # a bug: what it answered stands (one reply each), the rest goes the Python way
            log.exception("C handle resolution failed on %s", self.peer_host)
            end = start + len(out) - before
        if end > start:
            reg.stats["handle_resolution"] += end - start
        return end

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        self.registrar._peers.discard(self)
        self.registrar._connection_gone(self)


# ---------------------------------------------------------------------------------------------
# The ASAP handlers


class AsapRole:
    """The ASAP handlers of ``Registrar`` (a base class of it; they use its state, declared here)."""

    if TYPE_CHECKING:
        config: RegistrarConfig
        identifier: int
        kind: str
        handlespace: Handlespace
        stats: collections.Counter[str]
        _loop: asyncio.AbstractEventLoop | None
        _peers: set[AsapPeer]
        _dispatch: dict[int, Callable[[AsapPeer, Any, bytes], None]]
        _ka_timers: dict[tuple[bytes, int], DeadlineTimer]
        _expiry_timers: dict[tuple[bytes, int], DeadlineTimer]
        _pe_cache: dict[tuple[bytes, int], tuple[bytes, bytes]]
        _hr_heads: dict[bytes, bytes]
        _ka_msgs: dict[tuple[bytes, int, int], bytes]
        _audits: dict[tuple[bytes, int], float]

        def _log_once(self, host: str, kind: str, msg: str, *args: object) -> None: ...
        def _notify(self, action: str, entry: PoolEntry, reason: str) -> None: ...
        def _now_ms(self) -> float: ...
        def _remove(self, entry: PoolEntry, reason: str) -> None: ...
        def _arm_expiry(self, entry: PoolEntry) -> None: ...
        def _expired(self, key: tuple[bytes, int]) -> None: ...

    # ---------------------------------------------------------------- ASAP dispatch

    def _handle_asap(self, peer: AsapPeer, data: bytes, ppid: int) -> None:
        # One guard for everything, the fast paths included: a bug in one handler must not take the
        # registrar down nor lose the messages read with this one (a try costs nothing in 3.11).
        try:
            if ppid not in (tp.PPID_ASAP, 0):
                self._log_once(peer.peer_host, "ppid", "PPID %d on the ASAP port", ppid)
                self._penalize(peer)
                return
            mtype = data[0]
            if mtype == 0x05:
                # Hot path: a plain Handle Resolution is answered in one C call (``_selector.hr_reply``
                # says when it declines), else parsed in place (pool handle [+ option]) here.
                if hr_reply is not None and peer.conn is not None and self.config.max_hr_rate <= 0:
                    hs = self.handlespace
                    reply = hr_reply(data, hs._pools, self._pe_cache, self._hr_heads, self.config.max_hr_items,
                                     hs.max_increment)
                    if reply is not None:
                        self.stats["handle_resolution"] += 1
                        peer.conn.send(reply)
                        return
                handle, items = _fast_hr(data)
                if handle is not None:
                    self._resolve(peer, handle, items)
                    return
            elif mtype == 0x01:
                if self.config.max_reg_rate > 0 and registration_refused(peer, self.config.max_reg_rate):
                    self._refuse_registration(peer, data)  # before decoding: a flood must cost little
                    return
                if peer.reg_cache and self._fast_reregistration(peer, data):
                    return
            elif mtype == 0x08:
                ids = _keepalive_ack_ids(data)
                if ids is not None:
                    self._keepalive_acked(peer, ids[0], ids[1])
                    return
            if mtype not in ASAP_MESSAGES:
                self.stats["unrecognized_message"] += 1
                self._log_once(peer.peer_host, "unrecognized", "unrecognized ASAP message type 0x%02x", mtype)
                self._send_error(peer, CauseCode.UNRECOGNIZED_MESSAGE, data[:1024])
                self._penalize(peer)
                return
            try:
                msg = decode_asap(data)
            except CodecError as exc:
                self._log_once(peer.peer_host, "malformed", "malformed ASAP message: %s", exc)
                self._penalize(peer)
                return
            if not self._check_unknown_params(peer, msg):
                self._penalize(peer)
                return
            handler = self._dispatch.get(mtype)
            if handler is None:
                self._log_once(peer.peer_host, f"type{mtype}", "unexpected %s at a registrar", type(msg).__name__)
                self._penalize(peer)
                return
            handler(peer, msg, data)
        except Exception:
            log.exception("error handling ASAP message type 0x%02x from %s", data[0] if data else -1,
                          peer.peer_host)

    def _check_unknown_params(self, peer: AsapPeer, msg: Any) -> bool:
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

    def _penalize(self, peer: AsapPeer) -> None:
        """Count a message of ``peer`` we dropped or refused; abort its association at the limit.

        Why: answering or even parsing an abusive peer's stream costs the registrar time that its
        legitimate users wait for; an RFC-conforming PE or PU never gets here (the rate limits are
        off unless configured), so ``max_bad_messages`` (0 = never) only ever ends abuse."""
        peer.bad += 1
        limit = self.config.max_bad_messages
        if 0 < limit <= peer.bad and peer.conn is not None and not peer.conn.is_closing():
            self.stats["aborted_abusive"] += 1
            # once per peer: a reconnecting flood would otherwise flood the log as well
            self._log_once(peer.peer_host, "aborted", "aborting the association: %d messages dropped or refused",
                           peer.bad)
            peer.conn.abort()

    def _refuse_registration(self, peer: AsapPeer, data: bytes) -> None:
        """A Registration over the rate limit: "Rejected due to security considerations"."""
        self.stats["registration_refused"] += 1
        self._log_once(peer.peer_host, "reg-rate", "registration rate above %g/s: refused", self.config.max_reg_rate)
        ids = _registration_ids(data)
        if ids is not None:
            self._reply_registration(peer, ids[0], ids[1], HsCause.REJECTED_SECURITY)
        self._penalize(peer)

    def _send_error(self, peer: AsapPeer, cause: int, info: bytes) -> None:
        if peer.conn is not None:
            peer.conn.send(AsapError(error=operation_error(cause, info)).encode())

    # ---------------------------------------------------------------- registration

    def _on_registration(self, peer: AsapPeer, msg: Registration, data: bytes) -> None:
        self.stats["registration"] += 1
        pe = msg.pool_element
        handle = msg.pool_handle
        ident = pe.identifier
        # What ``_fast_reregistration`` may take as "the last registration" is this one from now on,
        # or nothing: one the full path refuses or cannot cache must not leave an older one behind.
        peer.reg_cache.pop((handle, ident), None)
        user = pe.user_transport
        # A PE that registers a wildcard (or no) address means "the address you see me at".
        if (not user.addresses or any(tp.is_unspecified(a) for a in user.addresses)) and peer.conn and peer.conn.peer:
            user = type(user)(user.port, (peer.conn.peer[0],), *transport_tail(user))
        try:
            policy = policy_from_wire(pe.policy)
        except ValueError:
            self._reply_registration(peer, handle, ident, HsCause.INVALID_VALUES)
            return
        existing = self.handlespace.get(handle, ident)
        if existing is not None and existing.registrator is not peer and isinstance(existing.registrator, AsapPeer):
            old: AsapPeer = existing.registrator
            # The same host re-registering over a new association (reconnect) takes the entry over;
            # another host claiming the identifier is refused by the handlespace (non-unique ID).
            if old.peer_host == peer.peer_host or old.conn is None or old.conn.is_closing():
                old.forget((handle, ident))
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
        reply = self._reply_registration(peer, handle, ident, cause)
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
        if log.isEnabledFor(logging.INFO):
            log.info("%s $%08x in pool %r (%s)", "registered" if is_new else "re-registered", ident, handle,
                     policy.to_dict()["name"])
        self._notify("add" if existing is None else "update", entry, "registration")
        pool = self.handlespace.pool(handle)
        if reply is not None and entry.registrator is peer and not msg.extra and not pe.extra and pool is not None:
            _remember_registration(peer, key, data, entry, pe.policy, reply, pool.selection)

    def _fast_reregistration(self, peer: AsapPeer, data: bytes) -> bool:
        """A re-registration that differs from the last one this peer made for the PE only in the
        policy's values (a load report), applied without the codec; False: take the full path.

        Why: a PE farm reporting loads re-registers all the time (benchmarks/registrar.py: 200/s),
        and the full decode, checks and reply encoding cost a registrar about ten handle
        resolutions each. What the full path did for the same bytes (the checks, the unknown-
        parameter handling, the wildcard address) holds again, so only the new policy values are
        applied, as ``_on_registration`` applies them to an existing entry of this peer."""
        ids = _registration_ids(data)
        if ids is None:
            return False
        c = peer.reg_cache.get(ids)
        if c is None:
            return False
        old, vs, ve, fields, entry, reply, selection = c
        if (len(data) != len(old) or data[:vs] != old[:vs] or data[ve:] != old[ve:]
                or entry.registrator is not peer or entry.home_pr != self.identifier
                or self.handlespace.get(ids[0], ids[1]) is not entry):
            return False
        # policy_from_wire() of the new values: the type is the old one (the same bytes), the
        # fields the type does not carry are 0 as they were
        try:
            policy = PolicyInfo(entry.policy.policy_type,
                                **dict(zip(fields[1], fields[0].unpack_from(data, vs), strict=True)))
        except ValueError:
            return False
        self.stats["registration"] += 1
        selection.update_policy(entry, policy)  # what Handlespace.register does to an existing entry
        entry.updated_at = self._now_ms()
        if peer.conn is not None:
            peer.conn.send(reply)
        self._pe_cache.pop(ids, None)
        self._arm_keepalive(entry, self.config.keepalive_interval)
        self._arm_expiry(entry)
        if log.isEnabledFor(logging.INFO):
            log.info("%s $%08x in pool %r (%s)", "re-registered", ids[1], ids[0], policy.to_dict()["name"])
        self._notify("update", entry, "registration")
        return True

    def _reply_registration(self, peer: AsapPeer, handle: bytes, ident: int, cause: HsCause) -> bytes | None:
        """Send the Registration Response; returns its bytes (None if nothing or a substitute was sent)."""
        if peer.conn is None:
            return None
        if cause == HsCause.OKAY:
            resp = RegistrationResponse(pool_handle=handle, identifier=ident)
        else:
            resp = RegistrationResponse(pool_handle=handle, identifier=ident, reject=True,
                                        error=operation_error(int(cause)))
        try:
            out = resp.encode()
        except CodecError:  # e.g. an over-long pool handle cannot be echoed
            resp = RegistrationResponse(pool_handle=b"?", identifier=ident & 0xFFFFFFFF, reject=True,
                                        error=operation_error(int(CauseCode.INVALID_VALUES)))
            peer.conn.send(resp.encode())
            return None
        peer.conn.send(out)
        return out

    def _registrator_transport(self, peer: AsapPeer) -> object:
        if peer.conn is None or peer.conn.peer is None:
            return None
        host, port = peer.conn.peer
        cls = SctpTransport if self.kind == "sctp" else TcpTransport
        return cls(port, (host,), TransportUse.DATA_ONLY)

    def _on_deregistration(self, peer: AsapPeer, msg: Deregistration, data: bytes) -> None:
        self.stats["deregistration"] += 1
        entry = self.handlespace.get(msg.pool_handle, msg.identifier)
        if entry is not None:
            self._remove(entry, "deregistration")
        if peer.conn is not None:
            peer.conn.send(DeregistrationResponse(pool_handle=msg.pool_handle, identifier=msg.identifier).encode())

    def _connection_gone(self, peer: AsapPeer) -> None:
        for key in list(peer.entries):
            entry = self.handlespace.get(*key)
            if entry is not None and entry.registrator is peer:
                self._remove(entry, "connection-lost")
        peer.entries.clear()

    # ---------------------------------------------------------------- handle resolution

    def _on_handle_resolution(self, peer: AsapPeer, msg: HandleResolution, data: bytes) -> None:
        self._resolve(peer, msg.pool_handle, msg.items or 0)

    def _resolve(self, peer: AsapPeer, handle: bytes, items: int) -> None:
        self.stats["handle_resolution"] += 1
        conn = peer.conn
        if conn is None:
            return
        cfg = self.config
        # (the limit is looked at first: this is the hot path, and it is off by default)
        if cfg.max_hr_rate > 0 and handle_resolution_refused(peer, handle, cfg.max_hr_rate):
            self.stats["handle_resolution_refused"] += 1
            self._log_once(peer.peer_host, "hr-rate", "handle resolution rate above %g/s: refused",
                           cfg.max_hr_rate)
            conn.send(self._hr_error(handle, CauseCode.REJECTED_SECURITY))
            self._penalize(peer)
            return
        if len(handle) > MAX_POOL_HANDLE_SIZE:
            self._log_once(peer.peer_host, "handle", "pool handle of %d bytes", len(handle))
            self._send_error(peer, CauseCode.INVALID_VALUES, b"")
            self._penalize(peer)
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

    def _encode_entry(self, e: PoolEntry) -> tuple[bytes, bytes]:
        """(Pool Element TLV, Pool Policy TLV) of an entry, cached until it changes."""
        pol = policy_to_wire(e.policy)
        pe = PoolElement(e.identifier, e.home_pr, e.registration_life, e.user_transport, pol)  # type: ignore[arg-type]
        return pe.encode(), pol.encode()

    # ---------------------------------------------------------------- monitoring

    def _set_ka_timer(self, key: tuple[bytes, int], delay: float,
                      callback: Callable[[tuple[bytes, int]], None]) -> None:
        """The entry's one monitoring timer: whatever was pending is replaced, ``callback(key)`` in ``delay`` s."""
        assert self._loop is not None
        set_deadline(self._ka_timers, self._loop, key, delay, callback)

    def _arm_keepalive(self, entry: PoolEntry, delay: float) -> None:
        self._set_ka_timer((entry.pool_handle, entry.identifier), delay, self._keepalive_due)

    def _keepalive_due(self, key: tuple[bytes, int]) -> None:
        entry = self.handlespace.get(*key)
        if entry is None:
            return
        self.send_keepalive(entry, home=False)
        self._set_ka_timer(key, self.config.keepalive_timeout, self._keepalive_timeout)

    def send_keepalive(self, entry: PoolEntry, home: bool = False) -> bool:
        """Send an Endpoint Keep-Alive (``home=True``: "I am your new home registrar", for takeover)."""
        reg = entry.registrator
        if not isinstance(reg, AsapPeer) or reg.conn is None:
            return False
        self.stats["keepalive_sent"] += 1
        if home:
            data = EndpointKeepAlive(server_id=self.identifier, pool_handle=entry.pool_handle,
                                     identifier=entry.identifier, home=True).encode()
        else:  # the regular ones (one per PE every keep-alive interval) are the same bytes each time
            key = (entry.pool_handle, entry.identifier, self.identifier)
            cache = self._ka_msgs
            data = cache.get(key)  # type: ignore[assignment]
            if data is None:
                if len(cache) >= _MAX_REG_CACHE:
                    cache.clear()
                data = cache[key] = EndpointKeepAlive(server_id=self.identifier, pool_handle=entry.pool_handle,
                                                      identifier=entry.identifier).encode()
        reg.conn.send(data)
        return True

    def _keepalive_timeout(self, key: tuple[bytes, int]) -> None:
        self._ka_timers.pop(key, None)
        entry = self.handlespace.get(*key)
        if entry is None:
            return
        log.info("keep-alive timeout for $%08x of pool %r -> removing it", key[1], key[0])
        reg = entry.registrator
        self._remove(entry, "keepalive-timeout")
        if isinstance(reg, AsapPeer) and reg.conn is not None:
            reg.conn.abort()  # as RSPLIB: ABORT the PE's association

    def _on_keepalive_ack(self, peer: AsapPeer, msg: EndpointKeepAliveAck, data: bytes) -> None:
        self._keepalive_acked(peer, msg.pool_handle, msg.identifier)

    def _keepalive_acked(self, peer: AsapPeer, handle: bytes, ident: int) -> None:
        self.stats["keepalive_ack"] += 1
        entry = self.handlespace.get(handle, ident)
        if entry is None:
            self._log_once(peer.peer_host, "ka-unknown", "keep-alive ack for unknown PE $%08x", ident)
            return
        log.debug("keep-alive ack for $%08x of pool %r", ident, handle)
        if self._audits.pop((handle, ident), None) is not None:
            entry.unreachability_reports = 0  # it answered: the reports were false
            self.stats["unreachable_audit_passed"] += 1
        self._arm_keepalive(entry, self.config.keepalive_interval)

    def _on_unreachable(self, peer: AsapPeer, msg: EndpointUnreachable, data: bytes) -> None:
        self.stats["endpoint_unreachable"] += 1
        cfg = self.config
        if unreachable_report_refused(peer, msg.pool_handle, cfg.max_eu_rate):
            self.stats["endpoint_unreachable_refused"] += 1
            self._log_once(peer.peer_host, "eu-rate", "unreachable-report rate above %g/s: refused",
                           cfg.max_eu_rate)
            self._penalize(peer)
            return
        key = (msg.pool_handle, msg.identifier)
        entry = self.handlespace.get(*key)
        if entry is None:
            return
        entry.unreachability_reports += 1
        if key in self._audits:
            return  # a keep-alive is already out: its answer (or timeout) decides
        if (cfg.audit_unreachable and entry.unreachability_reports >= cfg.max_bad_pe_reports
                and isinstance(entry.registrator, AsapPeer) and entry.registrator.conn is not None):
            # Reports can be forged (RFC 5355 section 3.6): ask the PE itself before removing it;
            # the keep-alive timeout removes it if it is really gone.
            log.info("%d unreachability reports for $%08x -> asking it", entry.unreachability_reports,
                     msg.identifier)
            self.stats["unreachable_audit"] += 1
            assert self._loop is not None
            self._audits[key] = self._loop.time()
            self._keepalive_due(key)  # replaces the pending timer; the regular cycle resumes with the ack
            return
        if entry.unreachability_reports >= cfg.max_bad_pe_reports:
            log.info("%d unreachability reports for $%08x -> removing it", entry.unreachability_reports,
                     msg.identifier)
            self._remove(entry, "unreachable")


def _registration_ids(data: bytes) -> tuple[bytes, int] | None:
    """(pool handle, PE identifier) of a Registration (Pool Handle, Pool Element first), or None."""
    n = len(data)
    if n < 16:
        return None
    t, plen = _TLVH.unpack_from(data, 4)
    off = 4 + ((plen + 3) & ~3)
    if t != 0x0009 or plen < 4 or off + 8 > n:
        return None
    t2, _ = _TLVH.unpack_from(data, off)
    if t2 != 0x000A:
        return None
    return data[8:4 + plen], _U32.unpack_from(data, off + 4)[0]


_RegCache = tuple[bytes, int, int, tuple[struct.Struct, tuple[str, ...]], PoolEntry, bytes, SelectionPool]
"""(the registration's bytes, start and end of its policy values, their layout and ``PolicyInfo``
names, the entry, the reply, the entry's pool's selection)"""
_MAX_REG_CACHE = 65536  # per peer: entries of removed PEs stay until then (the entry check ignores them)
_FIELD_STRUCTS = {n: struct.Struct("!" + "I" * n) for n in range(1, 5)}


def _remember_registration(peer: AsapPeer, key: tuple[bytes, int], data: bytes, entry: PoolEntry,
                           policy: PoolPolicy, reply: bytes, selection: SelectionPool) -> None:
    """Keep what ``_fast_reregistration`` needs of a registration the full path accepted: where its
    policy values are (the Pool Policy parameter inside the Pool Element parameter)."""
    names = POLICY_FIELDS.get(policy.policy_type)
    if not names or policy.extra_bytes:
        return  # nothing that can change but the whole policy: always the full path
    n = len(data)
    _, plen = _TLVH.unpack_from(data, 4)
    pe = 4 + ((plen + 3) & ~3)
    _, pelen = _TLVH.unpack_from(data, pe)
    off, end = pe + 16, min(n, pe + pelen)  # after the PE's identifier, home registrar, life
    while off + 4 <= end:
        t, tlen = _TLVH.unpack_from(data, off)
        if tlen < 4:
            return
        if t == 0x0008:
            vs, ve = off + 8, off + 8 + 4 * len(names)
            if ve != off + tlen or ve > end:
                return
            cache = peer.reg_cache
            if len(cache) >= _MAX_REG_CACHE and key not in cache:
                cache.clear()
            attrs = tuple("weight" if n == "priority" else n for n in names)  # policy_from_wire's mapping
            cache[key] = (data, vs, ve, (_FIELD_STRUCTS[len(names)], attrs), entry, reply, selection)
            return
        off += (tlen + 3) & ~3


def _keepalive_ack_ids(data: bytes) -> tuple[bytes, int] | None:
    """(pool handle, PE identifier) of an Endpoint Keep-Alive Ack that is exactly Pool Handle +
    PE Identifier, parsed in place; None: anything else (the full decoder takes over)."""
    n = len(data)
    if n < 16 or data[1] != 0 or _HDR.unpack_from(data, 0)[2] != n:
        return None
    t, plen = _TLVH.unpack_from(data, 4)
    off = 4 + ((plen + 3) & ~3)
    if t != 0x0009 or plen < 4 or off + 8 != n:
        return None
    if data[off:off + 4] != b"\x00\x0e\x00\x08":
        return None
    return data[8:4 + plen], _U32.unpack_from(data, off + 4)[0]


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

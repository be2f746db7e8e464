"""Message transports for ASAP: SCTP where the kernel has it, TCP where it does not, and UDP multicast.

One place decides which transport carries ASAP (``transport_kind()``): SCTP one-to-one sockets
(``SOCK_STREAM``/``IPPROTO_SCTP``) when the kernel supports them, TCP otherwise, with the environment
override ``RSERPOOL_TRANSPORT=sctp|tcp``. Both are exposed as *message* connections: the
application sends and receives whole messages tagged with an SCTP payload protocol identifier (PPID).

Framing
-------
* SCTP: one SCTP user message per ASAP message; the PPID travels in ``struct sctp_sndrcvinfo``
  (``SCTP_SNDRCV`` ancillary data), exactly as RSPLIB sends it, so RSPLIB peers interoperate.
* TCP, ``Framing.ASAP`` (registrar port 3863): the byte stream is cut by each message's own
  length field (ASAP/ENRP common header: type u8, flags u8, length u16 including the header). This is
  what tshark decodes as ASAP on TCP 3863. The PPID is implied (11 = ASAP).
* TCP, ``Framing.TAGGED`` (PU<->PE session channels): ASAP control messages (business card, cookie,
  cookie echo) share the channel with application data (e.g. CalcApp, PPID 34) whose message types
  overlap ASAP's, so each message is preceded by an 8-byte tag: PPID u32, payload length u32 (network
  order). SCTP needs no tag: its PPID does the demultiplexing.

Multicast announces (ASAP_SERVER_ANNOUNCE, RSPLIB default group 239.0.0.50:3863) use plain UDP:
``rserpool.multicast``. Network changes (routes, addresses, links) are watched by
``rserpool.routewatch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import functools
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Protocol

try:  # batched SCTP message I/O (recvmmsg/sendmmsg), in the C extension; see _selector.c for why
    from rserpool._selector import sctp_drain, sctp_recv_batch, sctp_send_batch
except ImportError:  # pragma: no cover - the extension is built by `pip install -e .`
    sctp_drain = sctp_recv_batch = sctp_send_batch = None

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Constants (RFC 5352 / IANA). Duplicated here on purpose: the transport must not import the codec.
ASAP_PORT = 3863
ENRP_PORT = 9901
PPID_ASAP = 11
PPID_ENRP = 12
ASAP_ANNOUNCE_GROUP = "239.0.0.50"
ENRP_ANNOUNCE_GROUP = "239.0.0.51"
DEFAULT_ANNOUNCE_TTL = 30  # REGISTRAR_DEFAULT_ANNOUNCE_TTL in RSPLIB's rspregistrar.h
MAX_MESSAGE_SIZE = 65536  # RSPLIB's REGISTRAR_RSERPOOL_MESSAGE_BUFFER_SIZE

ENV_TRANSPORT = "RSERPOOL_TRANSPORT"

# Linux SCTP socket API numbers (linux/sctp.h); Python's socket module does not export them.
IPPROTO_SCTP = getattr(socket, "IPPROTO_SCTP", 132)
SOL_SCTP = IPPROTO_SCTP
SCTP_NODELAY = 3
SCTP_EVENTS = 11
SCTP_SNDRCV = 1  # cmsg type carrying struct sctp_sndrcvinfo
MSG_NOTIFICATION = 0x8000
# struct sctp_sndrcvinfo: u16 stream, u16 ssn, u16 flags, (2 pad), u32 ppid, u32 context,
# u32 timetolive, u32 tsn, u32 cumtsn, s32 assoc_id -> 32 bytes. The PPID is opaque to the
# kernel and goes on the wire as given, so RSPLIB (and we) store it in network byte order.
_SNDRCV = struct.Struct("=HHH2x4sIIIIi")
assert _SNDRCV.size == 32
_PPID_OFFSET = 8  # of the PPID inside struct sctp_sndrcvinfo
_CMSG_SPACE = socket.CMSG_SPACE(_SNDRCV.size)
# The ancillary data of a send per PPID (a handful of PPIDs are ever used): built once, not per message.
_SEND_CMSG: dict[int, list[tuple[int, int, bytes]]] = {}


class TransportError(OSError):
    """A transport could not be set up (e.g. SCTP requested but not supported by the kernel)."""


class FramingError(ValueError):
    """A peer sent a byte stream that cannot be cut into messages (bad length field)."""


@functools.cache
def sctp_available() -> bool:
    """True if the kernel can create SCTP sockets (probed once per process, cached)."""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_SCTP)
    except OSError:
        return False
    s.close()
    return True


def transport_kind() -> str:
    """The transport that carries ASAP here: ``"sctp"`` or ``"tcp"`` (the one place that decides).

    ``RSERPOOL_TRANSPORT`` forces one; forcing ``sctp`` on a kernel without it is an error
    rather than a silent fallback, so a test lane that asks for SCTP really gets SCTP.
    """
    forced = os.environ.get(ENV_TRANSPORT, "").strip().lower()
    if forced == "tcp":
        return "tcp"
    if forced == "sctp":
        if not sctp_available():
            raise TransportError(
                errno.EPROTONOSUPPORT, f"{ENV_TRANSPORT}=sctp but this kernel has no SCTP sockets"
            )
        return "sctp"
    if forced:
        raise TransportError(errno.EINVAL, f"{ENV_TRANSPORT} must be 'sctp' or 'tcp', not {forced!r}")
    return "sctp" if sctp_available() else "tcp"


# ---------------------------------------------------------------------------------------------
# Addresses


def parse_endpoint(text: str, default_port: int = ASAP_PORT, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """Parse ``ADDR``, ``ADDR:PORT``, ``:PORT``, ``[V6]:PORT`` into ``(host, port)``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
        return host, port
    if text.count(":") > 1:  # bare IPv6 address
        return text, default_port
    host, sep, port_text = text.partition(":")
    if not sep:
        return (host or default_host), default_port
    return (host or default_host), int(port_text)


def format_endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_unspecified(host: str) -> bool:
    """Whether ``host`` is a wildcard address ("any"), not one a peer can be reached at."""
    return host in ("0.0.0.0", "::", "")


def _family(host: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET


# ---------------------------------------------------------------------------------------------
# Message connections


class Framing(enum.Enum):
    ASAP = "asap"  # cut by the message's own length field; PPID implied
    TAGGED = "tagged"  # 8-byte (PPID, length) tag before each message


class MessageHandler(Protocol):
    """What a message connection reports to (registrar, PE, PU...)."""

    def connection_made(self, conn: MessageConnection) -> None: ...

    def message_received(self, conn: MessageConnection, data: bytes, ppid: int) -> None: ...

    def connection_lost(self, conn: MessageConnection, exc: BaseException | None) -> None: ...

    # Optional, SCTP with the C extension: ``hr_ctx`` (the registrar's state, see ``_selector.c``'s
    # ``sctp_drain``) lets a read burst of plain Handle Resolutions be answered without Python.
    # Optional, SCTP with the C extension: ``answer_batch(conn, msgs, start, out) -> index`` may
    # answer whole messages of a read burst (``msgs`` as ``sctp_recv_batch`` returns them) from
    # ``msgs[start]`` on, appending (reply, ppid) to ``out`` (they leave with the burst's other
    # sends, in order); it returns the index of the first message left to ``message_received``.


class MessageConnection(Protocol):
    """A connected message channel: TCP with framing, or an SCTP association."""

    kind: str
    peer: tuple[str, int] | None
    local: tuple[str, int] | None
    user_data: object

    def send(self, data: bytes, ppid: int = PPID_ASAP) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def is_closing(self) -> bool: ...


_TAG = struct.Struct("!II")
_LEN = struct.Struct("!H")


class TCPMessageProtocol(asyncio.Protocol):
    """asyncio Protocol cutting a TCP byte stream into messages (tight loop: the registrar's hot path)."""

    kind = "tcp"

    def __init__(self, handler: MessageHandler, framing: Framing = Framing.ASAP,
                 max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.handler = handler
        self.framing = framing
        self.max_size = max_size
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.user_data: object = None
        self._buf = bytearray()
        self._closed = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.peer = (peer[0], peer[1]) if peer else None
        self.local = (local[0], local[1]) if local else None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.handler.connection_made(self)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        handler = self.handler
        pos = 0
        end = len(buf)
        try:
            if self.framing is Framing.ASAP:
                while end - pos >= 4:
                    (length,) = _LEN.unpack_from(buf, pos + 2)
                    if length < 4:
                        raise FramingError(f"message length {length} < 4")
                    if pos + length > end:
                        break
                    msg = bytes(buf[pos:pos + length])
                    pos += length
                    handler.message_received(self, msg, PPID_ASAP)
                    if self._closed:
                        return
            else:
                while end - pos >= 8:
                    ppid, length = _TAG.unpack_from(buf, pos)
                    if length > self.max_size:
                        raise FramingError(f"tagged message length {length} > {self.max_size}")
                    if pos + 8 + length > end:
                        break
                    msg = bytes(buf[pos + 8:pos + 8 + length])
                    pos += 8 + length
                    handler.message_received(self, msg, ppid)
                    if self._closed:
                        return
        except FramingError as exc:
            log.warning("closing %s: unframeable stream (%s)", self.peer, exc)
            self.abort()
            return
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.handler.connection_lost(self, exc)

    # -- MessageConnection
    def send(self, data: bytes, ppid: int = PPID_ASAP) -> None:
        if self.transport is None or self._closed:
            return
        if self.framing is Framing.TAGGED:
            self.transport.write(_TAG.pack(ppid, len(data)) + data)
        else:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self._closed:
            self._closed = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self._closed = True
            self.transport.abort()

    def is_closing(self) -> bool:
        return self._closed or self.transport is None or self.transport.is_closing()


class SCTPMessageConnection:
    """One SCTP association on a one-to-one (SOCK_STREAM) socket, driven by add_reader/add_writer.

    Message boundaries come from MSG_EOR; the PPID of received data from the SCTP_SNDRCV cmsg
    (enabled with the ``sctp_data_io_event`` subscription); sent data carries its PPID the same way.

    With the C extension, a readable socket is drained with one ``recvmmsg()`` per 16 messages and
    what the handler sends while it handles them leaves, in order, with one ``sendmmsg()`` at the
    end of that read burst (or before a close or abort the handler asks for). Why: under the
    real-kernel lane's qemu every system call is dear, and a registrar answering several
    requests in flight paid a ``recvmsg`` and a ``sendmsg`` per message plus one ``recvmsg`` that
    ends in EAGAIN per burst (``_selector.c`` has the figures).
    """

    kind = "sctp"

    def __init__(self, sock: socket.socket, handler: MessageHandler,
                 loop: asyncio.AbstractEventLoop, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self.sock = sock
        self.handler = handler
        self.loop = loop
        self.max_size = max_size
        self.user_data: object = None
        sock.setblocking(False)
        _sctp_configure(sock)
        try:
            p = sock.getpeername()
            self.peer: tuple[str, int] | None = (p[0], p[1])
        except OSError:
            self.peer = None
        try:
            s = sock.getsockname()
            self.local: tuple[str, int] | None = (s[0], s[1])
        except OSError:
            self.local = None
        self._partial = bytearray()
        self._outq: list[tuple[bytes, int]] = []
        self._batch: list[tuple[bytes, int]] | None = None  # sends of the read burst being handled
        self._closed = False
        self._fd = sock.fileno()
        if sctp_recv_batch is None:
            loop.add_reader(self._fd, self._on_readable)
        elif getattr(handler, "hr_ctx", None) is not None:
            loop.add_reader(self._fd, sctp_drain, self)  # C until it needs Python (``_burst``)
        else:
            loop.add_reader(self._fd, self._on_readable_batched)
        # synchronous, like asyncio's TCP transports: callers may send right after connect()
        # returns (reader callbacks cannot run before we are back in the event loop)
        handler.connection_made(self)

    def _on_readable(self) -> None:
        # This is the registrar's per-message path over SCTP: names are bound once per burst.
        recvmsg, max_size, partial = self.sock.recvmsg, self.max_size, self._partial
        received = self.handler.message_received
        for _ in range(64):  # bounded burst so one busy association cannot starve the loop
            try:
                data, ancdata, flags, _addr = recvmsg(max_size, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._shutdown(exc)
                return
            if not data and not (flags & MSG_NOTIFICATION):
                self._shutdown(None)
                return
            if flags & MSG_NOTIFICATION:
                continue  # only data_io is subscribed; tolerate anything else
            ppid = 0
            for level, ctype, cdata in ancdata:
                if level == SOL_SCTP and ctype == SCTP_SNDRCV and len(cdata) >= _SNDRCV.size:
                    ppid = int.from_bytes(cdata[_PPID_OFFSET:_PPID_OFFSET + 4], "big")
            if flags & socket.MSG_EOR and not partial:
                received(self, data, ppid)  # a whole message in one read: no copy
            else:
                partial += data
                if len(partial) > max_size:
                    log.warning("aborting SCTP association %s: message larger than %d", self.peer, max_size)
                    self.abort()
                    return
                if not flags & socket.MSG_EOR:
                    continue
                msg = bytes(partial)
                partial.clear()
                received(self, msg, ppid)
            if self._closed:
                return

    def _on_readable_batched(self) -> None:
        """``_on_readable`` with the C extension's ``recvmmsg()``; the burst's sends go out together."""
        self._burst(None, 0, [])

    def _burst(self, first: list[tuple[bytes, int, int]] | None, start: int, out: list[tuple[bytes, int]]) -> None:
        """A read burst: ``first[start:]`` (already read, ``out`` the answers so far; from
        ``sctp_drain``) or nothing, then up to 64 messages in all from the socket."""
        max_size, partial, fd = self.max_size, self._partial, self._fd
        received = self.handler.message_received
        answer = getattr(self.handler, "answer_batch", None)
        self._batch = out
        try:
            for _ in range(4):  # bounded burst (64 messages) so one busy association cannot starve the loop
                if first is not None:
                    msgs, i, first = first, start, None
                else:
                    try:
                        msgs = sctp_recv_batch(fd, max_size, 16)
                    except OSError as exc:
                        self._end_batch()
                        self._shutdown(exc)
                        return
                    i = 0
                m = len(msgs)
                while i < m:
                    if answer is not None and not partial:
                        try:
                            i = answer(self, msgs, i, out)
                        except Exception:  # how far it got is unknown: the rest goes one by one
                            log.exception("answer_batch failed on SCTP association %s", self.peer)
                            answer = None
                        if i >= m:
                            break
                    data, flags, ppid = msgs[i]
                    i += 1
                    if flags & MSG_NOTIFICATION:
                        continue  # only data_io is subscribed; tolerate anything else
                    if not data:
                        self._end_batch()
                        self._shutdown(None)
                        return
                    if not flags & socket.MSG_EOR or partial:
                        partial += data
                        if len(partial) > max_size:
                            log.warning("aborting SCTP association %s: message larger than %d", self.peer, max_size)
                            self.abort()
                            return
                        if not flags & socket.MSG_EOR:
                            continue
                        data = bytes(partial)
                        partial.clear()
                    # The rest of this batch is read already (unlike one recvmsg() per message, an
                    # exception here would lose it): a handler's bug costs its one message only.
                    try:
                        received(self, data, ppid)
                    except Exception:
                        log.exception("error handling a message from SCTP association %s", self.peer)
                    if self._closed:
                        return
                if len(msgs) < 16:
                    return  # drained: no recvmsg() that ends in EAGAIN
        finally:
            self._end_batch()

    def _drain_error(self, exc: BaseException, msgs: list[tuple[bytes, int, int]], start: int,
                     out: list[tuple[bytes, int]] | None) -> None:
        """``sctp_drain`` failed after its read (a bug, or no memory): ``msgs[start:]`` are read but
        not handled and ``out`` holds answers whose side effects were applied. Why not just raise:
        the kernel would not give these messages again; Python carries on with them instead."""
        log.error("SCTP read path failed on association %s; continuing in Python", self.peer, exc_info=exc)
        self._burst(msgs, start, [] if out is None else out)

    def _drain_failed(self, exc: OSError) -> None:
        """``sctp_drain``'s read failed (the kernel reports an error once): the association is gone."""
        self._shutdown(exc)

    def _send_failed(self, exc: OSError) -> None:
        self.loop.call_soon(self._shutdown, exc)  # as ``_try_send``

    def _queue_unsent(self, out: list[tuple[bytes, int]], sent: int) -> None:
        """What a batch send left (the send buffer was full) waits for the writer."""
        self._outq.extend(out[sent:])
        self.loop.add_writer(self._fd, self._on_writable)

    def _end_batch(self) -> None:
        """Hand the sends collected during a read burst to the kernel (what does not fit: ``_outq``)."""
        out = self._batch
        self._batch = None
        if not out or self._fd < 0:
            return
        if self._outq:  # older messages still wait for the writer: these go behind them
            self._outq.extend(out)
            return
        try:
            n = sctp_send_batch(self._fd, out)
        except OSError as exc:
            self._send_failed(exc)
            return
        except (TypeError, ValueError, struct.error):  # an item it refuses (then nothing was sent)
            log.exception("dropping unsendable messages on SCTP association %s", self.peer)
            self._batch = [(d, p) for d, p in out if isinstance(d, bytes) and isinstance(p, int) and 0 <= p <= 0xFFFFFFFF]
            self._end_batch()
            return
        if n < len(out):
            self._queue_unsent(out, n)

    def send(self, data: bytes, ppid: int = PPID_ASAP) -> None:
        if self._closed:
            return
        if self._batch is not None:
            self._batch.append((data if type(data) is bytes else bytes(data), ppid))
            return
        if self._outq:
            self._outq.append((data, ppid))
            return
        if not self._try_send(data, ppid):
            self._outq.append((data, ppid))
            self.loop.add_writer(self._fd, self._on_writable)

    def _try_send(self, data: bytes, ppid: int) -> bool:
        cmsg = _SEND_CMSG.get(ppid)
        if cmsg is None:
            cmsg = _SEND_CMSG[ppid] = [(SOL_SCTP, SCTP_SNDRCV, _SNDRCV.pack(0, 0, 0, struct.pack("!I", ppid),
                                                                         0, 0, 0, 0, 0))]
        try:
            self.sock.sendmsg([data], cmsg)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self.loop.call_soon(self._shutdown, exc)
        return True

    def _on_writable(self) -> None:
        while self._outq:
            data, ppid = self._outq[0]
            if not self._try_send(data, ppid):
                return
            self._outq.pop(0)
        self.loop.remove_writer(self._fd)

    def _shutdown(self, exc: BaseException | None) -> None:
        if self._fd < 0:
            return
        self._closed = True
        self.loop.remove_reader(self._fd)
        self.loop.remove_writer(self._fd)
        self._fd = -1
        with contextlib.suppress(OSError):
            self.sock.close()
        self.handler.connection_lost(self, exc)

    def close(self) -> None:
        self._end_batch()  # what was said before the close leaves first, as it did unbatched
        self._closed = True
        if self._fd >= 0:
            self.loop.call_soon(self._shutdown, None)

    def abort(self) -> None:
        self._end_batch()  # handed to the kernel before the ABORT, as unbatched sends were
        # SO_LINGER with zero timeout turns close() into an SCTP ABORT (as RSPLIB's sendabort()).
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def is_closing(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Messages sent but not yet taken by the kernel (the send buffer was full, or a read
        burst's answers are still being collected)."""
        return len(self._outq) + len(self._batch or ())


def _sctp_configure(sock: socket.socket) -> None:
    # Subscribe to sctp_data_io_event only (first byte of struct sctp_event_subscribe) so that
    # every recvmsg() carries SCTP_SNDRCV with the PPID; Linux accepts a short optlen here.
    with contextlib.suppress(OSError):
        sock.setsockopt(SOL_SCTP, SCTP_EVENTS, bytes([1]))
    with contextlib.suppress(OSError):
        sock.setsockopt(SOL_SCTP, SCTP_NODELAY, 1)


class MessageServer:
    """A listening endpoint accepting message connections of the selected transport kind."""

    def __init__(self, kind: str, servers: list[asyncio.AbstractServer] | None = None,
                 sctp_socks: list[socket.socket] | None = None) -> None:
        self.kind = kind
        self._servers = servers or []
        self._sctp_socks = sctp_socks or []
        self.loop = asyncio.get_running_loop()

    @property
    def sockets(self) -> list[socket.socket]:
        if self._servers:
            return [s for srv in self._servers for s in srv.sockets]  # type: ignore[misc]
        return list(self._sctp_socks)

    @property
    def port(self) -> int:
        return self.sockets[0].getsockname()[1]

    def addresses(self) -> list[tuple[str, int]]:
        return [(s.getsockname()[0], s.getsockname()[1]) for s in self.sockets]

    def close(self) -> None:
        for srv in self._servers:
            srv.close()
        for s in self._sctp_socks:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(s.fileno())
            s.close()
        self._sctp_socks = []


async def start_server(handler_factory: Callable[[], MessageHandler], host: str, port: int,
                       framing: Framing = Framing.ASAP, kind: str | None = None,
                       reuse_port: bool = False, share_port: bool = False) -> MessageServer:
    """Listen on ``host:port``; each accepted connection gets ``handler_factory()`` as its handler.

    ``share_port`` (SCTP only): after the listening socket is bound (so that a second listener on
    the same endpoint still fails with EADDRINUSE), set SO_REUSEPORT on it, so that outgoing
    associations of this process can start from the very same port (``connect(..., local=(host,
    port), share_port=True)``), as RSPLIB's registrar does with its one-to-many ENRP socket: its
    peers accept a Presence only over an association from the ENRP endpoint it names."""
    kind = kind or transport_kind()
    loop = asyncio.get_running_loop()
    if kind == "tcp":
        srv = await loop.create_server(lambda: TCPMessageProtocol(handler_factory(), framing),
                                       host or None, port, reuse_address=True,
                                       reuse_port=reuse_port or None, backlog=1024)
        return MessageServer("tcp", servers=[srv])
    lsock = socket.socket(_family(host), socket.SOCK_STREAM, IPPROTO_SCTP)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(128)
    if share_port:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    lsock.setblocking(False)

    def on_accept() -> None:
        while True:
            try:
                csock, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("SCTP accept failed: %s", exc)
                return
            SCTPMessageConnection(csock, handler_factory(), loop)

    loop.add_reader(lsock.fileno(), on_accept)
    return MessageServer("sctp", sctp_socks=[lsock])


async def connect(handler: MessageHandler, host: str, port: int, framing: Framing = Framing.ASAP,
                  kind: str | None = None, timeout: float = 5.0,
                  local: tuple[str, int] | None = None, share_port: bool = False) -> MessageConnection:
    """Connect to ``host:port`` and return the message connection (handler gets the events).

    ``share_port`` (SCTP only): bind ``local`` with SO_REUSEPORT, i.e. start the association from
    the port of a listener started with ``start_server(..., share_port=True)``. The kernel still
    refuses (EADDRNOTAVAIL) a second association between the same two endpoints."""
    kind = kind or transport_kind()
    loop = asyncio.get_running_loop()
    if kind == "tcp":
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: TCPMessageProtocol(handler, framing), host, port,
                                   local_addr=local),
            timeout)
        return proto
    sock = socket.socket(_family(host), socket.SOCK_STREAM, IPPROTO_SCTP)
    try:
        sock.setblocking(False)
        if local is not None:
            if share_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(local)
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return SCTPMessageConnection(sock, handler, loop)

"""Tests of rserpool.transport: transport choice, TCP message framing, multicast, SCTP structures."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from rserpool import multicast, routewatch
from rserpool import transport as tp

from helpers.c_extension import need_c_extension

# The tests that need or exercise the kernel's SCTP are marked realkernel (the lane takes the SCTP
# paths there, not the fallbacks); the rest (framing, scripted sockets, the C read path over an
# AF_UNIX socket) need no SCTP and run in the normal suite.


def test_parse_endpoint_forms() -> None:
    assert tp.parse_endpoint("10.0.0.1:4000") == ("10.0.0.1", 4000)
    assert tp.parse_endpoint("10.0.0.1") == ("10.0.0.1", tp.ASAP_PORT)
    assert tp.parse_endpoint(":99") == ("0.0.0.0", 99)
    assert tp.parse_endpoint("[::1]:5") == ("::1", 5)
    assert tp.parse_endpoint("fe80::1") == ("fe80::1", tp.ASAP_PORT)
    assert tp.format_endpoint("::1", 5) == "[::1]:5"


@pytest.mark.realkernel
def test_sctp_probe_is_cached_bool() -> None:
    first = tp.sctp_available()
    assert isinstance(first, bool)
    assert tp.sctp_available() is first
    assert tp.sctp_available.cache_info().hits >= 1


@pytest.mark.realkernel
def test_transport_kind_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tp.ENV_TRANSPORT, "tcp")
    assert tp.transport_kind() == "tcp"
    monkeypatch.setenv(tp.ENV_TRANSPORT, "bogus")
    with pytest.raises(tp.TransportError):
        tp.transport_kind()
    monkeypatch.setenv(tp.ENV_TRANSPORT, "sctp")
    if tp.sctp_available():
        assert tp.transport_kind() == "sctp"
    else:
        with pytest.raises(tp.TransportError, match="no SCTP"):
            tp.transport_kind()
    monkeypatch.delenv(tp.ENV_TRANSPORT)
    assert tp.transport_kind() == ("sctp" if tp.sctp_available() else "tcp")


def test_sndrcvinfo_layout_puts_ppid_in_network_order() -> None:
    info = tp._SNDRCV.pack(0, 0, 0, struct.pack("!I", tp.PPID_ASAP), 0, 0, 0, 0, 0)
    assert len(info) == 32  # sizeof(struct sctp_sndrcvinfo) on Linux
    assert info[8:12] == b"\x00\x00\x00\x0b"


class Collect:
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, int]] = []
        self.lost = asyncio.Event()
        self.got = asyncio.Event()
        self.conn: tp.MessageConnection | None = None

    def connection_made(self, conn: tp.MessageConnection) -> None:
        self.conn = conn

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        self.messages.append((data, ppid))
        self.got.set()

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        self.lost.set()


def _asap(mtype: int, body: bytes) -> bytes:
    return struct.pack("!BBH", mtype, 0, 4 + len(body)) + body


async def _wait_for(pred, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_tcp_asap_framing_reassembles_split_and_coalesced_messages() -> None:
    async def main() -> None:
        server_side = Collect()
        srv = await tp.start_server(lambda: server_side, "127.0.0.1", 0, tp.Framing.ASAP, kind="tcp")
        try:
            msgs = [_asap(5, b"\x00\x09\x00\x08abcd"), _asap(8, b""), _asap(9, b"x" * 1000)]
            r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            w.write(msgs[0] + msgs[1])  # two in one segment
            blob = msgs[2]
            for i in range(0, len(blob), 7):  # one split into many
                w.write(blob[i:i + 7])
                await w.drain()
            await _wait_for(lambda: len(server_side.messages) == 3)
            assert [m for m, _ in server_side.messages] == msgs
            assert {p for _, p in server_side.messages} == {tp.PPID_ASAP}
            w.close()
        finally:
            srv.close()
    asyncio.run(main())


def test_tcp_bad_length_aborts_only_that_connection() -> None:
    async def main() -> None:
        handlers: list[Collect] = []

        def factory() -> Collect:
            handlers.append(Collect())
            return handlers[-1]

        srv = await tp.start_server(factory, "127.0.0.1", 0, tp.Framing.ASAP, kind="tcp")
        try:
            r1, w1 = await asyncio.open_connection("127.0.0.1", srv.port)
            w1.write(b"\x05\x00\x00\x02garbage")  # length 2 < header
            assert await asyncio.wait_for(r1.read(), 3) == b""  # closed by the server
            r2, w2 = await asyncio.open_connection("127.0.0.1", srv.port)
            w2.write(_asap(8, b""))
            await _wait_for(lambda: len(handlers) == 2 and handlers[1].messages)
            assert handlers[0].lost.is_set()
            w2.close()
        finally:
            srv.close()
    asyncio.run(main())


def test_tagged_framing_carries_ppid_both_ways() -> None:
    async def main() -> None:
        server_side = Collect()
        srv = await tp.start_server(lambda: server_side, "127.0.0.1", 0, tp.Framing.TAGGED, kind="tcp")
        client_side = Collect()
        try:
            conn = await tp.connect(client_side, "127.0.0.1", srv.port, tp.Framing.TAGGED, kind="tcp")
            conn.send(b"calc", 34)
            conn.send(_asap(0x0B, b""), tp.PPID_ASAP)
            await _wait_for(lambda: len(server_side.messages) == 2)
            assert server_side.messages == [(b"calc", 34), (_asap(0x0B, b""), 11)]
            assert server_side.conn is not None
            server_side.conn.send(b"reply", 0)
            await _wait_for(lambda: client_side.messages == [(b"reply", 0)])
            conn.close()
            await asyncio.wait_for(server_side.lost.wait(), 3)
        finally:
            srv.close()
    asyncio.run(main())


def test_multicast_over_loopback_interface() -> None:
    async def main() -> None:
        got: list[tuple[bytes, tuple[str, int]]] = []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        listener = await multicast.listen_multicast(lambda d, a: got.append((d, a)), "239.0.0.50", port, "127.0.0.1")
        sender = multicast.MulticastSender("239.0.0.50", port, interface="127.0.0.1", ttl=1)
        try:
            assert listener.joined
            for _ in range(20):
                assert sender.send(b"announce")
                await asyncio.sleep(0.02)
                if got:
                    break
            assert got and got[0][0] == b"announce" and got[0][1][0] == "127.0.0.1"
        finally:
            sender.close()
            listener.close()
    asyncio.run(main())


def test_multicast_no_route_is_reported_once_not_raised(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    sender = multicast.MulticastSender("239.0.0.50", 9, interface="127.0.0.1", ttl=1)

    class NoRoute:
        def sendto(self, data: bytes, addr: object) -> int:
            raise OSError(errno.ENETUNREACH, "Network is unreachable")

        def close(self) -> None:
            pass

    real = sender.sock
    sender.sock = NoRoute()  # type: ignore[assignment]
    try:
        with caplog.at_level(logging.WARNING, logger="rserpool.transport"):
            assert sender.send(b"x") is False
            assert sender.send(b"x") is False
        assert len([r for r in caplog.records if "multicast send" in r.getMessage()]) == 1
    finally:
        real.close()


@pytest.mark.realkernel
@pytest.mark.skipif(not tp.sctp_available(), reason="kernel has no SCTP")
def test_sctp_message_connection_carries_ppid() -> None:
    async def main() -> None:
        server_side = Collect()
        srv = await tp.start_server(lambda: server_side, "127.0.0.1", 0, tp.Framing.ASAP, kind="sctp")
        client_side = Collect()
        try:
            conn = await tp.connect(client_side, "127.0.0.1", srv.port, kind="sctp")
            await _wait_for(lambda: conn is not None)
            conn.send(_asap(5, b""), tp.PPID_ASAP)
            conn.send(b"z" * 3000, 34)
            await _wait_for(lambda: len(server_side.messages) == 2)
            assert server_side.messages == [(_asap(5, b""), 11), (b"z" * 3000, 34)]
            conn.close()
        finally:
            srv.close()
    asyncio.run(main())


class _ScriptedSctpSocket:
    """Stands in for an SCTP socket (this host may have none): ``recvmsg`` plays a script of
    (data, flags, ppid) reads, ``sendmsg`` records what would go out; the fd is a real, idle one."""

    def __init__(self, reads: list[tuple[bytes, int, int]]) -> None:
        self.reads = reads
        self.sent: list[tuple[bytes, int]] = []
        self._idle = socket.socketpair()

    def fileno(self) -> int:
        return self._idle[0].fileno()

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, *args: object) -> None:
        pass

    def getpeername(self) -> tuple[str, int]:
        return ("10.0.0.2", 4000)

    def getsockname(self) -> tuple[str, int]:
        return ("10.0.0.1", 3863)

    def recvmsg(self, size: int, cmsg_space: int) -> tuple[bytes, list[tuple[int, int, bytes]], int, None]:
        if not self.reads:
            raise BlockingIOError
        data, flags, ppid = self.reads.pop(0)
        info = tp._SNDRCV.pack(0, 0, 0, struct.pack("!I", ppid), 0, 0, 0, 0, 0)
        return data, [(tp.SOL_SCTP, tp.SCTP_SNDRCV, info)], flags, None

    def sendmsg(self, buffers: list[bytes], ancdata: list[tuple[int, int, bytes]]) -> int:
        (level, ctype, info), = ancdata
        assert (level, ctype) == (tp.SOL_SCTP, tp.SCTP_SNDRCV)
        self.sent.append((b"".join(buffers), struct.unpack("!I", tp._SNDRCV.unpack(info)[3])[0]))
        return sum(map(len, buffers))

    def close(self) -> None:
        for s in self._idle:
            s.close()


@contextlib.contextmanager
def _scripted_conn(handler: tp.MessageHandler) -> Iterator[tuple[tp.SCTPMessageConnection, _ScriptedSctpSocket]]:
    """An SCTP message connection over a ``_ScriptedSctpSocket`` with no reads scripted, for
    ``handler``; shut down and closed on the way out, also when the test fails. Call it from
    inside the event loop."""
    sock = _ScriptedSctpSocket([])
    try:
        conn = tp.SCTPMessageConnection(sock, handler, asyncio.get_running_loop())  # type: ignore[arg-type]
        try:
            yield conn, sock
        finally:
            conn._shutdown(None)
    finally:
        sock.close()


class _Echo(Collect):
    """Records each message and answers it at once with ``re:`` before it, on the same PPID."""

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        super().message_received(conn, data, ppid)
        conn.send(b"re:" + data, ppid)


def test_sctp_message_connection_reassembles_and_keeps_ppids() -> None:
    """Whole messages, a message in two reads and a notification, with their PPIDs, both ways."""
    eor = socket.MSG_EOR
    reads = [(_asap(5, b"a"), eor, tp.PPID_ASAP), (b"x" * 10, 0, 34), (b"y" * 5, eor, 34),
             (b"\x00" * 8, tp.MSG_NOTIFICATION, 0), (_asap(6, b"b"), eor, tp.PPID_ENRP)]

    async def main() -> None:
        sock = _ScriptedSctpSocket(reads)
        got = Collect()
        conn = tp.SCTPMessageConnection(sock, got, asyncio.get_running_loop())  # type: ignore[arg-type]
        try:
            conn._on_readable()
            assert got.messages == [(_asap(5, b"a"), 11), (b"x" * 10 + b"y" * 5, 34), (_asap(6, b"b"), tp.PPID_ENRP)]
            conn.send(b"one", tp.PPID_ASAP)
            conn.send(b"two", 34)
            conn.send(b"three", tp.PPID_ASAP)
            assert sock.sent == [(b"one", 11), (b"two", 34), (b"three", 11)]
        finally:
            conn._shutdown(None)
            sock.close()
    asyncio.run(main())


def test_route_watcher_is_shared_per_event_loop_and_closed_by_its_last_user() -> None:
    async def main() -> None:
        a, b = routewatch.RouteWatcher.shared(), routewatch.RouteWatcher.shared()
        assert a is b and a.active  # Linux: one rtnetlink socket for every user in this loop
        a.release()
        assert b.active  # still one user
        b.release()
        assert not b.active
        c = routewatch.RouteWatcher.shared()  # closed: the next user gets a new one
        assert c is not a and c.active
        c.release()

    asyncio.run(main())


def test_sctp_batched_reads_answer_in_one_batch_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The C extension's path: reads come in batches of up to 16 (a message may be in pieces, a
    notification in between), what the handler sends meanwhile leaves in one batch, in order;
    a batch the kernel takes only in part leaves the rest queued for the writer."""
    need_c_extension(tp.sctp_recv_batch, "sctp_recv_batch")
    eor = socket.MSG_EOR
    script = [[(_asap(5, b"a"), eor, 11), (b"x" * 10, 0, 34), (b"y" * 5, eor, 34),
               (b"\x00" * 8, tp.MSG_NOTIFICATION, 0)] + [(_asap(5, bytes([i])), eor, 11) for i in range(12)],
              [(_asap(6, b"b"), eor, tp.PPID_ENRP)]]
    batches: list[list[tuple[bytes, int]]] = []
    taken = [100]

    def recv_batch(fd: int, size: int, count: int) -> list[tuple[bytes, int, int]]:
        assert count == 16
        return script.pop(0) if script else []

    def send_batch(fd: int, items: list[tuple[bytes, int]]) -> int:
        batches.append(list(items))
        return min(taken[0], len(items))

    monkeypatch.setattr(tp, "sctp_recv_batch", recv_batch)
    monkeypatch.setattr(tp, "sctp_send_batch", send_batch)

    async def main() -> None:
        got = _Echo()
        with _scripted_conn(got) as (conn, sock):
            conn._on_readable_batched()
            # 16 reads (one a notification, two pieces of one message) = 14 messages, then 1 more
            assert len(got.messages) == 15 and not script
            assert got.messages[1] == (b"x" * 10 + b"y" * 5, 34) and got.messages[-1] == (_asap(6, b"b"), 12)
            assert batches == [[(b"re:" + d, p) for d, p in got.messages]]
            taken[0] = 1  # the send buffer takes one message only: the rest waits for the writer
            script.append([(_asap(7, b"c"), eor, 11), (_asap(7, b"d"), eor, 11)])
            conn._on_readable_batched()
            assert conn.pending == 1 and sock.sent == []
            conn.send(b"later", 11)  # queued behind it, not sent before it
            assert conn.pending == 2
            conn._on_writable()
            assert sock.sent == [(b"re:" + _asap(7, b"d"), 11), (b"later", 11)] and conn.pending == 0
    asyncio.run(main())


@pytest.mark.realkernel
@pytest.mark.skipif(not tp.sctp_available(), reason="kernel has no SCTP")
def test_sctp_pipelined_messages_are_answered_in_order_with_ppids() -> None:
    """Over a real association: 40 pipelined messages (one larger than a batch piece) are each
    answered from inside the handler, in order, with their PPIDs."""
    class Echo(Collect):
        def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
            conn.send(data[::-1], ppid + 1)

    async def main() -> None:
        srv = await tp.start_server(Echo, "127.0.0.1", 0, tp.Framing.ASAP, kind="sctp")
        client_side = Collect()
        try:
            conn = await tp.connect(client_side, "127.0.0.1", srv.port, kind="sctp")
            sent = [(bytes([i]) * (40000 if i == 7 else 20 + i), 20 + i) for i in range(40)]
            for data, ppid in sent:
                conn.send(data, ppid)
            await _wait_for(lambda: len(client_side.messages) == len(sent), 30)
            assert client_side.messages == [(d[::-1], p + 1) for d, p in sent]
            conn.close()
        finally:
            srv.close()
    asyncio.run(main())


def test_sctp_batched_reads_let_the_handler_answer_runs_of_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler's ``answer_batch`` answers what it can of a read burst; the rest goes to
    ``message_received``; the answers of both keep the order of the requests, also behind
    messages still waiting for the writer."""
    need_c_extension(tp.sctp_recv_batch, "sctp_recv_batch")
    eor = socket.MSG_EOR
    script = [[(b"q1", eor, 11), (b"q2", eor, 11), (b"slow", eor, 11), (b"q3", eor, 11), (b"piece", 0, 11),
               (b"-end", eor, 11), (b"q4", eor, 11)]]
    sent: list[list[tuple[bytes, int]]] = []
    monkeypatch.setattr(tp, "sctp_recv_batch", lambda fd, size, count: script.pop(0) if script else [])
    monkeypatch.setattr(tp, "sctp_send_batch", lambda fd, items: sent.append(list(items)) or len(items))

    class Quick(Collect):
        def answer_batch(self, conn: tp.MessageConnection, msgs: list[tuple[bytes, int, int]], start: int,
                         out: list[tuple[bytes, int]]) -> int:
            while start < len(msgs) and msgs[start][0].startswith(b"q") and msgs[start][1] & eor:
                out.append((b"fast:" + msgs[start][0], 11))
                start += 1
            return start

        def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
            super().message_received(conn, data, ppid)
            conn.send(b"slow:" + data, ppid)

    async def main() -> None:
        with _scripted_conn(Quick()) as (conn, _):
            conn._outq.append((b"older", 11))  # the send buffer was full before this burst
            conn._on_readable_batched()
            assert sent == []
            assert conn._outq == [(b"older", 11), (b"fast:q1", 11), (b"fast:q2", 11), (b"slow:slow", 11),
                                  (b"fast:q3", 11), (b"slow:piece-end", 11), (b"fast:q4", 11)]
    asyncio.run(main())


@pytest.mark.realkernel
@pytest.mark.skipif(not tp.sctp_available(), reason="kernel has no SCTP")
def test_registrar_over_sctp_answers_pipelined_requests_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registrar's SCTP read path (C where it can, Python where it must): pipelined Handle
    Resolutions around a Registration and an unknown pool are answered in order, and counted;
    a burst of plain ones (their TLVs cached) is answered by the C read callback alone."""
    import rserpool.registrar_asap as ra
    from rserpool.policy import PolicyInfo
    from rserpool.policytypes import PolicyType
    from rserpool.policywire import policy_to_wire
    from rserpool.registrar import Registrar, RegistrarConfig
    from rserpool.wire import (
        HandleResolution,
        HandleResolutionResponse,
        PoolElement,
        Registration,
        RegistrationResponse,
        SctpTransport,
        decode_asap,
    )

    def registration(ident: int) -> bytes:
        pe = PoolElement(ident, 0, 60_000, SctpTransport(4000 + ident, ("127.0.0.1",)),
                         policy_to_wire(PolicyInfo.make(PolicyType.LEAST_USED, load=ident / 10)))
        return Registration(pool_handle=b"P", pool_element=pe).encode()

    async def main() -> None:
        reg = Registrar(RegistrarConfig(listen=[("127.0.0.1", 0)], enrp_listen=None, announce=False, transport="sctp"))
        await reg.start()
        # who answered: the Python dispatch (_handle_asap), the C batch called from Python
        # (answer_batch), or else the C read callback (sctp_drain) without any Python
        in_python, in_batch = [0], [0]
        real_handle, real_batch = reg._handle_asap, ra.hr_batch

        def handle(peer: Any, data: bytes, ppid: int) -> None:
            in_python[0] += data[:1] == b"\x05"
            real_handle(peer, data, ppid)

        def batch(msgs: Any, start: int, *rest: Any) -> int:
            end: int = real_batch(msgs, start, *rest)
            in_batch[0] += end - start
            return end

        monkeypatch.setattr(reg, "_handle_asap", handle)
        if real_batch is not None:
            monkeypatch.setattr(ra, "hr_batch", batch)
        client = Collect()
        try:
            conn = await tp.connect(client, "127.0.0.1", reg.port, kind="sctp")
            for i in (1, 2, 3):
                conn.send(registration(i))
            await _wait_for(lambda: len(client.messages) == 3)
            hr = HandleResolution(pool_handle=b"P").encode()
            burst = [hr, hr, registration(4), HandleResolution(pool_handle=b"P", items=1).encode(),
                     HandleResolution(pool_handle=b"none").encode(), hr]
            for _ in range(5):
                for data in burst:
                    conn.send(data)
            await _wait_for(lambda: len(client.messages) == 3 + 5 * len(burst), 20)
            replies = [decode_asap(d) for d, _ in client.messages[3:]]
            for k in range(5):
                one = replies[k * len(burst):(k + 1) * len(burst)]
                assert [type(r) for r in one] == [HandleResolutionResponse, HandleResolutionResponse,
                                                  RegistrationResponse] + [HandleResolutionResponse] * 3
                assert [len(r.pool_elements) for i, r in enumerate(one) if i != 2] == [3, 3, 1, 0, 3]
                assert one[4].error is not None and one[4].error.causes[0].code == 0x9
                assert [pe.identifier for pe in one[3].pool_elements] == [1]
            assert reg.stats["handle_resolution"] == 5 * 5
            assert all(p == tp.PPID_ASAP for _, p in client.messages)
            assert in_python[0] > 0  # the first ones (nothing cached yet) and the unknown pool
            if tp.sctp_drain is not None:
                before = (in_python[0], in_batch[0])
                n = len(client.messages)
                for _ in range(10):
                    conn.send(hr)
                await _wait_for(lambda: len(client.messages) == n + 10, 20)
                assert all(len(decode_asap(d).pool_elements) == 3 for d, _ in client.messages[n:])  # max_hr_items
                assert reg.stats["handle_resolution"] == 5 * 5 + 10
                assert (in_python[0], in_batch[0]) == before, "plain resolutions went through Python"
            conn.close()
        finally:
            await reg.stop()
    asyncio.run(main())


def test_sctp_burst_keeps_the_rest_of_a_read_when_a_handler_raises(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A read batch is out of the kernel: a handler's exception on one message is logged and the
    batch's other messages are still handled, and their answers sent."""
    need_c_extension(tp.sctp_recv_batch, "sctp_recv_batch")
    eor = socket.MSG_EOR
    script = [[(b"m1", eor, 11), (b"boom", eor, 11), (b"m3", eor, 11)]]
    sent: list[tuple[bytes, int]] = []
    monkeypatch.setattr(tp, "sctp_recv_batch", lambda fd, size, count: script.pop(0) if script else [])
    monkeypatch.setattr(tp, "sctp_send_batch", lambda fd, items: sent.extend(items) or len(items))

    class Fragile(Collect):
        def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
            super().message_received(conn, data, ppid)
            if data == b"boom":
                raise RuntimeError("handler bug")
            conn.send(b"re:" + data, ppid)

    async def main() -> None:
        got = Fragile()
        with _scripted_conn(got) as (conn, _):
            with caplog.at_level(logging.ERROR, logger="rserpool.transport"):
                conn._on_readable_batched()
            assert [d for d, _ in got.messages] == [b"m1", b"boom", b"m3"]
            assert sent == [(b"re:m1", 11), (b"re:m3", 11)] and not conn.is_closing()
            assert any("error handling a message" in r.getMessage() for r in caplog.records)
    asyncio.run(main())


class _SeqpacketSocket(_ScriptedSctpSocket):
    """An AF_UNIX SOCK_SEQPACKET pair standing in for an SCTP association (this host may have no
    SCTP): the C read path's recvmmsg()/sendmmsg() work on it; ``far`` is the peer's end. It sets
    no MSG_EOR, so every message reads as a piece: the C path hands such a read over to Python."""

    def __init__(self) -> None:
        super().__init__([])
        for s in self._idle:
            s.close()
        self._idle = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._idle[0].setblocking(False)
        self.far = self._idle[1]
        self.far.settimeout(2)


class _HrCtxHandler(Collect):
    """A handler offering ``hr_ctx`` (as the registrar's ASAP peer does): its connection's reads
    go through ``_selector.sctp_drain``."""

    def __init__(self, max_hr_rate: float = 0.0, pools: object = None) -> None:
        super().__init__()
        from types import SimpleNamespace
        self.stats = {"handle_resolution": 0}
        self.hr_ctx = ({} if pools is None else pools, {}, {}, SimpleNamespace(max_hr_rate=max_hr_rate, max_hr_items=3),
                       SimpleNamespace(max_increment=0), self.stats)


def _drain_conn(handler: Collect) -> tuple[tp.SCTPMessageConnection, _SeqpacketSocket, list[tuple[str, Any]]]:
    """A connection over a seqpacket pair whose Python hand-over methods are recorded (and run)."""
    sock = _SeqpacketSocket()
    conn = tp.SCTPMessageConnection(sock, handler, asyncio.get_running_loop())  # type: ignore[arg-type]
    calls: list[tuple[str, Any]] = []
    for name in ("_burst", "_on_readable_batched", "_drain_error", "_drain_failed"):
        real = getattr(conn, name)

        def recorded(*args: Any, _name: str = name, _real: Any = real) -> Any:
            calls.append((_name, args))
            return _real(*args)
        setattr(conn, name, recorded)
    return conn, sock, calls


def _nothing_left(sock: _SeqpacketSocket) -> bool:
    try:
        sock._idle[0].recv(100)
    except BlockingIOError:
        return True
    return False


def test_sctp_drain_hands_a_read_it_does_not_answer_to_python() -> None:
    """``sctp_drain`` reads once and gives Python what it read (here: pieces without MSG_EOR,
    which no Handle Resolution answer may take), from the first message, with no answers yet."""
    need_c_extension(tp.sctp_drain, "sctp_drain")

    async def main() -> None:
        handler = _HrCtxHandler()
        conn, sock, calls = _drain_conn(handler)
        try:
            assert tp.sctp_drain(conn) is None and calls == []  # nothing to read: nothing called
            for part in (b"one", b"two", b"three"):
                sock.far.send(part)
            assert tp.sctp_drain(conn) is None
            assert [(n, len(a[0]), a[1], a[2]) for n, a in calls] == [("_burst", 3, 0, [])]
            assert bytes(conn._partial) == b"onetwothree" and _nothing_left(sock)
            assert handler.stats["handle_resolution"] == 0
            sock.far.close()  # end of stream: the association is gone
            tp.sctp_drain(conn)
            assert conn.is_closing() and handler.lost.is_set()
        finally:
            conn._shutdown(None)
            sock.close()
    asyncio.run(main())


def test_sctp_drain_leaves_rate_limited_or_queued_connections_to_python() -> None:
    """With a Handle Resolution rate limit, or sends still queued for the writer, ``sctp_drain``
    reads nothing itself: the Python read loop (``_on_readable_batched``) does it all."""
    need_c_extension(tp.sctp_drain, "sctp_drain")

    async def main() -> None:
        for handler, queued in ((_HrCtxHandler(max_hr_rate=5.0), False), (_HrCtxHandler(), True)):
            conn, sock, calls = _drain_conn(handler)
            try:
                if queued:
                    conn._outq.append((b"older", 11))
                sock.far.send(b"req")
                tp.sctp_drain(conn)
                assert [n for n, _ in calls] == ["_on_readable_batched", "_burst"]
                assert calls[1][1] == (None, 0, [])  # the Python loop read it itself
                assert bytes(conn._partial) == b"req" and _nothing_left(sock)
            finally:
                conn._shutdown(None)
                sock.close()
    asyncio.run(main())


def test_sctp_drain_error_after_its_read_loses_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """An error in the C path after recvmmsg() (here: a registrar state it cannot use) does not
    drop what was read: it is logged and Python carries on with the messages, in order."""
    need_c_extension(tp.sctp_drain, "sctp_drain")

    async def main() -> None:
        handler = _HrCtxHandler(pools=["not", "a", "dict"])
        conn, sock, calls = _drain_conn(handler)
        try:
            sock.far.send(b"first")
            sock.far.send(b"second")
            with caplog.at_level(logging.ERROR, logger="rserpool.transport"):
                assert tp.sctp_drain(conn) is None  # nothing raised into the event loop
            assert [n for n, _ in calls] == ["_drain_error", "_burst"]
            exc, msgs, start, out = calls[0][1]
            assert isinstance(exc, TypeError) and [m[0] for m in msgs] == [b"first", b"second"]
            assert start == 0 and out == []
            assert bytes(conn._partial) == b"firstsecond" and _nothing_left(sock)
            assert any("SCTP read path failed" in r.getMessage() for r in caplog.records)
        finally:
            conn._shutdown(None)
            sock.close()
    asyncio.run(main())


def test_sctp_drain_error_hand_over_sends_the_answers_so_far_first() -> None:
    """What ``sctp_drain`` hands over after an error (the answers it built, the messages from the
    one it failed on) is answered in order: its answers first, then Python's, in one send."""
    need_c_extension(tp.sctp_drain, "sctp_drain")
    eor = socket.MSG_EOR

    class Echo(_HrCtxHandler):
        def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
            super().message_received(conn, data, ppid)
            conn.send(b"re:" + data, ppid)

    async def main() -> None:
        handler = Echo()
        conn, sock, _ = _drain_conn(handler)
        try:
            msgs = [(b"q0", eor, 11), (b"q1", eor, 11), (b"q2", eor, 12)]
            conn._drain_error(RuntimeError("C bug"), msgs, 1, [(b"a0", 11)])
            assert handler.messages == [(b"q1", 11), (b"q2", 12)]
            assert [sock.far.recv(100) for _ in range(3)] == [b"a0", b"re:q1", b"re:q2"]
            conn._drain_error(RuntimeError("no memory"), [(b"q3", eor, 11)], 0, None)  # nothing built yet
            assert handler.messages[-1] == (b"q3", 11) and sock.far.recv(100) == b"re:q3"
        finally:
            conn._shutdown(None)
            sock.close()
    asyncio.run(main())


def test_sctp_drain_send_hand_overs_queue_the_rest_and_report_failures() -> None:
    """``_queue_unsent`` (the send buffer took only part of a burst's answers: the rest waits for
    the writer, in order, ahead of later sends) and ``_send_failed`` (the association is gone)."""
    async def main() -> None:
        handler = Collect()
        with _scripted_conn(handler) as (conn, sock):
            conn._queue_unsent([(b"a", 11), (b"b", 11), (b"c", 12)], 1)
            conn.send(b"later", 11)
            assert conn.pending == 3 and sock.sent == []
            conn._on_writable()
            assert sock.sent == [(b"b", 11), (b"c", 12), (b"later", 11)] and conn.pending == 0
            err = OSError(errno.ECONNRESET, "reset")
            conn._send_failed(err)
            assert not handler.lost.is_set()  # from the event loop, as a failed send() does
            await asyncio.wait_for(handler.lost.wait(), 2)
            assert conn.is_closing()
    asyncio.run(main())


def test_sctp_send_batch_checks_every_item_before_sending_any() -> None:
    """A bad item anywhere in the list (past the first 16 too) sends nothing and raises what
    ``struct.pack("!I", ppid)`` raised in the one-by-one path; a burst's bad message is dropped
    alone (``_end_batch``), the others leave in order."""
    need_c_extension(tp.sctp_send_batch, "sctp_send_batch")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        a.setblocking(False)
        b.setblocking(False)
        good = [(b"m%d" % i, 11) for i in range(20)]
        for bad, exc in (((b"x", 1 << 32), struct.error), ((b"x", -1), struct.error), ((b"x", "11"), struct.error),
                         ((b"x", 1 << 70), struct.error), (("x", 11), TypeError), ((b"x",), TypeError)):
            with pytest.raises(exc):
                tp.sctp_send_batch(a.fileno(), [*good, bad])
            with pytest.raises(BlockingIOError):
                b.recv(100)  # nothing was sent
        assert tp.sctp_send_batch(a.fileno(), [(b"lo", 0), (b"hi", 0xFFFFFFFF)]) == 2
        assert [b.recv(100), b.recv(100)] == [b"lo", b"hi"]
    finally:
        a.close()
        b.close()

    async def main() -> None:
        sock = _SeqpacketSocket()
        conn = tp.SCTPMessageConnection(sock, Collect(), asyncio.get_running_loop())  # type: ignore[arg-type]
        try:
            conn._batch = []
            conn.send(b"one", 11)
            conn.send(b"bad", 1 << 32)
            conn.send(b"two", 12)
            conn._end_batch()
            assert [sock.far.recv(100), sock.far.recv(100)] == [b"one", b"two"]
            sock._idle[1].setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.far.recv(100)
        finally:
            conn._shutdown(None)
            sock.close()
    asyncio.run(main())


def test_sctp_burst_goes_one_by_one_when_answer_batch_raises(monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A handler's ``answer_batch`` that raises is logged and not asked again in that burst; the
    burst's messages still reach ``message_received``, in order."""
    need_c_extension(tp.sctp_recv_batch, "sctp_recv_batch")
    eor = socket.MSG_EOR
    script = [[(b"q1", eor, 11), (b"q2", eor, 11)]]
    sent: list[tuple[bytes, int]] = []
    monkeypatch.setattr(tp, "sctp_recv_batch", lambda fd, size, count: script.pop(0) if script else [])
    monkeypatch.setattr(tp, "sctp_send_batch", lambda fd, items: sent.extend(items) or len(items))

    class Broken(_Echo):
        asked = 0

        def answer_batch(self, conn: tp.MessageConnection, msgs: list[tuple[bytes, int, int]], start: int,
                         out: list[tuple[bytes, int]]) -> int:
            self.asked += 1
            raise RuntimeError("batch bug")

    async def main() -> None:
        got = Broken()
        with _scripted_conn(got) as (conn, _):
            with caplog.at_level(logging.ERROR, logger="rserpool.transport"):
                conn._on_readable_batched()
            assert got.asked == 1 and [d for d, _ in got.messages] == [b"q1", b"q2"]
            assert sent == [(b"re:q1", 11), (b"re:q2", 11)]
            assert any("answer_batch failed" in r.getMessage() for r in caplog.records)
    asyncio.run(main())

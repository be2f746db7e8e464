"""Tests of rserpool.transport: transport choice, TCP message framing, multicast, SCTP structures."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct

import pytest

from rserpool import multicast, routewatch
from rserpool import transport as tp

# The whole module runs in the real-kernel lane too: there the SCTP paths are taken, not the fallbacks.
pytestmark = pytest.mark.realkernel


def test_parse_endpoint_forms() -> None:
    assert tp.parse_endpoint("10.0.0.1:4000") == ("10.0.0.1", 4000)
    assert tp.parse_endpoint("10.0.0.1") == ("10.0.0.1", tp.ASAP_PORT)
    assert tp.parse_endpoint(":99") == ("0.0.0.0", 99)
    assert tp.parse_endpoint("[::1]:5") == ("::1", 5)
    assert tp.parse_endpoint("fe80::1") == ("fe80::1", tp.ASAP_PORT)
    assert tp.format_endpoint("::1", 5) == "[::1]:5"


def test_sctp_probe_is_cached_bool() -> None:
    first = tp.sctp_available()
    assert isinstance(first, bool)
    assert tp.sctp_available() is first
    assert tp.sctp_available.cache_info().hits >= 1


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
    if tp.sctp_recv_batch is None:
        pytest.skip("the C extension is not built")
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

    class Echo(Collect):
        def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
            super().message_received(conn, data, ppid)
            conn.send(b"re:" + data, ppid)

    async def main() -> None:
        sock = _ScriptedSctpSocket([])
        got = Echo()
        conn = tp.SCTPMessageConnection(sock, got, asyncio.get_running_loop())  # type: ignore[arg-type]
        try:
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
        finally:
            conn._shutdown(None)
            sock.close()
    asyncio.run(main())


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
    if tp.sctp_recv_batch is None:
        pytest.skip("the C extension is not built")
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
        sock = _ScriptedSctpSocket([])
        conn = tp.SCTPMessageConnection(sock, Quick(), asyncio.get_running_loop())  # type: ignore[arg-type]
        try:
            conn._outq.append((b"older", 11))  # the send buffer was full before this burst
            conn._on_readable_batched()
            assert sent == []
            assert conn._outq == [(b"older", 11), (b"fast:q1", 11), (b"fast:q2", 11), (b"slow:slow", 11),
                                  (b"fast:q3", 11), (b"slow:piece-end", 11), (b"fast:q4", 11)]
        finally:
            conn._shutdown(None)
            sock.close()
    asyncio.run(main())


@pytest.mark.skipif(not tp.sctp_available(), reason="kernel has no SCTP")
def test_registrar_over_sctp_answers_pipelined_requests_in_order() -> None:
    """The registrar's SCTP read path (C where it can, Python where it must): pipelined Handle
    Resolutions around a Registration and an unknown pool are answered in order, and counted."""
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
            conn.close()
        finally:
            await reg.stop()
    asyncio.run(main())

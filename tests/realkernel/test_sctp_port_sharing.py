"""The kernel behaviour ENRP over SCTP relies on (``transport.start_server/connect(share_port=True)``).

RSPLIB's registrar accepts an ENRP Presence only over an association that comes from the ENRP
endpoint the Presence names, so emulab's registrar starts its associations from its listening ENRP
port. On Linux that needs SO_REUSEPORT on the listener (set after bind, so that a second listener
on the same endpoint still fails) and on the outgoing socket; the kernel keeps refusing a second
association between the same two endpoints, which is why ``EnrpNode`` uses a peer's association to
it instead of opening its own.
"""

from __future__ import annotations

import asyncio
import errno

import pytest

from rserpool import transport as tp

pytestmark = [
    pytest.mark.realkernel,
    pytest.mark.skipif(not tp.sctp_available(), reason="needs a kernel with SCTP"),
]


class Sink:
    def __init__(self) -> None:
        self.conns: list[tp.MessageConnection] = []
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def connection_made(self, conn: tp.MessageConnection) -> None:
        self.conns.append(conn)

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        self.got.put_nowait(data)

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        pass


def test_association_from_the_listening_port() -> None:
    async def body() -> None:
        a_side, b_side = Sink(), Sink()
        a = await tp.start_server(lambda: a_side, "127.0.0.1", 0, kind="sctp", share_port=True)
        b = await tp.start_server(lambda: b_side, "127.0.0.1", 0, kind="sctp", share_port=True)
        try:
            with pytest.raises(OSError) as busy:  # a second listener is still refused
                await tp.start_server(Sink, "127.0.0.1", a.port, kind="sctp")
            assert busy.value.errno == errno.EADDRINUSE
            out = Sink()
            conn = await tp.connect(out, "127.0.0.1", b.port, kind="sctp", local=("127.0.0.1", a.port),
                                    share_port=True)
            assert conn.local == ("127.0.0.1", a.port)
            conn.send(b"\x01\x00\x00\x04", tp.PPID_ENRP)
            assert await asyncio.wait_for(b_side.got.get(), 5) == b"\x01\x00\x00\x04"
            assert b_side.conns[0].peer == ("127.0.0.1", a.port)  # what RSPLIB checks the Presence against
            # the same two endpoints once more, from B's side: the kernel refuses it
            with pytest.raises(OSError) as twice:
                await tp.connect(Sink(), "127.0.0.1", a.port, kind="sctp", local=("127.0.0.1", b.port),
                                 share_port=True)
            assert twice.value.errno == errno.EADDRNOTAVAIL
            # and the listener still takes associations from elsewhere
            other = await tp.connect(Sink(), "127.0.0.1", a.port, kind="sctp")
            other.send(b"\x01\x00\x00\x04", tp.PPID_ENRP)
            assert await asyncio.wait_for(a_side.got.get(), 5) == b"\x01\x00\x00\x04"
            conn.close()
            other.close()
        finally:
            a.close()
            b.close()
    asyncio.run(body())

"""``max_bad_messages`` on the ENRP port: a registrar that accepts ENRP from any host aborts an ENRP
association that keeps sending junk, keeps one that speaks ENRP properly, and keeps every one with
the limit off (TCP, loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

from rserpool.registrar import Registrar, RegistrarConfig
from rserpool.wire import EnrpError, HandleTableRequest, HandleTableResponse, Presence, decode_enrp

SENDER = 0x0BAD0001
UNKNOWN_TYPE = b"\x7f\x00\x00\x0c" + struct.pack("!II", SENDER, 0)  # answered "Unrecognized Message"
TRUNCATED_PRESENCE = b"\x01\x00\x00\x08" + struct.pack("!I", SENDER)  # no receiver ID: dropped


def cfg(**kw: Any) -> RegistrarConfig:
    base: dict[str, Any] = dict(listen=[("127.0.0.1", 0)], enrp_listen=("127.0.0.1", 0), announce=False,
                                transport="tcp")
    base.update(kw)
    return RegistrarConfig(**base)


async def read_message(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    (length,) = struct.unpack("!H", head[2:])
    return head + await reader.readexactly(length - 4)


async def closed_by_registrar(reader: asyncio.StreamReader, timeout: float = 1.5) -> bool:
    """Whether the registrar closes the connection within ``timeout`` (replies are read and skipped)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await read_message(reader)
    except (asyncio.IncompleteReadError, ConnectionError):
        return True
    except TimeoutError:
        return False


async def table_answered(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether a Handle Table Request over this connection is still answered."""
    writer.write(HandleTableRequest(sender_id=SENDER).encode())
    try:
        async with asyncio.timeout(3.0):
            while True:
                if isinstance(decode_enrp(await read_message(reader)), HandleTableResponse):
                    return True
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
        return False


async def junk(reg: Registrar, messages: int) -> tuple[bool, bool]:
    """(an ENRP Error came back, the registrar closed the connection) after ``messages`` bad ones."""
    assert reg.enrp_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", reg.enrp_port)
    try:
        writer.write(UNKNOWN_TYPE)
        first = decode_enrp(await asyncio.wait_for(read_message(reader), 3.0))
        with contextlib.suppress(ConnectionError):
            for i in range(messages - 1):
                writer.write(TRUNCATED_PRESENCE if i % 2 else UNKNOWN_TYPE)
            await writer.drain()
        return isinstance(first, EnrpError), await closed_by_registrar(reader)
    finally:
        writer.close()


async def conforming(reg: Registrar, messages: int) -> bool:
    """Whether a connection sending ``messages`` proper Presences is still served afterwards."""
    assert reg.enrp_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", reg.enrp_port)
    try:
        for _ in range(messages):
            writer.write(Presence(sender_id=SENDER, checksum=0).encode())
        await writer.drain()
        return await table_answered(reader, writer)
    finally:
        writer.close()


def run(config: RegistrarConfig, body: Any) -> Any:
    async def main() -> Any:
        reg = Registrar(config)
        await reg.start()
        try:
            return await asyncio.wait_for(body(reg), 30), reg.stats.copy()
        finally:
            await reg.stop()

    return asyncio.run(main())


def test_junk_enrp_association_aborted_at_the_limit() -> None:
    (errored, closed), stats = run(cfg(max_bad_messages=8), lambda reg: junk(reg, 9))
    assert errored  # the first one is answered as RFC 5353 says
    assert closed
    assert stats["enrp_aborted_abusive"] == 1


def test_below_the_limit_and_conforming_peers_kept() -> None:
    async def body(reg: Registrar) -> tuple[tuple[bool, bool], bool]:
        return await junk(reg, 7), await conforming(reg, 40)

    ((errored, closed), served), stats = run(cfg(max_bad_messages=8), body)
    assert errored and not closed
    assert served  # 40 good messages are no reason for an abort
    assert stats["enrp_aborted_abusive"] == 0


def test_junk_enrp_association_kept_without_the_limit() -> None:
    """max_bad_messages 0 is RSPLIB's behaviour: junk is dropped, the association is kept."""
    (errored, closed), stats = run(cfg(max_bad_messages=0), lambda reg: junk(reg, 100))
    assert errored and not closed
    assert stats["enrp_aborted_abusive"] == 0

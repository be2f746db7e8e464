"""``rserpool hsdump``: fetch and print a registrar's handlespace.

ASAP has no "dump everything" message, so this does what RSPLIB's ``hsdump`` tool does: connect to
the registrar's ENRP port (9901), introduce itself with an ENRP Presence, send a List Request and a
Handle Table Request, and collect Handle Table Responses until one comes without "more to send"
(asking again for the next part each time). It works against this package's registrar (which runs
an ENRP responder for exactly this) and, over SCTP, against RSPLIB's ``rspregistrar``.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from rserpool import transport as tp
from rserpool.session import PEInfo
from rserpool.wire import (
    CodecError,
    HandleTableRequest,
    HandleTableResponse,
    ListRequest,
    Presence,
    SctpTransport,
    ServerInformation,
    TcpTransport,
    decode_enrp,
)


@dataclass
class HandlespaceDump:
    registrar_id: int = 0
    pools: dict[bytes, list[tuple[PEInfo, Any]]] = field(default_factory=dict)

    @property
    def element_count(self) -> int:
        return sum(len(v) for v in self.pools.values())

    def to_dict(self) -> dict[str, Any]:
        pools = []
        for handle in sorted(self.pools):
            elements = []
            for info, reg in self.pools[handle]:
                d = info.to_dict()
                d["registrator_transport"] = (
                    None if reg is None else {"port": reg.port, "addresses": list(reg.addresses),
                                              "protocol": type(reg).__name__.replace("Transport", "").lower()})
                elements.append(d)
            pools.append({"handle": handle.decode("utf-8", "replace"), "handle_hex": handle.hex(),
                          "elements": elements})
        return {"registrar_id": self.registrar_id, "registrar_id_hex": f"0x{self.registrar_id:08x}",
                "pool_count": len(self.pools), "element_count": self.element_count, "pools": pools}

    def format(self) -> str:
        lines = [f"Registrar ${self.registrar_id:08x}: {len(self.pools)} pool(s), {self.element_count} PE(s)"]
        for handle in sorted(self.pools):
            entries = self.pools[handle]
            pol = entries[0][0].policy.to_dict()["name"] if entries else "?"
            lines.append(f"Pool {handle.decode('utf-8', 'replace')!r} ({pol}), {len(entries)} PE(s)")
            for info, reg in entries:
                p = info.policy
                lines.append(
                    f"  ${info.identifier:08x}  {info.protocol} {tp.format_endpoint(*info.endpoint)}"
                    f"  load={p.load_fraction * 100:.1f}% weight={p.weight}"
                    f" degr={p.load_degradation_fraction * 100:.1f}%"
                    f"  home=${info.home_pr:08x} life={info.registration_life}ms"
                    + (f"  via {tp.format_endpoint(reg.addresses[0], reg.port)}" if reg is not None
                       and reg.addresses else ""))
        return "\n".join(lines)


class _Collector:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.conn: tp.MessageConnection | None = None

    def connection_made(self, conn: tp.MessageConnection) -> None:
        self.conn = conn

    def message_received(self, conn: tp.MessageConnection, data: bytes, ppid: int) -> None:
        try:
            self.queue.put_nowait(decode_enrp(data))
        except CodecError as exc:
            self.queue.put_nowait(exc)

    def connection_lost(self, conn: tp.MessageConnection, exc: BaseException | None) -> None:
        self.queue.put_nowait(ConnectionError("registrar closed the connection"))


async def fetch_handlespace(host: str, port: int = tp.ENRP_PORT, *, kind: str | None = None,
                            timeout: float = 5.0) -> HandlespaceDump:
    """Fetch the whole handle table of the registrar whose ENRP endpoint is ``host:port``."""
    col = _Collector()
    conn = await tp.connect(col, host, port, tp.Framing.ASAP, kind=kind, timeout=timeout)
    me = random.randint(1, 0xFFFFFFFF)
    dump = HandlespaceDump()
    try:
        local = conn.local or ("0.0.0.0", 0)
        tcls = SctpTransport if (kind or tp.transport_kind()) == "sctp" else TcpTransport
        info = ServerInformation(me, tcls(local[1], (local[0],)))
        conn.send(Presence(sender_id=me, checksum=0xFFFF, server_info=info).encode(), tp.PPID_ENRP)
        conn.send(ListRequest(sender_id=me).encode(), tp.PPID_ENRP)
        conn.send(HandleTableRequest(sender_id=me).encode(), tp.PPID_ENRP)
        while True:
            msg = await asyncio.wait_for(col.queue.get(), timeout)
            if isinstance(msg, BaseException):
                raise msg if isinstance(msg, ConnectionError) else ConnectionError(f"bad answer: {msg}")
            if not isinstance(msg, HandleTableResponse):
                continue
            dump.registrar_id = msg.sender_id
            if msg.reject:
                raise ConnectionError("the registrar rejected the handle table request")
            for entry in msg.pools:
                lst = dump.pools.setdefault(entry.pool_handle, [])
                for pe in entry.pool_elements:
                    lst.append((PEInfo.from_wire(entry.pool_handle, pe), pe.registrator_transport))
            if not msg.more_to_send:
                return dump
            conn.send(HandleTableRequest(sender_id=me, receiver_id=msg.sender_id).encode(), tp.PPID_ENRP)
    finally:
        conn.close()

"""``rserpool hsdump``: fetch and print a registrar's handlespace.

ASAP has no "dump everything" message, so this does what RSPLIB's ``hsdump`` tool does: connect to
the registrar's ENRP port (9901), introduce itself with an ENRP Presence, send a List Request and a
Handle Table Request, and collect Handle Table Responses until one comes without "more to send"
(asking again for the next part each time). It works against this package's registrar (which runs
an ENRP responder for exactly this) and, over SCTP, against RSPLIB's ``rspregistrar``.

Without ``--registrar`` the commands ``hsdump`` and ``peers`` find registrars the way PEs and PUs
do: by the ASAP Server Announces on 239.0.0.50:3863 (``session.RegistrarDiscovery``). An announce
names the registrar's ASAP endpoint only, so the ENRP endpoint is taken to be the announcing host
at ``--enrp-port`` (9901, RSPLIB's and ``rserpool registrar``'s default).
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from typing import Any

import click

from rserpool import transport as tp
from rserpool.registrar_cli import _announce_options, _transport_option
from rserpool.session import ANNOUNCE_TIMEOUT, PEInfo, RegistrarDiscovery
from rserpool.transport import format_endpoint, parse_endpoint
from rserpool.wire import (
    CodecError,
    HandleTableRequest,
    HandleTableResponse,
    ListRequest,
    ListResponse,
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


class EnrpCollector:
    """An ENRP client connection's handler: every message that arrives (or the error it caused) in
    ``queue``, in order."""

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
    col = EnrpCollector()
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


async def fetch_peers(host: str, port: int = tp.ENRP_PORT, *, kind: str | None = None,
                      timeout: float = 5.0) -> dict[str, object]:
    """A registrar's peer list (ENRP List Request) and handlespace size (Handle Table Request)."""
    col = EnrpCollector()
    conn = await tp.connect(col, host, port, tp.Framing.ASAP, kind=kind, timeout=timeout)
    try:
        conn.send(ListRequest(sender_id=random.randint(1, 0xFFFFFFFF)).encode(), tp.PPID_ENRP)
        while True:
            msg = await asyncio.wait_for(col.queue.get(), timeout)
            if isinstance(msg, BaseException):
                raise ConnectionError(str(msg))
            if isinstance(msg, ListResponse):
                break
    finally:
        conn.close()
    dump = await fetch_handlespace(host, port, kind=kind, timeout=timeout)
    peers = []
    for s in msg.servers:
        t = s.transport
        addr = format_endpoint(t.addresses[0], t.port) if t is not None and t.addresses else None
        peers.append({"identifier": s.server_id, "identifier_hex": f"0x{s.server_id:08x}", "address": addr})
    return {"registrar": format_endpoint(host, port), "identifier": msg.sender_id,
            "identifier_hex": f"0x{msg.sender_id:08x}", "element_count": dump.element_count,
            "pool_count": len(dump.pools), "peers": peers}


# ---------------------------------------------------------------------------------------------
# Finding registrars without --registrar

ANNOUNCE_SETTLE = 1.25  # after the first announce, listen this long for others (longest jittered cycle)


@dataclass(frozen=True)
class AnnouncedRegistrar:
    """A registrar heard by its ASAP Server Announce."""

    identifier: int
    asap_endpoints: tuple[tuple[str, int], ...]

    def enrp_endpoint(self, port: int = tp.ENRP_PORT) -> tuple[str, int]:
        """Where its ENRP port (hsdump's) should be: the announced host, ``port``."""
        return (self.asap_endpoints[0][0], port)


async def discover_registrars(*, timeout: float = ANNOUNCE_TIMEOUT, settle: float = 0.0,
                              group: str = tp.ASAP_ANNOUNCE_GROUP, port: int = tp.ASAP_PORT,
                              interface: str | None = None, kind: str | None = None) -> list[AnnouncedRegistrar]:
    """Registrars announcing themselves within ``timeout`` seconds (empty list if none).

    Returns as soon as the first is heard, or ``settle`` seconds later to hear the others too.
    Uses the PE/PU discovery (``RegistrarDiscovery``), so the same group, port and interface
    rules apply (an announce older than 5 s no longer counts).
    """
    disc = RegistrarDiscovery(use_announce=True, group=group, port=port, interface=interface, kind=kind)
    await disc.start()
    try:
        if await disc.wait_for_candidates(timeout) and settle > 0:
            await asyncio.sleep(settle)  # the point is to keep listening: nothing to wait *for*
        return [AnnouncedRegistrar(sid, tuple(eps)) for sid, eps in disc.announced().items()]
    finally:
        disc.close()


def _discover_or_fail(timeout: float, settle: float, announce_address: str, announce_interface: str | None,
                      transport: str | None) -> list[AnnouncedRegistrar]:
    group, gport = tp.parse_endpoint(announce_address, tp.ASAP_PORT)
    found = asyncio.run(discover_registrars(timeout=timeout, settle=settle, group=group, port=gport,
                                            interface=announce_interface, kind=transport))
    if not found:
        raise click.ClickException(
            f"no registrar announced itself on {tp.format_endpoint(group, gport)} within {timeout:g} s: "
            "give --registrar (or --announce-interface where there is no multicast route)")
    return found


def _found_note(reg: AnnouncedRegistrar, endpoint: tuple[str, int]) -> None:
    click.echo(f"registrar ${reg.identifier:08x} found by announce, ENRP endpoint "
               f"{tp.format_endpoint(*endpoint)}", err=True)


# ---------------------------------------------------------------------------------------------
# Commands (registrars by --registrar, or found by their announces)


@click.command("hsdump")
@click.option("--registrar", default=None,
              help="Registrar's ENRP endpoint ADDR[:PORT] (port 9901 by default; see 'registrar --enrp-listen'). "
                   "Default: the first registrar heard by multicast announce, at --enrp-port.")
@click.option("--enrp-port", type=int, default=tp.ENRP_PORT, show_default=True,
              help="ENRP port of a registrar found by announce.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="Seconds to wait for an announce and for each answer.")
@_announce_options
@_transport_option
def hsdump_cmd(registrar: str | None, enrp_port: int, as_json: bool, timeout: float, announce_address: str,
               announce_interface: str | None, transport: str | None) -> None:
    """Print a registrar's handlespace (fetched over ENRP like RSPLIB's hsdump)."""
    if not registrar:
        found = _discover_or_fail(timeout, 0.0, announce_address, announce_interface, transport)[0]
        endpoint = found.enrp_endpoint(enrp_port)
        _found_note(found, endpoint)
        registrar = tp.format_endpoint(*endpoint)
    host, port = parse_endpoint(registrar, tp.ENRP_PORT, "127.0.0.1")
    try:
        dump = asyncio.run(fetch_handlespace(host, port, kind=transport, timeout=timeout))
    except (TimeoutError, OSError) as exc:
        raise click.ClickException(f"cannot dump {format_endpoint(host, port)}: {exc or 'timeout'}") from None
    click.echo(json.dumps(dump.to_dict(), indent=2) if as_json else dump.format())


@click.command("peers")
@click.option("--registrar", "registrars", multiple=True,
              help="Registrar's ENRP endpoint ADDR[:PORT] (port 9901 by default); repeatable. "
                   "Default: every registrar heard by multicast announce, at --enrp-port.")
@click.option("--enrp-port", type=int, default=tp.ENRP_PORT, show_default=True,
              help="ENRP port of registrars found by announce.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per registrar, in a list).")
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="Seconds to wait for the first announce and for each answer.")
@_announce_options
@_transport_option
def peers_cmd(registrars: tuple[str, ...], enrp_port: int, as_json: bool, timeout: float, announce_address: str,
              announce_interface: str | None, transport: str | None) -> None:
    """Print each registrar's ENRP peers and handlespace size."""
    if not registrars:
        found = _discover_or_fail(timeout, ANNOUNCE_SETTLE, announce_address, announce_interface, transport)
        endpoints = [f.enrp_endpoint(enrp_port) for f in found]
        for f, ep in zip(found, endpoints, strict=True):
            _found_note(f, ep)
        registrars = tuple(tp.format_endpoint(*ep) for ep in endpoints)
    async def main() -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for r in registrars:
            host, port = parse_endpoint(r, tp.ENRP_PORT, "127.0.0.1")
            try:
                out.append(await fetch_peers(host, port, kind=transport, timeout=timeout))
            except (TimeoutError, OSError) as exc:
                out.append({"registrar": format_endpoint(host, port), "error": str(exc) or "timeout"})
        return out

    results = asyncio.run(main())
    if as_json:
        click.echo(json.dumps(results))
        return
    for res in results:
        if "error" in res:
            click.echo(f"{res['registrar']}: error: {res['error']}")
            continue
        peers = res["peers"]
        assert isinstance(peers, list)
        click.echo(f"Registrar ${res['identifier']:08x} at {res['registrar']}: {res['element_count']} PE(s) in "
                   f"{res['pool_count']} pool(s), {len(peers)} peer(s)")
        for p in peers:
            click.echo(f"  peer ${p['identifier']:08x} {p['address'] or '?'}")

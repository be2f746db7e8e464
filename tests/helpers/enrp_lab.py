"""ENRP test lab: registrars and PEs in one process (asyncio, TCP on loopback, short timers).

Registrar i listens on 127.0.0.i, its PE on 127.0.0.(10+i), so a partition can be emulated by the
fault-injection hooks (``EnrpNode.blocked_ids``, ``Registrar.blocked_hosts``). A crash is abrupt
(``hard_crash``: every socket aborted, no code of the registrar runs any more), not a clean stop.
Protocol details are driven through a bare ENRP connection (``RawEnrp``) that plays a peer or a
client byte by byte. ``run`` builds and tears down a ``Lab`` around each test body, also when an
assertion fails. Shared by tests/rserpool/test_enrp*.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rserpool import transport as tp
from rserpool.hsdump import EnrpCollector
from rserpool.pe import PEConfig, PoolElement
from rserpool.policy import PolicyInfo
from rserpool.registrar import Registrar, RegistrarConfig
from rserpool.wire import (
    HandleTableEntry,
    HandleTableResponse,
    PoolPolicy,
    Presence,
    ServerInformation,
    TcpTransport,
)
from rserpool.wire import PoolElement as WirePE
from rserpool.wire.enrp import EnrpMessage

POOL = b"EnrpPool"
FAST: dict[str, Any] = dict(
    peer_heartbeat_cycle=0.2, peer_max_time_last_heard=0.5, peer_max_time_no_response=0.5, takeover_expiry=0.5,
    keepalive_interval=0.3, keepalive_timeout=0.6, announce=False, transport="tcp",
)
# detection + takeover + keep-alive timeout, with slack for a loaded 2-core machine
DEAD = 0.5 + 0.5 + 0.5 + 0.6 + 3.0


async def eventually(pred: Callable[[], bool], timeout: float = 8.0, what: str = "") -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timeout waiting for {what or pred}")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


class Lab:
    def __init__(self) -> None:
        self.regs: dict[int, Registrar] = {}
        self.pes: list[PoolElement] = []

    async def registrar(self, i: int, peers: list[int] | None = None, **kw: Any) -> Registrar:
        peer_addrs = [self.enrp_addr(j) for j in (peers if peers is not None else sorted(self.regs))]
        cfg = RegistrarConfig(identifier=0x1000 + i, listen=[(f"127.0.0.{i}", 0)],
                              enrp_listen=(f"127.0.0.{i}", 0), peers=peer_addrs, **{**FAST, **kw})
        r = Registrar(cfg)
        await r.start()
        self.regs[i] = r
        return r

    def enrp_addr(self, i: int) -> tuple[str, int]:
        port = self.regs[i].enrp_port
        assert port is not None
        return (f"127.0.0.{i}", port)

    async def crash(self, i: int) -> None:
        """Registrar i dies abruptly (``hard_crash``): no goodbye, no deregistration, sockets gone."""
        hard_crash(self.regs.pop(i))

    async def pe(self, i: int, ident: int, **kw: Any) -> PoolElement:
        r = self.regs[i]
        cfg = PEConfig(POOL, PolicyInfo.parse("RoundRobin"), identifier=ident,
                       registrars=[(f"127.0.0.{i}", r.port)], listen=(f"127.0.0.{10 + i}", 0),
                       transport="tcp", request_timeout=1.0, retry_delay=0.2, **kw)
        pe = PoolElement(cfg)
        await pe.start()
        self.pes.append(pe)
        return pe

    async def close(self) -> None:
        for pe in self.pes:
            await pe.kill()
        for r in list(self.regs.values()):
            await r.stop()
        self.regs.clear()

    def meshed(self) -> bool:
        n = len(self.regs)
        return all(r.enrp is not None and len(r.enrp.peers) == n - 1 for r in self.regs.values())


def hard_crash(r: Registrar) -> None:
    """End registrar ``r`` the way SIGKILL ends a process, not the way ``stop()`` does.

    Nothing of it runs any more: its tasks and timers are cancelled before they fire, so no Handle
    Update, Presence, keep-alive or announce goes out; its listening sockets close and every
    connection (ENRP peers, PEs, PUs) is aborted at once, with no orderly close and no
    deregistration. Peers learn of the death only from silence, as with a real crash."""
    r.listeners.clear()
    if r.enrp is not None:
        r.enrp.abort()
    if r._announcer is not None:
        r._announcer.cancel()
    for task in list(r._tasks):
        task.cancel()
    for h in [*r._ka_timers.values(), *r._expiry_timers.values()]:
        h.cancel()
    if r._sender is not None:
        r._sender.close()
    for srv in r._servers:
        srv.close()
    for peer in list(r._peers):
        if peer.conn is not None:
            peer.conn.abort()


class RawEnrp(EnrpCollector):
    """A bare ENRP connection to a registrar: the test sends exactly the bytes it wants and reads
    every message that comes back, in order (a peer or a client played by hand)."""

    @classmethod
    async def open(cls, addr: tuple[str, int]) -> RawEnrp:
        raw = cls()
        await tp.connect(raw, addr[0], addr[1], tp.Framing.ASAP, kind="tcp", timeout=2.0)
        return raw

    def send(self, msg: EnrpMessage | bytes) -> None:
        assert self.conn is not None
        self.conn.send(msg if isinstance(msg, bytes) else msg.encode(), tp.PPID_ENRP)

    async def next(self, timeout: float = 3.0) -> EnrpMessage:
        item = await asyncio.wait_for(self.queue.get(), timeout)
        if isinstance(item, BaseException):
            raise item
        return item

    async def expect(self, kind: type[Any], timeout: float = 3.0) -> Any:
        """The next message of type ``kind``; the ones before it are returned in ``self.skipped``."""
        self.skipped: list[EnrpMessage] = []
        end = time.monotonic() + timeout
        while True:
            msg = await self.next(max(0.01, end - time.monotonic()))
            if isinstance(msg, kind):
                return msg
            self.skipped.append(msg)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.abort()


def wire_pe(ident: int, home: int) -> WirePE:
    """A Pool Element parameter as a peer registrar would send it."""
    t = TcpTransport(7000 + ident % 1000, ("127.0.0.1",))
    return WirePE(ident, home, 30_000, t, PoolPolicy(1), TcpTransport(40000, ("127.0.0.1",)))


def table(sender: int, receiver: int, idents: list[int], more: bool) -> HandleTableResponse:
    return HandleTableResponse(sender_id=sender, receiver_id=receiver, more_to_send=more,
                               pools=(HandleTableEntry(POOL, tuple(wire_pe(k, sender) for k in idents)),))


def ids_of(msg: HandleTableResponse) -> list[int]:
    return [pe.identifier for entry in msg.pools for pe in entry.pool_elements]


def view(r: Registrar) -> dict[int, int]:
    """PE identifier -> home registrar, as registrar r sees the pool."""
    return {e.identifier: e.home_pr for e in r.handlespace.entries(POOL)}


def run(body: Callable[[Lab], Awaitable[None]], timeout: float = 60.0) -> None:
    """Run ``body(lab)``; every registrar and PE started is stopped, also on failure."""
    async def main() -> None:
        lab = Lab()
        try:
            await asyncio.wait_for(body(lab), timeout)
        finally:
            await lab.close()
    asyncio.run(main())


async def mesh(lab: Lab) -> None:
    for i in (1, 2, 3):
        await lab.registrar(i)
    await eventually(lab.meshed, what="full mesh")



PEER = 0x9999  # the identifier of the registrar a RawEnrp plays
SLOW_LIVENESS: dict[str, Any] = dict(peer_max_time_last_heard=30.0, peer_max_time_no_response=30.0)


async def _as_peer(lab: Lab, i: int, checksum: int) -> RawEnrp:
    """Connect to registrar i as registrar PEER (ENRP endpoint 127.0.0.99:9, which is never there)."""
    r = lab.regs[i]
    raw = await RawEnrp.open(lab.enrp_addr(i))
    raw.send(Presence(sender_id=PEER, receiver_id=r.identifier, checksum=checksum,
                      server_info=ServerInformation(PEER, TcpTransport(9, ("127.0.0.99",)))))
    return raw

def _fill(r: Registrar, n: int, owner: int, handle: bytes = POOL, first: int = 1) -> None:
    for k in range(first, first + n):
        t = TcpTransport(4000 + k % 1000, ("127.0.0.1",))
        cause, _ = r.handlespace.register(handle, k, PolicyInfo(1), (t,), home_pr=owner, user_transport=t,
                                          protocol=6)
        assert cause == 0

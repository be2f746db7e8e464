"""Pool element and pool user libraries against an in-process registrar (TCP, loopback, short timers),
plus the ``rserpool`` command line end to end on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rserpool.hsdump import AnnouncedRegistrar, discover_registrars, fetch_handlespace
from rserpool.pe import PEConfig, PoolElement
from rserpool.policy import PolicyInfo
from rserpool.pu import HandleResolutionError, PoolUser, PUConfig
from rserpool.registrar import Registrar, RegistrarConfig
from rserpool.session import PEInfo, SessionChannel, business_card_candidates
from rserpool.wire import BusinessCard, TcpTransport, decode_asap
from rserpool.wire import PoolElement as WirePoolElement

from helpers.netns_lab import stop_processes

POOL = b"EchoPool"
ROOT = Path(__file__).resolve().parents[2]
RSERPOOL = [sys.executable, "-m", "rserpool"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reg_config(**kw: Any) -> RegistrarConfig:
    base: dict[str, Any] = dict(listen=[("127.0.0.1", 0)], enrp_listen=None, announce=False, transport="tcp",
                                keepalive_interval=30.0, keepalive_timeout=30.0)
    base.update(kw)
    return RegistrarConfig(**base)


def pe_config(reg: Registrar | None, policy: str = "RoundRobin", **kw: Any) -> PEConfig:
    base: dict[str, Any] = dict(registrars=[("127.0.0.1", reg.port)] if reg else [], listen=("127.0.0.1", 0),
                                transport="tcp", request_timeout=1.0, retry_delay=0.2)
    base.update(kw)
    return PEConfig(POOL, PolicyInfo.parse(policy), **base)


def pu_config(reg: Registrar | None, **kw: Any) -> PUConfig:
    base: dict[str, Any] = dict(registrars=[("127.0.0.1", reg.port)] if reg else [], transport="tcp",
                                request_timeout=1.0, connect_timeout=1.0)
    base.update(kw)
    return PUConfig(**base)


async def eventually(pred: Callable[[], bool], timeout: float = 8.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


def scenario(body: Callable[[Registrar, list[PoolElement], list[Any]], Awaitable[None]],
             config: RegistrarConfig | None = None) -> None:
    """Run ``body(registrar, pes, closers)``; everything started is stopped even on failure."""
    async def main() -> None:
        reg = Registrar(config or reg_config())
        await reg.start()
        pes: list[PoolElement] = []
        closers: list[Any] = []
        try:
            await asyncio.wait_for(body(reg, pes, closers), 30)
        finally:
            for pe in pes:
                await pe.kill()
            for c in closers:
                await c.close()
            await reg.stop()
    asyncio.run(main())


async def start_pes(reg: Registrar, pes: list[PoolElement], n: int, policy: str = "RoundRobin",
                    **kw: Any) -> list[PoolElement]:
    new = []
    for _ in range(n):
        pe = PoolElement(pe_config(reg, policy, **kw))
        pes.append(pe)
        await pe.start()
        new.append(pe)
    return new


async def new_pu(reg: Registrar | None, closers: list[Any], **kw: Any) -> PoolUser:
    pu = PoolUser(pu_config(reg, **kw))
    closers.append(pu)
    await pu.start()
    return pu


# ------------------------------------------------------------------------------------------------


def test_registration_visible_to_pu_and_deregistration() -> None:
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        started = await start_pes(reg, pes, 3)
        pu = await new_pu(reg, closers)
        found = await pu.resolve(POOL, items=10, use_cache=False)
        assert sorted(p.identifier for p in found) == sorted(pe.identifier for pe in started)
        assert {p.endpoint for p in found} == {("127.0.0.1", pe.port) for pe in started}
        for pe in started:
            await pe.stop()
        assert len(reg.handlespace) == 0
        assert reg.stats["deregistration"] == 3
        with pytest.raises(HandleResolutionError) as err:
            await pu.resolve(POOL, use_cache=False)
        assert err.value.cause == 0x9
    scenario(body)


def test_load_change_reregisters_and_moves_plu_choice() -> None:
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        a, b = await start_pes(reg, pes, 2, "PriorityLeastUsed:0.05")
        a.set_load(0.1)
        b.set_load(0.5)
        await eventually(lambda: reg.handlespace.get(POOL, b.identifier).policy.load > 0)  # type: ignore[union-attr]
        pu = await new_pu(reg, closers)
        assert [p.identifier for p in await pu.resolve(POOL, items=1, use_cache=False)] == [a.identifier]
        a.set_load(0.9)
        await eventually(lambda: reg.handlespace.get(POOL, a.identifier).policy.load_fraction > 0.8)  # type: ignore[union-attr]
        assert [p.identifier for p in await pu.resolve(POOL, items=1, use_cache=False)] == [b.identifier]
        assert a.stats["registrations"] >= 3
    scenario(body)


def test_pe_reports_sessions_over_max_requests_as_load() -> None:
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        (pe,) = await start_pes(reg, pes, 1, "LeastUsed", max_requests=4)
        pu = await new_pu(reg, closers)
        sessions = [await pu.connect(POOL) for _ in range(2)]
        for s in sessions:
            assert await s.request(b"x") == b"x"

        def load() -> float:
            entry = reg.handlespace.get(POOL, pe.identifier)
            return entry.policy.load_fraction if entry is not None else -1.0

        await eventually(lambda: abs(load() - 0.5) < 1e-6)
        sessions[0].close()
        await eventually(lambda: abs(load() - 0.25) < 1e-6)
        sessions[1].close()
    scenario(body)


def test_hung_pe_is_removed_by_keepalive_timeout_and_dead_pe_by_connection_loss() -> None:
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        hung, dead, fine = await start_pes(reg, pes, 3)
        await hung.hang()  # alive sockets, no answers
        await dead.kill()  # gone without deregistering
        await eventually(lambda: reg.handlespace.get(POOL, dead.identifier) is None, 2)
        assert reg.stats["removed_connection-lost"] == 1
        await eventually(lambda: reg.handlespace.get(POOL, hung.identifier) is None, 5)
        assert reg.stats["removed_keepalive-timeout"] == 1
        await asyncio.sleep(0.5)
        assert reg.handlespace.get(POOL, fine.identifier) is not None
        assert fine.stats["keepalives"] >= 2
    scenario(body, reg_config(keepalive_interval=0.2, keepalive_timeout=0.6))


def test_pu_unreachable_reports_remove_pe_after_three() -> None:
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        (pe,) = await start_pes(reg, pes, 1)
        pus = [await new_pu(reg, closers) for _ in range(3)]
        for i, pu in enumerate(pus):
            await pu.resolve(POOL)
            await pu.report_unreachable(POOL, pe.identifier)
            await eventually(lambda i=i: reg.stats["endpoint_unreachable"] == i + 1)
            assert (reg.handlespace.get(POOL, pe.identifier) is None) == (i == 2)
            assert pu._cache[POOL][1] == []  # the PU forgot it at once
    scenario(body)


def test_session_asks_for_more_pes_when_all_named_ones_fail() -> None:
    """The registrar names 3 PEs (PLU order); when all of them and the next ones cannot be reached (a
    UE cut off from everything but itself), the session asks for more at once and reaches the last
    resort, instead of failing until the registrar has dropped the dead ones one report at a time."""
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        far = await start_pes(reg, pes, 4, policy="PriorityLeastUsed:0.1")
        (near,) = await start_pes(reg, pes, 1, policy="PriorityLeastUsed:1.0")
        for pe in far:  # registered, but nobody answers at their transport address any more
            assert pe._server is not None
            pe._server.close()
        pu = await new_pu(reg, closers)
        first = [p.identifier for p in await pu.resolve(POOL)]
        assert len(first) == 3 and near.identifier not in first  # the policy puts it last
        t0 = asyncio.get_running_loop().time()
        session = await pu.connect(POOL)
        assert session.pe is not None and session.pe.identifier == near.identifier
        assert asyncio.get_running_loop().time() - t0 < 2.0  # refused connects, no timeouts, no retry pause
        assert pu.stats["unreachable_reports"] == 4
        assert all(reg.handlespace.get(POOL, pe.identifier) is not None for pe in far)  # 1 report < 3
        session.close()
    scenario(body)


def test_pu_cache_serves_repeated_resolutions() -> None:
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        await start_pes(reg, pes, 2)
        pu = await new_pu(reg, closers, stale_cache=30.0)
        first = await pu.resolve(POOL)
        second = await pu.resolve(POOL)
        assert first == second
        assert pu.stats == {"resolutions": 1, "cache_hits": 1, "unreachable_reports": 0, "failovers": 0,
                            "route_losses": 0}
        assert reg.stats["handle_resolution"] == 1
        nocache = await new_pu(reg, closers, stale_cache=0.0)
        await nocache.resolve(POOL)
        await nocache.resolve(POOL)
        assert reg.stats["handle_resolution"] == 3
    scenario(body)


def test_session_failover_carries_state_by_cookie_echo() -> None:
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        started = await start_pes(reg, pes, 2)
        echoed: dict[int, bytes] = {}
        for pe in started:
            state: dict[SessionChannel, bytes] = {}

            def on_data(ch: SessionChannel, data: bytes, ppid: int, state=state) -> None:
                if data.startswith(b"set:"):
                    state[ch] = data[4:]
                    ch.send_cookie(b"state=" + data[4:])
                    ch.send(b"ok", ppid)
                else:
                    ch.send(state.get(ch, b"<none>"), ppid)

            def on_echo(ch: SessionChannel, cookie: bytes, state=state, pe=pe) -> None:
                echoed[pe.identifier] = cookie
                state[ch] = cookie.removeprefix(b"state=")

            pe.on_data, pe.on_cookie_echo = on_data, on_echo
        pu = await new_pu(reg, closers)
        session = await pu.connect(POOL)
        first = session.pe
        assert first is not None
        assert await session.request(b"set:42") == b"ok"
        await eventually(lambda: session.channel is not None and session.channel.cookie == b"state=42")
        victim = next(pe for pe in started if pe.identifier == first.identifier)
        await victim.kill()
        assert await session.request(b"get") == b"42"
        assert session.pe is not None and session.pe.identifier != first.identifier
        assert session.failovers == 1 and echoed == {session.pe.identifier: b"state=42"}
        session.close()
    scenario(body)


def test_session_fails_over_to_a_candidate_of_the_pes_business_card() -> None:
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        started = await start_pes(reg, pes, 3, business_card=True)
        pu = await new_pu(reg, closers)
        session = await pu.connect(POOL)
        first = session.pe
        assert first is not None and session.pe_source == "handle_resolution"
        await eventually(lambda: session.business_card is not None)
        card = session.business_card
        assert card is not None and card.pool_handle == POOL and card.policy is not None
        named = [pe.identifier for pe in card.pool_elements]
        # the PE's alternates: the other two PEs of its pool, never itself
        assert sorted(named) == sorted(pe.identifier for pe in started if pe.identifier != first.identifier)
        await next(pe for pe in started if pe.identifier == first.identifier).kill()
        assert await session.request(b"after") == b"after"
        assert session.pe is not None and session.pe.identifier == named[0]
        assert session.pe_source == "business_card" and session.failovers == 1
        session.close()
    scenario(body)


def test_business_card_preference_overrides_the_pools_order() -> None:
    """The card, not the PU's cached handle resolution, decides where the session goes."""
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        a, b, c = await start_pes(reg, pes, 3, business_card=True)
        pu = await new_pu(reg, closers, stale_cache=30.0)
        cached = await pu.resolve(POOL)
        assert [p.identifier for p in cached] == [a.identifier, b.identifier, c.identifier]  # round robin
        a.failover_candidates = [next(p for p in cached if p.identifier == c.identifier).to_wire()]
        session = await pu.connect(POOL)
        assert session.pe is not None and session.pe.identifier == a.identifier
        await eventually(lambda: session.business_card is not None)
        await a.kill()
        assert await session.request(b"x") == b"x"
        # without the card the PU would have taken b, the next PE in its cache
        assert session.pe is not None and session.pe.identifier == c.identifier
        assert session.pe_source == "business_card"
        session.close()
    scenario(body)


def test_unreachable_card_candidate_falls_back_to_handle_resolution() -> None:
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        a, b, c = await start_pes(reg, pes, 3, business_card=True)
        pu = await new_pu(reg, closers)
        c_info = next(p for p in await pu.resolve(POOL, items=3) if p.identifier == c.identifier)
        a.failover_candidates = [c_info.to_wire()]
        session = await pu.connect(POOL)
        assert session.pe is not None and session.pe.identifier == a.identifier
        await eventually(lambda: session.business_card is not None)
        await c.kill()
        await a.kill()
        assert await session.request(b"y") == b"y"
        assert session.pe is not None and session.pe.identifier == b.identifier
        assert session.pe_source == "handle_resolution"
        assert pu.stats["unreachable_reports"] == 2  # a (the failed PE) and c (the dead candidate)
        session.close()
    scenario(body)


def test_business_card_candidates_expire_with_their_registration_life() -> None:
    policy = PolicyInfo.parse("RoundRobin")
    info = PEInfo(POOL, 7, ("127.0.0.1",), 1, "tcp", policy, 0, 100, TcpTransport(1, ("127.0.0.1",)))
    longer = WirePoolElement(8, 0, 10_000, TcpTransport(2, ("127.0.0.1",)), info.to_wire().policy)
    card = BusinessCard(pool_handle=POOL, pool_elements=(info.to_wire(), longer))
    assert decode_asap(card.encode()) == card
    at = 1000.0
    assert [p.identifier for p in business_card_candidates(card, at, now=at + 0.05)] == [7, 8]
    assert [p.identifier for p in business_card_candidates(card, at, now=at + 0.2)] == [8]  # 100 ms life over
    assert business_card_candidates(card, at, now=at + 0.05, exclude={7, 8}) == []
    assert business_card_candidates(card, at, now=at + 0.05)[0] == info


def test_pu_that_is_a_pe_introduces_its_pool_with_a_business_card() -> None:
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        (server,) = await start_pes(reg, pes, 1)
        received: list[BusinessCard] = []
        server.on_business_card = lambda ch, card: received.append(card)
        clients = []
        for _ in range(2):
            pe = PoolElement(PEConfig(b"ClientPool", PolicyInfo.parse("RoundRobin"), registrars=[("127.0.0.1", reg.port)],
                                      listen=("127.0.0.1", 0), transport="tcp", request_timeout=1.0))
            pes.append(pe)
            await pe.start()
            clients.append(pe)
        pu = PoolUser(pu_config(reg), own_pe=clients[0])
        closers.append(pu)
        await pu.start()
        session = await pu.connect(POOL)
        await eventually(lambda: bool(received))
        assert received[0].pool_handle == b"ClientPool"
        assert [p.identifier for p in received[0].pool_elements] == [clients[1].identifier]
        assert await session.request(b"z") == b"z"  # the card does not disturb the data channel
        session.close()
    scenario(body)


def test_pe_without_alternates_sends_no_business_card() -> None:
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        (pe,) = await start_pes(reg, pes, 1, business_card=True)
        assert await pe.business_card() is None  # alone in its pool: nothing to offer
        pu = await new_pu(reg, closers)
        session = await pu.connect(POOL)
        assert await session.request(b"q") == b"q"
        await eventually(lambda: pe.stats["sessions"] == 1 and not pe._tasks)  # the PE's card task is over
        assert session.business_card is None and session.channel is not None
        assert session.channel.business_card is None
        session.close()
    scenario(body)


def test_pe_moves_to_another_registrar_when_home_fails() -> None:
    async def main() -> None:
        r1, r2 = Registrar(reg_config()), Registrar(reg_config())
        await r1.start()
        await r2.start()
        pe = PoolElement(pe_config(None, registrars=[("127.0.0.1", r1.port), ("127.0.0.1", r2.port)]))
        try:
            await pe.start()
            assert r1.handlespace.get(POOL, pe.identifier) is not None
            await r1.stop()
            await eventually(lambda: r2.handlespace.get(POOL, pe.identifier) is not None)
            assert pe.stats["registrar_changes"] == 1
            assert pe.channel is not None and pe.channel.endpoint == ("127.0.0.1", r2.port)
        finally:
            await pe.kill()
            await r1.stop()
            await r2.stop()
    asyncio.run(main())


def test_keepalive_with_home_flag_sets_new_home() -> None:
    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        (pe,) = await start_pes(reg, pes, 1)
        entry = reg.handlespace.get(POOL, pe.identifier)
        assert entry is not None
        assert reg.send_keepalive(entry, home=True)
        await eventually(lambda: pe.home_registrar == reg.identifier)
        await eventually(lambda: reg.stats["keepalive_ack"] == 1)
    scenario(body)


def test_discovery_by_multicast_announce_on_loopback() -> None:
    port = free_port(socket.SOCK_DGRAM)
    mc = dict(announce_port=port, announce_interface="127.0.0.1")

    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        pe = PoolElement(pe_config(None, **mc))
        pes.append(pe)
        await pe.start(timeout=10)
        assert pe.channel is not None and pe.channel.endpoint == ("127.0.0.1", reg.port)
        pu = await new_pu(None, closers, **mc)
        found = await pu.resolve(POOL)
        assert [p.identifier for p in found] == [pe.identifier]
        assert pu.discovery.announced() == {reg.identifier: [("127.0.0.1", reg.port)]}
    scenario(body, reg_config(announce=True, announce_cycle=0.1, **mc))


# ------------------------------------------------------------------------------------------------ CLI


def _wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            assert time.monotonic() < end, f"port {port} did not open"
            time.sleep(0.05)


class CliLab:
    """``rserpool`` commands as processes on loopback (TCP), with their own announce group."""

    def __init__(self) -> None:
        self.asap, self.enrp, mcast = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
        self.env = dict(os.environ, RSERPOOL_TRANSPORT="tcp")
        self.ann = ["--announce-interface", "127.0.0.1", "--announce-address", f"239.0.0.50:{mcast}"]
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, args: list[str]) -> subprocess.Popen[str]:
        p = subprocess.Popen(RSERPOOL + args, env=self.env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def cli(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(RSERPOOL + args, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=60)

    def close(self) -> None:
        stop_processes(self.procs)


@pytest.fixture
def cli_lab() -> Iterator[CliLab]:
    lab = CliLab()
    try:
        yield lab
    finally:
        lab.close()


def test_cli_registrar_pe_pu_hsdump_end_to_end(cli_lab: CliLab) -> None:
    asap, enrp, ann, spawn, cli = cli_lab.asap, cli_lab.enrp, cli_lab.ann, cli_lab.spawn, cli_lab.cli
    spawn(["registrar", "--listen", f"127.0.0.1:{asap}", "--enrp-listen", f"127.0.0.1:{enrp}",
           "--announce-cycle", "0.2", *ann])
    _wait_port(asap)
    pe_a = spawn(["pe", "--pool", "CliPool", "--policy", "LeastUsed", "--load", "0.2",
                  "--listen", "127.0.0.1:0", "--identifier", "0x1001", *ann])  # found by announce
    spawn(["pe", "--pool", "CliPool", "--policy", "LeastUsed", "--load", "0.7",
           "--listen", "127.0.0.1:0", "--identifier", "4098", "--registrar", f"127.0.0.1:{asap}"])
    end = time.monotonic() + 15
    while True:
        dump = cli(["hsdump", "--registrar", f"127.0.0.1:{enrp}", "--json"])
        if dump.returncode == 0 and json.loads(dump.stdout)["element_count"] == 2:
            break
        assert time.monotonic() < end, dump.stderr
        time.sleep(0.2)
    out = cli(["pu", "--pool", "CliPool", "--registrar", f"127.0.0.1:{asap}"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["0x00001001", "0x00001002"]  # least used first
    js = cli(["pu", "--pool", "CliPool", "--json", "--count", "1", "--echo", "ping", *ann])
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert [e["identifier"] for e in doc["elements"]] == [0x1001] and doc["echo"] == "ping"
    text = cli(["hsdump", "--registrar", f"127.0.0.1:{enrp}"])
    assert "Pool 'CliPool' (LeastUsed), 2 PE(s)" in text.stdout
    missing = cli(["pu", "--pool", "NoPool", "--registrar", f"127.0.0.1:{asap}"])
    assert missing.returncode == 2 and "cause 0x9" in missing.stderr
    pe_a.send_signal(signal.SIGTERM)  # clean shutdown deregisters
    assert pe_a.wait(10) == 0
    after = json.loads(cli(["hsdump", "--registrar", f"127.0.0.1:{enrp}", "--json"]).stdout)
    assert [e["identifier"] for p in after["pools"] for e in p["elements"]] == [4098]


def test_discover_registrars_by_announce_for_hsdump() -> None:
    port = free_port(socket.SOCK_DGRAM)
    mc = dict(group="239.0.0.50", port=port, interface="127.0.0.1")

    async def body(reg: Registrar, pes: list[PoolElement], closers: list[Any]) -> None:
        await start_pes(reg, pes, 2)
        found = await discover_registrars(timeout=10, **mc)
        assert found == [AnnouncedRegistrar(reg.identifier, (("127.0.0.1", reg.port),))]
        assert reg.enrp_port is not None
        endpoint = found[0].enrp_endpoint(reg.enrp_port)
        assert endpoint == ("127.0.0.1", reg.enrp_port)
        dump = await fetch_handlespace(*endpoint, kind="tcp")
        assert dump.registrar_id == reg.identifier and dump.element_count == 2
        # nobody announcing on another port: an empty answer once the timeout is over
        assert await discover_registrars(timeout=0.3, group="239.0.0.50", port=free_port(socket.SOCK_DGRAM),
                                         interface="127.0.0.1") == []
    scenario(body, reg_config(announce=True, announce_cycle=0.1, announce_port=port, announce_interface="127.0.0.1",
                              enrp_listen=("127.0.0.1", 0), mentor_hunt_timeout=0.1))


def test_cli_hsdump_peers_and_calcapp_pu_find_the_registrar_by_announce(cli_lab: CliLab, tmp_path: Path) -> None:
    asap, enrp, ann, spawn, cli = cli_lab.asap, cli_lab.enrp, cli_lab.ann, cli_lab.spawn, cli_lab.cli
    spawn(["registrar", "--listen", f"127.0.0.1:{asap}", "--enrp-listen", f"127.0.0.1:{enrp}",
           "--identifier", "0x5150", "--announce-cycle", "0.2", "--mentor-hunt-timeout", "0.2", *ann])
    _wait_port(asap)
    spawn(["pe", "--pool", "Processing Pool", "--policy", "LeastUsed", "--service", "calcapp",
           "--listen", "127.0.0.1:0", "--identifier", "0x77", *ann])  # also found by announce
    end = time.monotonic() + 20
    while True:  # no --registrar: the registrar announcing on the group, at --enrp-port
        dump = cli(["hsdump", "--enrp-port", str(enrp), "--json", "--timeout", "5", *ann])
        if dump.returncode == 0 and json.loads(dump.stdout)["element_count"] == 1:
            break
        assert time.monotonic() < end, dump.stderr
        time.sleep(0.2)
    doc = json.loads(dump.stdout)
    assert doc["registrar_id"] == 0x5150 and doc["pools"][0]["elements"][0]["identifier"] == 0x77
    assert "registrar $00005150 found by announce" in dump.stderr
    peers = cli(["peers", "--enrp-port", str(enrp), "--json", *ann])
    assert peers.returncode == 0, peers.stderr
    assert [(r["identifier"], r["element_count"]) for r in json.loads(peers.stdout)] == [(0x5150, 1)]
    out = tmp_path / "pus.jsonl"
    run = cli(["calcapp-pu", "--pus", "1", "--duration", "1.5", "--size-mean", "20000", "--interval-mean",
               "0.2", "--seed", "5", "-o", str(out), *ann])
    assert run.returncode == 0, run.stderr
    summary = json.loads(out.read_text().splitlines()[-1])["summary"]
    assert summary["counters"]["completes"] > 0
    # nothing announcing on this group: a clear error instead of a hang
    silent = ["--announce-interface", "127.0.0.1", "--announce-address",
              f"239.0.0.50:{free_port(socket.SOCK_DGRAM)}"]
    none = cli(["hsdump", "--timeout", "0.5", *silent])
    assert none.returncode != 0 and "no registrar announced itself" in none.stderr

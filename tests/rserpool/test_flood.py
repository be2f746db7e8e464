"""The registrar's flood countermeasures (RFC 5355 threats) on loopback, and benchmarks/flood.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rserpool import attack
from rserpool.registrar import Registrar, RegistrarConfig
from rserpool.wire import (
    EndpointUnreachable,
    HandleResolution,
    HandleTableRequest,
    Presence,
    Registration,
    RegistrationResponse,
    decode_asap,
)

ROOT = Path(__file__).resolve().parents[2]
POOL = b"LegitPool"
HOST = "127.0.0.1"


def cfg(**kw: Any) -> RegistrarConfig:
    base: dict[str, Any] = dict(listen=[(HOST, 0)], enrp_listen=(HOST, 0), announce=False, transport="tcp",
                                keepalive_interval=30.0, keepalive_timeout=0.5)
    base.update(kw)
    return RegistrarConfig(**base)


def run(config: RegistrarConfig, body: Any) -> Any:
    async def main() -> Any:
        reg = Registrar(config)
        await reg.start()
        try:
            return await asyncio.wait_for(body(reg), 30)
        finally:
            await reg.stop()
    return asyncio.run(main())


async def eventually(cond: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


async def _send_reports(port: int, ident: int, n: int) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(EndpointUnreachable(pool_handle=POOL, identifier=ident).encode() * n)
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()


async def _silent_pe(port: int, ident: int) -> asyncio.StreamWriter:
    """A PE that registers and then never answers a keep-alive (it is really gone)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(Registration(pool_handle=POOL, pool_element=attack.element(ident)).encode())
    await attack.read_message(reader)
    return writer


@pytest.mark.parametrize("audit", [False, True])
def test_false_unreachable_reports_against_a_live_pe(audit: bool) -> None:
    """RSPLIB's rule removes a PE after max_bad_pe_reports reports, true or forged; with
    audit_unreachable the registrar asks the PE first and keeps it when it answers."""
    async def body(reg: Registrar) -> tuple[bool, int]:
        pe = attack.LegitElement(HOST, reg.port, POOL, 7)
        await pe.start()
        await _send_reports(reg.port, 7, 10)
        await asyncio.sleep(1.0)  # twice the keep-alive timeout
        present = reg.handlespace.get(POOL, 7) is not None
        await pe.stop()
        return present, pe.keepalives

    present, keepalives = run(cfg(audit_unreachable=audit), body)
    assert present is audit
    if audit:
        assert keepalives >= 1  # the audit's keep-alive was answered


def test_audits_under_running_keepalives_keep_a_live_pe() -> None:
    """Audits interleaved with the regular keep-alive cycle: no timer of an audit outlives its ack."""
    async def body(reg: Registrar) -> bool:
        pe = attack.LegitElement(HOST, reg.port, POOL, 7)
        await pe.start()
        for _ in range(6):
            await _send_reports(reg.port, 7, 3)
            await asyncio.sleep(0.15)
        await asyncio.sleep(1.5)
        present = reg.handlespace.get(POOL, 7) is not None
        await pe.stop()
        assert reg.stats["unreachable_audit"] >= 3
        return present

    assert run(cfg(audit_unreachable=True, keepalive_interval=0.3, keepalive_timeout=0.4), body)


def test_audit_still_removes_a_dead_pe() -> None:
    async def body(reg: Registrar) -> None:
        writer = await _silent_pe(reg.port, 9)
        await _send_reports(reg.port, 9, 3)
        assert reg.stats["unreachable_audit"] == 1
        await eventually(lambda: reg.handlespace.get(POOL, 9) is None)
        assert reg.stats["removed_keepalive-timeout"] == 1
        # more reports while an audit runs do not postpone it
        writer.close()

    run(cfg(audit_unreachable=True), body)


def test_registration_flood_refused_and_aborted() -> None:
    async def body(reg: Registrar) -> None:
        legit = attack.LegitElement(HOST, reg.port, POOL, 1)
        await legit.start()
        reader, writer = await asyncio.open_connection(HOST, reg.port)
        writer.write(b"".join(Registration(pool_handle=b"FloodPool", pool_element=attack.element(1000 + i)).encode()
                              for i in range(500)))
        await writer.drain()
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            while True:  # (an abort drops the answers still queued, as the kernel would)
                await attack.read_message(reader)
        assert reg.stats["registration_refused"] == 16
        assert reg.stats["aborted_abusive"] == 1
        # the association's PEs went with it; the legitimate PE stayed
        await eventually(lambda: reg.handlespace.pool(b"FloodPool") is None)
        assert reg.handlespace.get(POOL, 1) is not None
        writer.close()
        await legit.stop()

    run(cfg(max_reg_rate=10.0, max_bad_messages=16), body)


def test_registration_rate_refusal_answer_and_pace() -> None:
    """Over the rate: a Registration Response "Rejected due to security considerations"; a PE
    registering at a normal pace is never refused."""
    async def body(reg: Registrar) -> None:
        reader, writer = await asyncio.open_connection(HOST, reg.port)
        for i in range(3):
            writer.write(Registration(pool_handle=POOL, pool_element=attack.element(50 + i)).encode())
            msg = decode_asap(await attack.read_message(reader))
            assert isinstance(msg, RegistrationResponse) and not msg.reject
            await asyncio.sleep(0.25)
        # a burst: the rate over the last 16 registrations (RSPLIB's table depth) goes above 10/s
        writer.write(Registration(pool_handle=POOL, pool_element=attack.element(60)).encode() * 20)
        answers: list[Any] = [decode_asap(await attack.read_message(reader)) for _ in range(20)]
        refused = [a for a in answers if a.reject]
        assert refused and all(isinstance(a, RegistrationResponse) and a.identifier == 60 for a in answers)
        assert all(a.error is not None and a.error.causes[0].code == 0xA for a in refused)
        assert not answers[0].reject
        writer.close()

    run(cfg(max_reg_rate=10.0), body)


def test_resolution_flood_aborted_legit_user_served() -> None:
    async def body(reg: Registrar) -> None:
        pe = attack.LegitElement(HOST, reg.port, POOL, 1)
        await pe.start()
        user = attack.LegitUser(HOST, reg.port, POOL, {1}, interval=0.05)
        watch = asyncio.ensure_future(user.run(1.0))
        for _ in range(5):  # reconnecting attacker
            reader, writer = await asyncio.open_connection(HOST, reg.port)
            writer.write(HandleResolution(pool_handle=POOL).encode() * 2000)
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                while True:
                    await attack.read_message(reader)
            writer.close()
        await watch
        await pe.stop()
        assert reg.stats["aborted_abusive"] == 5
        assert reg.stats["handle_resolution_refused"] >= 5 * 16
        assert user.latencies and not user.failures

    run(cfg(max_hr_rate=100.0, max_bad_messages=16), body)


def test_enrp_peers_only_refuses_unknown_hosts() -> None:
    async def body(reg: Registrar) -> tuple[bool, bool]:
        assert reg.enrp_port is not None
        msgs = Presence(sender_id=0xBAD, checksum=0).encode() + HandleTableRequest(sender_id=0xBAD).encode()

        async def closed_from(local: str) -> bool:
            reader, writer = await asyncio.open_connection(HOST, reg.enrp_port, local_addr=(local, 0))
            writer.write(msgs)
            try:
                async with asyncio.timeout(1.0):
                    while await reader.read(65536):
                        pass
                return True
            except TimeoutError:
                return False
            except OSError:
                return True
            finally:
                writer.close()

        return await closed_from("127.0.0.1"), await closed_from("127.0.0.2")

    unknown_closed, peer_closed = run(cfg(enrp_peers_only=True, peers=[("127.0.0.2", 9)]), body)
    assert unknown_closed is True
    assert peer_closed is False  # the static peer's host may speak (the answer keeps it open)


def test_flood_benchmark_quick_unreachable_case() -> None:
    """benchmarks/flood.py measures and reports off/on; the forged reports remove the PE only when
    the countermeasures are off."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "flood.py"), "--quick", "--cases", "unreachable",
                        "--duration", "2", "--capacity-duration", "1"],
                       capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    rows = {r["mode"]: r for r in res["cases"]}
    assert res["capacity_resolutions_per_s"] > 0
    assert rows["off"]["wrongly_removed"] is True
    assert rows["on"]["wrongly_removed"] is False
    assert rows["on"]["success_pct"] == 100.0
    for r in rows.values():
        assert r["registrar_alive"] and r["rss_mb"][1] > 0 and r["flood_sent_per_s"] > 0

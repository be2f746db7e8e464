"""A live registrar fed malformed, truncated, oversized and out-of-order ASAP and ENRP messages
(``rserpool.attack``) from many connections, with a legitimate PE and PU watching (TCP, loopback)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from rserpool import attack
from rserpool.registrar import Registrar, RegistrarConfig


def cfg(**kw: Any) -> RegistrarConfig:
    base: dict[str, Any] = dict(listen=[("127.0.0.1", 0)], enrp_listen=("127.0.0.1", 0), announce=False,
                                transport="tcp", keepalive_interval=1.0, keepalive_timeout=1.0)
    base.update(kw)
    return RegistrarConfig(**base)


async def _with_registrar(config: RegistrarConfig, body: Any) -> Any:
    reg = Registrar(config)
    await reg.start()
    try:
        return await asyncio.wait_for(body(reg), 60)
    finally:
        await reg.stop()


def test_only_loopback_targets() -> None:
    for host in ("10.0.0.1", "192.168.1.1", "::1", "8.8.8.8"):
        with pytest.raises(ValueError):
            attack.require_loopback(host)
    attack.require_loopback("127.0.0.1")
    attack.require_loopback("127.1.2.3")
    with pytest.raises(SystemExit):
        attack.main(["--registrar", "192.0.2.1:3863"])


def test_every_case_produces_bytes() -> None:
    import random

    rnd = random.Random(3)
    for case in attack.CASES:
        for _ in range(20):
            assert len(attack.malformed_asap(case, rnd)) >= 4
            assert len(attack.malformed_enrp(case, rnd)) >= 4
    with pytest.raises(ValueError):
        attack.malformed_asap("nonsense", rnd)


def test_errors_answered_as_the_rfcs_say() -> None:
    async def body(reg: Registrar) -> dict[str, Any]:
        return await attack.check_answers("127.0.0.1", reg.port, reg.enrp_port, bad_messages=16)

    out = asyncio.run(_with_registrar(cfg(max_bad_messages=16), body))
    assert out["asap_unknown_type"] == [2]  # Unrecognized Message
    assert out["asap_unknown_param"] == [1]  # Unrecognized Parameter (action "stop and report")
    assert out["asap_oversized_handle"] == [3]  # Invalid Values
    assert out["enrp_unknown_type"] == [2]
    assert out["unframeable_closed"] is True
    assert out["abusive_closed"] is True


def test_junk_association_stays_open_without_the_limit() -> None:
    """max_bad_messages 0 is RSPLIB's behaviour: junk is dropped, the association is kept."""
    async def body(reg: Registrar) -> dict[str, Any]:
        return await attack.check_answers("127.0.0.1", reg.port, None, bad_messages=100, timeout=1.0)

    out = asyncio.run(_with_registrar(cfg(max_bad_messages=0), body))
    assert out["abusive_closed"] is False
    assert out["asap_unknown_type"] == [2]


def test_flood_of_junk_legitimate_pe_and_pu_served(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)

    async def body(reg: Registrar) -> tuple[dict[str, Any], bool, bool]:
        report = await attack.attack_with_watch("127.0.0.1", reg.port, reg.enrp_port, connections=12,
                                                messages=400, duration=4.0, seed=7)
        # still serving afterwards, the legitimate PE gone only because its association closed
        pe = attack.LegitElement("127.0.0.1", reg.port, b"After", 0x1234)
        await pe.start()
        pu = attack.LegitUser("127.0.0.1", reg.port, b"After", {0x1234}, interval=0.01)
        await pu.run(0.3)
        await pe.stop()
        fake = any(h == b"AttackPool" for h in reg.handlespace.pools())
        return report, bool(pu.latencies) and not pu.failures, fake

    report, after_ok, fake_pool = asyncio.run(_with_registrar(cfg(max_bad_messages=32), body))
    # no handler crashed (a crash would be logged with its traceback at ERROR)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert report["flood"]["sent"] > 1000
    assert report["flood"]["closed_by_registrar"] >= 1  # abusive ASAP associations were aborted
    assert report["flood"]["errors_received"]  # errors answered during the flood too
    assert report["legit_failures"] == {}
    assert report["legit_resolutions"] >= 50
    assert after_ok
    assert not fake_pool  # nothing of the junk made it into the handlespace
    # each abusive peer's problems are logged (once per peer and kind), not silently swallowed
    assert "aborting the association" in caplog.text

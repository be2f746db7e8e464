"""A real emulab CalcApp exchange (PU <-> CalcApp PE on loopback, with a fail-over so Cookies and a
Cookie Echo are in it) must dissect in tshark without malformed packets or expert errors.

Our PU<->PE channel runs over TCP with emulab's PPID tag (no SCTP in the test kernel), which tshark
cannot know, so the payloads actually sent are recorded and replayed as SCTP DATA chunks with their
PPIDs (CalcApp 34, ASAP 11) through text2pcap: byte for byte what RSPLIB would put on the wire."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from helpers.pool_lab import POOL, pu_config, run_with_registrar, start_pe
from helpers.tshark_replay import TSHARK_MARKS, dissect, record_sends

pytestmark = TSHARK_MARKS



def _record_exchange(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, int]]:
    from rserpool.services.calcapp_pu import CalcAppPU, PUParams, Request

    sent = record_sends(monkeypatch)

    async def body(reg, pes) -> None:  # type: ignore[no-untyped-def]
        a = await start_pe(reg)
        pes.append(a)
        a._service.cookie_max_calculations = 100_000
        a._service.keepalive_interval = 0.1
        t0 = time.monotonic()
        p = CalcAppPU("pu0", pu_config(reg), PUParams(pool_handle=POOL, keepalive_interval=0.5,
                                                      keepalive_timeout=0.5, retry_delay=0.1),
                      random.Random(1), lambda: time.monotonic() - t0)
        await p.pu.start()
        r = Request(1, 600_000, 0.0, started_at=0.0)
        task = asyncio.create_task(p._handle(r))
        await asyncio.sleep(0.35)
        pes.append(await start_pe(reg))
        await a.kill()
        await asyncio.wait_for(task, 15)
        await p.pu.close()
        assert r.status == "completed"

    run_with_registrar(body)
    return sent


def test_emulab_calcapp_exchange_dissects_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = _record_exchange(monkeypatch)
    by_ppid = {34: [d for d, p in sent if p == 34], 11: [d for d, p in sent if p == 11]}
    assert len(by_ppid[34]) >= 5 and by_ppid[11], "expected CalcApp messages and ASAP cookies"
    names: list[str] = []
    for ppid, packets in by_ppid.items():
        rows = dissect(tmp_path, f"p{ppid}", packets, ppid, ports=(40000, 3864 if ppid == 34 else 3863))
        names += [row[1] for row in rows]
    text = "\n".join(names)
    for want in ("CalcApp Request", "CalcApp Accept", "CalcApp Complete", "Cookie"):
        assert want.lower() in text.lower(), f"{want!r} not dissected: {names}"

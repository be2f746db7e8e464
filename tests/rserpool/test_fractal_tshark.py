"""A real emulab Fractal Generator exchange (PU <-> PE on loopback, with a fail-over so Cookies and a
Cookie Echo are in it) must dissect in tshark's ``fractalgeneratorprotocol`` and ``asap`` dissectors
without malformed packets or expert errors.

Our PU<->PE channel runs over TCP with emulab's PPID tag here, which tshark cannot know, so the
payloads actually sent are recorded and replayed as SCTP DATA chunks with their PPIDs (FGP 32, and
RSPLIB's legacy 0x29097601; ASAP 11) through text2pcap: byte for byte what RSPLIB puts on the wire."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from rserpool.wire.fractal import PPID_FGP, PPID_FGP_LEGACY, Algorithm, FGPParameter

from helpers.pool_lab import pu_config, run_with_registrar, start_pe
from helpers.tshark_replay import TSHARK_MARKS, dissect, record_sends

pytestmark = TSHARK_MARKS



def _record_exchange(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, int]]:
    from rserpool.services.fractal import compute_row
    from rserpool.services.fractal_pu import DEFAULT_POOL, FractalPU

    sent = record_sends(monkeypatch)
    p = FGPParameter(64, 40, 100, Algorithm.MANDELBROT, -2.0, 1.25, 1.0, -1.25, 2.0)
    total = sum(int(compute_row(p, y).sum()) for y in range(p.height)) + p.width * p.height

    async def pe(reg, capacity: float, identifier: int):  # type: ignore[no-untyped-def]
        return await start_pe(reg, capacity=capacity, max_requests=0, policy="RoundRobin", pool=DEFAULT_POOL,
                              service="fractal", identifier=identifier)

    async def body(reg, pes) -> None:  # type: ignore[no-untyped-def]
        a = await pe(reg, total / 2.0, 0xA)  # ~2 s for the image
        pes.append(a)
        a._service.cookie_max_time = 0.2
        async with FractalPU(pu_config(reg), DEFAULT_POOL, recv_timeout=3.0) as fpu:
            task = asyncio.create_task(fpu.compute(p))
            await asyncio.sleep(0.6)
            pes.append(await pe(reg, 0.0, 0xB))
            await a.kill()
            image = await asyncio.wait_for(task, 30)
        assert image.complete and any(e["event"] == "failover" for e in image.events)

    run_with_registrar(body, timeout=60.0)
    return sent


def _dissect(tmp_path: Path, name: str, packets: list[bytes], ppid: int) -> list[list[str]]:
    return dissect(tmp_path, name, packets, ppid, fields=("frame.protocols", "fractalgeneratorprotocol.data_points"))


def test_emulab_fractal_exchange_dissects_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = subprocess.run(["tshark", "-G", "protocols"], check=True, capture_output=True, text=True).stdout
    assert "fractalgeneratorprotocol" in out
    sent = _record_exchange(monkeypatch)
    fgp = [d for d, p in sent if p == PPID_FGP]
    asap = [d for d, p in sent if p == 11]
    assert len(fgp) >= 5 and len(asap) >= 2, "expected FGP messages and ASAP cookies / cookie echo"
    for ppid in (PPID_FGP, PPID_FGP_LEGACY):
        rows = _dissect(tmp_path, f"fgp{ppid}", fgp, ppid)
        assert all(r[4].endswith("sctp:fractalgeneratorprotocol") for r in rows), rows[:3]
        infos = [r[1].strip() for r in rows]
        assert infos.count("FractalGenerator Parameter") == 1, infos[:3]
        assert infos.count("FractalGenerator Data") == len(fgp) - 1
        points = [int(r[5]) for r in rows if r[5]]
        assert 324 in points and points[-1] == 0  # full Data messages, then the finalizer
    names = " ".join(r[1] for r in _dissect(tmp_path, "asap", asap, 11)).lower()
    assert "cookie echo" in names and "cookie" in names.replace("cookie echo", "")

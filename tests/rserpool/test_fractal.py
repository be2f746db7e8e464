"""Fractal Generator pool element and pool user against an in-process registrar on loopback (TCP).

Images are small (96 x 64, at most 200 iterations); where a test needs an image to take a while (a
fail-over in the middle), the PE's ``capacity`` (iterations per second) slows it down, so timing
assertions leave generous margins on the shared machine.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pytest

from rserpool.pe import PoolElement
from rserpool.registrar import Registrar
from rserpool.services.fractal import FractalServer, compute_row
from rserpool.services.fractal_pu import UNSET, FractalImage, FractalPU, Update
from rserpool.session import SessionChannel
from rserpool.wire.fractal import PPID_FGP, Algorithm, FGPData, FGPParameter, decode_cookie

from helpers.pool_lab import pu_config, run_with_registrar, start_pe

POOL = b"Fractal Generator Pool"
PARAM = FGPParameter(96, 64, 200, Algorithm.MANDELBROT, -2.0, 1.25, 1.0, -1.25, 2.0)


def _reference(p: FGPParameter) -> np.ndarray:
    return np.stack([compute_row(p, y) for y in range(p.height)])


def _scalar(p: FGPParameter, x: int, y: int) -> int:
    """RSPLIB's loop, point by point (std::complex arithmetic; libstdc++ pow(0, N) = 0)."""
    c = complex(p.c1real + x * (p.c2real - p.c1real) / p.width, p.c1imag + y * (p.c2imag - p.c1imag) / p.height)
    z = 0j
    for i in range(p.max_iterations):
        if p.algorithm == Algorithm.MANDELBROT:
            z = z * z - c
        else:
            z = (0j if z == 0 else z ** complex(p.n)) - c
        if z.real * z.real + z.imag * z.imag >= 2.0:
            return i
    return p.max_iterations


async def _pe(reg: Registrar, capacity: float = 0.0, max_requests: int = 0, identifier: int = 0) -> PoolElement:
    return await start_pe(reg, capacity=capacity, max_requests=max_requests, policy="RoundRobin", pool=POOL,
                          service="fractal", identifier=identifier)


def _run(body: Any) -> None:
    run_with_registrar(body, timeout=90.0)


@pytest.mark.parametrize("p", [PARAM, FGPParameter(40, 30, 60, Algorithm.MANDELBROTN, -1.5, 1.5, 1.5, -1.5, 3.0)],
                         ids=["mandelbrot", "mandelbrot-n3"])
def test_rows_match_rsplibs_point_loop(p: FGPParameter) -> None:
    img = _reference(p)
    for y in range(0, p.height, 7):
        for x in range(0, p.width, 5):
            assert img[y, x] == _scalar(p, x, y), (x, y)
    assert len(np.unique(img)) > 10  # a fractal, not a constant
    assert list(compute_row(p, 3, 10)) == list(img[3, 10:])


def test_test_pattern_for_unknown_algorithm() -> None:
    p = FGPParameter(20, 10, 50, 0, 0.0, 0.0, 1.0, 1.0)
    assert [int(v) for v in compute_row(p, 7)] == [(x * 7) % 256 for x in range(20)]


def test_pe_and_pu_produce_the_complete_image(tmp_path: Path) -> None:
    result: dict[str, Any] = {}

    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        pe = await _pe(reg)
        pes.append(pe)
        updates: list[Update] = []
        async with FractalPU(pu_config(reg), POOL) as fpu:
            image = await fpu.compute(PARAM, on_update=updates.append)
        result.update(image=image, updates=updates, pe=pe.identifier, stats=pe._service.stats(),
                      load=pe.policy.load)

    _run(body)
    image = result["image"]
    assert image.complete and image.invalid_messages == 0
    assert np.array_equal(image.values, _reference(PARAM))
    assert (image.owner == result["pe"]).all()
    assert image.elements() == {result["pe"]: PARAM.width * PARAM.height}
    # Data messages of 324 points wrapping across rows (the last one shorter), as RSPLIB's buffer
    ups = result["updates"]
    assert sum(u.points for u in ups) == PARAM.width * PARAM.height
    assert all(u.points == 324 for u in ups[:-1]) and ups[1].y * PARAM.width + ups[1].x == 324
    assert ups[0].rows == (0, 3)
    assert [e["event"] for e in image.events] == ["connect", "first_data", "done"]
    assert result["stats"]["images_completed"] == 1 and result["load"] == 0  # load back to 0 when done
    image.save_png(tmp_path / "f.png")
    png = mpimg.imread(tmp_path / "f.png")
    assert png.shape[:2] == (PARAM.height, PARAM.width)
    image.save_json(tmp_path / "f.json")
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc["regions"] == [{"pe": result["pe"], "pe_hex": f"0x{result['pe']:08x}", "x": 0, "y": 0,
                               "points": PARAM.width * PARAM.height}]


def test_failover_mid_image_resumes_from_the_cookie_on_the_new_element() -> None:
    result: dict[str, Any] = {}
    total = int(_reference(PARAM).sum()) + PARAM.width * PARAM.height

    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        a = await _pe(reg, capacity=total / 3.0, identifier=0xA)  # ~3 s for the image
        pes.append(a)
        a._service.cookie_max_time = 0.2
        async with FractalPU(pu_config(reg), POOL, recv_timeout=3.0) as fpu:
            got_a: list[Update] = []
            task = asyncio.create_task(fpu.compute(PARAM, on_update=got_a.append))
            for _ in range(200):
                await asyncio.sleep(0.05)
                if sum(u.points for u in got_a) >= PARAM.width * 20:
                    break
            assert not task.done()
            loads = a.policy.load
            pes.append(await _pe(reg, identifier=0xB))
            await a.kill()
            image = await asyncio.wait_for(task, 30)
        result.update(image=image, load=loads)

    _run(body)
    image = result["image"]
    assert image.complete
    assert np.array_equal(image.values, _reference(PARAM))
    fo = [e for e in image.events if e["event"] == "failover"]
    assert len(fo) == 1 and fo[0]["from_pe"] == 0xA and fo[0]["pe"] == 0xB and fo[0]["cookie"]
    assert [(e["event"], e.get("pe")) for e in image.events] == [
        ("connect", 0xA), ("first_data", 0xA), ("failover", 0xB), ("first_data", 0xB), ("done", 0xB)]
    cut = fo[0]["y"] * PARAM.width + fo[0]["x"]
    owner = image.owner.reshape(-1)
    assert PARAM.width * 10 <= cut < owner.size  # the first element got well into the image
    assert (owner[:cut] == 0xA).all() and (owner[cut:] == 0xB).all()
    assert [(r["pe"], r["points"]) for r in image.regions()] == [(0xA, cut), (0xB, owner.size - cut)]
    assert result["load"] > 0  # the first element reported its computing session as load


def test_bad_parameters_and_max_threads_close_the_session() -> None:
    result: dict[str, Any] = {}

    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        pe = await _pe(reg, capacity=1.0, max_requests=1)
        pes.append(pe)
        svc: FractalServer = pe._service
        assert svc.max_threads == 1

        class Peer(SessionChannel):
            pass

        from rserpool import transport as tp

        async def session() -> tuple[SessionChannel, asyncio.Queue[bytes]]:
            q: asyncio.Queue[bytes] = asyncio.Queue()
            ch = Peer(on_data=lambda _c, d, _p: q.put_nowait(d))
            await tp.connect(ch, "127.0.0.1", pe.port, tp.Framing.TAGGED, kind="tcp", timeout=2.0)
            return ch, q

        big, _ = await session()
        big.send(FGPParameter(70000, 10, 10, 1, 0.0, 0.0, 1.0, 1.0).encode(), PPID_FGP)
        await asyncio.wait_for(big.closed.wait(), 5)
        first, q = await session()
        first.send(PARAM.encode(), PPID_FGP)  # capacity 1 iteration/s: stays busy
        for _ in range(100):  # the cookie goes out at the start
            if first.cookie is not None:
                break
            await asyncio.sleep(0.02)
        assert first.cookie is not None
        c = decode_cookie(first.cookie)
        assert (c.parameter, c.current_x, c.current_y) == (PARAM, 0, 0)
        assert q.empty()  # the first row waits for a full Data message or DataMaxTime
        second, _ = await session()
        second.send(PARAM.encode(), PPID_FGP)
        await asyncio.wait_for(second.closed.wait(), 5)
        result.update(rejected=svc.rejected, load=pe.policy.load, open=first.is_open)
        first.close()

    _run(body)
    assert result["rejected"] == 1 and result["open"]
    assert result["load"] == 0xFFFFFFFF  # 1 of 1 threads computing: full load


def test_values_unset_until_received() -> None:
    img = FractalImage.blank(FGPParameter(4, 3, 1, 1, 0.0, 0.0, 1.0, 1.0))
    assert img.apply(FGPData(3, 0, (7, 8, 9)), 5) == 3
    assert img.apply(FGPData(4, 0, (1,)), 6) == 0 and img.invalid_messages == 1  # StartX beyond the width
    assert img.apply(FGPData(3, 2, (1, 2)), 6) == 1  # clipped at the image's end
    assert img.values.reshape(-1).tolist()[:6] == [UNSET, UNSET, UNSET, 7, 8, 9]
    assert img.elements() == {5: 3, 6: 1}
    assert (img.rgb()[0, 0] == (200, 200, 200)).all()


def test_stream_yields_updates_events_then_the_image() -> None:
    result: dict[str, Any] = {}

    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        pes.append(await _pe(reg))
        items = []
        async with FractalPU(pu_config(reg), POOL) as fpu:
            async for item in fpu.stream(PARAM):
                items.append(item)
        result["items"] = items

    _run(body)
    items = result["items"]
    image = items[-1]
    assert isinstance(image, FractalImage) and image.complete
    updates = [i for i in items if isinstance(i, Update)]
    assert sum(u.points for u in updates) == PARAM.width * PARAM.height
    assert [i["event"] for i in items if isinstance(i, dict)] == ["connect", "first_data", "done"]
    assert isinstance(items[0], dict) and items[0]["event"] == "connect"


def test_cli_pe_and_pu_processes(tmp_path: Path) -> None:
    """``rserpool registrar``, ``rserpool pe --service fractal`` and ``rserpool fractal-pu`` as processes."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    py = [sys.executable, "-m", "rserpool"]
    common = ["--transport", "tcp", "--log-level", "warning"]
    procs = []
    try:
        procs.append(subprocess.Popen([*py, "registrar", "--listen", f"127.0.0.1:{port}", "--enrp-listen", "none",
                                       *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        procs.append(subprocess.Popen([*py, "pe", "--registrar", f"127.0.0.1:{port}", "--pool", POOL.decode(),
                                       "--service", "fractal", "--capacity", "0", "--listen", "127.0.0.1:0",
                                       "--identifier", "0x1234", *common],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.5)
        out = subprocess.run([*py, "fractal-pu", "--registrar", f"127.0.0.1:{port}", "--width", "64", "--height",
                              "40", "--max-iterations", "100", "--png", str(tmp_path / "i{n}.png"),
                              "--json", str(tmp_path / "i{n}.json"), "--updates", *common],
                             capture_output=True, text=True, timeout=60)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert out.returncode == 0, out.stderr
    lines = [json.loads(ln) for ln in out.stdout.splitlines()]
    assert sum(ln["update"][3] for ln in lines if "update" in ln) == 64 * 40
    assert lines[-1] == {"image": 1, "event": "summary", "elapsed": lines[-1]["elapsed"],
                         "elements": {"0x00001234": 64 * 40}}
    assert (tmp_path / "i1.png").stat().st_size > 0
    assert json.loads((tmp_path / "i1.json").read_text())["complete"] is True


def test_failover_without_cookie_sends_the_parameter_again() -> None:
    """A PE that closes the session at once (all its threads busy) leaves no cookie: the PU sends the
    Parameter to the next PE, which computes the whole image."""
    result: dict[str, Any] = {}

    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        a = await start_pe(reg, capacity=0.0, max_requests=1, policy="LeastUsed", pool=POOL, service="fractal",
                           identifier=0xA)
        b = await start_pe(reg, capacity=0.0, max_requests=4, policy="LeastUsed", pool=POOL, service="fractal",
                           identifier=0xB)
        pes += [a, b]
        a._service.max_threads = 0  # every session is one too many
        b.set_load(0.9)  # so that least-used selects A first
        for _ in range(100):
            if b.policy.load and not b._rereg.is_set():
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        async with FractalPU(pu_config(reg), POOL) as fpu:
            result["image"] = await fpu.compute(PARAM)
        result["rejected"] = a._service.rejected

    _run(body)
    image = result["image"]
    assert result["rejected"] == 1
    assert image.complete and (image.owner == 0xB).all()
    fo = [e for e in image.events if e["event"] == "failover"]
    assert len(fo) == 1 and fo[0]["from_pe"] == 0xA and fo[0]["pe"] == 0xB and not fo[0]["cookie"]

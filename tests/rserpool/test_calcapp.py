"""CalcApp service (PE) and pool user against an in-process registrar on loopback (TCP).

Jobs are small (10^5 calculations at 10^6 calculations/s = 0.1 s), so timing assertions leave
generous margins: the machine is shared and asyncio timers are late by milliseconds.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from rserpool.pe import PoolElement
from rserpool.pu import PoolSession, PoolUser
from rserpool.registrar import Registrar
from rserpool.services.calcapp import COOKIE, PPID_CALCAPP, decode_cookie, encode_cookie
from rserpool.services.calcapp_pu import CalcAppPU, PUParams, run_pus, sampler
from rserpool.wire.calcapp import CalcAppMessage, CalcAppType, decode_calcapp

from helpers.pool_lab import POOL, pu_config, run_with_registrar, start_pe


def test_cookie_codec_matches_rsplib_struct() -> None:
    # struct CalcAppCookie { uint32 JobID; uint64 JobSize; uint64 Completed } __attribute__((packed))
    assert COOKIE.size == 20
    raw = encode_cookie(7, 1_000_000, 123_456.4)
    assert raw == bytes.fromhex("00000007" "00000000000f4240" "000000000001e240")
    assert decode_cookie(raw) == (7, 1_000_000, 123_456)


def test_samplers_have_the_requested_mean() -> None:
    rng = random.Random(3)
    for dist in ("exp", "const", "uniform"):
        draw = sampler(dist, 10.0, rng)
        xs = [draw() for _ in range(20000)]
        assert abs(sum(xs) / len(xs) - 10.0) < 0.3, dist
    with pytest.raises(ValueError):
        sampler("pareto", 1.0, rng)


async def _raw_session(pu: PoolUser, inbox: asyncio.Queue[CalcAppMessage]) -> PoolSession:
    s = PoolSession(pu, POOL, on_data=lambda d, _p: inbox.put_nowait(decode_calcapp(d)), on_failover=None,
                    max_attempts=3)
    await s.open()
    return s


def test_processor_sharing_rejection_and_load() -> None:
    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        pe = await start_pe(reg, capacity=1e6, max_requests=2)
        pes.append(pe)
        async with PoolUser(pu_config(reg)) as pu:
            boxes = [asyncio.Queue() for _ in range(3)]
            sessions = [await _raw_session(pu, b) for b in boxes]
            t0 = time.monotonic()
            for i, s in enumerate(sessions):
                s.send(CalcAppMessage(CalcAppType.REQUEST, i + 1, 200_000).encode(), PPID_CALCAPP)
                await asyncio.sleep(0.02)  # keep the order of arrival
            first = [await asyncio.wait_for(b.get(), 5) for b in boxes]
            assert [m.type for m in first] == [CalcAppType.ACCEPT, CalcAppType.ACCEPT, CalcAppType.REJECT]
            assert pe.policy.load / 0xFFFFFFFF == pytest.approx(1.0, abs=1e-6)  # 2 jobs of 2
            done = [await asyncio.wait_for(b.get(), 5) for b in boxes[:2]]
            elapsed = time.monotonic() - t0
            assert all(m.type == CalcAppType.COMPLETE and m.completed == 200_000 for m in done)
            # shared: 2 x 200,000 at 1e6/s takes 0.4 s for both (alone each would take 0.2 s)
            assert 0.38 <= elapsed < 1.5
            svc = pe._service
            assert svc.accepted == 2 and svc.rejected == 1 and svc.completed_jobs == 2
            assert svc.used_calculations == pytest.approx(400_000, rel=1e-6)
            await asyncio.sleep(0.1)
            assert pe.policy.load == 0
            for s in sessions:
                s.close()
    run_with_registrar(body)


def test_processor_sharing_rate_changes_when_a_job_leaves() -> None:
    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        pe = await start_pe(reg, capacity=1e6, max_requests=4)
        pes.append(pe)
        async with PoolUser(pu_config(reg)) as pu:
            a, b = asyncio.Queue(), asyncio.Queue()
            sa, sb = await _raw_session(pu, a), await _raw_session(pu, b)
            t0 = time.monotonic()
            sa.send(CalcAppMessage(CalcAppType.REQUEST, 1, 100_000).encode(), PPID_CALCAPP)
            sb.send(CalcAppMessage(CalcAppType.REQUEST, 2, 300_000).encode(), PPID_CALCAPP)
            await a.get(), await b.get()
            await asyncio.wait_for(a.get(), 5)
            ta = time.monotonic() - t0
            await asyncio.wait_for(b.get(), 5)
            tb = time.monotonic() - t0
            # A: 100k at 0.5e6/s = 0.2 s; B: 100k in those 0.2 s, then 200k alone at 1e6/s = 0.4 s total
            assert 0.18 <= ta < 0.6
            assert 0.38 <= tb < 0.9 and tb - ta >= 0.17
            sa.close()
            sb.close()
    run_with_registrar(body)


def test_pu_statistics_fifo_one_at_a_time() -> None:
    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        for _ in range(2):
            pes.append(await start_pe(reg, capacity=1e6, max_requests=4))
        params = PUParams(pool_handle=POOL, size_mean=50_000, size_dist="const", interval_mean=0.1,
                          interval_dist="exp")
        t_before = time.time()
        run = await run_pus(3, 3.0, pu_config(reg), params, seed=5)
        records, counters = run.records, run.counters
        assert t_before <= run.t0_epoch <= t_before + 1.0
        assert records
        done = [r for r in records if r["status"] == "completed"]
        assert len(done) >= 10
        assert counters["completes"] == len(done)
        for r in done:
            assert r["queued_at"] <= r["started_at"] <= r["accepted_at"] <= r["completed_at"]
            assert r["element"] == "127.0.0.1" and r["element_id"] in {pe.identifier for pe in pes}
            assert r["accepts"] == [[pytest.approx(r["accepted_at"], abs=1e-5), "127.0.0.1"]]
        by_pu: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            by_pu.setdefault(r["pu"], []).append(r)
        for rs in by_pu.values():
            rs.sort(key=lambda r: r["request_id"])
            started = [r for r in rs if r["started_at"] is not None]
            for prev, nxt in zip(started, started[1:], strict=False):
                # one request in service at a time, in queue order
                assert prev["completed_at"] is not None and nxt["started_at"] >= prev["completed_at"]
        used = sum(pe._service.used_calculations for pe in pes)
        assert used >= 50_000 * len(done) - 1
    run_with_registrar(body)


def test_drain_finishes_every_queued_request() -> None:
    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        pes.append(await start_pe(reg, capacity=1e6, max_requests=4))
        # 2 PUs offering 2 x 0.2e6 / 0.1 s = 4e6 calc/s to a 1e6 PE: queues build up during the run
        params = PUParams(pool_handle=POOL, size_mean=200_000, size_dist="const", interval_mean=0.1,
                          interval_dist="const")
        run = await run_pus(2, 1.0, pu_config(reg), params, seed=3, drain=30.0)
        assert len(run.records) >= 15
        assert all(r["status"] == "completed" for r in run.records), [r for r in run.records if r["status"] != "completed"]
        assert max(r["queued_at"] for r in run.records) <= 1.05  # nothing new after --duration
    run_with_registrar(body)


def test_reject_leads_to_reselection_after_retry_delay() -> None:
    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        full = await start_pe(reg, capacity=1e6, max_requests=1, policy="RoundRobin")
        pes.append(full)
        async with PoolUser(pu_config(reg)) as pu:
            box: asyncio.Queue[CalcAppMessage] = asyncio.Queue()
            blocker = await _raw_session(pu, box)
            blocker.send(CalcAppMessage(CalcAppType.REQUEST, 99, 5_000_000).encode(), PPID_CALCAPP)
            assert (await box.get()).type == CalcAppType.ACCEPT
            free = await start_pe(reg, capacity=1e6, max_requests=1, policy="RoundRobin")
            pes.append(free)
            t0 = time.monotonic()
            params = PUParams(pool_handle=POOL, retry_delay=0.3)
            p = CalcAppPU("pu0", pu_config(reg), params, random.Random(1), lambda: time.monotonic() - t0)
            await p.pu.start()
            from rserpool.services.calcapp_pu import Request
            # try until the round robin hands us the full PE first once (it alternates)
            r = Request(1, 100_000, 0.0, started_at=0.0)
            await p._handle(r)
            r2 = Request(2, 100_000, 0.0, started_at=0.0)
            await p._handle(r2)
            await p.pu.close()
            rejected = [x for x in (r, r2) if x.rejected_by]
            assert rejected, "round robin should have offered the full PE once"
            assert all(x.status == "completed" and x.element_id == free.identifier for x in rejected)
            assert full._service.rejected >= 1
            blocker.close()
    run_with_registrar(body)


def test_cookie_failover_resumes_and_completes_exactly_once() -> None:
    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        a = await start_pe(reg, capacity=1e6, max_requests=4)
        pes.append(a)
        a._service.cookie_max_calculations = 200_000  # a cookie every 0.2 s of work
        t0 = time.monotonic()
        params = PUParams(pool_handle=POOL, keepalive_interval=0.5, keepalive_timeout=0.5, retry_delay=0.2)
        p = CalcAppPU("pu0", pu_config(reg), params, random.Random(1), lambda: time.monotonic() - t0)
        await p.pu.start()
        from rserpool.services.calcapp_pu import Request
        r = Request(1, 1_000_000, 0.0, started_at=0.0)
        task = asyncio.create_task(p._handle(r))
        await asyncio.sleep(0.55)  # A has done ~550,000 and sent cookies at 200k and 400k
        b = await start_pe(reg, capacity=1e6, max_requests=4)
        pes.append(b)
        used_a = a._service.stats()["used_calculations"]
        await a.kill()
        await asyncio.wait_for(task, 15)
        await p.pu.close()
        assert r.status == "completed" and r.failovers == 1
        assert r.element_id == b.identifier
        assert b._service.completed_jobs == 1 and a._service.completed_jobs == 0
        resumed_from = 1_000_000 - b._service.used_calculations
        # resumed from the last cookie (400,000), not from 0 and not beyond what A did
        assert 350_000 <= resumed_from <= used_a + 1
        assert p.counters["completes"] == 1
    run_with_registrar(body)


def _one_request(reg: Registrar) -> tuple[CalcAppPU, Any]:
    from rserpool.services.calcapp_pu import Request

    t0 = time.monotonic()
    params = PUParams(pool_handle=POOL, keepalive_interval=0.5, keepalive_timeout=0.5, retry_delay=0.2)
    p = CalcAppPU("pu0", pu_config(reg), params, random.Random(1), lambda: time.monotonic() - t0)
    return p, Request(1, 1_000_000, 0.0, started_at=0.0)


def test_a_pe_lost_before_any_cookie_restarts_the_request_from_scratch_and_says_so() -> None:
    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        a = await start_pe(reg, capacity=1e6, max_requests=4)
        pes.append(a)
        a._service.cookie_max_calculations = a._service.cookie_max_time = 1e9  # no cookie ever
        p, r = _one_request(reg)
        await p.pu.start()
        task = asyncio.create_task(p._handle(r))
        await asyncio.sleep(0.4)
        b = await start_pe(reg, capacity=1e6, max_requests=4)
        pes.append(b)
        await a.kill()
        await asyncio.wait_for(task, 15)
        await p.pu.close()
        assert r.status == "completed" and r.element_id == b.identifier and r.failovers == 1
        assert [(why, host, done) for _t, why, host, done in r.restarts] == [("no_cookie", "127.0.0.1", 0)]
        assert 0.4 < r.restarts[0][0] < r.completed_at
        assert b._service.used_calculations == pytest.approx(1_000_000, rel=1e-3)  # all of it, again
        assert p.counters["restarts"] == 1 and r.to_dict("pu0")["restarts"][0][1] == "no_cookie"
    run_with_registrar(body)


def test_a_session_lost_after_the_accept_restarts_with_its_cookie_unused() -> None:
    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        a = await start_pe(reg, capacity=1e6, max_requests=4)
        pes.append(a)
        a._service.cookie_max_calculations = 200_000  # a cookie every 0.2 s of work
        p, r = _one_request(reg)
        await p.pu.start()
        task = asyncio.create_task(p._handle(r))
        await asyncio.sleep(0.55)  # cookies at 200k and 400k
        await a.kill()  # and no other PE: the fail-over finds none, the session ends
        while not r.restarts:
            await asyncio.sleep(0.05)
        b = await start_pe(reg, capacity=1e6, max_requests=4)
        pes.append(b)
        await asyncio.wait_for(task, 20)
        await p.pu.close()
        assert r.status == "completed" and r.element_id == b.identifier
        (_t, why, host, done), = r.restarts
        assert (why, host) == ("session_lost", "127.0.0.1") and 200_000 <= done <= 600_000
        assert b._service.used_calculations == pytest.approx(1_000_000, rel=1e-3)  # the cookie was not used
    run_with_registrar(body)


def test_calcapp_pu_command_writes_json_lines(tmp_path: Any) -> None:
    import json
    import sys

    out = tmp_path / "pus.jsonl"

    async def body(reg: Registrar, pes: list[PoolElement]) -> None:
        pes.append(await start_pe(reg))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rserpool", "calcapp-pu", "--registrar", f"127.0.0.1:{reg.port}",
            "--transport", "tcp", "--pus", "2", "--duration", "2", "--size-mean", "20000",
            "--interval-mean", "0.2", "--seed", "3", "-o", str(out))
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    run_with_registrar(body)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert "summary" in lines[-1] and lines[-1]["summary"]["pus"] == 2
    recs = lines[:-1]
    assert {r["pu"] for r in recs} == {"pu0", "pu1"}
    assert sum(r["status"] == "completed" for r in recs) == lines[-1]["summary"]["counters"]["completes"] > 0

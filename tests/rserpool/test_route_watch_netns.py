"""A PU that loses its route to a PE fails over at once (PUConfig.watch_routes), not after timeouts.

Two namespaces on a bridge: "ue" (registrar, its own CalcApp PE, the PU) and "far" (a CalcApp PE
the PLU policy prefers). Deleting the UE's route to the bridge subnet is what the emulated radio
does at radio link failure (the bearer goes); the UE's own address stays, so its own PE does too.
Root only; everything is removed in ``finally`` (netns_lab).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.netns_lab import Lab, lab_session, sh

pytestmark = pytest.mark.root


@pytest.fixture
def lab() -> Iterator[Lab]:
    with lab_session(Lab("rtw", 215, 6)) as the_lab:
        yield the_lab


def _hsdump(lab: Lab, ns: str, enrp: str) -> dict:
    out = lab.run(ns, "hsdump", "--registrar", enrp, "--json", "--timeout", "2")
    return json.loads(out.stdout) if out.returncode == 0 else {}


def _wait(what: str, pred, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_session_fails_over_when_the_route_to_its_pe_goes(lab: Lab, tmp_path: Path) -> None:
    lab.build_hub()
    ue, far = lab.add_ns("ue"), lab.add_ns("far")
    ue_ip, far_ip = lab.attach(ue, 1), lab.attach(far, 2)
    lab.spawn(ue, "registrar", "--listen", f"{ue_ip}:3863", "--enrp-listen", f"{ue_ip}:9901", "--no-announce",
              log=tmp_path / "registrar.log")
    common = ["pe", "--registrar", f"{ue_ip}:3863", "--pool", "RoutePool", "--service", "calcapp"]
    lab.spawn(far, *common, "--policy", "PriorityLeastUsed:0.1", "--capacity", "200000", "--listen",
              f"{far_ip}:7000", log=tmp_path / "far-pe.log")
    lab.spawn(ue, *common, "--policy", "PriorityLeastUsed:1.0", "--capacity", "1000000", "--listen",
              f"{ue_ip}:7001", log=tmp_path / "ue-pe.log")
    _wait("both PEs registered", lambda: _hsdump(lab, ue, f"{ue_ip}:9901").get("element_count") == 2)

    out = tmp_path / "pus.jsonl"
    # one request of 3e6 calculations: 15 s on the far PE (chosen first), 3 s on the UE's own
    pu = lab.spawn(ue, "calcapp-pu", "--registrar", f"{ue_ip}:3863", "--pool", "RoutePool", "--pus", "1",
                   "--size-mean", "3000000", "--size-dist", "const", "--interval-mean", "0.2",
                   "--interval-dist", "const", "--duration", "0.3", "--drain", "30", "-o", str(out),
                   log=tmp_path / "pu.log")

    def far_busy() -> bool:
        pools = _hsdump(lab, ue, f"{ue_ip}:9901").get("pools") or []
        return any(far_ip in pe.get("addresses", ()) and (pe.get("policy") or {}).get("load", 0) > 0
                   for p in pools for pe in p.get("elements", []))

    _wait("the request running on the far PE", far_busy)
    cut = time.time()
    sh("ip", "-n", ue, "route", "del", f"{lab.subnet}.0/24")  # the UE's bearer goes; its own address stays
    pu.wait(timeout=60)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    summary = lines[-1]["summary"]
    (req,) = [x for x in lines[:-1] if x["request_id"] == 1]
    assert req["status"] == "completed" and req["element"] == ue_ip, req
    (t_far, e_far), (t_ue, e_ue) = req["accepts"]
    assert (e_far, e_ue) == (far_ip, ue_ip)
    # the session failed over at the route change: well before keep-alives (2.5 s + 2.5 s) could notice
    moved = summary["t0_epoch"] + t_ue - cut
    assert 0 <= moved < 1.5, (moved, req)
    assert summary["counters"]["completes"] == 1


def test_connect_under_way_gives_up_when_the_route_goes(lab: Lab) -> None:
    lab.build_hub()
    ue, far = lab.add_ns("ue"), lab.add_ns("far")
    lab.attach(ue, 1)
    far_ip = lab.attach(far, 2)
    # a destination routed via "far", which does not forward: the SYN is never answered
    silent = f"10.99.{os.getpid() % 200 + 20}.0/24"
    sh("ip", "-n", ue, "route", "add", silent, "via", far_ip)
    target = silent.replace(".0/24", ".1")
    script = textwrap.dedent(f"""
        import asyncio, json, time
        from rserpool.pu import PoolUser, PUConfig
        from rserpool.session import SessionChannel

        async def main():
            pu = PoolUser(PUConfig(registrars=[("127.0.0.1", 3863)], transport="tcp", connect_timeout=20.0))
            await pu.start()
            print(json.dumps({{"watching": pu.routes.active}}), flush=True)
            t = time.monotonic()
            try:
                await pu.connect_routed(SessionChannel(), "{target}", 7000, "tcp")
                print(json.dumps({{"connected": True}}), flush=True)
            except OSError as exc:
                print(json.dumps({{"errno": exc.errno, "after": time.monotonic() - t,
                                   "losses": pu.stats["route_losses"]}}), flush=True)
            await pu.close()

        asyncio.run(main())
    """)
    p = subprocess.Popen(["ip", "netns", "exec", ue, sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    lab.procs.append(p)  # type: ignore[arg-type]
    assert p.stdout is not None
    assert json.loads(p.stdout.readline()) == {"watching": True}
    time.sleep(1.0)  # the connect is under way (nothing answers it); now the route goes
    sh("ip", "-n", ue, "route", "del", silent)
    result = json.loads(p.stdout.readline())
    p.wait(timeout=30)
    assert result["errno"] == 101 and result["losses"] == 1, result  # ENETUNREACH
    assert 0.9 <= result["after"] < 2.5, result  # at the route change, not at the 20 s connect timeout


@pytest.mark.parametrize("kind", ["tcp", "sctp"])
def test_connect_without_a_route_fails_at_once(lab: Lab, kind: str) -> None:
    """No route at all (a UE out of coverage): ENETUNREACH at once for both transports. TCP's kernel
    says so itself; SCTP's would retransmit its INIT until the connect timeout, so the PU checks the
    route first (the check comes before any SCTP socket: this runs on kernels without SCTP too)."""
    ue = lab.add_ns("ue")  # loopback only: no route to anything else
    script = textwrap.dedent(f"""
        import asyncio, json, time
        from rserpool.pu import PoolUser, PUConfig
        from rserpool.session import SessionChannel

        async def main():
            pu = PoolUser(PUConfig(registrars=[("127.0.0.1", 3863)], transport="tcp", connect_timeout=20.0))
            await pu.start()
            t = time.monotonic()
            try:
                await pu.connect_routed(SessionChannel(), "10.98.7.1", 7000, "{kind}")
                print(json.dumps({{"connected": True}}), flush=True)
            except OSError as exc:
                print(json.dumps({{"errno": exc.errno, "after": time.monotonic() - t}}), flush=True)
            await pu.close()

        asyncio.run(main())
    """)
    out = subprocess.run(["ip", "netns", "exec", ue, sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errno"] == 101 and result["after"] < 0.5, result  # ENETUNREACH, not the 20 s timeout

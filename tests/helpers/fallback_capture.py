"""Record a short RSerPool run over emulab's TCP fallback on loopback: two registrars peered over
ENRP (127.0.0.2 and 127.0.0.3, the real ports 3863 and 9901), a Fractal Generator and a CalcApp pool
element (127.0.0.4) and their pool users, captured with dumpcap (or tcpdump) on ``lo``.

The addresses keep the run apart from anything else on loopback: the capture filter takes only
them, and binding 127.0.0.2/3 to the well-known ports does not collide with tests that use
127.0.0.1 and ephemeral ports."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
CAPTURE_FILTER = "tcp and (" + " or ".join(f"host {h}" for h in HOSTS) + ")"


def capture_tool() -> list[str] | None:
    """The capture command prefix (dumpcap preferred), or None when neither tool is installed."""
    if shutil.which("dumpcap"):
        return ["dumpcap", "-q", "-i", "lo", "-f", CAPTURE_FILTER, "-P", "-w"]
    if shutil.which("tcpdump"):
        return ["tcpdump", "-U", "-q", "-i", "lo", "-s", "0", "-w"]
    return None


async def _scenario() -> dict[str, int]:
    from rserpool.pe import PEConfig, PoolElement
    from rserpool.policy import PolicyInfo
    from rserpool.pu import PUConfig
    from rserpool.registrar import Registrar, RegistrarConfig
    from rserpool.services.calcapp_pu import PUParams, run_pus
    from rserpool.services.fractal_pu import DEFAULT_POOL, FractalPU
    from rserpool.wire.fractal import FGPParameter

    def registrar(me: str, peer: str) -> Registrar:
        return Registrar(RegistrarConfig(listen=[(me, 3863)], enrp_listen=(me, 9901), peers=[(peer, 9901)],
                                         announce=False, transport="tcp", peer_heartbeat_cycle=0.5,
                                         mentor_hunt_timeout=0.5))

    reg_a, reg_b = registrar(HOSTS[0], HOSTS[1]), registrar(HOSTS[1], HOSTS[0])
    pes: list[PoolElement] = []
    await reg_a.start()
    await reg_b.start()
    try:
        for pool, service in ((DEFAULT_POOL, "fractal"), (b"Processing Pool", "calcapp")):
            pe = PoolElement(PEConfig(pool, PolicyInfo.parse("RoundRobin"), registrars=[(HOSTS[0], 3863)],
                                      listen=(HOSTS[2], 0), transport="tcp", service=service, capacity=1e6,
                                      max_requests=4))
            await pe.start()
            pes.append(pe)
        # the PUs ask the other registrar: the pools reach it over ENRP
        deadline = time.monotonic() + 20
        while len(reg_b.handlespace.pools()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        cfg = PUConfig(registrars=[(HOSTS[1], 3863)], transport="tcp", request_timeout=2.0, connect_timeout=2.0)
        async with FractalPU(cfg, DEFAULT_POOL) as fpu:
            image = await fpu.compute(FGPParameter(160, 100, 64, 1, -1.5, 1.5, 1.5, -1.5, 2.0))
        run = await run_pus(1, 2.0, cfg, PUParams(size_mean=10_000.0, interval_mean=0.3), drain=2.0)
        return {"fractal_elements": len(image.elements()), "calcapp_requests": len(run.records)}
    finally:
        for pe in pes:
            await pe.stop()
        await reg_b.stop()
        await reg_a.stop()


def record(path: Path, timeout: float = 90.0) -> dict[str, int]:
    """Run the scenario while capturing into ``path`` (pcap); what the run did."""
    tool = capture_tool()
    if tool is None:
        raise RuntimeError("neither dumpcap nor tcpdump is installed")
    cmd = [*tool, str(path)] + ([] if tool[0] == "dumpcap" else [CAPTURE_FILTER])
    cap = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not (path.exists() and path.stat().st_size >= 24) and time.monotonic() < deadline:
            if cap.poll() is not None:
                raise RuntimeError(f"{tool[0]} exited: {cap.stderr.read().decode(errors='replace')}")  # type: ignore[union-attr]
            time.sleep(0.05)
        time.sleep(0.3)  # the filter is attached once the file header is written; let it settle
        result = asyncio.run(asyncio.wait_for(_scenario(), timeout))
        time.sleep(0.5)  # the last FIN/ACKs
    finally:
        with contextlib.suppress(ProcessLookupError):
            cap.send_signal(signal.SIGINT)
        try:
            cap.wait(10)
        except subprocess.TimeoutExpired:
            cap.kill()
            cap.wait()
        if cap.stderr is not None:
            cap.stderr.close()
    return result


if __name__ == "__main__":
    import sys

    print(record(Path(sys.argv[1])))

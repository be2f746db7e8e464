"""Benchmark: how long a new registrar takes to download a peer's handlespace over ENRP.

    .venv/bin/python benchmarks/enrp_sync.py [--quick] [--elements N] [--runs N]

Registrar A (127.0.0.1) holds N pool elements it owns (10,000 by default, in 10 pools, put straight
into its handlespace); registrar B starts with A as its static peer, hears A's Presence, finds the
checksum of A's own PEs differs from its (empty) view and fetches A's handle table in pieces of
128 (Handle Table Request / Response with "more to send"). Timed: B's start until B holds all N
entries with A's checksum. TCP on loopback, in one process. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from rserpool.policy import PolicyInfo
from rserpool.registrar import Registrar, RegistrarConfig
from rserpool.wire import TcpTransport


def _config(i: int, peers: list[tuple[str, int]]) -> RegistrarConfig:
    # A short heartbeat so that the first Presence (which starts the download) is not waited for.
    return RegistrarConfig(identifier=0x5000 + i, listen=[("127.0.0.1", 0)], enrp_listen=("127.0.0.1", 0),
                           peers=peers, announce=False, transport="tcp", peer_heartbeat_cycle=0.05)


async def one_run(n: int) -> tuple[float, int]:
    a = Registrar(_config(1, []))
    await a.start()
    b: Registrar | None = None
    try:
        for k in range(1, n + 1):
            t = TcpTransport(10000 + k % 50000, ("10.1.0.1",))
            a.handlespace.register(f"Pool{k % 10}".encode(), k, PolicyInfo(1), (t,), home_pr=a.identifier,
                                   user_transport=t, protocol=6)
        assert a.enrp_port is not None
        b = Registrar(_config(2, [("127.0.0.1", a.enrp_port)]))
        t0 = time.monotonic()
        await b.start()
        want = a.handlespace.ownership_checksum()
        while not (len(b.handlespace) == n and b.handlespace.checksum_of(a.identifier) == want):
            if time.monotonic() - t0 > 120:
                raise TimeoutError(f"only {len(b.handlespace)} of {n} entries after 120 s")
            await asyncio.sleep(0.001)
        took = time.monotonic() - t0
        return took, a.stats["handle_table_request"]
    finally:
        if b is not None:
            await b.stop()
        await a.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one run of 2,000 elements")
    ap.add_argument("--elements", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    n = 2_000 if args.quick else args.elements
    runs = 1 if args.quick else args.runs
    times: list[float] = []
    pieces = 0
    for r in range(runs):
        took, pieces = asyncio.run(one_run(n))
        times.append(took)
        print(f"run {r + 1}: {n} elements in {took * 1000:.0f} ms ({pieces} handle-table pieces, "
              f"{n / took:,.0f} elements/s)")
    med = statistics.median(times)
    print(json.dumps({"benchmark": "enrp_sync", "elements": n, "runs": runs, "pieces": pieces,
                      "download_s_median": round(med, 4), "download_s_min": round(min(times), 4),
                      "elements_per_s": round(n / med)}))


if __name__ == "__main__":
    main()

"""A throwaway pool on loopback (TCP): an in-process registrar, pool elements of any service
(CalcApp by default) and pool users around it, removed however the test ends. Shared by the
service tests and the tshark dissections of recorded exchanges."""

from __future__ import annotations

import asyncio
from typing import Any

from rserpool.pe import PEConfig, PoolElement
from rserpool.policy import PolicyInfo
from rserpool.pu import PUConfig
from rserpool.registrar import Registrar, RegistrarConfig

POOL = b"Processing Pool"
"""The CalcApp pool handle of RSPLIB's examples and the papers."""


def make_registrar() -> Registrar:
    """A registrar on an ephemeral loopback port, without ENRP or announcements."""
    return Registrar(RegistrarConfig(listen=[("127.0.0.1", 0)], enrp_listen=None, announce=False, transport="tcp",
                                     keepalive_interval=30.0, keepalive_timeout=30.0))


async def start_pe(reg: Registrar, capacity: float = 1e6, max_requests: int = 4, policy: str = "PLU:0.1",
                   pool: bytes = POOL, service: str = "calcapp", **config: Any) -> PoolElement:
    """A started PE of ``service`` in ``pool``, registered at ``reg``; ``config`` goes to ``PEConfig``
    (e.g. ``identifier``)."""
    pe = PoolElement(PEConfig(pool, PolicyInfo.parse(policy), registrars=[("127.0.0.1", reg.port)],
                              listen=("127.0.0.1", 0), transport="tcp", service=service, capacity=capacity,
                              max_requests=max_requests, request_timeout=1.0, retry_delay=0.2, **config))
    await pe.start()
    return pe


def pu_config(reg: Registrar) -> PUConfig:
    """A pool user's configuration for ``reg`` with short timeouts and no handle cache."""
    return PUConfig(registrars=[("127.0.0.1", reg.port)], transport="tcp", request_timeout=1.0,
                    connect_timeout=1.0, stale_cache=0.0)


def run_with_registrar(body: Any, timeout: float = 60.0) -> None:
    """Run ``await body(reg, pes)`` (at most ``timeout`` s) with a fresh registrar; kill every PE
    ``body`` appended to ``pes`` and stop the registrar however it ends."""
    async def main() -> None:
        reg = make_registrar()
        await reg.start()
        pes: list[PoolElement] = []
        try:
            await asyncio.wait_for(body(reg, pes), timeout)
        finally:
            for pe in pes:
                await pe.kill()
            await reg.stop()
    asyncio.run(main())

"""Three ``rserpool registrar`` processes in three network namespaces on a bridge (root only).

Each registrar has the other two as static ``--peer``s and one PE (in its own namespace) that knows
only that registrar. After the mesh has mirrored all three PEs, registrar 1 is SIGKILLed: the other
two declare it dead, the first to initiate (ties: lower ID) takes over its PE (Keep-Alive with the Home flag to the
PE's port) and both survivors keep all three PEs, checked with ``rserpool hsdump`` and ``rserpool
pu``. Everything created is removed in ``finally``, also when an assertion fails.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from netns_lab import Lab, lab_session  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

TIMERS = ["--peer-heartbeat-cycle", "0.5", "--peer-max-time-last-heard", "1", "--peer-max-time-no-response", "1",
          "--takeover-expiry", "1", "--keepalive-interval", "1", "--keepalive-timeout", "1", "--no-announce",
          "--transport", "tcp"]


@pytest.fixture
def lab() -> Iterator[Lab]:
    with lab_session(Lab("enrp", 214, 7)) as the_lab:
        yield the_lab


def homes(lab: Lab, ns: str, enrp: str) -> dict[int, int] | None:
    out = lab.run(ns, "hsdump", "--registrar", enrp, "--json", "--transport", "tcp", "--timeout", "2")
    if out.returncode != 0:
        return None
    doc = json.loads(out.stdout)
    return {e["identifier"]: e["home_pr"] for p in doc["pools"] for e in p["elements"]}


def wait_homes(lab: Lab, ns: str, enrp: str, want: dict[int, int], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    seen = None
    while time.monotonic() < end:
        seen = homes(lab, ns, enrp)
        if seen == want:
            return
        time.sleep(0.3)
    raise AssertionError(f"{enrp}: wanted {want}, last saw {seen}")


def test_three_registrars_sigkill_one_takeover(lab: Lab) -> None:
    lab.build_hub()
    nss = [lab.add_ns(f"r{i}") for i in (1, 2, 3)]
    ips = [lab.attach(ns, i + 1, multicast_route=False) for i, ns in enumerate(nss)]
    regs = []
    for i, (ns, ip) in enumerate(zip(nss, ips, strict=True)):
        peers = [a for j, other in enumerate(ips) if j != i for a in ("--peer", f"{other}:9901")]
        regs.append(lab.spawn(ns, "registrar", "--identifier", f"0x{0x11 + i:x}", "--listen", f"{ip}:3863",
                              "--enrp-listen", f"{ip}:9901", *peers, *TIMERS))
    time.sleep(1.0)
    for i, (ns, ip) in enumerate(zip(nss, ips, strict=True)):
        lab.spawn(ns, "pe", "--pool", "EnrpPool", "--identifier", f"0x{0xA1 + i:x}", "--listen", f"{ip}:7000",
                  "--registrar", f"{ip}:3863", "--transport", "tcp")
    want = {0xA1: 0x11, 0xA2: 0x12, 0xA3: 0x13}
    for ns, ip in zip(nss, ips, strict=True):
        wait_homes(lab, ns, f"{ip}:9901", want)

    regs[0].send_signal(signal.SIGKILL)
    regs[0].wait(10)
    t0 = time.monotonic()
    # The survivor that initiates first takes over PE 0xa1 (a tie goes to the lower ID); both agree.
    end = time.monotonic() + 20
    after: dict[int, int] | None = None
    while time.monotonic() < end:
        h2 = homes(lab, nss[1], f"{ips[1]}:9901")
        h3 = homes(lab, nss[2], f"{ips[2]}:9901")
        if h2 is not None and h2 == h3 and h2.get(0xA1) in (0x12, 0x13) and set(h2) == {0xA1, 0xA2, 0xA3}:
            after = h2
            break
        time.sleep(0.3)
    assert after is not None, f"no agreed takeover: {h2} / {h3}"
    assert after[0xA2] == 0x12 and after[0xA3] == 0x13
    took = time.monotonic() - t0
    assert took < 15, f"takeover took {took:.1f} s"
    # a PU asking either survivor sees every PE, each once
    for ns, ip in zip(nss[1:], ips[1:], strict=True):
        out = lab.run(ns, "pu", "--pool", "EnrpPool", "--registrar", f"{ip}:3863", "--count", "10", "--json",
                      "--transport", "tcp")
        assert out.returncode == 0, out.stderr
        ids = [e["identifier"] for e in json.loads(out.stdout)["elements"]]
        assert sorted(ids) == [0xA1, 0xA2, 0xA3]
    # the taken-over PE stays (it answers the new home's keep-alives)
    time.sleep(3)
    assert homes(lab, nss[2], f"{ips[2]}:9901") == after
    assert regs[1].poll() is None and regs[2].poll() is None

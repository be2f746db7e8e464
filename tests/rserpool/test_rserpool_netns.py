"""Registrar, pool elements and a pool user in separate network namespaces (root only).

Topology: a "hub" namespace holds a Linux bridge; the registrar, two PEs and the PU each live in
their own namespace, attached to the bridge by a veth pair, with a 224.0.0.0/4 route so ASAP
server announces reach them. The processes are the real command line (``ip netns exec NS
rserpool ...``). The transport is whatever ``transport_kind()`` picks (TCP here, SCTP on a kernel
that has it). Everything created is removed in ``finally``, also when an assertion fails.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from helpers.netns_lab import Lab, lab_session

pytestmark = [pytest.mark.root, pytest.mark.realkernel]

@pytest.fixture
def lab() -> Iterator[Lab]:
    with lab_session(Lab("rsp", 213, 6, spawn_stdout=subprocess.PIPE)) as the_lab:
        yield the_lab


def wait_dump(lab: Lab, ns: str, enrp: str, count: int, timeout: float = 20.0) -> dict[str, object]:
    end = time.monotonic() + timeout
    last = ""
    while time.monotonic() < end:
        out = lab.run(ns, "hsdump", "--registrar", enrp, "--json")
        if out.returncode == 0:
            doc = json.loads(out.stdout)
            if doc["element_count"] == count:
                return doc
            last = out.stdout
        else:
            last = out.stderr
        time.sleep(0.3)
    raise AssertionError(f"registrar never showed {count} PE(s): {last}")


def test_registrar_pes_and_pu_in_separate_namespaces(lab: Lab) -> None:
    lab.build_hub()
    ns_r, ns_a, ns_b, ns_u = (lab.add_ns(n) for n in ("reg", "pea", "peb", "pu"))
    r_ip = lab.attach(ns_r, 1)
    a_ip = lab.attach(ns_a, 2)
    b_ip = lab.attach(ns_b, 3)
    lab.attach(ns_u, 4)

    reg = lab.spawn(ns_r, "registrar", "--listen", f"{r_ip}:3863", "--enrp-listen", f"{r_ip}:9901",
                    "--announce-cycle", "0.3", "--keepalive-interval", "1", "--keepalive-timeout", "1")
    # PE a finds the registrar by multicast announce, PE b by the static list
    pe_a = lab.spawn(ns_a, "pe", "--pool", "NsPool", "--policy", "RoundRobin", "--listen", f"{a_ip}:7000",
                     "--identifier", "0xa")
    lab.spawn(ns_b, "pe", "--pool", "NsPool", "--policy", "RoundRobin", "--listen", f"{b_ip}:7000",
              "--identifier", "0xb", "--registrar", f"{r_ip}:3863")
    doc = wait_dump(lab, ns_u, f"{r_ip}:9901", 2)
    endpoints = {e["identifier"]: e["endpoint"] for p in doc["pools"] for e in p["elements"]}  # type: ignore[index]
    assert endpoints == {0xA: f"{a_ip}:7000", 0xB: f"{b_ip}:7000"}

    # the PU finds the registrar by announce, resolves and talks to a PE's echo service
    out = lab.run(ns_u, "pu", "--pool", "NsPool", "--json", "--count", "5", "--echo", "across namespaces")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert sorted(e["identifier"] for e in res["elements"]) == [0xA, 0xB]
    assert res["echo"] == "across namespaces"
    static = lab.run(ns_u, "pu", "--pool", "NsPool", "--registrar", f"{r_ip}:3863")
    assert static.returncode == 0 and len(static.stdout.splitlines()) == 2

    # a PE that dies without deregistering disappears; the other one stays
    pe_a.kill()
    pe_a.wait(10)
    doc = wait_dump(lab, ns_u, f"{r_ip}:9901", 1)
    assert [e["identifier"] for p in doc["pools"] for e in p["elements"]] == [0xB]  # type: ignore[index]
    assert reg.poll() is None


def test_registrar_without_multicast_route_keeps_serving(lab: Lab) -> None:
    ns = lab.add_ns("iso")  # loopback only: no route for 224.0.0.0/4
    reg = lab.spawn(ns, "registrar", "--listen", "127.0.0.1:3863", "--enrp-listen", "127.0.0.1:9901",
                    "--announce-cycle", "0.1")
    pe = lab.spawn(ns, "pe", "--pool", "IsoPool", "--listen", "127.0.0.1:0", "--registrar", "127.0.0.1:3863")
    wait_dump(lab, ns, "127.0.0.1:9901", 1)
    out = lab.run(ns, "pu", "--pool", "IsoPool", "--registrar", "127.0.0.1:3863", "--echo", "x")
    assert out.returncode == 0 and "echo: x" in out.stdout, out.stderr
    assert reg.poll() is None and pe.poll() is None
    reg.send_signal(signal.SIGTERM)
    _, err = reg.communicate(timeout=10)
    assert err.count("multicast send") == 1  # reported once, not raised, not repeated

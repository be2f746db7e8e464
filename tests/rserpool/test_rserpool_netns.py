"""Registrar, pool elements and a pool user in separate network namespaces (root only).

Topology: a "hub" namespace holds a Linux bridge; the registrar, two PEs and the PU each live in
their own namespace, attached to the bridge by a veth pair, with a 224.0.0.0/4 route so ASAP
server announces reach them. The processes are the real command line (``ip netns exec NS
rserpool ...``). The transport is whatever ``transport_kind()`` picks (TCP here, SCTP on a kernel
that has it). Everything created is removed in ``finally``, also when an assertion fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = Path(sys.executable).parent / "rserpool"
RSERPOOL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "rserpool"]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


class Lab:
    """Namespaces + bridge + processes, torn down by ``close()`` whatever happened."""

    def __init__(self) -> None:
        n = os.getpid() % 10000
        self.tag = f"rsp{n}"
        self.subnet = f"10.213.{n % 200 + 20}"
        self.hub = f"{self.tag}hub"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []

    def add_ns(self, name: str) -> str:
        ns = f"{self.tag}{name}"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def build_hub(self) -> None:
        self.add_ns("hub")
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")

    def attach(self, ns: str, host: int, multicast_route: bool = True) -> str:
        inner, outer = f"{ns[-6:]}i", f"{ns[-6:]}o"
        sh("ip", "link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer, "netns", self.hub)
        sh("ip", "-n", self.hub, "link", "set", outer, "master", "br0", "up")
        addr = f"{self.subnet}.{host}"
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", inner)
        sh("ip", "-n", ns, "link", "set", inner, "up")
        if multicast_route:
            sh("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", inner)
        return addr

    def spawn(self, ns: str, *args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *RSERPOOL, *args], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(p)
        return p

    def run(self, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *RSERPOOL, *args], cwd=ROOT, text=True,
                              capture_output=True, timeout=60)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
        for ns in reversed(self.namespaces):  # deleting a namespace deletes its veth ends
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()
        leftovers = sh("ip", "netns", "list").stdout
        assert lab.tag not in leftovers


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

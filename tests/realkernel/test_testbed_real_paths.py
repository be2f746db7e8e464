"""The testbed on a real kernel takes the real paths: sch_netem links, the OVS kernel datapath and
RSerPool over SCTP, not the fallbacks (userspace shaper, datapath_type=netdev, TCP).

``tests/emulab/test_testbed_e2e.py::test_small_topology_lifecycle`` accepts either backend, so that
it runs on CI machines without those kernel features; this test, in the real-kernel lane
(``scripts/realkernel/run.sh``), starts the same small topology and asserts that ``emulab status
--json`` reports netem, the kernel datapath and SCTP, and that the kernel agrees: a netem qdisc
with the link's 10 ms delay, the bridge in the kernel's ``system`` datapath (``ovs-dpctl``), and
the registrar's SCTP associations with the topology's pool elements (``/proc/net/sctp/assocs``).
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from emulab.topology import load

from helpers.testbed import REAL_KERNEL_NEEDS, real_kernel
from helpers.testbed import run_emulab as emulab

pytestmark = [
    pytest.mark.realkernel,
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(not real_kernel(), reason=REAL_KERNEL_NEEDS),
]

ASAP_PORT = 3863


def in_ns(ns: str, *argv: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=60,
                          check=True).stdout


def sctp_assocs(ns: str, lport: int) -> list[list[str]]:
    """Rows of /proc/net/sctp/assocs in namespace ``ns`` whose local port is ``lport``."""
    lines = in_ns(ns, "cat", "/proc/net/sctp/assocs").splitlines()
    if not lines:
        return []
    col = lines[0].split().index("LPORT")
    return [row.split() for row in lines[1:] if len(row.split()) > col and row.split()[col] == str(lport)]


def test_small_topology_takes_netem_kernel_datapath_and_sctp(testbed_guard: None) -> None:
    start = emulab("start", "small", "--detach")
    assert start.returncode == 0, start.stdout + start.stderr
    st = json.loads(emulab("status", "--json", check=True).stdout)
    spec = load("small")
    assert (st["link_backend"], st["ovs_datapath"], st["rserpool_transport"]) == ("netem", "kernel", "sctp"), \
        {k: st[k] for k in ("link_backend", "ovs_datapath", "rserpool_transport")}
    assert {lk["name"]: lk["applied"]["backend"] for lk in st["links"]} == {lk.name: "netem" for lk in spec.links}
    assert {sw["datapath"] for sw in st["switches"]} == {"kernel"}

    # The kernel's view. netem on the routed 10 ms link, in one of its end nodes:
    ns = {n["name"]: n["namespace"] for n in st["nodes"]}
    wan = next(lk for lk in spec.links if lk.params.delay_ms)
    qdiscs = {end.node: in_ns(ns[end.node], "tc", "qdisc", "show") for end in wan.ends if end.node in ns}
    delay = f"{wan.params.delay_ms:g}"
    assert any(re.search(rf"qdisc netem .*delay {delay}(\.0+)?ms", q) for q in qdiscs.values()), qdiscs
    # every bridge is a port of the kernel's datapath (the userspace one would be netdev@ovs-netdev):
    dp = subprocess.run(["ovs-dpctl", "show"], capture_output=True, text=True, timeout=60, check=True).stdout
    for sw in st["switches"]:
        assert re.search(rf"port \d+: {re.escape(sw['bridge'])} \(internal\)", dp), (sw["bridge"], dp)
    # the topology's two pool elements registered with h1's registrar over SCTP associations:
    registrar = next(n for n in spec.nodes.values() if any(s.kind == "registrar" for s in n.services)).name
    pes = sum(1 for n in spec.nodes.values() for s in n.services if s.kind == "pe")
    deadline = time.monotonic() + 60
    while len(assocs := sctp_assocs(ns[registrar], ASAP_PORT)) < pes and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(assocs) >= pes, (assocs, emulab("status").stdout)

    stop = emulab("stop", check=True)
    assert "stopped" in stop.stdout

"""Namespace tests of EmuLink and the shaper: two Mininet hosts, one link, real traffic.

Functional checks (delay applied, loss blocks and clears, run-time change, IPv6/broadcast, SIGTERM,
cleanup), not benchmarks: benchmarks/links.py measures accuracy and throughput. Every fixture
removes what it created in `finally`. The netem tests run only where the kernel has sch_netem.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulab.linkparams import LinkParams
from emulab.links import EmuLink, LinkError, cleanup_leftovers, emu_link, probe_netem
from emulab.shaper_control import Shaper, ShaperClient, ShaperError, netns_exists

pytestmark = pytest.mark.root

IP1, IP2 = "10.232.0.1", "10.232.0.2"
IP6_1, IP6_2 = "fd00:232::1", "fd00:232::2"


def _netem_available() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        return probe_netem()
    except LinkError:
        return False


NETEM = _netem_available()
needs_netem = pytest.mark.skipif(not NETEM, reason="kernel has no sch_netem")
# The netem variants also run in the real-kernel lane (one link's RTT holds there within ±2 ms).
netem_lane = [needs_netem, pytest.mark.realkernel]


@pytest.fixture
def shaper(tmp_path: Path) -> Iterator[Shaper]:
    ns = f"emtest-shaper-{uuid.uuid4().hex[:8]}"
    handle = Shaper.start(str(tmp_path / "shaper.sock"), netns=ns)
    try:
        yield handle
    finally:
        handle.stop()
        cleanup_leftovers(ns, str(tmp_path))


@pytest.fixture
def hosts() -> Iterator[tuple[Any, Any]]:
    from mininet.node import Host

    tag = uuid.uuid4().hex[:5]
    h1 = h2 = None
    try:
        h1, h2 = Host(f"t{tag}a"), Host(f"t{tag}b")
        yield h1, h2
    finally:
        for h in (h1, h2):
            if h is not None:
                h.terminate()


def _link(hosts: tuple[Any, Any], params: LinkParams, backend: str, shaper: Shaper | None,
          dynamic: bool = True) -> EmuLink:
    h1, h2 = hosts
    link = emu_link(h1, h2, "te-eth0", "te-eth1", params=params, backend=backend, shaper=shaper, link_id="t",
                    dynamic=dynamic)
    h1.setIP(f"{IP1}/24", intf="te-eth0")
    h2.setIP(f"{IP2}/24", intf="te-eth1")
    return link


def _ping(h: Any, count: int = 10, dst: str = IP2, extra: str = "") -> list[float]:
    out = h.cmd(f"ping -n {extra} -c {count} -i 0.05 -W 2 {dst}")
    return [float(x) for x in re.findall(r"time=([0-9.]+) ms", out)]


def _check_rtt(rtts: list[float], configured: float) -> None:
    assert len(rtts) >= 8, rtts
    tol = max(2.0, 0.02 * configured)
    # min is robust against a busy shared machine; the mean gets a looser functional bound
    assert abs(min(rtts) - configured) <= tol, rtts
    assert abs(sum(rtts) / len(rtts) - configured) <= 3 * tol, rtts


def _backends() -> list[Any]:
    return [pytest.param("shaper", id="shaper"), pytest.param("netem", id="netem", marks=netem_lane)]


@pytest.fixture(params=_backends())
def backend_shaper(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Shaper | None]]:
    if request.param == "netem":
        yield "netem", None
        return
    yield "shaper", request.getfixturevalue("shaper")


def test_delay_is_applied(hosts: tuple[Any, Any], backend_shaper: tuple[str, Shaper | None]) -> None:
    backend, sh = backend_shaper
    link = _link(hosts, LinkParams(delay_ms=10), backend, sh)
    try:
        _ping(hosts[0], 1)  # ARP
        _check_rtt(_ping(hosts[0]), 20.0)
        applied = link.applied()
        assert applied["backend"] == backend
        assert applied["1to2"]["delay_ms"] == pytest.approx(10.0)
        assert applied["2to1"]["delay_ms"] == pytest.approx(10.0)
    finally:
        link.delete()


def test_runtime_change_and_loss(hosts: tuple[Any, Any], backend_shaper: tuple[str, Shaper | None]) -> None:
    backend, sh = backend_shaper
    link = _link(hosts, LinkParams(delay_ms=2), backend, sh)
    try:
        _ping(hosts[0], 1)
        _check_rtt(_ping(hosts[0]), 4.0)
        link.set_params(LinkParams(delay_ms=25))
        _check_rtt(_ping(hosts[0]), 50.0)
        link.set_params(LinkParams(delay_ms=2, loss_pct=100))
        assert _ping(hosts[0], 5) == []
        assert link.applied()["1to2"]["loss_pct"] == pytest.approx(100.0)
        link.set_params(LinkParams(delay_ms=2, loss_pct=0))  # Mininet's TCIntf would keep the loss
        assert link.applied()["1to2"]["loss_pct"] == 0.0
        assert len(_ping(hosts[0], 10)) == 10
        # one direction only: the reply path gets the delay
        link.set_params(LinkParams(delay_ms=20), direction="2to1")
        _check_rtt(_ping(hosts[0]), 22.0)
        assert link.applied()["2to1"]["delay_ms"] == pytest.approx(20.0)
        assert link.applied()["1to2"]["delay_ms"] == pytest.approx(2.0)
    finally:
        link.delete()


def test_ipv6_and_broadcast_pass(hosts: tuple[Any, Any], backend_shaper: tuple[str, Shaper | None]) -> None:
    backend, sh = backend_shaper
    h1, h2 = hosts
    link = _link(hosts, LinkParams(delay_ms=1), backend, sh)
    try:
        for h, ip in ((h1, IP6_1), (h2, IP6_2)):
            h.cmd(f"sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.{h.intfNames()[0]}.disable_ipv6=0")
            h.cmd(f"ip -6 addr add {ip}/64 dev {h.intfNames()[0]} nodad")
        assert len(_ping(h1, 5, IP6_2)) == 5
        h2.cmd("sysctl -qw net.ipv4.icmp_echo_ignore_broadcasts=0")
        assert len(_ping(h1, 3, "10.232.0.255", extra="-b")) >= 3
    finally:
        link.delete()


def test_neutral_link_has_no_hop(hosts: tuple[Any, Any], shaper: Shaper) -> None:
    link = _link(hosts, LinkParams(), "shaper", shaper, dynamic=False)
    try:
        assert link.hop is False and link.mid1 is None
        assert len(_ping(hosts[0], 3)) == 3
        assert ShaperClient(shaper.control_path).ping()["links"] == 0
        link.set_params(LinkParams())  # neutral stays neutral: fine
        with pytest.raises(LinkError, match="dynamic"):
            link.set_params(LinkParams(delay_ms=5))
    finally:
        link.delete()


def test_shaper_link_needs_a_shaper(hosts: tuple[Any, Any]) -> None:
    with pytest.raises(LinkError, match="running shaper"):
        _link(hosts, LinkParams(delay_ms=5), "shaper", None)


def test_delete_removes_middle_interfaces(hosts: tuple[Any, Any], shaper: Shaper) -> None:
    link = _link(hosts, LinkParams(delay_ms=1), "shaper", shaper)
    out = subprocess.run(["ip", "-n", shaper.netns, "-o", "link"], capture_output=True, text=True).stdout
    assert link.mid1 in out and link.mid2 in out
    link.delete()
    out = subprocess.run(["ip", "-n", shaper.netns, "-o", "link"], capture_output=True, text=True).stdout
    assert "emsh" not in out
    assert "te-eth0" not in hosts[0].cmd("ip -o link")
    assert ShaperClient(shaper.control_path).ping()["links"] == 0


def test_shaper_sigterm_leaves_nothing(tmp_path: Path) -> None:
    ns = f"emtest-shaper-{uuid.uuid4().hex[:8]}"
    sock = tmp_path / "s.sock"
    handle = Shaper.start(str(sock), netns=ns)
    try:
        assert sock.exists() and (tmp_path / "s.pid").exists()
        os.kill(handle.pid, signal.SIGTERM)
        assert handle.proc is not None
        assert handle.proc.wait(timeout=5) == 0
        assert not sock.exists() and not (tmp_path / "s.pid").exists()
        handle.stop()  # removes the namespace it created
        assert not netns_exists(ns)
    finally:
        handle.stop()
        cleanup_leftovers(ns, str(tmp_path))


def test_shaper_rejects_bad_requests(shaper: Shaper) -> None:
    c = ShaperClient(shaper.control_path)
    with pytest.raises(ShaperError, match="no such device|No such device"):
        c.add_link("x", "emsh-nope-a", "emsh-nope-b", LinkParams(delay_ms=1))
    with pytest.raises(ShaperError, match="no link"):
        c.set_params("missing", LinkParams())
    with pytest.raises(ShaperError, match="unknown op"):
        c.request({"op": "frobnicate"})
    assert c.ping()["pid"] == shaper.pid
    c.close()


def test_cleanup_leftovers_after_crash(tmp_path: Path, hosts: tuple[Any, Any]) -> None:
    ns = f"emtest-shaper-{uuid.uuid4().hex[:8]}"
    handle = Shaper.start(str(tmp_path / "shaper.sock"), netns=ns)
    try:
        link = _link(hosts, LinkParams(delay_ms=1), "shaper", handle)
        assert link.mid1 is not None
        # a second, orphaned shaper process (a crashed builder left it running) ...
        orphan = subprocess.Popen(handle_cmd(tmp_path / "orphan.sock", ns), start_new_session=True,
                                  env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        deadline = time.monotonic() + 10
        while not (tmp_path / "orphan.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        # ... and the main one killed hard, leaving its socket and pid file behind
        os.kill(handle.pid, signal.SIGKILL)
        assert handle.proc is not None
        handle.proc.wait(timeout=5)
        assert (tmp_path / "shaper.sock").exists()
        removed = cleanup_leftovers(ns, str(tmp_path))
        orphan.wait(timeout=5)
        assert f"shaper process {orphan.pid}" in removed
        assert f"network namespace {ns}" in removed
        assert not netns_exists(ns)
        assert not (tmp_path / "shaper.sock").exists() and not (tmp_path / "orphan.sock").exists()
        assert "te-eth0" not in hosts[0].cmd("ip -o link")  # the node end went with the namespace
        assert cleanup_leftovers(ns, str(tmp_path)) == []
    finally:
        handle.owns_netns = True
        handle.stop()
        cleanup_leftovers(ns, str(tmp_path))


def handle_cmd(sock: Path, ns: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "emulab.shaper", "--control", str(sock), "--netns", ns]


@needs_netem
@pytest.mark.realkernel
def test_netem_neutral_link_has_no_qdisc(hosts: tuple[Any, Any]) -> None:
    link = _link(hosts, LinkParams(), "netem", None, dynamic=False)
    try:
        assert link.applied()["1to2"]["qdisc"] != "netem"
        link.set_params(LinkParams(delay_ms=5, rate_mbit=10))
        got = link.applied()["1to2"]
        assert got["qdisc"] == "netem" and got["rate_mbit"] == pytest.approx(10.0)
        link.set_params(LinkParams())
        assert link.applied()["1to2"]["qdisc"] != "netem"
    finally:
        link.delete()

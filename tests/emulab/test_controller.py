"""Tests of the controller process (emulab.controller) and its L2 learning app (emulab.controller_app).

The root tests build tiny Mininet networks on Open vSwitch (fail_mode=secure, OpenFlow 1.3, the
datapath emulab.ovs picks) against the controller process; the first shows the property
the testbed demonstrates: installed flows keep forwarding when the controller is SIGKILLed, and
the switch reconnects to a restarted controller within seconds. It never runs `mn -c`; it removes
exactly what it created.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from emulab import ovs
from emulab.controller import (
    ControllerError,
    ControllerProcess,
    free_tcp_port,
    is_listening,
    read_status,
)

# ---------------------------------------------------------------------------------------------
# no root needed


def test_read_status_missing_and_stale(tmp_path: Path) -> None:
    assert read_status(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert read_status(tmp_path / "bad.json") is None
    # A pid that is not an emulab controller (this pytest process) reads as not alive.
    (tmp_path / "st.json").write_text(json.dumps({"pid": os.getpid(), "running": True}))
    status = read_status(tmp_path / "st.json")
    assert status is not None and status["alive"] is False


def test_multicast_and_dpid_helpers() -> None:
    from emulab.controller_app import COOKIE, COOKIE_L2, COOKIE_MASK, _is_multicast, dpid_str

    assert _is_multicast("ff:ff:ff:ff:ff:ff")
    assert _is_multicast("33:33:00:00:00:01")
    assert _is_multicast("01:80:c2:00:00:0e")
    assert not _is_multicast("00:00:00:00:00:01")
    assert not _is_multicast("02:42:ac:11:00:02")
    assert dpid_str(0xE0001) == "00000000000e0001"
    assert COOKIE_L2 & COOKIE_MASK == COOKIE


@pytest.fixture
def controllers() -> Iterator[list[ControllerProcess]]:
    """Controllers a test starts; all stopped afterwards, whatever happened."""
    started: list[ControllerProcess] = []
    try:
        yield started
    finally:
        for c in started:
            c.stop(timeout=3)


def test_controller_starts_listens_and_stops_cleanly(
    tmp_path: Path, controllers: list[ControllerProcess]
) -> None:
    port = free_tcp_port()
    t0 = time.monotonic()
    c = ControllerProcess.start(port, tmp_path / "ctl.log", status_path=tmp_path / "st.json")
    controllers.append(c)
    startup = time.monotonic() - t0
    assert c.alive() and is_listening(port)
    assert startup < 15
    deadline = time.monotonic() + 5
    while (status := c.status()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status is not None
    assert status["pid"] == c.pid and status["running"] and status["alive"]
    assert status["connected"] == [] and status["flows_installed"] == 0
    assert status["listen"] == f"127.0.0.1:{port}"
    # A second controller on the same port is refused up front.
    with pytest.raises(ControllerError, match="in use"):
        ControllerProcess.start(port, tmp_path / "ctl2.log")
    c.stop()
    assert not c.alive()
    assert c._proc is not None and c._proc.returncode == 0  # SIGTERM is a clean exit
    final = c.status()
    assert final is not None and final["running"] is False and final["alive"] is False
    log = (tmp_path / "ctl.log").read_text()
    assert "Traceback" not in log and "AttributeError" not in log
    assert not is_listening(port)


def test_controller_start_failure_is_reported(tmp_path: Path) -> None:
    # An address this machine does not own (TEST-NET-1): the bind fails, the process must say so.
    port = free_tcp_port()
    with pytest.raises(ControllerError, match="exited with status 1") as err:
        ControllerProcess.start(port, tmp_path / "ctl.log", listen="192.0.2.1", timeout=15)
    assert "Cannot assign requested address" in str(err.value)  # the log tail says why


# ---------------------------------------------------------------------------------------------
# root: Mininet + OVS + the controller process


def _ping(src: Any, dst: Any, count: int = 5) -> tuple[int, int]:
    """(sent, received) of `count` pings from host src to host dst."""
    out = src.cmd(f"ping -n -c {count} -i 0.2 -W 1 {dst.IP()}")
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def _remove_leftovers(prefix: str) -> None:
    """Delete bridges and root-namespace links named with `prefix` (only ours, never `mn -c`)."""
    try:
        ovs.delete_bridges(prefix)
    except ovs.OvsError:
        pass
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(prefix):
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


@pytest.fixture
def mininet_env(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Yields a builder of a one-switch Mininet network; stops it and removes leftovers after."""
    if not ovs.installed():
        pytest.skip("Open vSwitch is not installed")
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    from mininet.node import OVSSwitch, RemoteController

    setLogLevel("error")
    ovs.ensure_running()
    datapath = ovs.datapath_for(ovs.probe_kernel_datapath())
    # em- prefix + a per-process tag: names stay unique beside other test runs, and every
    # interface name ("em-t123s1-eth4") fits the kernel's 15 characters.
    prefix = f"em-t{os.getpid() % 1000}"
    nets: list[Any] = []

    def build(port: int, hosts: int = 4, switches: int = 1) -> Any:
        """`switches` OVS bridges in a line, `hosts` hosts spread over them round-robin."""
        net = Mininet(
            switch=partial(OVSSwitch, **ovs.switch_params(datapath)),
            controller=None,
            build=False,
            autoSetMacs=True,
        )
        nets.append(net)
        net.addController("c0", controller=RemoteController, ip="127.0.0.1", port=port)
        # Mininet derives a dpid from digits in the name; give it one explicitly.
        sws = [net.addSwitch(f"{prefix}s{j}", dpid=f"{0xE0000 + j:016x}") for j in range(1, switches + 1)]
        for a, b in zip(sws, sws[1:], strict=False):
            net.addLink(a, b)
        for i in range(1, hosts + 1):
            net.addLink(net.addHost(f"{prefix}h{i}"), sws[(i - 1) % switches])
        net.build()
        net.start()
        return net

    try:
        yield build
    finally:
        for net in nets:
            try:
                net.stop()
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass
        _remove_leftovers(prefix)


@pytest.mark.root
@pytest.mark.slow
def test_flows_survive_controller_death_and_switch_reconnects(
    tmp_path: Path, controllers: list[ControllerProcess], mininet_env: Callable[..., Any]
) -> None:
    from emulab.controller_app import COOKIE, COOKIE_L2, COOKIE_MASK

    port = free_tcp_port()
    status_path = tmp_path / "status.json"
    ctl = ControllerProcess.start(port, tmp_path / "controller.log", status_path=status_path)
    controllers.append(ctl)
    net = mininet_env(port)
    bridge = net.switches[0].name
    h1, h2, h3, h4 = net.hosts

    assert ovs.wait_controller_connected([bridge], timeout=10)
    assert ctl.wait_switches(["00000000000e0001"], timeout=10)
    # Bridge set up the way emulab wants it.
    assert ovs.vsctl("get", "Bridge", bridge, "fail_mode").stdout.strip() == "secure"
    assert "OpenFlow13" in ovs.vsctl("get", "Bridge", bridge, "protocols").stdout
    targets = ovs.controller_targets(bridge)
    assert targets == {f"tcp:127.0.0.1:{port}": True}
    (record,) = ovs.controller_records(bridge)
    assert record.max_backoff_ms == 1000  # quick reconnects (OVS's default backoff grows to 8 s)
    assert record.state == "ACTIVE"

    # 1. learning: h1 <-> h2 works (ARP floods via the controller, unicast gets flows).
    assert _ping(h1, h2) == (5, 5)
    flows = ovs.dump_flows(bridge, cookie=COOKIE, cookie_mask=COOKIE_MASK)
    l2 = [f for f in flows if f"cookie={COOKIE_L2:#x}" in f]
    assert any("priority=0" in f and "CONTROLLER" in f for f in flows), flows
    assert {h1.MAC(), h2.MAC()} <= {m for f in l2 for m in re.findall(r"dl_dst=([0-9a-f:]{17})", f)}, flows
    assert all("idle_timeout" not in f and "hard_timeout" not in f for f in l2)  # permanent
    deadline = time.monotonic() + 3
    while (status := ctl.status() or {}).get("flows_installed", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status["flows_installed"] >= 2 and status["packet_ins"] >= 2
    assert status["connected"] == ["00000000000e0001"]

    # 2. the controller dies (SIGKILL): traffic that was flowing keeps flowing...
    ctl.kill()
    assert not ctl.alive()
    assert _ping(h1, h2) == (5, 5)
    assert _ping(h2, h1) == (5, 5)
    # ...while a pair the controller never saw cannot talk (fail_mode=secure, no controller).
    assert _ping(h3, h4, count=2)[1] == 0
    killed = read_status(status_path)
    assert killed is not None and killed["alive"] is False

    # 3. a new controller on the same port: the switch reconnects within a few seconds.
    t0 = time.monotonic()
    ctl2 = ControllerProcess.start(port, tmp_path / "controller.log", status_path=status_path)
    controllers.append(ctl2)
    assert ctl2.wait_switches(["00000000000e0001"], timeout=10)
    reconnect = time.monotonic() - t0
    # OVS refreshes Controller.is_connected in its database a little after the fact.
    assert ovs.wait_controller_connected([bridge], timeout=5)
    assert reconnect < 8, f"reconnect took {reconnect:.1f} s"

    # 4. new flows work again: the new pair, and an old pair after its flows are wiped.
    # h3's ARP entry for h4 is still INCOMPLETE from the failed pings (3 probes, 1 s apart) and
    # would swallow the first echoes until it gives up: start these hosts with clean caches.
    for h in (h3, h4):
        h.cmd("ip neigh flush all")
    assert _ping(h3, h4) == (5, 5)
    ovs.ofctl("del-flows", bridge, f"cookie={COOKIE_L2:#x}/{0xFFFFFFFFFFFFFFFF:#x}")
    assert _ping(h1, h2) == (5, 5)
    relearned = ovs.dump_flows(bridge, cookie=COOKIE_L2)
    assert any(h2.MAC() in f for f in relearned), relearned


@pytest.mark.root
def test_two_switches_learn_independently(
    tmp_path: Path, controllers: list[ControllerProcess], mininet_env: Callable[..., Any]
) -> None:
    from emulab.controller_app import COOKIE_L2

    port = free_tcp_port()
    ctl = ControllerProcess.start(port, tmp_path / "controller.log", status_path=tmp_path / "status.json")
    controllers.append(ctl)
    net = mininet_env(port, hosts=2, switches=2)
    dpids = ["00000000000e0001", "00000000000e0002"]
    assert ctl.wait_switches(dpids, timeout=10)
    h1, h2 = net.hosts
    assert _ping(h1, h2) == (5, 5)
    for sw in net.switches:
        flows = ovs.dump_flows(sw.name, cookie=COOKIE_L2)
        assert any(h1.MAC() in f for f in flows) and any(h2.MAC() in f for f in flows), (sw.name, flows)
    deadline = time.monotonic() + 3
    while len((status := ctl.status() or {}).get("switches", {})) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(status["connected"]) == dpids
    assert all(sw["flows_installed"] >= 2 for sw in status["switches"].values()), status

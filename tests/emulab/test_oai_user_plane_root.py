"""The OAI backend's user-plane rerouting on a real testbed, with stand-in tunnel devices.

OpenAirInterface is not installable here, so the softmodems cannot run; what this checks is every
step after them: once ``oaitun_ue1`` (UE) and ``oaitun_enb1`` (eNB) exist with addresses, the
backend's rerouting thread finds them and installs the user-plane routes in every namespace, and
the kernel then sends the UE's traffic into the tunnel. The tun devices here are created with
``ip tuntap`` (as OAI creates them) and nobody reads them, so packets go in and no further.
Root only; the testbed is built in this process and torn down in ``finally``.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from emulab import control
from emulab.cleanup import find_leftovers

pytestmark = [pytest.mark.root, pytest.mark.slow]


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=True, timeout=30).stdout


def test_rerouting_moves_the_user_plane_into_oais_tunnels() -> None:
    from emulab.capabilities import probe
    from emulab.network import Testbed
    from emulab.radio_host import TestbedRadioHost
    from emulab.topology import load
    from radio.oai import ENB_TUN, UE_TUN, OaiPlan, OaiRfsimRadio

    if control.read_state() is not None:
        pytest.fail("a testbed is already running: `emulab stop` / `emulab clean` first")
    spec = load("paper-topology")
    testbed = Testbed(spec, probe(), services=False)
    try:
        testbed.start()
        radio = OaiRfsimRadio(TestbedRadioHost(testbed))  # not started: no OAI binaries; its rerouting step is what runs
        radio.plan = OaiPlan.from_testbed(spec, "ue--enb", {"bandwidth_mhz": 10})
        ue_ns, enb_ns = testbed.netns["ue"], testbed.netns["enb"]
        assert radio.user_plane == "radio link"
        for ns, dev, addr in ((ue_ns, UE_TUN, "10.0.1.2/24"), (enb_ns, ENB_TUN, "10.0.1.1/24")):
            ip(ns, "tuntap", "add", "dev", dev, "mode", "tun")
            ip(ns, "addr", "add", addr, "dev", dev)
            ip(ns, "link", "set", dev, "up")
        t0 = time.monotonic()
        radio._reroute()
        assert time.monotonic() - t0 < 5
        assert radio.user_plane.startswith("OAI tunnel 10.0.1.2/24"), radio.user_plane
        routes = {line.split()[0]: line for line in ip(ue_ns, "route").splitlines()}
        assert f"dev {UE_TUN}" in routes["default"] and "src 10.0.1.2" in routes["default"], routes
        assert "dev eth0" in routes["10.0.0.0/30"]  # the radio link itself stays: it carries the IQ samples
        assert f"10.0.1.0/24 dev {ENB_TUN}" in ip(enb_ns, "route")
        assert "10.0.1.0/24 via 10.1.2.1" in ip(testbed.netns["spgwu"], "route")
        # the kernel now sends the UE's traffic to the MEC into OAI's tunnel, from its tunnel address
        get = ip(ue_ns, "route", "get", str(spec.primary_address("mec-pe1")))
        assert f"dev {UE_TUN}" in get and "src 10.0.1.2" in get, get
        # and the network sends the answers back towards the eNB, which hands them to OAI
        back = ip(enb_ns, "route", "get", "10.0.1.2")
        assert f"dev {ENB_TUN}" in back, back
        assert radio.state()["user_plane"] == radio.user_plane
    finally:
        testbed.stop()
    assert find_leftovers() == []

"""The OAI backend's user-plane rerouting on a real testbed, with stand-in tunnel devices.

This checks the rerouting step alone, without running OAI (tests/emulab/test_oai_runtime_root.py
runs the softmodems): once ``oaitun_ue1`` (UE) and ``oaitun_enb1`` (eNB) exist with addresses and
the UE's log says RRC attached, the backend installs the user-plane routes in every namespace, and
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


def test_rerouting_moves_the_user_plane_into_oais_tunnels(tmp_path) -> None:
    from emulab.capabilities import probe
    from emulab.network import Testbed
    from emulab.radio_host import TestbedRadioHost
    from emulab.topology import load
    from radio.oai import ENB_TUN, UE_TUN, OaiPlan, OaiRfsimRadio
    from radio.oai_log import UeLog

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
        # the reroute waits for OAI's RRC attach (read from the UE's log), not for the tunnel's address
        ue_log = tmp_path / "oai-ue.log"
        ue_log.write_text("[RRC]   [UE 0] INIT State = RRC_IDLE (eNB 0)\n")
        radio.ue_log = UeLog(ue_log)
        assert radio._step() is False and radio.user_plane == "radio link"
        with open(ue_log, "a") as f:
            f.write("[RRC]   [UE 0] State = RRC_CONNECTED (eNB 0)\n[RRC]   [UE 0] State = RRC_RECONFIGURED (eNB 0)\n")
        t0 = time.monotonic()
        assert radio._step() is True
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

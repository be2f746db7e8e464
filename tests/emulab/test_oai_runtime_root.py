"""`--radio oai` for real: OpenAirInterface's eNB and UE softmodems over the RF simulator in the paper
topology, driven through the `emulab` command as a user would.

Checked: the UE attaches (OAI's RRC state), its user plane crosses OAI both ways (ping to the MEC
and back, routed into ``oaitun_ue1``), the softmodems run with normal scheduling and leave the host's
sysctls alone, teardown leaves nothing (after `stop`, and after SIGKILL + `clean`), and a coverage
loss in OAI's channel fails work over to the UE's own pool element with no request lost, the UE
re-attaching after the restore. Marked ``oai`` + ``root``: they skip without an OAI build (`make
oai`) and fail instead when EMULAB_REQUIRE_OAI=1 (CI). Each takes 30 s to 3 min on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from emulab import paths
from emulab.cleanup import find_leftovers
from emulab.runstate import pid_alive, read_state
from emulab.topology import load
from radio import oai_install

from helpers.oai_build import need_oai
from helpers.testbed import run_emulab

pytestmark = [pytest.mark.root, pytest.mark.oai, pytest.mark.slow, pytest.mark.usefixtures("testbed_guard")]

SOFTMODEMS = ("lte-softmodem", "lte-uesoftmodem")


@pytest.fixture(autouse=True)
def _need_oai() -> None:
    need_oai()


def softmodem_pids() -> list[int]:
    """Running softmodems (zombies excepted: an exited process whose parent has not reaped it yet is
    no process any more). Tests run under the shared lock: no one else's testbed runs meanwhile."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or (entry / "comm").read_text().strip() not in SOFTMODEMS:
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def no_softmodems_left(timeout: float = 15.0) -> bool:
    """Whether every softmodem is gone within ``timeout`` (OAI's helper child exits once its parent has)."""
    deadline = time.monotonic() + timeout
    while softmodem_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    return softmodem_pids() == []


def in_ue(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", paths.netns_name("ue"), *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def start_oai() -> dict:
    r = run_emulab("start", "paper-topology", "--radio", "oai", "--detach", timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    st = json.loads(run_emulab("radio", "status", "--json", check=True).stdout)
    assert st["backend"] == "oai" and st["attached"] and st["rrc_state"] in ("RRC_CONNECTED", "RRC_RECONFIGURED"), st
    return st


def host_sysctls() -> dict[str, str]:
    return {k: Path("/proc/sys/net/core", k).read_text() for k in ("rmem_max", "rmem_default", "wmem_max", "wmem_default")}


def test_oai_attach_user_plane_both_ways_normal_scheduling_and_clean_stop() -> None:
    sysctls = host_sysctls()
    st = start_oai()
    assert st["bearer"] == "up" and st["user_plane"].startswith("OAI tunnel"), st
    spec = load("paper-topology")
    mec = str(spec.primary_address("mec-pe1"))
    route = in_ue("ip", "route", "get", mec).stdout
    assert "dev oaitun_ue1" in route, route
    ping = in_ue("ping", "-n", "-c", "5", "-i", "0.3", "-W", "3", mec)
    assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout + ping.stderr
    # and towards the UE: from the MEC element to the UE's tunnel address, through OAI's downlink
    back = subprocess.run(["ip", "netns", "exec", paths.netns_name("mec-pe1"), "ping", "-n", "-c", "3", "-W", "3",
                           "10.0.1.2"], capture_output=True, text=True, timeout=60, check=False)
    assert back.returncode == 0, back.stdout + back.stderr
    # the eNB's MAC statistics of the UE, read live from OAI's eNB (telnet `measur show enbues` and
    # MAC_stats.log): MCS both ways, the UE's CQI, throughput over a window after the traffic above
    mac: dict = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        in_ue("ping", "-n", "-c", "10", "-i", "0.1", "-s", "1000", "-W", "2", "10.0.1.1")
        mac = json.loads(run_emulab("radio", "status", "--json", check=True).stdout).get("enb_mac") or {}
        if mac.get("dl_mbit_s") is not None and mac.get("dl_cqi") is not None:
            break
    assert isinstance(mac.get("dl_mcs"), int) and isinstance(mac.get("ul_mcs"), int), mac
    assert 0 <= mac["dl_mcs"] <= 28 and 0 <= mac["ul_mcs"] <= 28 and 1 <= mac["dl_cqi"] <= 15, mac
    assert mac["dl_bytes"] > 0 and mac["ul_bytes"] > 0 and mac["dl_mbit_s"] >= 0 and mac["ul_mbit_s"] >= 0, mac
    assert "eNB MAC: MCS DL" in run_emulab("radio", "status", check=True).stdout
    pids = softmodem_pids()
    assert len(pids) >= 2
    for pid in pids:  # every thread of every softmodem on normal scheduling
        for task in Path(f"/proc/{pid}/task").iterdir():
            policy = int((task / "stat").read_text().rsplit(")", 1)[1].split()[38])
            assert policy == os.SCHED_OTHER, (pid, task.name, policy)
    assert host_sysctls() == sysctls
    r = run_emulab("stop", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert no_softmodems_left(), softmodem_pids()
    assert not (paths.run_dir() / "oai").exists()
    assert find_leftovers() == []


def test_oai_sigkill_then_clean_leaves_nothing() -> None:
    start_oai()
    state = read_state()
    assert state is not None
    os.kill(state["runner_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(state["runner_pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    r = run_emulab("clean", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert no_softmodems_left(), softmodem_pids()
    assert not (paths.run_dir() / "oai").exists()
    assert find_leftovers() == []


def test_oai_coverage_loss_fails_over_without_loss_and_reattaches(tmp_path: Path) -> None:
    r = run_emulab("experiment", "coverage-loss", "--radio", "oai", "--pus", "4", "--runs", "1", "--duration", "50",
                   "--lose-at", "12", "--restore-at", "24", "--drain", "60", "--no-pcaps", "--out", str(tmp_path),
                   timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((Path(r.stdout.strip().splitlines()[-1]) / "summary.json").read_text())
    run = summary["coverage_runs"][0]
    assert summary["requests_lost"] == 0 and summary["requests_duplicated"] == 0, run
    assert summary["requests_completed"] == summary["requests_issued"] > 0
    assert run["failed_over"], run.get("failover_problem")
    assert summary["recovery_s"] is not None  # work came back to the MEC after the restore
    radio = run["radio"]
    assert radio["backend"] == "oai" and radio["rlf_count"] == 1 and radio["ue_restarts"] == 1
    assert radio["reattach_s"] is not None and radio["reattach_s"] > 0


def test_b210_without_a_device_fails_before_building_anything() -> None:
    from radio.oai import find_b210

    inst = oai_install.find_install()
    if inst is None or not inst.usrp_driver:
        pytest.skip("needs an OAI build with the USRP driver (make oai with libuhd-dev)")
    if find_b210()[0]:
        pytest.skip("a B210 is attached here")
    t0 = time.monotonic()
    r = run_emulab("start", "paper-topology", "--radio", "b210", "--detach", timeout=120)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "no USRP B210 attached" in out and "uhd_find_devices" in out and "No UHD Devices Found" in out, out
    assert "building" not in out  # nothing was built
    assert time.monotonic() - t0 < 60
    assert read_state() is None and find_leftovers() == []

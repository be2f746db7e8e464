"""The OAI backend's run-time logic without OAI: a fake testbed (radio.host.RadioHost) and fake
softmodems (small shell scripts that write what OAI writes to its log, or exit).

Checked here: the UE's RRC state read from its log (an address on the tunnel is not an attach),
the user plane rerouted only after the attach and put back when OAI's interface reconfiguration
removed it, the normal-scheduling shim, and the bad inputs: no OAI build, a softmodem that exits,
a UE that never attaches (timeout), a telnet command OAI rejects - one clear message each, and
nothing left running.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from emulab.topology import load
from radio import RadioError, oai_install, oai_mac, oai_sched
from radio.oai import ENB_TUN, UE_TUN, OaiRfsimRadio
from radio.oai_log import UeLog

ATTACH_LOG = """[RRC]   [UE 0] INIT State = RRC_IDLE (eNB 0)
[OIP]   Interface oaitun_ue1 successfully configured, ip address 10.0.1.2
[RRC]   [UE 0] State = RRC_CONNECTED (eNB 0)
[OIP]   [UE 0] trying to bring up the OAI interface 0, IP X.Y.1.2
[RRC]   [UE 0] State = RRC_RECONFIGURED (eNB 0)
"""


class FakeHost:
    """A RadioHost whose nodes are this machine: processes really run, routes are recorded."""

    def __init__(self, tmp: Path, softmodem: str, tun: bool = True) -> None:
        self.topology = load("paper-topology")
        self.run_dir, self.log_dir = tmp / "run", tmp / "logs"
        self.run_dir.mkdir()
        self.log_dir.mkdir()
        self.softmodem = softmodem  # the shell script each "softmodem" runs
        self.tun = tun
        self.routes: list[tuple[str, str, Any]] = []
        self.route_table = ""  # what `ip route show dev oaitun_ue1` answers
        self.telnet_answer = ""
        self.procs: list[subprocess.Popen[bytes]] = []
        self.argv: dict[str, list[str]] = {}
        self.started: list[tuple[str, list[str]]] = []  # every process, in order

    def set_link_params(self, link: str, params: Any) -> None:
        assert params.is_neutral

    def set_routes(self, node: str, present: bool, dev: str | None = None) -> None:
        raise AssertionError("not used by the OAI backend")

    def replace_route(self, node: str, dest: str, via: str | None = None, dev: str | None = None,
                      src: str | None = None) -> None:
        self.routes.append((node, dest, dev or via))
        if node == "ue":
            self.route_table = f"default scope link src {src}\n"

    def interface_address(self, node: str, dev: str) -> ipaddress.IPv4Interface | None:
        if not self.tun:
            return None
        return ipaddress.IPv4Interface({UE_TUN: "10.0.1.2/24", ENB_TUN: "10.0.1.1/24"}[dev])

    def popen(self, node: str, argv: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        self.started.append((node, argv))
        if argv[0] == "ping":  # the radio's RTT prober: ping -D lines, RTT 10..14 ms
            script = ('i=0; while [ $i -lt 20 ]; do echo "[$(date +%s.%N)] 64 bytes from 10.0.1.1: icmp_seq=$i '
                      'ttl=64 time=1$((i % 5)).0 ms"; i=$((i+1)); done; sleep 60')
        elif argv[0] == "unshare":  # a softmodem, through the normal-scheduling wrapper
            self.argv[node] = argv
            script = self.softmodem if node == "ue" else "sleep 60"
        else:  # the reader of the UE's channel (for the radio link monitor): no telnet server here
            script = "sleep 60"
        with open(log, "w") as out:
            proc = subprocess.Popen(["sh", "-c", script], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def run(self, node: str, command: str) -> str:
        if command.startswith("ip -4 route show"):
            return self.route_table
        return self.telnet_answer


def fake_oai(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pretend OAI is installed (the backend's argv is recorded, never executed)."""
    bin_dir = tmp_path / "oai-bin"
    bin_dir.mkdir()
    for name in oai_install.BINARIES:
        exe = bin_dir / name
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    monkeypatch.setenv("EMULAB_OAI_ROOT", str(tmp_path / "no-build"))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def radio(host: FakeHost, **options: Any) -> OaiRfsimRadio:
    r = OaiRfsimRadio(host)  # type: ignore[arg-type]
    r.options.update(options)
    return r


def test_ue_log_attach_comes_from_rrc_state_not_from_the_tunnel(tmp_path: Path) -> None:
    log = tmp_path / "ue.log"
    log.write_text(ATTACH_LOG.split("[RRC]   [UE 0] State = RRC_CONNECTED")[0])
    ue = UeLog(log)
    ue.poll()
    assert ue.rrc_state == "RRC_IDLE" and not ue.attached  # the tunnel has its address, the UE is not attached
    with open(log, "a") as f:
        f.write("[RRC]   [UE 0] State = RRC_CONNECTED (eNB 0)\n[PHY]   [UE  0] Frame 12, subframe 3: Problem in DCI!\n"
                "[RRC]   [UE 0] State = RRC_RECONF")  # a line still being written
    ue.poll()
    assert ue.attached and ue.rrc_state == "RRC_CONNECTED" and ue.dci_problems == 1 and ue.last_dci_frame == (12, 3)
    with open(log, "a") as f:
        f.write("IGURED (eNB 0)\nAssertion (x) failed!\n")
    ue.poll()
    assert ue.rrc_state == "RRC_RECONFIGURED" and ue.fatal == "Assertion (x) failed!"


def test_start_waits_for_rrc_attach_then_reroutes_and_keeps_routes(monkeypatch, tmp_path: Path) -> None:
    fake_oai(monkeypatch, tmp_path)
    script = f"sleep 0.6; printf '%s' '{ATTACH_LOG}'; sleep 60"
    host = FakeHost(tmp_path, script)
    r = radio(host)
    try:
        r.start()
        st = r.state()
        assert st["attached"] and st["rrc_state"] == "RRC_RECONFIGURED" and st["attach_s"] >= 0.5
        assert st["user_plane"].startswith("OAI tunnel 10.0.1.2/24")
        assert ("ue", "0.0.0.0/0", UE_TUN) in host.routes and ("enb", "10.0.1.0/24", ENB_TUN) in host.routes
        deadline = time.monotonic() + 10
        while ((st := r.state())["radio_rtt"] or {}).get("n") != 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert st["radio_rtt"]["median_ms"] == 12.0 and st["radio_rtt"]["n"] == 20
        m = r.measured_link_params()
        assert m is not None and m["uplink"].delay_ms == 6.0 and m["uplink"].jitter_ms > 0
        assert r.address_of("ue") == "10.0.1.2" and r.address_of("enb") == "10.0.1.1"
        assert r.address_of("mec-pe1") is None
        # both softmodems run through the normal-scheduling wrapper
        for argv in host.argv.values():
            assert argv[:2] == ["unshare", "--mount"] and "LD_PRELOAD=" in argv[7]
        # OAI's interface reconfiguration drops the routes: the supervisor puts them back
        n = len(host.routes)
        host.route_table = ""
        r._step()
        assert len(host.routes) > n and host.route_table
        # one reader of the eNB's MAC, started with the user plane, not again when the routes are put back
        assert [node for node, argv in host.started if oai_mac.READER in argv] == ["enb"]
    finally:
        r.stop()
    assert all(p.poll() is not None for p in host.procs)
    assert not (host.run_dir / "oai").exists()


def test_no_oai_build_is_one_clear_message(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMULAB_OAI_ROOT", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", "/nonexistent")
    host = FakeHost(tmp_path, "sleep 60")
    with pytest.raises(RadioError, match=r"OpenAirInterface is not installed .*run `make oai`"):
        radio(host).start()
    assert host.procs == []


def test_broken_build_prefix_is_not_used(monkeypatch, tmp_path: Path) -> None:
    prefix = tmp_path / "broken"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "BUILD-INFO.json").write_text("{ not json")
    monkeypatch.setenv("EMULAB_OAI_PREFIX", str(prefix))
    assert oai_install.find_install() is None
    host = FakeHost(tmp_path, "sleep 60")
    with pytest.raises(RadioError, match="OpenAirInterface is not installed"):
        radio(host).start()


def test_softmodem_that_exits_is_named_with_its_log(monkeypatch, tmp_path: Path) -> None:
    fake_oai(monkeypatch, tmp_path)
    host = FakeHost(tmp_path, "echo 'Assertion (ret == 0) failed!'; exit 134")
    r = radio(host, attach_timeout_s=20)
    try:
        with pytest.raises(RadioError, match=r"the ue softmodem exited \(status 134\).*Assertion.*oai-ue.log"):
            r.start()
    finally:
        r.stop()
    assert all(p.poll() is not None for p in host.procs)


def test_ue_that_never_attaches_times_out(monkeypatch, tmp_path: Path) -> None:
    fake_oai(monkeypatch, tmp_path)
    host = FakeHost(tmp_path, "echo '[RRC]   [UE 0] INIT State = RRC_IDLE (eNB 0)'; sleep 60")
    r = radio(host, attach_timeout_s=1.5)
    try:
        with pytest.raises(RadioError, match=r"did not attach within 1.5 s \(last RRC state: RRC_IDLE"):
            r.start()
    finally:
        r.stop()
    assert all(p.poll() is not None for p in host.procs)


def test_telnet_command_oai_rejects(monkeypatch, tmp_path: Path) -> None:
    fake_oai(monkeypatch, tmp_path)
    host = FakeHost(tmp_path, f"printf '%s' '{ATTACH_LOG}'; sleep 60")
    r = radio(host)
    try:
        r.start()
        host.telnet_answer = "Error: \n      channelmod modify 0 ploss 60\n is not a softmodem command\nsoftmodem_ue> "
        with pytest.raises(RadioError, match=r"OAI telnet server \(ue, port 9091\) rejected 'channelmod modify 0 "
                                             r"ploss 60': .*is not a softmodem command"):
            r.detach()
    finally:
        r.stop()


def test_scheduling_shim_keeps_normal_policy(tmp_path: Path) -> None:
    try:
        lib = oai_sched.build_shim(tmp_path)
    except oai_sched.ShimError as exc:
        pytest.skip(str(exc))
    code = ("import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10)); "
            "print(os.sched_getscheduler(0))")
    out = subprocess.run(["python3", "-c", code], env={**os.environ, "LD_PRELOAD": str(lib)},
                         capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == str(os.SCHED_OTHER)
    assert "kept at normal scheduling" in out.stderr
    wrapped = oai_sched.wrap(["lte-softmodem", "-O", "x"], lib)
    assert wrapped[-3:] == ["lte-softmodem", "-O", "x"] and f"LD_PRELOAD={lib}" in wrapped[7]


# --- the UE's radio link monitor (radio.oai_rlm) ------------------------------------------------


def feed(rlm, t0: float, t1: float, snr: float | None, step: float = 0.1) -> list[tuple[float, str]]:
    out, t = [], t0
    while t < t1 - 1e-9:
        t = round(t + step, 6)
        out.append((t, rlm.indicate(t, snr)))
    return out


def test_rlm_declares_rlf_after_n310_frames_plus_t310() -> None:
    from radio.oai_rlm import RadioLinkMonitor, parse_reading

    rlm = RadioLinkMonitor(n310=20, t310_ms=1000, n311=1)
    rlm.indicate(0.0, 50.0)
    feed(rlm, 0.0, 1.0, 50.0)
    states = feed(rlm, 1.0, 3.0, -10.0)  # coverage lost at t=1.0: out of sync
    first = {s: next(t for t, st in states if st == s) for s in ("t310", "rlf")}
    assert abs(first["t310"] - 1.2) < 0.11  # N310 x 10 ms after the first out-of-sync frame
    assert abs(rlm.rlf_at - 2.2) < 1e-6 and abs(first["rlf"] - 2.2) < 0.11  # + T310
    assert rlm.cell_back_at is None
    feed(rlm, 3.0, 3.5, 50.0)  # the cell is back: seen after N311 in-sync frames
    assert rlm.state == "rlf" and abs(rlm.cell_back_at - 3.01) < 1e-6
    rlm.reattached()
    assert rlm.state == "in-sync"
    assert parse_reading("12.5 60.000000 -50.000000") == (12.5, -10.0) and parse_reading("3.0 down") == (3.0, None)


def test_rlm_short_fade_stops_t310_without_rlf() -> None:
    from radio.oai_rlm import RadioLinkMonitor

    rlm = RadioLinkMonitor(n310=20, t310_ms=1000, n311=1)
    rlm.indicate(0.0, 50.0)
    feed(rlm, 0.0, 0.6, -10.0)
    assert rlm.state == "t310"
    feed(rlm, 0.6, 0.8, 50.0)  # back within T310: N311 in-sync frames stop it
    assert rlm.state == "in-sync" and rlm.rlf_at is None
    feed(rlm, 0.8, 1.0, None)  # no reading (the UE restarting): no indication either way
    assert rlm.state == "in-sync"


def test_b210_without_a_device_names_it_before_anything_is_built() -> None:
    from radio.oai import B210Radio, find_b210

    inst = oai_install.find_install()
    if inst is None or not inst.usrp_driver or not shutil.which("uhd_find_devices"):
        pytest.skip("needs an OAI build with the USRP driver and uhd_find_devices (make oai, uhd-host)")
    found, said = find_b210()
    if found:
        pytest.skip("a B210 is attached here")
    with pytest.raises(RadioError, match=r"no USRP B210 attached: `uhd_find_devices --args type=b200` says: .*USB 3") as exc:
        B210Radio.preflight({})
    assert said and said in str(exc.value)  # the message quotes uhd_find_devices' own words


def fake_telnet_server(answers: dict[str, str]) -> tuple[int, Any]:
    """A server that talks like OAI's telnet server: one client at a time, prompt, answer, prompt."""
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:  # like OAI's: no greeting, a line in, the answer and a prompt out
                buf = b""
                while b"\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                line = buf.decode().strip()
                reply = answers.get(line, f"Error: \n      {line}\n is not a softmodem command\n")
                conn.sendall(reply.encode() + b"softmodem_ue> ")

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], srv


def test_telnet_client_and_channel_reader_against_a_server_like_oais() -> None:
    import sys

    from radio.oai_rlm import ONE_COMMAND, READER, parse_reading

    show = ("model 0 rfsimu_channel_enB0 type AWGN:\nmodel owner: not set\nnb_tx: 1    nb_rx: 1    taps: 1\n"
            "max Doppler: 0.000000    path loss: 60.000000  noise: -50.000000 rchannel offset: 0    forget factor; 0\n"
            "----------------\nmodel 1 rfsimu_channel_ue0 type AWGN:\nmax Doppler: 0.000000    path loss: 0.000000  "
            "noise: -50.000000 rchannel offset: 0\n----------------\n")
    port, srv = fake_telnet_server({"channelmod show current": show, "channelmod modify 0 ploss 60": ""})
    try:
        ok = subprocess.run([sys.executable, "-c", ONE_COMMAND, str(port), "channelmod modify 0 ploss 60"],
                            capture_output=True, text=True, timeout=30, check=True)
        assert "is not a softmodem command" not in ok.stdout
        bad = subprocess.run([sys.executable, "-c", ONE_COMMAND, str(port), "channelmod frobnicate"],
                             capture_output=True, text=True, timeout=30, check=True)
        assert "channelmod frobnicate" in bad.stdout and "is not a softmodem command" in bad.stdout
        reader = subprocess.Popen([sys.executable, "-c", READER, str(port), "0.1"], stdout=subprocess.PIPE, text=True)
        try:
            lines = [reader.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        finally:
            reader.kill()
            reader.wait()
        readings = [parse_reading(ln) for ln in lines]
        assert all(r is not None and r[1] == -10.0 for r in readings), lines  # SNR = 50 - 60 dB
    finally:
        srv.close()


# --- the eNB's MAC statistics (radio.oai_mac), on output captured from OAI's eNB -----------------

OAI_DATA = Path(__file__).parent / "data" / "oai"
#: what the captured files say (tests/emulab/data/oai/README.md), read off them by eye
CAPTURED = {"crnti": 41591, "dl_mcs": 28, "ul_mcs": 10, "snr": 31, "dl_bytes_1": 2739077, "ul_bytes_1": 67926,
            "dl_bytes_2": 4066813, "ul_bytes_2": 95217, "dl_cqi": 15, "pusch_snr": 21, "ul_bler": 0.0}
CAPTURED_RNTI_HEX = "a277"  # 41591, as MAC_stats.log prints it


def test_measur_show_enbues_captured_from_oais_enb() -> None:
    from radio.oai_mac import parse_enbues, read_reader_file

    got = read_reader_file(OAI_DATA / "enb-mac-1.txt")  # READER's file, during a TCP download
    assert got is not None
    t, text = got
    (ue,) = parse_enbues(text)
    assert ue["crnti"] == CAPTURED["crnti"] and ue["dlsch_mcs1"] == CAPTURED["dl_mcs"]
    assert ue["ulsch_mcs1"] == CAPTURED["ul_mcs"] and ue["total_pdu_bytes"] == CAPTURED["dl_bytes_1"]
    assert ue["total_pdu_bytes_rx"] == CAPTURED["ul_bytes_1"] and ue["snr"] == CAPTURED["snr"]
    assert parse_enbues("--- UE 0 Id 0 CCid 0 ---\n  snr =      4294967291   ulsch_mcs1 =  9\n") == [
        {"ue_id": 0, "cc_id": 0, "snr": -5, "ulsch_mcs1": 9}]  # OAI prints a negative int32 through uint32
    assert parse_enbues("softmodem_enb> ") == []  # no UE context


def test_mac_stats_log_captured_from_oais_enb() -> None:
    from radio.oai_mac import parse_mac_stats

    (ue,) = parse_mac_stats((OAI_DATA / "MAC_stats.log").read_text())
    assert ue["rnti"] == f"{CAPTURED['crnti']:x}" and ue["in_sync"] is True
    assert ue["dl_cqi"] == CAPTURED["dl_cqi"] and ue["pusch_snr"] == CAPTURED["pusch_snr"]
    assert ue["ul_bler_pct"] == CAPTURED["ul_bler"] and ue["ul_mcs"] == 0 and ue["dl_bytes"] == 2484000  # as captured


def test_enb_mac_throughput_over_two_readings_and_a_new_context(tmp_path: Path) -> None:
    import os

    from radio.oai_mac import EnbMac

    reader, stats = tmp_path / "enb-mac.txt", tmp_path / "MAC_stats.log"
    shutil.copy(OAI_DATA / "MAC_stats.log", stats)
    os.utime(stats)
    mac = EnbMac(reader, stats)
    assert mac.state() is not None and mac.throughput() is None  # MAC_stats.log alone: CQI, no rate yet
    t1 = t2 = 0.0
    for name in ("enb-mac-1.txt", "enb-mac-2.txt"):
        text = (OAI_DATA / name).read_text()
        reader.write_text(text)
        t1, t2 = t2, float(text.split()[1])
        mac.poll()
    dt = t2 - t1
    os.utime(stats, (t2, t2))  # OAI rewrote it at the second reading
    st = mac.state(now=t2)
    assert st is not None and st["dl_mcs"] == CAPTURED["dl_mcs"] and st["dl_cqi"] == CAPTURED["dl_cqi"]
    assert st["dl_mbit_s"] == round((CAPTURED["dl_bytes_2"] - CAPTURED["dl_bytes_1"]) * 8 / dt / 1e6, 3)
    assert st["ul_mbit_s"] == round((CAPTURED["ul_bytes_2"] - CAPTURED["ul_bytes_1"]) * 8 / dt / 1e6, 3)
    # a new UE context (the softmodems restarted): counters start again, and so does the window
    mac.update(t2 + 1, {"crnti": 0x1234, "total_pdu_bytes": 10, "total_pdu_bytes_rx": 5})
    assert mac.throughput() is None and mac.state(now=t2 + 1)["rnti"] == "1234"
    mac.update(t2 + 2, {"crnti": 0x1234, "total_pdu_bytes": 125010, "total_pdu_bytes_rx": 5})
    assert mac.throughput() == (1.0, 0.0, 1.0)
    os.utime(stats, (t2 + 59, t2 + 59))
    assert mac.state(now=t2 + 60) == {"rnti": CAPTURED_RNTI_HEX, "dl_cqi": CAPTURED["dl_cqi"], "in_sync": True,
                                      "pusch_snr_db": CAPTURED["pusch_snr"], "ul_bler_pct": CAPTURED["ul_bler"]}
    # (the telnet reading is stale by then: only MAC_stats.log's figures)
    reader.write_text(f"time {t2 + 61}\ndown: [Errno 111] Connection refused")
    assert "Connection refused" in mac.state(now=t2 + 61)["error"]


def test_status_line_shows_the_enbs_mac() -> None:
    from emulab.cli_radio import format_state

    line = format_state({"backend": "oai", "link": "ue--enb", "attach": "attached", "rrc_state": "RRC_RECONFIGURED",
                         "cqi": 15, "enb_mac": {"dl_mcs": 28, "ul_mcs": 20, "ul_snr_db": 25, "dl_mbit_s": 6.25,
                                                "ul_mbit_s": 1.5, "window_s": 3.0, "ul_bler_pct": 0.0}})
    assert "CQI 15" in line and "eNB MAC: MCS DL 28 UL 20, UL SNR 25 dB, DL 6.25 UL 1.50 Mbit/s over 3 s" in line


def test_enb_mac_reader_against_a_server_like_oais(tmp_path: Path) -> None:
    import sys

    from radio.oai_mac import READER, parse_enbues, read_reader_file

    port, srv = fake_telnet_server({"measur show enbues": (OAI_DATA / "enb-mac-1.txt").read_text().split("\n", 1)[1]})
    path = tmp_path / "enb-mac.txt"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(port), "0.2", str(path)])
    try:
        deadline = time.monotonic() + 20
        while (got := read_reader_file(path)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        reader.kill()
        reader.wait()
        srv.close()
    assert got is not None and parse_enbues(got[1])[0]["crnti"] == CAPTURED["crnti"]

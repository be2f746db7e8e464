"""Unit tests of the radio: the LTE model (radio.lte), the emulated backend with a fake testbed (a
``RadioHost``), the OAI/B210 file and command-line generation, the backend registry and the radio CLI
formatting. No root, no network."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from emulab.cli_radio import format_state
from emulab.linkparams import LinkParams
from emulab.topology import load
from radio import oai_install
from radio.base import RadioError
from radio.emulated import EmulatedRadio, build_model
from radio.host import RadioLinkParams
from radio.lte import (
    ATTACHED,
    ATTACHING,
    CQI_EFFICIENCY,
    CQI_SNR_DB,
    DETACHED,
    RLF_PENDING,
    LteConfig,
    LteModel,
    LteModelError,
    bler,
    harq_delay_ms,
    path_loss_db,
    rate_mbit,
    run_profile,
    snr_db,
    snr_to_cqi,
)
from radio.oai import (
    OaiPlan,
    channelmod_command,
    channelmod_config,
    enb_command,
    enb_config,
    telnet_shell,
    ue_command,
)

from helpers.oai_build import need_oai

NO_SHADOW = LteConfig(shadowing_std_db=0.0)
RLF_S = 20 * 0.010 + 1.0  # N310 x 10 ms + T310 with OAI defaults


def first(states, pred):
    return next(s for s in states if pred(s))


# ---------------------------------------------------------------------------- static tables


def test_cqi_table_monotonic():
    assert np.all(np.diff(CQI_EFFICIENCY) > 0)
    assert np.all(np.diff(CQI_SNR_DB[1:]) > 0)
    snrs = np.linspace(-20, 40, 601)
    cqis = snr_to_cqi(snrs)
    assert np.all(np.diff(cqis) >= 0) and cqis[0] == 0 and cqis[-1] == 15
    assert snr_to_cqi(22.7) == 15 and snr_to_cqi(22.6) == 14 and snr_to_cqi(-6.8) == 0


@pytest.mark.parametrize(("bw", "expected"), [(5, 17.5), (10, 35.0), (20, 70.0)])
def test_peak_rates(bw, expected):
    cfg = LteConfig(bandwidth_mhz=bw)
    assert rate_mbit(15, cfg.n_prb, cfg.overhead) == pytest.approx(expected, rel=0.01)
    # and below the 36.213 TBS peaks of testbed-facts §5.2
    assert rate_mbit(15, cfg.n_prb) < {5: 18.3, 10: 36.7, 20: 75.4}[bw]


def test_bad_bandwidth():
    with pytest.raises(LteModelError):
        LteConfig(bandwidth_mhz=7)


def test_path_loss_and_snr():
    # 36.942 at 2 GHz, 15 m: 128.1 + 37.6 log10(R km)
    assert path_loss_db(1000, carrier_mhz=2000) == pytest.approx(128.1, abs=0.1)
    assert path_loss_db(10_000, carrier_mhz=2000) == pytest.approx(165.7, abs=0.1)
    d = np.array([100, 500, 1000, 3000, 8000])
    s = snr_db(d, NO_SHADOW)
    assert np.all(np.diff(s) < 0)
    assert rate_mbit(snr_to_cqi(snr_db(500, NO_SHADOW)), 50) == pytest.approx(35.0, rel=0.01)


def test_bler_and_harq():
    assert bler(CQI_SNR_DB[9], 9) == pytest.approx(0.1)
    assert bler(CQI_SNR_DB[9] + 3, 9) < 0.01 < bler(CQI_SNR_DB[9] - 1, 9)
    mean, std = harq_delay_ms(0.1, 4, 8.0)
    assert 0.85 < mean < 0.9 and std > 0  # ≈ 8 ms x 0.111
    assert harq_delay_ms(0.0, 4, 8.0) == (0.0, 0.0)


# ---------------------------------------------------------------------------- dynamic model


def test_good_coverage_keeps_configured_link():
    m = LteModel(LteConfig(shadowing_std_db=0.0, base_delay_ms=8, base_jitter_ms=1), distance_m=300)
    st = run_profile(m, 1.0)[-1]
    assert st.attach == ATTACHED and st.cqi == 15
    p = st.params
    assert (p.delay_ms, p.jitter_ms, p.loss_pct) == (8.0, 1.0, 0.0) and p.rate_mbit == pytest.approx(35.0, rel=0.01)


def test_low_cqi_costs_delay_loss_and_rate():
    m = LteModel(NO_SHADOW, snr_profile=[(0, -7.5)])
    st = run_profile(m, 0.5)[-1]
    assert st.attach == ATTACHED and st.cqi == 0
    assert st.params.loss_pct > 0.5 and st.params.delay_ms > 10 and st.params.rate_mbit < 1.0


def test_rlf_timing():
    m = LteModel(NO_SHADOW)
    m.lose(at=1.0)
    states = run_profile(m, 4.0, tick_s=0.01)
    lost = first(states, lambda s: not s.connected)
    assert lost.t == pytest.approx(1.01, abs=0.011)  # packets stop at once
    assert first(states, lambda s: s.attach == RLF_PENDING).t == pytest.approx(1.0 + 0.2, abs=0.011)
    rlf = first(states, lambda s: s.attach == DETACHED)
    assert rlf.t - 1.0 == pytest.approx(RLF_S, abs=0.1)  # within one 100 ms tick


def test_rlf_timing_custom_timers():
    m = LteModel(LteConfig(shadowing_std_db=0.0, n310=4, t310_ms=200))
    m.lose(at=0.5)
    rlf = first(run_profile(m, 2.0, tick_s=0.01), lambda s: s.attach == DETACHED)
    assert rlf.t - 0.5 == pytest.approx(0.04 + 0.2, abs=0.011)


@pytest.mark.parametrize("dip_s", [0.15, 0.5, 1.1])
def test_short_dip_no_rlf(dip_s):
    m = LteModel(NO_SHADOW, coverage_holes=[(1.0, dip_s)])
    states = run_profile(m, 4.0, tick_s=0.01)
    assert all(s.attach != DETACHED for s in states)
    assert states[-1].attach == ATTACHED and states[-1].connected
    back = first([s for s in states if s.t > 1.0], lambda s: s.connected)
    assert back.t == pytest.approx(1.0 + dip_s, abs=0.021)  # N311 = 1: back within a frame


def test_reattach_time():
    m = LteModel(LteConfig(shadowing_std_db=0.0, attach_time_s=1.5))
    m.lose(at=0.0)
    m.restore(at=3.0)
    states = run_profile(m, 6.0, tick_s=0.01)
    att = first([s for s in states if s.t > 3.0], lambda s: s.attach == ATTACHING)
    back = first([s for s in states if s.t > 3.0], lambda s: s.attach == ATTACHED)
    assert att.t == pytest.approx(3.01, abs=0.011)
    assert back.t - 3.0 == pytest.approx(1.5, abs=0.03)
    assert all(not s.connected for s in states if 1.3 < s.t < back.t)
    assert back.connected


def test_lose_for_duration_restores_itself():
    m = LteModel(NO_SHADOW)
    m.lose(at=0.0, duration_s=2.0)
    states = run_profile(m, 5.0)
    back = first(states, lambda s: s.t > 2.0 and s.attach == ATTACHED)
    assert back.t == pytest.approx(3.0, abs=0.11)


def test_trajectory_out_of_coverage_and_back():
    # drive from 500 m to 15 km (out of range) and back: RLF then re-attach
    traj = [(0, 500), (10, 15000), (20, 15000), (30, 500)]
    m = LteModel(NO_SHADOW, trajectory=traj)
    states = run_profile(m, 40.0)
    assert states[0].cqi == 15
    cqis = [s.cqi for s in states if s.t <= 8]
    assert cqis == sorted(cqis, reverse=True)
    rlf = first(states, lambda s: s.attach == DETACHED)
    assert 5 < rlf.t < 12
    assert states[-1].attach == ATTACHED and states[-1].cqi == 15


def test_shadowing_reproducible_and_static():
    a = run_profile(LteModel(LteConfig(seed=7), trajectory=[(0, 100), (10, 3000)]), 10)
    b = run_profile(LteModel(LteConfig(seed=7), trajectory=[(0, 100), (10, 3000)]), 10)
    assert [s.snr_db for s in a] == [s.snr_db for s in b]
    static = run_profile(LteModel(LteConfig(seed=3), distance_m=2000), 2)
    assert len({s.snr_db for s in static}) == 1


def test_bad_profile():
    with pytest.raises(LteModelError):
        LteModel(snr_profile=[(1, 0), (0, 1)])


# ---------------------------------------------------------------------------- emulated backend


class FakeTestbed:
    """The part of ``radio.host.RadioHost`` the emulated backend uses, recording what it is asked."""

    def __init__(self, options=None):
        link = SimpleNamespace(name="ue--enb", params=LinkParams(8.0, 1.0, 0.0, 30.0),
                               a=SimpleNamespace(node="ue", intf="ue-eth0"), b=SimpleNamespace(node="enb", intf="enb-eth0"))
        self.topology = SimpleNamespace(radio=SimpleNamespace(link="ue--enb", options=options or {}), links=[link],
                                        nodes={"ue": SimpleNamespace(role="ue"), "enb": SimpleNamespace(role="enb")})
        self.applied: list[RadioLinkParams] = []
        self.routes: list[tuple[str, bool, str]] = []

    def set_link_params(self, name, params):
        assert name == "ue--enb"
        self.applied.append(params)

    def set_routes(self, node, present, dev=None):
        self.routes.append((node, present, dev))


def test_emulated_backend_drives_link():
    # attach takes 1 s, so that the test sees the "attaching" phase even on a busy machine
    tb = FakeTestbed({"bandwidth_mhz": 5, "tick_s": 0.02, "n310": 2, "t310_ms": 100, "attach_time_s": 1.0})
    r = EmulatedRadio(tb)
    r.start()
    try:
        st = r.state()
        assert st["attach"] == "attached" and st["cqi"] == 15 and st["rate_mbit"] == pytest.approx(17.5, rel=0.01)
        p = tb.applied[-1]
        assert (p.delay_ms, p.loss_pct) == (8.0, 0.0) and p.rate_mbit == pytest.approx(17.5, rel=0.01)  # < 30 cap
        r.detach()
        assert tb.applied[-1].loss_pct == 100.0  # at once, not at the next tick
        assert tb.routes == [] and r.state()["bearer"] == "up"  # T310 running: the UE still thinks it is on
        deadline = time.monotonic() + 5
        while r.state()["attach"] != "detached" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert r.state()["attach"] == "detached" and not r.state()["attached"]
        assert tb.routes == [("ue", False, "ue-eth0")] and r.state()["bearer"] == "down"  # RLF: bearer gone
        r.attach()
        while r.state()["attach"] == "detached" and time.monotonic() < deadline:
            time.sleep(0.005)
        assert r.state()["attach"] == "attaching" and tb.routes[-1][1] is False  # no bearer until attached
        while r.state()["attach"] != "attached" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert r.state()["attach"] == "attached" and tb.applied[-1].loss_pct == 0.0
        assert tb.routes == [("ue", False, "ue-eth0"), ("ue", True, "ue-eth0")] and r.state()["bearer"] == "up"
        n = len(tb.applied)
        time.sleep(0.1)
        assert len(tb.applied) == n  # no change, no tc call
        assert "SNR" in format_state(r.state())
    finally:
        r.stop()
    assert r._thread is None


def test_rate_capped_at_configured_link_rate():
    m = build_model({"bandwidth_mhz": 10}, LinkParams(8.0, 1.0, 0.0, 30.0))
    st = m.step(0.5)
    assert st.rate_mbit == pytest.approx(35.0, rel=0.01) and st.params.rate_mbit == 30.0
    m = build_model({"bandwidth_mhz": 10, "max_rate_mbit": None}, LinkParams(8.0, 1.0, 0.0, 30.0))
    assert m.step(0.5).params.rate_mbit == pytest.approx(35.0, rel=0.01)


def test_emulated_backend_bad_options():
    with pytest.raises(RadioError):
        EmulatedRadio(FakeTestbed({"coverage_holes": [{"at": 1}]})).start()
    with pytest.raises(RadioError):
        build_model({"bandwidth_mhz": 3.5})


# ---------------------------------------------------------------------------- OAI / B210 generation


@pytest.fixture
def plan() -> OaiPlan:
    return OaiPlan.from_testbed(load("paper-topology"), "ue--enb", {"bandwidth_mhz": 10})


def test_oai_plan_from_topology(plan):
    assert (plan.ue_node, plan.enb_node) == ("ue", "enb")
    assert (plan.ue_addr, plan.enb_addr) == ("10.0.0.1", "10.0.0.2")
    assert plan.n_rb == 50 and plan.mme_addr.startswith("10.1.") and plan.enb_s1_addr.startswith("10.1.")


def test_enb_config_rfsim(plan):
    conf = enb_config(plan)
    assert conf.count("{") == conf.count("}") and conf.count("(") == conf.count(")")
    for line in ("N_RB_DL = 50;", "eutra_band = 7;", "downlink_frequency = 2680000000L;",
                 "ue_TimersAndConstants_t310 = 1000;", "ue_TimersAndConstants_n310 = 20;",
                 "ue_TimersAndConstants_n311 = 1;", "ue_TimersAndConstants_t311 = 10000;",
                 f'ipv4 = "{plan.mme_addr}"', '@include "channelmod_rfsimu.conf"'):
        assert line in conf
    assert "sdr_addrs" not in conf
    cm = channelmod_config(plan)
    assert "rfsimu_channel_enB0" in cm and "rfsimu_channel_ue0" in cm and "ploss_dB = 0;" in cm


def test_enb_and_ue_command_lines(plan, tmp_path):
    enb = enb_command(plan, tmp_path / "enb.conf")
    assert enb[:3] == ["lte-softmodem", "-O", str(tmp_path / "enb.conf")]
    assert "--rfsim" in enb and enb[enb.index("--rfsimulator.serveraddr") + 1] == "server"
    assert enb[enb.index("--rfsimulator.options") + 1] == "chanmod" and "--telnetsrv" in enb
    ue = ue_command(plan, tmp_path)
    assert ue[0] == "lte-uesoftmodem" and ue[ue.index("-C") + 1] == "2680000000" and ue[ue.index("-r") + 1] == "50"
    assert ue[ue.index("--rfsimulator.serveraddr") + 1] == "10.0.0.2"
    assert ue[ue.index("--telnetsrv.listenport") + 1] == "9091"


def test_channelmod_coverage_commands(plan):
    assert channelmod_command(plan.coverage_ploss_db) == "channelmod modify 0 ploss 60"
    assert channelmod_command(0.0) == "channelmod modify 0 ploss 0"
    assert "/dev/tcp/127.0.0.1/9091" in telnet_shell(9091, "channelmod modify 0 ploss 60")


def test_b210_config():
    plan = OaiPlan.from_testbed(load("paper-topology"), "ue--enb", {"bandwidth_mhz": 5, "b210_serial": "30AD123"},
                                usrp=True)
    conf = enb_config(plan)
    assert 'sdr_addrs = "type=b200,serial=30AD123";' in conf and "N_RB_DL = 25;" in conf
    assert "channelmod_rfsimu" not in conf
    assert "--rfsim" not in enb_command(plan, "enb.conf")  # type: ignore[arg-type]
    with pytest.raises(RadioError):
        ue_command(plan, "x")  # type: ignore[arg-type]


def test_oai_softmodem_accepts_generated_config(plan, tmp_path):  # pragma: no cover - needs OAI
    import subprocess

    need_oai()

    (tmp_path / "enb.conf").write_text(enb_config(plan))
    (tmp_path / "channelmod_rfsimu.conf").write_text(channelmod_config(plan))
    cmd = enb_command(plan, tmp_path / "enb.conf")
    proc = subprocess.Popen([oai_install.binary_path(cmd[0]), *cmd[1:]], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(5)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_oai_backend_refuses_without_oai(tmp_path, monkeypatch):
    from radio import get_backend

    # an empty prefix: the machine's own OAI build (if any) is out of sight
    monkeypatch.setenv("EMULAB_OAI_PREFIX", str(tmp_path))
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")

    for name in ("oai", "b210"):
        r = get_backend(name)(FakeTestbed())
        with pytest.raises(RadioError, match="not installed|not found|not on PATH"):
            r.start()
        r.stop()  # tolerates the failed start


def test_next_event():
    m = LteModel(NO_SHADOW, coverage_holes=[(5.0, 1.0)])
    assert m.next_event(0.0) == pytest.approx(5.02)
    m.lose(at=1.0, duration_s=0.3)
    assert m.next_event(1.0) == pytest.approx(1.02)  # the loss shows in the next frames
    m.step(1.05)
    assert m.next_event(1.05) == pytest.approx(1.32)
    run_profile(m, 1.5, tick_s=0.01)
    assert m.next_event(1.5) == pytest.approx(5.02)


def test_backend_wakes_for_timers_not_just_ticks():
    # a long tick: the end of a 0.2 s dip must still be applied ~on time, without anyone polling
    tb = FakeTestbed({"tick_s": 1.0})
    r = EmulatedRadio(tb)
    r.start()
    try:
        r.detach(0.2)
        assert tb.applied[-1].loss_pct == 100.0
        time.sleep(0.4)
        assert tb.applied[-1].loss_pct == 0.0
    finally:
        r.stop()


def test_user_plane_routes_put_the_ue_behind_oais_tunnel(plan):
    import ipaddress

    from radio.oai import ENB_TUN, UE_TUN, RouteChange, user_plane_routes

    spec = load("paper-topology")
    changes = user_plane_routes(spec, plan, ipaddress.IPv4Interface("10.0.1.2/24"))
    by_node = {c.node: c for c in changes}
    # the UE: its default route (one interface) now into the tunnel, from its tunnel address
    assert by_node["ue"] == RouteChange("ue", "0.0.0.0/0", dev=UE_TUN, src="10.0.1.2")
    assert by_node["enb"] == RouteChange("enb", "10.0.1.0/24", dev=ENB_TUN)
    # every other node routes the tunnel subnet as it routes the radio subnet 10.0.0.0/30 ...
    routes = spec.routes()
    for node, c in by_node.items():
        if node in ("ue", "enb"):
            continue
        radio = next(r for r in routes[node] if str(r.dest) == "10.0.0.0/30")
        assert c == RouteChange(node, "10.0.1.0/24", via=str(radio.via))
    # ... unless a default route already takes both the same way (MEC, PMC, HSS hosts)
    assert {"mme", "spgwc", "spgwu", "nornet-oslo"} == set(by_node) - {"ue", "enb"}
    with pytest.raises(RadioError, match="overlaps"):
        user_plane_routes(spec, plan, ipaddress.IPv4Interface("10.2.0.77/24"))  # the SGi LAN

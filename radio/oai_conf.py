"""The files and command lines of OAI's 4G softmodems, generated from a topology (radio.oai runs them).

``OaiPlan`` holds what they depend on (the radio link's ends, the cell's bandwidth, the UE's RRC
timers, the channel's path loss); ``enb_config`` writes lte-softmodem's libconfig file (one FDD
band-7 cell, OAI's B210 CI values otherwise) and ``channelmod_config`` the RF simulator's channel
models; ``enb_command``/``ue_command`` are the softmodems' argv; ``user_plane_routes`` the route
changes that put the UE's user plane through OAI's tunnel devices. All pure: unit-tested without OAI.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radio.base import RadioError
from radio.host import TopologyView
from radio.lte import LteConfig, LteModelError

OAI_BINARIES = ("lte-softmodem", "lte-uesoftmodem")
UE_TUN, ENB_TUN = "oaitun_ue1", "oaitun_enb1"  # the tunnel devices OAI 4G creates with --noS1
TUN_WAIT_S = 90.0  # UE attach over rfsim (cell search, RRC, noS1 bearer) before the user plane is rerouted
RFSIM_PORT = 4043
ENB_TELNET_PORT = 9090
UE_TELNET_PORT = 9091
BAND7_DL_HZ = 2_680_000_000
BAND7_UL_OFFSET_HZ = -120_000_000
SAMPLE_RATE_MSPS = {25: 7.68, 50: 15.36, 100: 30.72}


@dataclass(frozen=True)
class OaiPlan:
    """Everything the generated files depend on, taken from the topology and ``radio.options``."""

    ue_node: str
    enb_node: str
    ue_addr: str
    enb_addr: str  # on the radio link: the rfsim server address the UE connects to
    ue_intf: str = "eth0"  # the UE's radio-link interface
    radio_subnet: str = "10.0.0.0/30"
    enb_s1_addr: str = "127.0.0.1"
    mme_addr: str = "127.0.0.1"
    s1_intf: str = "lo"
    n_rb: int = 50
    dl_hz: int = BAND7_DL_HZ
    t310_ms: int = 1000
    n310: int = 20
    n311: int = 1
    t311_ms: int = 10000
    ploss_db: float = 0.0
    coverage_ploss_db: float = 60.0
    no_s1: bool = True
    usrp: bool = False
    b210_serial: str | None = None
    enb_telnet_port: int = ENB_TELNET_PORT
    ue_telnet_port: int = UE_TELNET_PORT

    @classmethod
    def from_testbed(cls, spec: TopologyView, link_name: str, options: dict[str, Any],
                     usrp: bool = False) -> OaiPlan:
        link = next((lk for lk in spec.links if lk.name == link_name), None)
        if link is None:
            raise RadioError(f"radio link {link_name!r} is not in the topology")
        ends = {spec.nodes[e.node].role: e for e in (link.a, link.b)}
        if set(ends) != {"ue", "enb"} or any(e.address is None for e in ends.values()):
            raise RadioError(f"radio link {link_name!r} needs addressed ue and enb ends")
        try:
            cfg = LteConfig.from_options({k: v for k, v in options.items() if k == "bandwidth_mhz"})
        except LteModelError as exc:
            raise RadioError(f"radio.options: {exc}") from None
        if cfg.n_prb not in SAMPLE_RATE_MSPS:
            raise RadioError(f"radio.options.bandwidth_mhz: OAI 4G here supports 5/10/20 MHz, got {cfg.bandwidth_mhz}")
        enb, ue = ends["enb"], ends["ue"]
        assert enb.address is not None and ue.address is not None  # checked above
        s1 = {"addr": "127.0.0.1", "intf": "lo", "mme": "127.0.0.1"}
        for lk in spec.links:  # S1-C: the eNB's address towards the MME, and the MME's
            roles = {spec.nodes[e.node].role: e for e in (lk.a, lk.b) if e.node in spec.nodes}
            if set(roles) == {"enb", "mme"} and roles["enb"].address and roles["mme"].address:
                s1 = {"addr": str(roles["enb"].address.ip), "intf": roles["enb"].intf,
                      "mme": str(roles["mme"].address.ip)}
        return cls(
            ue_node=ue.node, enb_node=enb.node, ue_addr=str(ue.address.ip), enb_addr=str(enb.address.ip),
            ue_intf=ue.intf, radio_subnet=str(ue.address.network),
            enb_s1_addr=s1["addr"], mme_addr=s1["mme"], s1_intf=s1["intf"], n_rb=cfg.n_prb,
            dl_hz=int(options.get("downlink_hz", BAND7_DL_HZ)),
            t310_ms=int(options.get("t310_ms", 1000)), n310=int(options.get("n310", 20)),
            n311=int(options.get("n311", 1)), t311_ms=int(options.get("t311_ms", 10000)),
            ploss_db=float(options.get("ploss_db", 0.0)),
            coverage_ploss_db=float(options.get("coverage_ploss_db", 60.0)),
            no_s1=bool(options.get("no_s1", True)), usrp=usrp, b210_serial=options.get("b210_serial"),
            enb_telnet_port=int(options.get("telnet_port", ENB_TELNET_PORT)),
            ue_telnet_port=int(options.get("ue_telnet_port", UE_TELNET_PORT)),
        )


# ---------------------------------------------------------------------------------------------
# the user plane through OAI's tunnels


@dataclass(frozen=True)
class RouteChange:
    """``ip route replace DEST [via VIA] [dev DEV] [src SRC]`` in NODE."""

    node: str
    dest: str
    via: str | None = None
    dev: str | None = None
    src: str | None = None


def user_plane_routes(spec: TopologyView, plan: OaiPlan, ue_tun: ipaddress.IPv4Interface) -> list[RouteChange]:
    """The routes that put the UE's user plane through OAI once its tunnel has address ``ue_tun``.

    The UE: every topology route out of its radio interface goes into ``oaitun_ue1`` from its tunnel
    address. The eNB: the tunnel subnet into ``oaitun_enb1``. Every other node: the tunnel subnet
    the way it reaches the radio subnet (nothing to add where a default route covers both).
    """
    radio_net = ipaddress.IPv4Network(plan.radio_subnet)
    tun_net = ue_tun.network
    clash = [a for n in spec.nodes for a in spec.addresses(n) if a.network.overlaps(tun_net)]
    if clash:
        raise RadioError(f"OAI's tunnel subnet {tun_net} overlaps the topology's {clash[0].network}: "
                         "renumber the topology")
    routes = spec.routes()
    changes = [RouteChange(plan.ue_node, str(r.dest), dev=UE_TUN, src=str(ue_tun.ip))
               for r in routes.get(plan.ue_node, ()) if r.dev == plan.ue_intf]
    changes.append(RouteChange(plan.enb_node, str(tun_net), dev=ENB_TUN))
    for node in spec.nodes:
        if node in (plan.ue_node, plan.enb_node):
            continue
        covering = [r for r in routes.get(node, ()) if radio_net.subnet_of(r.dest)]
        if not covering:
            continue
        best = max(covering, key=lambda r: r.dest.prefixlen)
        if best.dest.prefixlen > 0:  # a default route already covers the tunnel subnet
            changes.append(RouteChange(node, str(tun_net), via=str(best.via)))
    return changes


# ---------------------------------------------------------------------------------------------
# generated files (libconfig syntax, as OAI's ci-scripts/conf_files)


def enb_config(plan: OaiPlan) -> str:
    """The lte-softmodem configuration: one FDD band-7 cell, OAI's B210 CI values otherwise."""
    ru_extra = ""
    if plan.usrp:
        args = "type=b200" + (f",serial={plan.b210_serial}" if plan.b210_serial else "")
        ru_extra = f'\n    sdr_addrs = "{args}";'
    return f"""# generated by emulab (radio.oai) - {'B210' if plan.usrp else 'rfsimulator'}, {plan.n_rb} PRB
Active_eNBs = ( "emulab-enb" );
Asn1_verbosity = "none";

eNBs = (
  {{
    eNB_ID = 0xe00;
    cell_type = "CELL_MACRO_ENB";
    eNB_name = "emulab-enb";
    tracking_area_code = 1;
    plmn_list = ( {{ mcc = 208; mnc = 93; mnc_length = 2; }} );
    tr_s_preference = "local_mac";

    component_carriers = (
      {{
        node_function = "3GPP_eNODEB";
        node_timing = "synch_to_ext_device";
        node_synch_ref = 0;
        frame_type = "FDD";
        tdd_config = 3;
        tdd_config_s = 0;
        prefix_type = "NORMAL";
        eutra_band = 7;
        downlink_frequency = {plan.dl_hz}L;
        uplink_frequency_offset = {BAND7_UL_OFFSET_HZ};
        Nid_cell = 0;
        N_RB_DL = {plan.n_rb};
        Nid_cell_mbsfn = 0;
        nb_antenna_ports = 1;
        nb_antennas_tx = 1;
        nb_antennas_rx = 1;
        tx_gain = 90;
        rx_gain = 125;
        pbch_repetition = "FALSE";
        prach_root = 0;
        prach_config_index = 0;
        prach_high_speed = "DISABLE";
        prach_zero_correlation = 1;
        prach_freq_offset = 2;
        pucch_delta_shift = 1;
        pucch_nRB_CQI = 0;
        pucch_nCS_AN = 0;
        pucch_n1_AN = 0;
        pdsch_referenceSignalPower = -27;
        pdsch_p_b = 0;
        pusch_n_SB = 1;
        pusch_enable64QAM = "DISABLE";
        pusch_hoppingMode = "interSubFrame";
        pusch_hoppingOffset = 0;
        pusch_groupHoppingEnabled = "ENABLE";
        pusch_groupAssignment = 0;
        pusch_sequenceHoppingEnabled = "DISABLE";
        pusch_nDMRS1 = 1;
        phich_duration = "NORMAL";
        phich_resource = "ONESIXTH";
        srs_enable = "DISABLE";
        pusch_p0_Nominal = -96;
        pusch_alpha = "AL1";
        pucch_p0_Nominal = -104;
        msg3_delta_Preamble = 6;
        pucch_deltaF_Format1 = "deltaF2";
        pucch_deltaF_Format1b = "deltaF3";
        pucch_deltaF_Format2 = "deltaF0";
        pucch_deltaF_Format2a = "deltaF0";
        pucch_deltaF_Format2b = "deltaF0";
        rach_numberOfRA_Preambles = 64;
        rach_preamblesGroupAConfig = "DISABLE";
        rach_powerRampingStep = 4;
        rach_preambleInitialReceivedTargetPower = -108;
        rach_preambleTransMax = 10;
        rach_raResponseWindowSize = 10;
        rach_macContentionResolutionTimer = 48;
        rach_maxHARQ_Msg3Tx = 4;
        pcch_default_PagingCycle = 128;
        pcch_nB = "oneT";
        bcch_modificationPeriodCoeff = 2;
        ue_TimersAndConstants_t300 = 1000;
        ue_TimersAndConstants_t301 = 1000;
        ue_TimersAndConstants_t310 = {plan.t310_ms};
        ue_TimersAndConstants_t311 = {plan.t311_ms};
        ue_TimersAndConstants_n310 = {plan.n310};
        ue_TimersAndConstants_n311 = {plan.n311};
        ue_TransmissionMode = 1;
      }}
    );

    srb1_parameters : {{
      timer_poll_retransmit = 80;
      timer_reordering = 35;
      timer_status_prohibit = 0;
      poll_pdu = 4;
      poll_byte = 99999;
      max_retx_threshold = 4;
    }};

    SCTP : {{ SCTP_INSTREAMS = 2; SCTP_OUTSTREAMS = 2; }};

    mme_ip_address = ( {{ ipv4 = "{plan.mme_addr}"; ipv6 = "::1"; active = "yes"; preference = "ipv4"; }} );

    enable_measurement_reports = "no";
    enable_x2 = "no";

    NETWORK_INTERFACES : {{
      ENB_INTERFACE_NAME_FOR_S1_MME = "{plan.s1_intf}";
      ENB_IPV4_ADDRESS_FOR_S1_MME = "{plan.enb_s1_addr}";
      ENB_INTERFACE_NAME_FOR_S1U = "{plan.s1_intf}";
      ENB_IPV4_ADDRESS_FOR_S1U = "{plan.enb_s1_addr}";
      ENB_PORT_FOR_S1U = 2152;
      ENB_IPV4_ADDRESS_FOR_X2C = "{plan.enb_s1_addr}";
      ENB_PORT_FOR_X2C = 36422;
    }};
  }}
);

MACRLCs = ( {{ num_cc = 1; tr_s_preference = "local_L1"; tr_n_preference = "local_RRC";
              phy_test_mode = 0; puSch10xSnr = 160; puCch10xSnr = 160; }} );

L1s = ( {{ num_cc = 1; tr_n_preference = "local_mac"; }} );

RUs = (
  {{
    local_rf = "yes";
    nb_tx = 1;
    nb_rx = 1;
    att_tx = 0;
    att_rx = 0;
    bands = [7];
    max_pdschReferenceSignalPower = -27;
    max_rxgain = 120;
    eNB_instances = [0];{ru_extra}
  }}
);

THREAD_STRUCT = ( {{ parallel_config = "PARALLEL_SINGLE_THREAD"; worker_config = "WORKER_ENABLE"; }} );

log_config : {{
  global_log_level = "info";
  hw_log_level = "info";
  phy_log_level = "info";
  mac_log_level = "info";
  rlc_log_level = "info";
  pdcp_log_level = "info";
  rrc_log_level = "info";
}};
""" + ("" if plan.usrp else '\n@include "channelmod_rfsimu.conf"\n')


def channelmod_config(plan: OaiPlan) -> str:
    """``channelmod_rfsimu.conf``: AWGN, static, model 0 = downlink at the UE, model 1 = uplink."""

    def model(name: str) -> str:
        return (f'    {{ model_name = "{name}"; type = "AWGN"; ploss_dB = {plan.ploss_db:g}; '
                "noise_power_dB = -50; forgetfact = 0; offset = 0; ds_tdl = 0; }")

    return ("channelmod = {\n  max_chan = 10;\n  modellist = \"modellist_rfsimu_1\";\n"
            "  modellist_rfsimu_1 = (\n" + model("rfsimu_channel_enB0") + ",\n"
            + model("rfsimu_channel_ue0") + "\n  );\n};\n")


def _rfsim_args(serveraddr: str, telnet_port: int) -> list[str]:
    return ["--rfsim", "--rfsimulator.serveraddr", serveraddr, "--rfsimulator.serverport", str(RFSIM_PORT),
            "--rfsimulator.options", "chanmod", "--telnetsrv", "--telnetsrv.listenport", str(telnet_port)]


def enb_command(plan: OaiPlan, conf: Path) -> list[str]:
    cmd = ["lte-softmodem", "-O", str(conf)]
    if plan.no_s1:
        cmd.append("--noS1")
    if plan.usrp:
        return cmd  # device args come from the RU's sdr_addrs
    return cmd + _rfsim_args("server", plan.enb_telnet_port)


def ue_command(plan: OaiPlan, conf_dir: Path) -> list[str]:
    if plan.usrp:
        raise RadioError("--radio b210: the UE is a real device; emulab starts no lte-uesoftmodem")
    cmd = ["lte-uesoftmodem", "-C", str(plan.dl_hz), "-r", str(plan.n_rb), "--ue-rxgain", "140",
           "--ue-txgain", "120", "--nokrnmod", "1", "-O", str(conf_dir / "channelmod_rfsimu.conf")]
    if plan.no_s1:
        cmd.append("--noS1")
    return cmd + _rfsim_args(plan.enb_addr, plan.ue_telnet_port)


def channelmod_command(ploss_db: float, model_id: int = 0) -> str:
    """The telnet line that sets the path loss of rfsim channel model ``model_id``."""
    return f"channelmod modify {model_id} ploss {ploss_db:g}"


def telnet_shell(port: int, line: str) -> str:
    """A bash command sending ``line`` to the OAI telnet server on localhost (run inside a node)."""
    return (f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf '%s\\n' {shlex.quote(line)} >&3 "
            "&& sleep 0.2 && exec 3>&-")

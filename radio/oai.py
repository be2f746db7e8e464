"""OpenAirInterface backends: the RF simulator (`oai`) and a real USRP B210 (`b210`).

``oai`` (rfsimulator): the backend writes an lte-softmodem configuration (band 7, FDD, N_RB_DL from
``bandwidth_mhz``, RLF timers T310/N310/N311/T311 as radio.lte uses them) and starts

* in the eNB node: ``lte-softmodem -O enb.conf --rfsim --rfsimulator.serveraddr server
  --rfsimulator.options chanmod --telnetsrv ...`` (the eNB is the rfsim TCP server, port 4043),
* in the UE node: ``lte-uesoftmodem -C <DL Hz> -r <N_RB> --rfsim --rfsimulator.serveraddr <eNB
  address on the radio link> --rfsimulator.options chanmod --telnetsrv --telnetsrv.listenport ...``.

The IQ samples (7.68–30.72 Msps) then flow over the radio link, so the backend makes that link
neutral (no emulated delay/rate) and lets OAI's PHY/MAC/RRC do the radio. Coverage loss is
``channelmod modify 0 ploss <coverage_ploss_db>`` on the UE's telnet server (model 0 =
``rfsimu_channel_enB0``, the downlink as the UE receives it, from ``channelmod_rfsimu.conf``);
restore sets it back to ``ploss_db``. OAI's own T310/N310 then produce the RLF.
By default both run with ``--noS1`` (``no_s1: true``): the EPC nodes of emulab topologies are plain
hosts, not an OAI EPC; with ``no_s1: false`` the eNB config points S1-MME/S1-U at the topology's
MME / eNB addresses.

``b210`` (real radio): the same eNB configuration without ``--rfsim`` and with the RU section's
``sdr_addrs = "type=b200"`` (UHD device args; ``serial=...`` added from ``b210_serial``), plus the
B210 gains of OAI's CI config (``tx_gain 90``, ``rx_gain 125``, ``max_rxgain 120``). What changes:
no UE softmodem (the UE is a real phone or dongle), no rfsim/channelmod, hence no software
coverage control (``coverage lose`` is refused: use an attenuator or RF shield box), the radio link
must be a real interface (not emulated) and ``uhd_find_devices`` must list a B2xx. The sample rate
follows N_RB_DL (7.68 Msps for 25 PRB, 15.36 for 50, 30.72 for 100).

User plane (``oai``, ``--noS1``): once OAI's tunnel devices are up (``oaitun_ue1`` in the UE
node, ``oaitun_enb1`` in the eNB node, with the addresses OAI gives them), the backend reroutes the
user plane through them (``user_plane_routes``): the UE sends everything it used to send over the
radio interface into ``oaitun_ue1`` from its tunnel address, the eNB hands that tunnel subnet to
``oaitun_enb1``, and every other node routes the tunnel subnet the way it routes the radio subnet.
So the UE's own traffic (its pool users' requests, its registrar's and PE's outgoing connections)
and the answers to it cross OAI's PHY/MAC/RLC/PDCP both ways, and a coverage loss in OAI's channel
cuts it. Connections made *to* the UE's radio-link address still take the plain link, which also
carries the IQ samples (a limit of running without an EPC that assigns the UE one address).

OAI is not packaged by any registry reachable here: `make oai` builds it (scripts/build_oai.py) and
radio.oai_install finds that build (else softmodems on the PATH); where lte-softmodem /
lte-uesoftmodem are missing the backend refuses to start with a message saying so. Generated files and the user-plane route
plan are unit-tested; starting the softmodems is exercised only where OAI is installed.
"""

from __future__ import annotations

import ipaddress
import logging
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radio import oai_install
from radio.base import RadioBackend, RadioError, RadioProbe, binaries_probe
from radio.host import Process, RadioHost, RadioLinkParams, TopologyView
from radio.lte import LteConfig, LteModelError

log = logging.getLogger(__name__)

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


def b210_present() -> bool:
    """True when ``uhd_find_devices`` lists a B2xx (UHD's ``type: b200``)."""
    if not shutil.which("uhd_find_devices"):
        return False
    try:
        out = subprocess.run(["uhd_find_devices", "--args", "type=b200"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "b200" in out.stdout.lower()


def probe_oai() -> tuple[bool, str]:
    """`emulab doctor`: OAI's softmodems (`make oai`'s build, else the PATH): version, place, what
    --radio oai/b210 do."""
    inst = oai_install.find_install()
    if inst is None:
        return False, "OpenAirInterface not built (`make oai` builds it into /opt/emulab-oai)"
    where = (f"{inst.prefix} (-march={inst.march}, built {inst.info.get('built_at', '?')})"
             if inst.prefix else f"on PATH: {inst.binary('lte-softmodem')}")
    b210 = ("--radio b210: USRP driver built, runs lte-softmodem on an attached B210 (see usrp_b210)"
            if inst.usrp_driver or inst.prefix is None else "--radio b210: no USRP driver in this build")
    return True, (f"OAI {inst.version} in {where}; --radio oai: lte-softmodem (eNB) and lte-uesoftmodem (UE) "
                  f"over OAI's RF simulator on the radio link; {b210}")


def probe_b210() -> tuple[bool, str]:
    """`emulab doctor`: is a USRP B2xx attached (as uhd_find_devices reports it)?"""
    if not shutil.which("uhd_find_devices"):
        return False, "uhd_find_devices not installed (Debian uhd-host)"
    try:
        out = subprocess.run(["uhd_find_devices", "--args=type=b200"], capture_output=True, text=True,
                             timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False, "uhd_find_devices did not answer"
    text = out.stdout + out.stderr
    if "B210" in text or "B200" in text:
        return True, ("USRP B2xx found by uhd_find_devices: --radio b210 runs OAI's eNodeB on it, with a real "
                      "UE instead of the UE softmodem and coverage by attenuator or shield box (no `coverage` "
                      "commands)")
    return False, "no USRP B210 attached (uhd_find_devices found none)"


def _installed(cmd: list[str]) -> list[str]:
    """``cmd`` with the softmodem replaced by its path in the OAI install (`make oai`'s prefix)."""
    return [oai_install.binary_path(cmd[0]) or cmd[0], *cmd[1:]]


# ---------------------------------------------------------------------------------------------
# backends


class OaiRfsimRadio(RadioBackend):
    name = "oai"
    usrp = False

    @classmethod
    def probes(cls) -> tuple[RadioProbe, ...]:
        return (RadioProbe("oai", probe_oai, "--radio oai unavailable (run `make oai`); use emulated"),)

    def __init__(self, host: RadioHost) -> None:
        super().__init__(host)
        self.plan: OaiPlan | None = None
        self.procs: dict[str, Process] = {}
        self.coverage_lost = False
        self.conf_dir: Path | None = None
        self.user_plane = "radio link"  # or "waiting for oaitun_ue1 …", "OAI tunnel <addr>", an error
        self._stop = threading.Event()
        self._rerouter: threading.Thread | None = None

    def _check_installed(self) -> None:
        missing = [b for b in OAI_BINARIES if not oai_install.binary_path(b)]
        if missing:
            raise RadioError(
                f"--radio {self.name}: OpenAirInterface is not installed ({', '.join(missing)} not found in "
                f"{oai_install.DEFAULT_ROOT}/current or on PATH); run `make oai` or use --radio emulated"
            )

    def write_files(self, directory: Path) -> dict[str, Path]:
        """Write enb.conf (+ channelmod_rfsimu.conf for rfsim) into ``directory``; return their paths."""
        assert self.plan is not None
        directory.mkdir(parents=True, exist_ok=True)
        files = {"enb": directory / "enb.conf"}
        files["enb"].write_text(enb_config(self.plan))
        if not self.plan.usrp:
            files["channelmod"] = directory / "channelmod_rfsimu.conf"
            files["channelmod"].write_text(channelmod_config(self.plan))
        return files

    def start(self) -> None:
        self._check_installed()
        if self.link_name is None:
            raise RadioError(f"--radio {self.name} needs a radio link in the topology")
        self.plan = OaiPlan.from_testbed(self.host.topology, self.link_name, self.options, usrp=self.usrp)
        self.conf_dir = self.host.run_dir / "oai"
        files = self.write_files(self.conf_dir)
        # the IQ stream needs the raw link: OAI's PHY is the radio now
        self.host.set_link_params(self.link_name, RadioLinkParams())
        logs = self.host.log_dir
        self.procs["enb"] = self.host.popen(self.plan.enb_node, _installed(enb_command(self.plan, files["enb"])),
                                            cwd=self.conf_dir, log=logs / "oai-enb.log")
        if not self.usrp:
            self.procs["ue"] = self.host.popen(self.plan.ue_node, _installed(ue_command(self.plan, self.conf_dir)),
                                               cwd=self.conf_dir, log=logs / "oai-ue.log")
            if self.plan.no_s1:
                self.user_plane = f"waiting for {UE_TUN} (UE attach)"
                self._stop.clear()
                self._rerouter = threading.Thread(target=self._reroute, name="emulab-oai-user-plane", daemon=True)
                self._rerouter.start()

    def _reroute(self) -> None:
        """Wait for both tunnel devices to have addresses, then move the user plane into them."""
        assert self.plan is not None
        plan, host = self.plan, self.host
        deadline = time.monotonic() + TUN_WAIT_S
        done = 0
        try:
            while not self._stop.wait(0.5):
                ue_tun = host.interface_address(plan.ue_node, UE_TUN)
                if ue_tun is not None and host.interface_address(plan.enb_node, ENB_TUN) is not None:
                    changes = user_plane_routes(host.topology, plan, ue_tun)
                    for c in changes:
                        host.replace_route(c.node, c.dest, via=c.via, dev=c.dev, src=c.src)
                        done += 1
                    self.user_plane = f"OAI tunnel {ue_tun} ({UE_TUN} <-> {ENB_TUN})"
                    log.info("user plane rerouted through OAI: %s", self.user_plane)
                    return
                if time.monotonic() > deadline:
                    self.user_plane = (f"not rerouted: no {UE_TUN}/{ENB_TUN} address after {TUN_WAIT_S:g} s "
                                       "(did the UE attach? see oai-ue.log)")
                    log.warning("OAI user plane: %s", self.user_plane)
                    return
        except Exception as exc:  # keep the radio up; status shows how far the user plane moved
            how = f"partially rerouted ({done} route(s) changed)" if done else "not rerouted"
            self.user_plane = f"{how}: {type(exc).__name__}: {exc}"
            log.warning("OAI user plane: %s", self.user_plane)

    def stop(self) -> None:
        self._stop.set()
        if self._rerouter is not None:
            self._rerouter.join(timeout=5)
            self._rerouter = None
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()

    def _channelmod(self, ploss_db: float) -> None:
        if self.plan is None or "ue" not in self.procs:
            raise RadioError(f"--radio {self.name} is not running")
        out = self.host.run(
            self.plan.ue_node,
            "bash -c " + shlex.quote(telnet_shell(self.plan.ue_telnet_port, channelmod_command(ploss_db))))
        if "refused" in out.lower() or "no such" in out.lower():
            raise RadioError(f"OAI telnet server (UE, port {self.plan.ue_telnet_port}): {out.strip()}")

    def attach(self) -> None:
        self._channelmod(self.plan.ploss_db if self.plan else 0.0)
        self.coverage_lost = False

    def detach(self, duration_s: float | None = None) -> None:
        if duration_s is not None:
            raise RadioError(f"--radio {self.name}: `coverage lose --for` is not supported; restore by hand")
        self._channelmod(self.plan.coverage_ploss_db if self.plan else 60.0)
        self.coverage_lost = True

    def state(self) -> dict[str, Any]:
        alive = {k: p.poll() is None for k, p in self.procs.items()}
        return {
            "backend": self.name,
            "link": self.link_name,
            # OAI's RRC state is in its logs, not queryable here: report coverage and processes
            "attached": bool(alive) and all(alive.values()) and not self.coverage_lost,
            "attach": "unknown (see oai-ue.log)",
            "coverage": "lost" if self.coverage_lost else "ok",
            "user_plane": self.user_plane,
            "processes": alive,
            "conf_dir": str(self.conf_dir) if self.conf_dir else None,
        }


class B210Radio(OaiRfsimRadio):
    name = "b210"
    usrp = True

    @classmethod
    def probes(cls) -> tuple[RadioProbe, ...]:
        return (binaries_probe("uhd", "uhd_find_devices", fallback="--radio b210 unavailable"),
                RadioProbe("usrp_b210", probe_b210,
                           "--radio b210 unavailable (OAI's eNodeB on a B210 with a real UE); use emulated"))

    def _check_installed(self) -> None:
        if not shutil.which("uhd_find_devices"):
            raise RadioError("--radio b210: uhd_find_devices not found (Debian package uhd-host)")
        inst = oai_install.find_install()
        if inst is None:
            raise RadioError("--radio b210: OpenAirInterface's lte-softmodem is not installed; run `make oai`")
        if inst.prefix is not None and not inst.usrp_driver:
            raise RadioError(f"--radio b210: the OAI build in {inst.prefix} has no USRP driver (liboai_usrpdevif.so); "
                             "see its BUILD-INFO.json")
        if not b210_present():
            raise RadioError("--radio b210: uhd_find_devices finds no B2xx (args type=b200); check USB 3 and power")

    def attach(self) -> None:
        raise RadioError("--radio b210: coverage is physical here (attenuator or shield box), not software")

    def detach(self, duration_s: float | None = None) -> None:
        raise RadioError("--radio b210: coverage is physical here (attenuator or shield box), not software")

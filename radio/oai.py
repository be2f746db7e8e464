"""OpenAirInterface backends: the RF simulator (`oai`) and a real USRP B210 (`b210`).

``oai`` (rfsimulator): the backend writes an lte-softmodem configuration (band 7, FDD, N_RB_DL from
``bandwidth_mhz``, RLF timers T310/N310/N311/T311 as radio.lte uses them; radio.oai_conf) and starts

* in the eNB node: ``lte-softmodem -O enb.conf --rfsim --rfsimulator.serveraddr server
  --rfsimulator.options chanmod --telnetsrv ...`` (the eNB is the rfsim TCP server, port 4043),
* in the UE node: ``lte-uesoftmodem -C <DL Hz> -r <N_RB> --rfsim --rfsimulator.serveraddr <eNB
  address on the radio link> --rfsimulator.options chanmod --telnetsrv --telnetsrv.listenport ...``,

both through radio.oai_sched's wrapper: normal (not real-time) scheduling and no host-wide settings.
The IQ samples (7.68-30.72 Msps) then flow over the radio link, so the backend makes that link
neutral (no emulated delay/rate) and lets OAI's PHY/MAC/RRC do the radio.

Attach is OAI's own RRC state, read from the UE's log (radio.oai_log: ``State = RRC_CONNECTED`` /
``RRC_RECONFIGURED``); ``start`` returns once the UE is attached and its user plane goes through
OAI, and fails with one message naming the softmodem and its log when one exits first or the UE
does not attach within ``attach_timeout_s`` (default 60 s). While it runs, a supervisor thread
follows the log, keeps the user plane in the tunnel, measures the radio's RTT through it
(radio.oai_probe; the self-check and `emulab radio status` use it) and runs the UE's radio link
monitor (radio.oai_rlm). The eNB's MAC statistics of the UE (MCS each way, the UE's CQI, uplink
SNR/BLER, throughput each way) come from OAI's eNB itself: its telnet server's ``measur show
enbues`` and its MAC_stats.log (radio.oai_mac); `emulab radio status` shows them. (With ``b210``
the reader is not started: it waits for an attach, which only the UE softmodem's log tells here.)

Coverage loss is ``channelmod modify 0 ploss <coverage_ploss_db>`` on the UE's telnet server (model
0 = ``rfsimu_channel_enB0``, the downlink as the UE receives it); restore sets it back to
``ploss_db``. OAI's 4G UE neither declares RLF nor recovers by itself, so radio.oai_rlm's monitor
evaluates the UE's downlink SNR per frame against Qout/Qin with the topology's N310/T310/N311: at
RLF the UE's bearer goes (its routes through the tunnel are withdrawn), and once the cell is back the
softmodems are restarted (OAI's UE cannot leave its dead connection, and OAI's eNB, with no EPC to
release it, keeps the lost UE's context and tunnel slot) and the UE attaches anew (``reattach_s``). By default both run with
``--noS1`` (``no_s1: true``): the EPC nodes of emulab topologies are plain hosts, not an OAI EPC;
with ``no_s1: false`` the eNB config points S1-MME/S1-U at the topology's MME / eNB addresses.

``b210`` (real radio): the same eNB configuration without ``--rfsim`` and with the RU section's
``sdr_addrs = "type=b200"`` (UHD device args; ``serial=...`` added from ``b210_serial``), plus the
B210 gains of OAI's CI config (``tx_gain 90``, ``rx_gain 125``, ``max_rxgain 120``). What changes:
no UE softmodem (the UE is a real phone or dongle), no rfsim/channelmod, hence no software
coverage control (``coverage lose`` is refused: use an attenuator or RF shield box), the radio link
must be a real interface (not emulated) and ``uhd_find_devices`` must list a B2xx. The sample rate
follows N_RB_DL (7.68 Msps for 25 PRB, 15.36 for 50, 30.72 for 100).

User plane (``oai``, ``--noS1``): once the UE is attached (OAI reconfigures ``oaitun_ue1`` when the
data bearer comes up, which drops the routes through it, so not before), the backend reroutes the
user plane through OAI's tunnel devices (``user_plane_routes``): the UE sends everything it used to
send over the radio interface into ``oaitun_ue1`` from its tunnel address, the eNB hands that
tunnel subnet to ``oaitun_enb1``, and every other node routes the tunnel subnet the way it routes the
radio subnet. So the UE's own traffic (its pool users' requests, its registrar's and PE's outgoing
connections) and the answers to it cross OAI's PHY/MAC/RLC/PDCP both ways, and what is sent to the
UE's tunnel address too. Packets to the UE's radio-link address still reach it over the plain link
(its answers go back through OAI): OAI's eNB picks the UE by the last octet of the destination, and
that link carries the IQ samples (a limit of running without an EPC that assigns the UE one address).

OAI is not packaged by any registry reachable here: `make oai` builds it (scripts/build_oai.py) and
radio.oai_install finds that build (else softmodems on the PATH); where lte-softmodem /
lte-uesoftmodem are missing the backend refuses to start with a message saying so.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from radio import oai_install, oai_mac, oai_probe, oai_rlm, oai_sched
from radio.base import RadioBackend, RadioError, RadioProbe, binaries_probe
from radio.host import Process, RadioHost, RadioLinkParams
from radio.oai_conf import (  # noqa: F401 - re-exported: the generated files are part of this backend
    BAND7_DL_HZ,
    BAND7_UL_OFFSET_HZ,
    ENB_TELNET_PORT,
    ENB_TUN,
    OAI_BINARIES,
    RFSIM_PORT,
    SAMPLE_RATE_MSPS,
    TUN_WAIT_S,
    UE_TELNET_PORT,
    UE_TUN,
    OaiPlan,
    RouteChange,
    channelmod_command,
    channelmod_config,
    enb_command,
    enb_config,
    telnet_shell,
    ue_command,
    user_plane_routes,
)
from radio.oai_log import UeLog, fatal_line
from radio.oai_rlm import RadioLinkMonitor

log = logging.getLogger(__name__)

ATTACH_TIMEOUT_S = 60.0  # start → RRC attach (OAI needs ~3-10 s on 2 busy cores); option attach_timeout_s
#: what OAI's telnet server (and its channelmod command) answer to a command it does not take
TELNET_REJECTED = ("is not a softmodem command", "not implemented", "not found", "Connection refused")
SUPERVISE_PERIOD_S = 1.0  # how often the UE's tunnel routes are checked


def find_b210() -> tuple[bool, str]:
    """(whether ``uhd_find_devices --args type=b200`` lists a B2xx, what it printed)."""
    if not shutil.which("uhd_find_devices"):
        return False, "uhd_find_devices not installed"
    try:
        out = subprocess.run(["uhd_find_devices", "--args", "type=b200"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"uhd_find_devices did not answer ({exc})"
    text = " ".join((out.stdout + out.stderr).split())
    return out.returncode == 0 and "b200" in out.stdout.lower(), text


def b210_present() -> bool:
    """True when ``uhd_find_devices`` lists a B2xx (UHD's ``type: b200``)."""
    return find_b210()[0]


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
        self.shim: Path | None = None
        self.ue_log: UeLog | None = None
        self.user_plane = "radio link"  # or "waiting for …", "OAI tunnel <addr>", an error
        self.failure: str | None = None  # why the radio is down (a softmodem exited, no attach)
        self.started_at: float | None = None
        self.attach_s: float | None = None  # start (or UE restart) → RRC attached, last time
        self.probe: oai_probe.RttProbe | None = None  # the radio's RTT, measured while attached
        self.probe_proc: Process | None = None
        self.rlm: RadioLinkMonitor | None = None  # the UE's radio link monitor (radio.oai_rlm)
        self.reader_proc: Process | None = None  # reads the UE's downlink channel for it
        self.mac: oai_mac.EnbMac | None = None  # the eNB's MAC statistics of the UE (radio.oai_mac)
        self.mac_proc: Process | None = None  # asks the eNB's telnet server for them
        self._reader_offset = 0
        self._ue_routes: list[RouteChange] = []
        self.rlf_count = 0
        self.reattach_s: float | None = None  # cell back (N311 in sync) → RRC attached again, last time
        self.ue_restarts = 0
        self._restore_timer: threading.Timer | None = None
        self._routed_for: float | None = None  # the attach (UeLog.attached_at) the routes were put in for
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._supervisor: threading.Thread | None = None

    @classmethod
    def preflight(cls, options: dict[str, Any]) -> None:
        """Before the testbed is built (emulab calls it first): RadioError when what the backend needs
        is missing, so a start fails without building anything."""
        cls._check_installed()

    @classmethod
    def _check_installed(cls) -> None:
        missing = [b for b in OAI_BINARIES if not oai_install.binary_path(b)]
        if missing:
            raise RadioError(
                f"--radio {cls.name}: OpenAirInterface is not installed ({', '.join(missing)} not found in "
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

    def _popen(self, role: str, node: str, argv: list[str], log_name: str) -> None:
        assert self.conf_dir is not None and self.shim is not None
        self.procs[role] = self.host.popen(node, oai_sched.wrap(_installed(argv), self.shim), cwd=self.conf_dir,
                                           log=self.host.log_dir / log_name)

    def start(self) -> None:
        self._check_installed()
        if self.link_name is None:
            raise RadioError(f"--radio {self.name} needs a radio link in the topology")
        self.plan = OaiPlan.from_testbed(self.host.topology, self.link_name, self.options, usrp=self.usrp)
        self.conf_dir = self.host.run_dir / "oai"
        files = self.write_files(self.conf_dir)
        try:
            self.shim = oai_sched.build_shim(self.conf_dir)
        except oai_sched.ShimError as exc:
            raise RadioError(f"--radio {self.name}: {exc}") from None
        # the IQ stream needs the raw link: OAI's PHY is the radio now
        self.host.set_link_params(self.link_name, RadioLinkParams())
        self.started_at = time.time()
        self._popen("enb", self.plan.enb_node, enb_command(self.plan, files["enb"]), "oai-enb.log")
        if self.usrp:
            return
        self._popen("ue", self.plan.ue_node, ue_command(self.plan, self.conf_dir), "oai-ue.log")
        self.ue_log = UeLog(self.host.log_dir / "oai-ue.log")
        self.user_plane = "waiting for the UE's RRC attach"
        timeout = float(self.options.get("attach_timeout_s", ATTACH_TIMEOUT_S))
        self._wait_attached(timeout)
        self._start_mac_reader()  # again after a re-attach that followed restarted softmodems (_step)
        self._start_probe()
        self._start_rlm()
        self._stop.clear()
        self._supervisor = threading.Thread(target=self._supervise, name="emulab-oai", daemon=True)
        self._supervisor.start()

    def _wait_attached(self, timeout: float) -> None:
        """Until OAI's UE reports RRC attach and the user plane is through its tunnel; RadioError
        (naming the softmodem and its log) when a softmodem exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._check_alive()
                if self.failure:
                    raise RadioError(f"--radio {self.name}: {self.failure}")
                if self._step():
                    return
            if time.monotonic() > deadline:
                state = self.ue_log.rrc_state if self.ue_log else None
                raise RadioError(f"--radio {self.name}: the UE did not attach within {timeout:g} s (last RRC "
                                 f"state: {state or 'none: no cell found'}; see {self.host.log_dir}/oai-ue.log "
                                 "and oai-enb.log)")
            time.sleep(0.2)

    def _start_probe(self) -> None:
        """Keep measuring the radio's RTT through the tunnels (radio.oai_probe) while the radio runs."""
        assert self.plan is not None and self.conf_dir is not None
        enb_tun = self.host.interface_address(self.plan.enb_node, ENB_TUN)
        if enb_tun is None:
            return
        log_file = self.host.log_dir / "oai-rtt-probe.log"
        self.probe = oai_probe.RttProbe(log_file)
        self.probe_proc = self.host.popen(self.plan.ue_node, oai_probe.RttProbe.argv(str(enb_tun.ip)),
                                          cwd=self.conf_dir, log=log_file)

    def _start_mac_reader(self) -> None:
        """Keep reading the eNB's MAC statistics of the UE (radio.oai_mac): its telnet server's answer
        once a second, and OAI's MAC_stats.log. Only while the UE is attached: the telnet server is up
        long before the eNB's MAC is, and a ``measur`` command in between can crash the eNB."""
        assert self.plan is not None and self.conf_dir is not None
        if self.mac_proc is not None:
            return
        self.mac = oai_mac.EnbMac(self.conf_dir / oai_mac.ENB_MAC_FILE, self.conf_dir / oai_mac.MAC_STATS_FILE)
        self.mac.reader_file.unlink(missing_ok=True)  # the last reader's, from before a restart
        self.mac_proc = self.host.popen(
            self.plan.enb_node, [sys.executable, "-c", oai_mac.READER, str(self.plan.enb_telnet_port),
                                 str(oai_mac.POLL_S), str(self.mac.reader_file)],
            cwd=self.conf_dir, log=self.host.log_dir / "oai-enb-mac.log")

    def _start_rlm(self) -> None:
        """Start the UE's radio link monitor and the reader of the UE's downlink channel it is fed by."""
        assert self.plan is not None and self.conf_dir is not None
        self.rlm = RadioLinkMonitor(n310=self.plan.n310, t310_ms=self.plan.t310_ms, n311=self.plan.n311)
        self._reader_offset = 0
        self.reader_proc = self.host.popen(
            self.plan.ue_node, [sys.executable, "-c", oai_rlm.READER, str(self.plan.ue_telnet_port), str(oai_rlm.POLL_S)],
            cwd=self.conf_dir, log=self.host.log_dir / "oai-ue-channel.log")

    def _readings(self) -> list[str]:
        try:
            with open(self.host.log_dir / "oai-ue-channel.log", "rb") as f:
                f.seek(self._reader_offset)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self._reader_offset += end
        return data[:end].decode("utf-8", "replace").splitlines()

    def _monitor(self) -> None:
        """Feed the radio link monitor; on RLF take the bearer down; once the cell is back, re-attach."""
        assert self.rlm is not None and self.plan is not None
        for line in self._readings():
            reading = oai_rlm.parse_reading(line)
            if reading is None:
                continue
            before = self.rlm.state
            if self.rlm.indicate(*reading) == "rlf" and before != "rlf":
                self._on_rlf()
        if self.rlm.state == "rlf" and self.rlm.cell_back_at is not None and self._routed_for is not None:
            self._restart_ue()

    def _on_rlf(self) -> None:
        """Radio link failure: the UE's bearer goes, as a real modem drops it (routes withdrawn, so the
        UE's applications learn at once that there is no network)."""
        assert self.plan is not None and self.rlm is not None
        self.rlf_count += 1
        for c in self._ue_routes:
            self.host.run(self.plan.ue_node, f"ip -4 route del {c.dest} dev {UE_TUN}")
        self.user_plane = f"down: radio link failure (N310 x 10 ms + T310 = {self.plan.n310 * 10 + self.plan.t310_ms:g} ms)"
        log.info("OAI UE: %s", self.user_plane)

    def _restart_ue(self) -> None:
        """The cell is back after an RLF: OAI's UE cannot leave its dead connection, and OAI's eNB (no
        EPC to release the context) keeps the lost UE's context and its tunnel slot, so the new
        connection would get no downlink: both softmodems start anew, the eNB first (its cell
        search, RRC connection and bearer follow; ``_step`` puts the user plane back)."""
        assert self.plan is not None and self.conf_dir is not None and self.ue_log is not None
        # the MAC reader first: no telnet questions to an eNB that is starting (see _start_mac_reader)
        _stop_processes([p for p in (self.mac_proc, self.procs.pop("ue"), self.procs.pop("enb")) if p is not None])
        self.mac_proc = None
        self.ue_restarts += 1
        for role in ("enb", "ue"):
            log_file = self.host.log_dir / f"oai-{role}.log"
            with contextlib.suppress(OSError):
                log_file.rename(log_file.with_name(f"oai-{role}.{self.ue_restarts}.log"))
        self._popen("enb", self.plan.enb_node, enb_command(self.plan, self.conf_dir / "enb.conf"), "oai-enb.log")
        self._popen("ue", self.plan.ue_node, ue_command(self.plan, self.conf_dir), "oai-ue.log")
        self.ue_log.restart()
        self._routed_for = None
        self.user_plane = "down: re-attaching (softmodems restarted after the RLF)"
        log.info("OAI UE: cell back after RLF, softmodems restarted")

    def measured_link_params(self) -> dict[str, RadioLinkParams] | None:
        """What OAI's radio does to the user plane now, per direction ("uplink", "downlink"), from the
        round trips measured over the last seconds (radio.oai_probe); None without enough samples.
        The testbed's self-check uses it in place of the radio link's configured parameters."""
        stats = self.probe.window() if self.probe else None
        if stats is None:
            return None
        delay, jitter = oai_probe.one_way(stats)
        p = RadioLinkParams(delay_ms=delay, jitter_ms=jitter)
        return {"uplink": p, "downlink": p}

    def address_of(self, node: str) -> str | None:
        """Where ``node`` is reached through OAI's radio: the UE and the eNB at their tunnel addresses
        (OAI's eNB hands the UE only what is addressed to its tunnel address; between the two
        radio-link addresses runs the plain link that carries the IQ samples)."""
        if self.plan is None or self.failure or node not in (self.plan.ue_node, self.plan.enb_node):
            return None
        ue = node == self.plan.ue_node
        tun = self.host.interface_address(node, UE_TUN if ue else ENB_TUN)
        return str(tun.ip) if tun else None

    def _check_alive(self) -> None:
        for role, proc in self.procs.items():
            code = proc.poll()
            if code is not None and not self.failure:
                fatal = fatal_line(self.host.log_dir / f"oai-{role}.log")
                self.failure = (f"the {role} softmodem exited (status {code})" + (f": {fatal}" if fatal else "")
                                + f"; see {self.host.log_dir}/oai-{role}.log")
                self.user_plane = "down: " + self.failure
                log.warning("OAI: %s", self.failure)

    def _step(self, check_routes: bool = True) -> bool:
        """Read the UE's log; once it is attached, put (or put back) the user plane into the tunnel.
        True when the UE is attached and the user plane goes through OAI."""
        assert self.ue_log is not None and self.plan is not None
        self.ue_log.poll()
        if not self.ue_log.attached or (self.rlm is not None and self.rlm.state == "rlf" and self._routed_for):
            return False
        attached_at = self.ue_log.attached_at
        if self._routed_for != attached_at or (check_routes and not self._routes_present()):
            # OAI (re)configures oaitun_ue1 when the data bearer comes up (nas_config: interface down, address,
            # up), which drops every route through it: so the routes go in after the RRC attach, not before
            ue_tun = self.host.interface_address(self.plan.ue_node, UE_TUN)
            if ue_tun is None or self.host.interface_address(self.plan.enb_node, ENB_TUN) is None:
                return False
            changes = user_plane_routes(self.host.topology, self.plan, ue_tun)
            for c in changes:
                self.host.replace_route(c.node, c.dest, via=c.via, dev=c.dev, src=c.src)
            self._ue_routes = [c for c in changes if c.node == self.plan.ue_node]
            self._routed_for = attached_at
            if self.rlm is not None and self.rlm.state == "rlf" and attached_at is not None:
                if self.rlm.cell_back_at is not None:
                    self.reattach_s = round(attached_at - self.rlm.cell_back_at, 3)
                self.rlm.reattached()
                self._start_mac_reader()  # a no-op unless the softmodems' restart ended it
            if attached_at is not None and self.started_at is not None and self.attach_s is None:
                self.attach_s = round(attached_at - self.started_at, 3)
            self.user_plane = f"OAI tunnel {ue_tun} ({UE_TUN} <-> {ENB_TUN})"
            log.info("user plane through OAI: %s", self.user_plane)
        return True

    def _routes_present(self) -> bool:
        """Whether the UE still routes into its tunnel (OAI's interface reconfiguration removes them)."""
        assert self.plan is not None
        out = self.host.run(self.plan.ue_node, f"ip -4 route show dev {UE_TUN}")
        return any(line.strip() and "proto kernel" not in line for line in out.splitlines())

    def _supervise(self) -> None:
        """While the radio runs: the radio link monitor, the UE's log, the user plane kept in the tunnel
        (its routes checked once a second), softmodems that exit."""
        next_check = 0.0
        while not self._stop.wait(oai_rlm.POLL_S):
            try:
                with self._lock:
                    self._check_alive()
                    if self.failure:
                        continue
                    if self.rlm is not None:
                        self._monitor()
                    check = time.monotonic() >= next_check
                    self._step(check_routes=check)
                    if check and self.mac is not None:  # every reading, so the throughput window stays full
                        self.mac.poll()
                    if check:
                        next_check = time.monotonic() + SUPERVISE_PERIOD_S
            except Exception as exc:  # keep supervising; status shows the error
                self.user_plane = f"error: {type(exc).__name__}: {exc}"
                log.warning("OAI supervisor: %s", self.user_plane)

    def stop(self) -> None:
        self._stop.set()
        if self._restore_timer is not None:
            self._restore_timer.cancel()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
            self._supervisor = None
        procs = [*self.procs.values(),
                 *[p for p in (self.probe_proc, self.reader_proc, self.mac_proc) if p is not None]]
        self.probe_proc = self.reader_proc = self.mac_proc = None
        _stop_processes(procs)
        self.procs.clear()
        if self.conf_dir is not None:  # generated files and the shim (the logs stay, with the testbed's)
            shutil.rmtree(self.conf_dir, ignore_errors=True)

    def _telnet(self, port: int, line: str) -> str:
        """Send ``line`` to the OAI telnet server on ``port`` (in the UE's or the eNB's node); its answer.
        RadioError when the server is not there or rejects the command."""
        assert self.plan is not None
        node = self.plan.ue_node if port == self.plan.ue_telnet_port else self.plan.enb_node
        out = self.host.run(node, " ".join(shlex.quote(a) for a in
                                           (sys.executable, "-c", oai_rlm.ONE_COMMAND, str(port), line)) + " 2>&1")
        if any(w in out for w in TELNET_REJECTED) or "Traceback" in out:
            last = out.strip().splitlines()[-1] if out.strip() else "no answer"
            why = " ".join(ln.strip() for ln in out.splitlines() if any(w in ln for w in TELNET_REJECTED)) or last
            raise RadioError(f"OAI telnet server ({node}, port {port}) rejected {line!r}: {why[:300]}")
        return out

    def _channelmod(self, ploss_db: float) -> None:
        if self.plan is None or "ue" not in self.procs:
            raise RadioError(f"--radio {self.name} is not running")
        self._telnet(self.plan.ue_telnet_port, channelmod_command(ploss_db))

    def attach(self) -> None:
        self._channelmod(self.plan.ploss_db if self.plan else 0.0)
        self.coverage_lost = False

    def detach(self, duration_s: float | None = None) -> None:
        self._channelmod(self.plan.coverage_ploss_db if self.plan else 60.0)
        self.coverage_lost = True
        if self._restore_timer is not None:
            self._restore_timer.cancel()
            self._restore_timer = None
        if duration_s is not None:
            self._restore_timer = threading.Timer(duration_s, self._restore_quietly)
            self._restore_timer.daemon = True
            self._restore_timer.start()

    def _restore_quietly(self) -> None:
        try:
            self.attach()
        except RadioError as exc:
            log.warning("OAI: restoring coverage after `coverage lose --for`: %s", exc)

    def state(self) -> dict[str, Any]:
        alive = {k: p.poll() is None for k, p in self.procs.items()}
        ue = self.ue_log
        rrc = ue.rrc_state if ue else None
        rlm = self.rlm
        rlf = rlm is not None and rlm.state == "rlf"
        attached = bool(ue and ue.attached and alive.get("ue") and not self.failure and not rlf)
        mac = self.mac.state() if self.mac else None
        return {
            "backend": self.name,
            "link": self.link_name,
            "attached": attached,
            "attach": "attached" if attached else ("failed" if self.failure else "detached"),
            "since": (rlm.rlf_at if rlf and rlm else ue.rrc_since if ue else None),
            "rrc_state": rrc,
            "attach_s": self.attach_s,
            "radio_rtt": self.probe.window() if self.probe else None,
            "dci_problems": ue.dci_problems if ue else None,
            "rlm": rlm.state if rlm else None,  # the UE's radio link monitor: in-sync, t310, rlf
            **({"snr_db": rlm.snr} if rlm and rlm.snr is not None else {}),
            # the eNB's MAC of the UE: MCS, CQI, throughput each way (radio.oai_mac); CQI as the emulated radio has it
            "enb_mac": mac,
            **({"cqi": mac["dl_cqi"]} if mac and mac.get("dl_cqi") is not None else {}),
            "bearer": "down" if rlf or (self._routed_for is None and self.started_at) else "up",
            "rlf_count": self.rlf_count,
            "last_rlf_at": rlm.rlf_at if rlm else None,
            "reattach_s": self.reattach_s,
            "ue_restarts": self.ue_restarts,
            "timers": ({"n310": self.plan.n310, "t310_ms": self.plan.t310_ms, "n311": self.plan.n311,
                        "t311_ms": self.plan.t311_ms, "attach_time_s": self.attach_s} if self.plan else {}),
            "coverage": "lost" if self.coverage_lost else "ok",
            "user_plane": self.user_plane,
            "last_error": self.failure,
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

    @classmethod
    def _check_installed(cls) -> None:
        if not shutil.which("uhd_find_devices"):
            raise RadioError("--radio b210: uhd_find_devices not found (Debian package uhd-host)")
        inst = oai_install.find_install()
        if inst is None:
            raise RadioError("--radio b210: OpenAirInterface's lte-softmodem is not installed; run `make oai`")
        if inst.prefix is not None and not inst.usrp_driver:
            raise RadioError(f"--radio b210: the OAI build in {inst.prefix} has no USRP driver (liboai_usrpdevif.so); "
                             "see its BUILD-INFO.json")
        found, said = find_b210()
        if not found:
            raise RadioError(f"--radio b210: no USRP B210 attached: `uhd_find_devices --args type=b200` says: {said!r}; "
                             "plug the B210 into a USB 3 port (with its power supply for 2x2), check `lsusb` shows "
                             "2500:0020 (Ettus B200/B210), then start again")

    def attach(self) -> None:
        raise RadioError("--radio b210: coverage is physical here (attenuator or shield box), not software")

    def detach(self, duration_s: float | None = None) -> None:
        raise RadioError("--radio b210: coverage is physical here (attenuator or shield box), not software")


def _stop_processes(procs: list[Process]) -> None:
    """SIGTERM every process still running (in the order given), then reap each: SIGKILL after 10 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

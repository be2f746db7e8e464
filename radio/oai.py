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

import logging
import math
import re
import shlex
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from radio import oai_install, oai_sched
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
from radio.oai_log import UeLog

log = logging.getLogger(__name__)

ATTACH_TIMEOUT_S = 60.0  # start → RRC attach (OAI needs ~3-10 s on 2 busy cores); option attach_timeout_s
SUPERVISE_PERIOD_S = 0.5
RTT_PROBES = 20  # pings through the tunnel after attach: the radio's measured RTT
PING_RTT = re.compile(r"time=([0-9.]+) ms")


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
        self.shim: Path | None = None
        self.ue_log: UeLog | None = None
        self.user_plane = "radio link"  # or "waiting for …", "OAI tunnel <addr>", an error
        self.failure: str | None = None  # why the radio is down (a softmodem exited, no attach)
        self.started_at: float | None = None
        self.attach_s: float | None = None  # start (or UE restart) → RRC attached, last time
        self.radio_rtt: dict[str, float] | None = None  # measure_rtt() after attach
        self._routed_for: float | None = None  # the attach (UeLog.attached_at) the routes were put in for
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._supervisor: threading.Thread | None = None

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
        self.radio_rtt = self.measure_rtt()
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

    def measure_rtt(self, count: int = RTT_PROBES, interval_s: float = 0.1) -> dict[str, float] | None:
        """Ping the eNB's tunnel address from the UE's: the round trip through OAI's radio alone (UE
        PDCP/RLC/MAC/PHY up, the eNB's kernel, and back down). Median, spread and range in ms."""
        assert self.plan is not None
        enb_tun = self.host.interface_address(self.plan.enb_node, ENB_TUN)
        if enb_tun is None:
            return None
        out = self.host.run(self.plan.ue_node, f"ping -n -c {count} -i {interval_s} -W 2 {enb_tun.ip}")
        rtts = [float(x) for x in PING_RTT.findall(out)]
        if len(rtts) < 3:
            return None
        return {"median_ms": round(statistics.median(rtts), 3), "sd_ms": round(statistics.stdev(rtts), 3),
                "min_ms": min(rtts), "max_ms": max(rtts), "n": len(rtts), "sent": count, "at": time.time()}

    def measured_link_params(self) -> dict[str, RadioLinkParams] | None:
        """What OAI's radio does to the user plane, per direction ("uplink", "downlink"), from the
        round trip measured after attach: half the median RTT each way (OAI's uplink has the
        scheduling-request/grant wait, its downlink not: the split is not measurable without
        synchronised clocks, the sum is), and a jitter J such that two independent uniform ±J hops
        have the measured RTT's variance (2 J^2 / 3 = sd^2). The testbed's self-check uses this in
        place of the radio link's configured delay."""
        m = self.radio_rtt
        if not m:
            return None
        p = RadioLinkParams(delay_ms=m["median_ms"] / 2, jitter_ms=m["sd_ms"] * math.sqrt(1.5))
        return {"uplink": p, "downlink": p}

    def address_of(self, node: str) -> str | None:
        """Where ``node`` is reached through OAI's radio: the UE at its tunnel address (OAI's eNB hands
        the UE only what is addressed to it; what goes to its radio-link address takes the plain link)."""
        if self.plan is None or node != self.plan.ue_node or self.failure:
            return None
        tun = self.host.interface_address(self.plan.ue_node, UE_TUN)
        return str(tun.ip) if tun else None

    def _check_alive(self) -> None:
        for role, proc in self.procs.items():
            code = proc.poll()
            if code is not None and not self.failure:
                fatal = self.ue_log.fatal if (role == "ue" and self.ue_log) else None
                self.failure = (f"the {role} softmodem exited (status {code})" + (f": {fatal}" if fatal else "")
                                + f"; see {self.host.log_dir}/oai-{role}.log")
                self.user_plane = "down: " + self.failure
                log.warning("OAI: %s", self.failure)

    def _step(self) -> bool:
        """Read the UE's log; once it is attached, put (or put back) the user plane into the tunnel.
        True when the UE is attached and the user plane goes through OAI."""
        assert self.ue_log is not None and self.plan is not None
        self.ue_log.poll()
        if not self.ue_log.attached:
            return False
        attached_at = self.ue_log.attached_at
        if self._routed_for != attached_at or not self._routes_present():
            # OAI (re)configures oaitun_ue1 when the data bearer comes up (nas_config: interface down, address,
            # up), which drops every route through it: so the routes go in after the RRC attach, not before
            ue_tun = self.host.interface_address(self.plan.ue_node, UE_TUN)
            if ue_tun is None or self.host.interface_address(self.plan.enb_node, ENB_TUN) is None:
                return False
            for c in user_plane_routes(self.host.topology, self.plan, ue_tun):
                self.host.replace_route(c.node, c.dest, via=c.via, dev=c.dev, src=c.src)
            self._routed_for = attached_at
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
        """While the radio runs: follow the UE's log, keep the user plane in the tunnel, notice exits."""
        while not self._stop.wait(SUPERVISE_PERIOD_S):
            try:
                with self._lock:
                    self._check_alive()
                    if not self.failure:
                        self._step()
            except Exception as exc:  # keep supervising; status shows the error
                self.user_plane = f"error: {type(exc).__name__}: {exc}"
                log.warning("OAI supervisor: %s", self.user_plane)

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
            self._supervisor = None
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        if self.conf_dir is not None:  # generated files and the shim (the logs stay, with the testbed's)
            shutil.rmtree(self.conf_dir, ignore_errors=True)

    def _telnet(self, port: int, line: str) -> str:
        assert self.plan is not None
        node = self.plan.ue_node if port == self.plan.ue_telnet_port else self.plan.enb_node
        out = self.host.run(node, "bash -c " + shlex.quote(telnet_shell(port, line)) + " 2>&1")
        low = out.lower()
        if "refused" in low or "no such" in low or "not found" in low or "unknown command" in low:
            raise RadioError(f"OAI telnet server ({node}, port {port}) rejected {line!r}: {out.strip()[:300]}")
        return out

    def _channelmod(self, ploss_db: float) -> None:
        if self.plan is None or "ue" not in self.procs:
            raise RadioError(f"--radio {self.name} is not running")
        self._telnet(self.plan.ue_telnet_port, channelmod_command(ploss_db))

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
        ue = self.ue_log
        rrc = ue.rrc_state if ue else None
        attached = bool(ue and ue.attached and alive.get("ue") and not self.failure)
        return {
            "backend": self.name,
            "link": self.link_name,
            "attached": attached,
            "attach": "attached" if attached else ("failed" if self.failure else "detached"),
            "since": ue.rrc_since if ue else None,
            "rrc_state": rrc,
            "attach_s": self.attach_s,
            "radio_rtt": self.radio_rtt,
            "dci_problems": ue.dci_problems if ue else None,
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

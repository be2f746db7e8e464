"""emulab's os-ken application: an OpenFlow 1.3 L2 learning switch with permanent flows.

Runs only inside the controller process that `emulab.controller` starts (it imports os-ken, which
must be imported after the hub type is chosen and eventlet has monkey-patched the standard
library). Behaviour per switch:

* on connect: a table-miss flow (priority 0) sends unmatched packets to the controller;
* on packet-in: learn source MAC -> in_port; if the destination is known, install a PERMANENT flow
  (idle_timeout=0, hard_timeout=0) matching eth_dst and send the packet out; otherwise flood it
  (ARP and other broadcasts always flood).

Flows are permanent and bridges run with fail_mode=secure, so when this process dies the traffic
that was already flowing keeps flowing; a restarted controller relearns what it needs. Every flow
carries a cookie whose upper 32 bits are COOKIE ("EMLB"), so `ovs-ofctl dump-flows
BRIDGE cookie=COOKIE/COOKIE_MASK` shows exactly emulab's flows.

Flooding assumes a loop-free switch graph (emulab's topologies are trees per L2 segment).

The app reports its state in a small JSON file (SETTINGS.status_path) on every change and at
least every HEARTBEAT seconds: connected datapath ids, flows installed, packet-ins handled.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.lib import hub
from os_ken.lib.packet import ether_types, ethernet, packet
from os_ken.ofproto import ofproto_v1_3

#: Upper 32 bits of every emulab flow cookie: ASCII "EMLB".
COOKIE = 0x454D4C42_00000000
COOKIE_MASK = 0xFFFFFFFF_00000000
#: Lower bits say which kind of flow it is.
COOKIE_TABLE_MISS = COOKIE | 0x1
COOKIE_L2 = COOKIE | 0x2
#: Learned L2 flows sit above the table-miss flow (0) and leave room for proactive flows above.
PRIORITY_L2 = 10
#: Seconds between status writes when nothing changes (so readers can tell a hung controller).
HEARTBEAT = 5.0


@dataclass
class AppSettings:
    """Set by the launcher before AppManager instantiates the app."""

    status_path: Path | None = None
    listen: str = ""


SETTINGS = AppSettings()


@dataclass
class SwitchState:
    """What the controller knows about one datapath."""

    dpid: int
    connected: bool = True
    connected_at: float = field(default_factory=time.time)
    connects: int = 1
    packet_ins: int = 0
    #: MAC -> port learned from packet-ins.
    macs: dict[str, int] = field(default_factory=dict)
    #: eth_dst -> out port of the permanent flows this process installed.
    flows: dict[str, int] = field(default_factory=dict)


def dpid_str(dpid: int) -> str:
    """16 hex digits, the form Mininet's `dpid=` argument and `ovs-ofctl show` use."""
    return f"{dpid:016x}"


class StatusFile:
    """Writes the status JSON atomically (write to a temporary file, then rename)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.RLock()

    def write(self, data: dict[str, Any]) -> None:
        if self.path is None:
            return
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.path)


class EmulabL2Switch(app_manager.OSKenApp):
    """L2 learning switch for OpenFlow 1.3 with permanent, cookie-marked flows."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.switches: dict[int, SwitchState] = {}
        self.started_at = time.time()
        self.status = StatusFile(SETTINGS.status_path)
        self._dirty = threading.Event()
        self._dirty.set()
        self._writer = hub.spawn(self._status_loop)

    # -- status --------------------------------------------------------------------------------

    def snapshot(self, running: bool = True) -> dict[str, Any]:
        """The status document (see emulab.controller.read_status for the reader side)."""
        sw = sorted(self.switches.values(), key=lambda s: s.dpid)
        return {
            "pid": os.getpid(),
            "running": running,
            "listen": SETTINGS.listen,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "connected": [dpid_str(s.dpid) for s in sw if s.connected],
            "flows_installed": sum(len(s.flows) for s in sw),
            "packet_ins": sum(s.packet_ins for s in sw),
            "switches": {
                dpid_str(s.dpid): {
                    "connected": s.connected,
                    "connected_at": s.connected_at,
                    "connects": s.connects,
                    "packet_ins": s.packet_ins,
                    "macs_learned": len(s.macs),
                    "flows_installed": len(s.flows),
                }
                for s in sw
            },
        }

    def write_status(self, running: bool = True) -> None:
        try:
            self.status.write(self.snapshot(running))
        except OSError as exc:  # a full disk must not take the controller down
            self.logger.warning("cannot write status file %s: %s", self.status.path, exc)

    def _status_loop(self) -> None:
        last = 0.0
        while True:
            if self._dirty.is_set() or time.monotonic() - last >= HEARTBEAT:
                self._dirty.clear()
                self.write_status()
                last = time.monotonic()
            # Coalesce bursts of packet-ins into at most a few writes per second.
            hub.sleep(0.25)

    # -- OpenFlow events -------------------------------------------------------------------------

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        # Table miss: whole packet to the controller (no buffering: the userspace datapath's
        # buffer ids are not worth the extra state).
        actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        self._add_flow(dp, 0, parser.OFPMatch(), actions, COOKIE_TABLE_MISS)
        state = self.switches.get(dp.id)
        if state is None:
            self.switches[dp.id] = SwitchState(dpid=dp.id)
        else:
            state.connected, state.connected_at = True, time.time()
            state.connects += 1
        self.logger.info("switch %s connected from %s", dpid_str(dp.id), dp.address)
        self._dirty.set()

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def state_change(self, ev: Any) -> None:
        dp = ev.datapath
        if ev.state != DEAD_DISPATCHER or dp.id is None:
            return
        state = self.switches.get(dp.id)
        if state is not None and state.connected:
            state.connected = False
            # What this process installed stays in the switch, but a reconnect must not trust
            # a MAC table that may be stale by then.
            state.macs.clear()
            self.logger.info("switch %s disconnected", dpid_str(dp.id))
            self._dirty.set()

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev: Any) -> None:
        msg = ev.msg
        dp = msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        in_port = msg.match["in_port"]
        eth = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        if eth is None or eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return
        state = self.switches.setdefault(dp.id, SwitchState(dpid=dp.id))
        state.packet_ins += 1
        self._dirty.set()

        src, dst = eth.src, eth.dst
        # Learn unicast sources only: a multicast source address is bogus.
        if not _is_multicast(src):
            state.macs[src] = in_port
        out_port = state.macs.get(dst) if not _is_multicast(dst) else None

        if out_port is None:
            actions = [parser.OFPActionOutput(ofp.OFPP_FLOOD)]
        elif out_port == in_port:
            return  # the destination is behind the port the frame came from: drop it
        else:
            actions = [parser.OFPActionOutput(out_port)]
            if state.flows.get(dst) != out_port:
                self._add_flow(dp, PRIORITY_L2, parser.OFPMatch(eth_dst=dst), actions, COOKIE_L2)
                state.flows[dst] = out_port
                self.logger.info("switch %s: %s -> port %d", dpid_str(dp.id), dst, out_port)

        data = msg.data if msg.buffer_id == ofp.OFP_NO_BUFFER else None
        dp.send_msg(
            parser.OFPPacketOut(
                datapath=dp, buffer_id=msg.buffer_id, in_port=in_port, actions=actions, data=data
            )
        )

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _add_flow(dp: Any, priority: int, match: Any, actions: list[Any], cookie: int) -> None:
        ofp, parser = dp.ofproto, dp.ofproto_parser
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        # idle_timeout=0 and hard_timeout=0: permanent, so forwarding survives the controller.
        dp.send_msg(
            parser.OFPFlowMod(
                datapath=dp,
                cookie=cookie,
                priority=priority,
                match=match,
                instructions=inst,
                idle_timeout=0,
                hard_timeout=0,
            )
        )


def _is_multicast(mac: str) -> bool:
    # The group bit is the least significant bit of the first octet (broadcast included).
    return bool(int(mac.split(":", 1)[0], 16) & 1)

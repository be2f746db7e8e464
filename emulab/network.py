"""Builds a running testbed from a validated topology spec, and tears it down again.

Topology spec → Mininet hosts (one network namespace each, also named ``em-<node>`` under
/run/netns), Open vSwitch bridges (kernel or userspace datapath, as probed) under emulab's os-ken
controller, links whose delay/jitter/loss/rate are applied by netem or the userspace shaper,
addresses and static routes, then the radio backend and the services. A failure at any step tears
down whatever was built, so there is never a half-built network.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from emulab import paths
from emulab.capabilities import Capabilities
from emulab.errors import StartError
from emulab.linkparams import LinkParams
from emulab.topology import TopologySpec
from radio import DEFAULT_BACKEND

Progress = Callable[[str], None]


class StartPhases:
    """The start-up phases in the order they ran, with their durations; the one running now names
    the step a failed start failed in (``emulab status --json`` reports them as ``phases``)."""

    def __init__(self) -> None:
        self.done: list[dict[str, Any]] = []
        self.current: str | None = None

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.current = name
        t0 = time.monotonic()
        try:
            yield
        finally:  # a failed phase is recorded too: the table then shows where the time went
            self.record(name, time.monotonic() - t0)
        self.current = None

    def record(self, name: str, seconds: float) -> None:
        self.done.append({"phase": name, "s": round(seconds, 3)})

    def as_list(self) -> list[dict[str, Any]]:
        return list(self.done)


class Testbed:
    """One running instance of a topology: the Mininet network plus everything emulab starts beside it."""

    def __init__(
        self,
        spec: TopologySpec,
        caps: Capabilities,
        radio: str | None = None,
        services: bool = True,
        progress: Progress | None = None,
    ) -> None:
        self.spec = spec
        self.caps = caps
        self.radio_name = radio or (spec.radio.backend if spec.radio else DEFAULT_BACKEND)
        self.want_services = services
        self.progress = progress or (lambda _msg: None)
        self.datapath = caps.ovs_datapath
        self.net: Any = None
        self.controller: Any = None
        self.controller_port = 0
        self.shaper: Any = None
        self.links: dict[str, Any] = {}
        self.radio: Any = None
        self.services: Any = None
        self.launcher: Any = None
        self.netns: dict[str, str] = {}
        self.started_at = 0.0
        self.ready_s = 0.0
        self.phases = StartPhases()

    @functools.cached_property
    def link_backend(self) -> str:
        """"netem" or "shaper" (emulab.links.choose_backend): asked when first needed, because
        deciding imports the link layer (Mininet, pyroute2), which the start does after launching
        its helper processes."""
        return str(self.caps.link_backend)

    # ------------------------------------------------------------------ build
    def start(self) -> None:
        t0 = time.monotonic()
        with self.phases("radio preflight"):
            self._radio_preflight()
        try:
            self._start()
        except BaseException as exc:
            phase = self.phases.current or "start"
            self.progress(f"start failed in phase {phase} ({type(exc).__name__}: {exc}); removing what was built")
            self.stop()
            if isinstance(exc, Exception):
                cause = str(exc) or type(exc).__name__
                raise StartError(f"{self.spec.name}: start failed in phase {phase}: {cause}") from exc
            raise
        self.ready_s = time.monotonic() - t0
        self.started_at = time.time()

    def _radio_preflight(self) -> None:
        """A radio backend that needs something of the machine (OAI's build, a B210) says so before
        anything is built (its ``preflight``), so that such a start fails leaving nothing behind."""
        from radio import RadioError, get_backend

        preflight = getattr(get_backend(self.radio_name), "preflight", None)
        if preflight is None:
            return
        try:
            preflight(dict(self.spec.radio.options) if self.spec.radio else {})
        except RadioError as exc:
            raise StartError(f"{self.spec.name}: {exc}") from None

    def _start(self) -> None:
        from emulab import ovs
        from emulab.controller import ControllerProcess, free_tcp_port

        phase = self.phases
        if not self.caps.can_run:
            missing = [c.name for c in self.caps.items.values() if c.required and not c.present]
            raise StartError("this machine cannot run the testbed, missing: " + ", ".join(missing) + " (see `emulab doctor`)")
        paths.log_dir().mkdir(parents=True, exist_ok=True)

        # The processes that start Python of their own are launched first and waited for only where
        # they are needed, so their start-up overlaps this process's imports and the build; the
        # controller first, whose imports (os-ken, eventlet) take longest.
        with phase("controller"):
            # the switches wait for it to listen just before they start
            self.progress("starting the os-ken controller")
            self.controller_port = free_tcp_port()
            self.controller = ControllerProcess.start(
                port=self.controller_port,
                log_path=paths.log_dir() / "controller.log",
                status_path=paths.controller_status(),
                wait=False,
            )

        if self.want_services and any(n.services for n in self.spec.nodes.values()):
            from emulab.services import Launcher

            with phase("service launcher"):
                self.launcher = Launcher()

        with phase("ovs"):
            self.progress("starting Open vSwitch")
            ovs.ensure_running()

        with phase("imports"):  # the link layer (Mininet, pyroute2), which deciding the backend needs
            backend = self.link_backend
            from mininet.log import setLogLevel
            from mininet.net import Mininet
            from mininet.node import OVSSwitch

            from emulab.hosts import QuickHost, finish_shells
            from emulab.links import EmuLink

        # Radio links change at run time, so they need a shaper hop even while their parameters are neutral.
        if backend == "shaper" and any(not lk.params.is_neutral or lk.radio for lk in self.spec.links):
            from emulab.shaper_control import Shaper

            with phase("shaper"):  # launched here, waited for before the links: its start overlaps the hosts'
                self.progress("starting the userspace link shaper (no sch_netem in this kernel)")
                self.shaper = Shaper.launch(paths.shaper_socket(), log_path=paths.log_dir() / "shaper.log")

        setLogLevel("error")
        self.progress(
            f"building {len(self.spec.nodes)} hosts, {len(self.spec.switches)} switches, {len(self.spec.links)} links"
        )
        net = Mininet(build=False, controller=None, autoSetMacs=False, waitConnected=False)
        self.net = net
        with phase("namespaces"):
            # every host's shell is spawned first, then each is waited for: they start side by side
            hosts = [net.addHost(node.name, cls=QuickHost, ip=None) for node in self.spec.nodes.values()]
            finish_shells(hosts)
            self._name_namespaces()
        if self.shaper is not None:
            with phase("shaper ready"):
                self.shaper.wait_ready(timeout=60)  # a busy machine is slow, not broken
        with phase("links"):
            for idx, sw in enumerate(self.spec.switches.values(), start=1):
                # batch: one ovs-vsctl call creates every bridge with its ports and controller record
                net.addSwitch(sw.bridge, cls=OVSSwitch, dpid=f"{paths.dpid_base() + idx:016x}", batch=True,
                              **ovs.switch_params(self.datapath))
            middles = self._make_interfaces()
            for link in self.spec.links:
                self.links[link.name] = net.addLink(
                    self._mn_name(link.a.node),
                    self._mn_name(link.b.node),
                    cls=EmuLink,
                    intfName1=link.a.intf,
                    intfName2=link.b.intf,
                    params=link.params,
                    backend=self.link_backend,
                    shaper=self.shaper,
                    link_id=link.name,
                    dynamic=link.radio,
                    middle=middles.get(link.name),
                )
            # Mininet's build would only run `ifconfig lo up` in each host, one round trip at a time:
            # the addresses step brings lo up with the rest
            net.built = True
        with phase("addresses/routes"):
            self.progress("configuring addresses and routes")
            self._configure_ip()
        early: list[Any] = []
        if self.want_services and self.launcher is not None:
            from emulab.services import ServiceManager

            # the registrars whose ENRP peers, and the elements whose registrar, are reached without
            # a switch or the radio (ServiceManager.early_services) need neither the controller nor
            # the radio: their start overlaps the waits for both (addresses and routes come first
            # for the same reason: they need no switch either)
            with phase("services (early)"):
                self.services = ServiceManager(self, launcher=self.launcher)
                early = self.services.start_early()
        with phase("switches"):
            if self.spec.switches:
                # generous: on a busy machine the controller's imports alone can take seconds
                self.controller.wait_listening(timeout=60)
                # Mininet's RemoteController would start a shell and telnet to os-ken (which takes the
                # probe for a switch); the switches only need the target.
                net.controllers.append(_ControllerTarget("c0", "127.0.0.1", self.controller_port))
            net.start()
            bridges = [sw.bridge for sw in self.spec.switches.values()]
            if bridges and (missing := sorted(set(bridges) - set(ovs.list_bridges()))):
                # Mininet runs ovs-vsctl without looking at its answer
                raise StartError(f"Open vSwitch did not create bridge(s) {', '.join(missing)} "
                                 f"(see {ovs.OvsPaths.from_env().logfile('ovs-vswitchd')})")
            if self.link_backend == "netem":
                for emu in self.links.values():  # OVS replaces the qdiscs of the ports it adds
                    emu.reapply()

        if self.spec.switches:
            with phase("controller connect"):
                self._wait_switches_connected()
        else:  # nothing will ever connect to it, but later restarts (controller_action) expect it up
            self.controller.wait_listening(timeout=60)

        with phase("radio"):
            from emulab.radio_host import TestbedRadioHost
            from radio import get_backend

            self.progress(f"starting the radio backend: {self.radio_name}")
            self.radio = get_backend(self.radio_name)(TestbedRadioHost(self))
            self.radio.start()

        if self.want_services:
            from emulab.services import ServiceManager

            with phase("services/registration"):
                if self.services is None:
                    self.services = ServiceManager(self, launcher=self.launcher)
                try:
                    started = self.services.start(early=early)
                finally:  # the services it forked live on without it
                    self._close_launcher()
                if started:
                    self.progress(f"started {started} service process(es), registered")

    def _wait_switches_connected(self) -> None:
        """Until the controller has every bridge (features reply handled, table-miss flow sent): read
        from the controller's own status file, which it rewrites at once, rather than OVS's database,
        which updates is_connected lazily (up to a second late)."""
        from emulab import ovs

        dpids = [self.net.get(sw.bridge).dpid for sw in self.spec.switches.values()]
        timeout = 30.0 + 0.1 * len(dpids)  # generous: a busy machine slows the handshake, not a fault
        if self.controller.wait_switches(dpids, timeout=timeout):
            return
        if not self.controller.alive():
            raise StartError(f"the os-ken controller exited (see {paths.log_dir() / 'controller.log'})")
        missing = [sw.bridge for sw in self.spec.switches.values() if not ovs.controller_connected(sw.bridge)]
        raise StartError(f"switch(es) {', '.join(missing) or '?'} did not connect to the os-ken controller "
                         f"within {timeout:.0f} s (see {paths.log_dir() / 'controller.log'})")

    def _close_launcher(self) -> None:
        """End the service launcher: services started later (restarts) are started on their own."""
        if self.services is not None:
            self.services.launcher = None
        if self.launcher is not None:
            self.launcher.close()
            self.launcher = None

    def _mn_name(self, name: str) -> str:
        """Mininet's node name: switches are named after their OVS bridge."""
        sw = self.spec.switches.get(name)
        return sw.bridge if sw else name

    def _make_interfaces(self) -> dict[str, tuple[str, str]]:
        """Every link's veth pairs, made by ``emulab.links.make_link_interfaces`` (one `ip -batch`
        per namespace), with the MAC addresses of ``p2p_macs``. Returns the middle interfaces
        (emsh<N>a, emsh<N>b) of each shaped link."""
        from emulab.links import LinkPlan, make_link_interfaces, needs_hop

        def pid(name: str) -> int:  # a switch's shell runs in this namespace, where its ports belong
            return self.net.get(self._mn_name(name)).pid

        macs = self.p2p_macs()
        plans = []
        for link in self.spec.links:
            a, b = link.ends
            mac_a, mac_b = macs.get(link.name, (None, None))
            plans.append(LinkPlan(link.name, pid(a.node), a.intf, pid(b.node), b.intf,
                                  hop=needs_hop(self.link_backend, link.params, link.radio), mac1=mac_a, mac2=mac_b,
                                  port1=a.node in self.spec.switches, port2=b.node in self.spec.switches))
        return make_link_interfaces(plans, self.shaper.netns if self.shaper is not None else None)

    def p2p_macs(self) -> dict[str, tuple[str, str]]:
        """Fixed MAC addresses (locally administered, numbered by link) for both ends of every link
        between two nodes, so that each end's neighbour entry for the other is written at start
        (``_node_script``) and the first packet across a 160 ms link does not wait a round trip
        for ARP. Links to switches keep the kernel's random addresses and ARP as usual."""
        macs = {}
        for i, link in enumerate(self.spec.links, start=1):
            if link.a.node in self.spec.switches or link.b.node in self.spec.switches:
                continue
            base = f"02:e1:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"
            macs[link.name] = (f"{base}:01", f"{base}:02")
        return macs

    def _name_namespaces(self) -> None:
        """Give each host's (otherwise anonymous) namespace a name, so pyroute2 and `ip netns` reach it."""
        from pyroute2 import netns

        for node in self.spec.nodes:
            name = paths.netns_name(node)
            with contextlib.suppress(OSError):
                netns.remove(name)  # a leftover of a crashed run with the same name
            netns.attach(name, self.net.get(node).pid)
            self.netns[node] = name

    def _configure_ip(self) -> None:
        """Addresses, routes and per-host settings: the commands go to every host of a window before
        the first answer is awaited, so those hosts configure themselves side by side. The window
        (32 hosts) bounds how many `ip` processes run at once: the work is CPU-bound, so more at
        once would only add memory and scheduling on a machine of a few cores, and a failing
        window ends the start before the next is sent. Every host of a window is waited for before
        a failure is raised (a host left with its command outstanding could not be stopped), and
        the error names every host that failed."""
        routes = self.spec.routes()
        macs = self.p2p_macs()
        links_of: dict[str, list[Any]] = {name: [] for name in self.spec.nodes}
        for link in self.spec.links:
            for end in link.ends:
                if end.node in links_of:
                    links_of[end.node].append(link)
        nodes = list(self.spec.nodes.values())
        window = 32
        for i in range(0, len(nodes), window):
            batch = [(node, self.net.get(node.name)) for node in nodes[i:i + window]]
            for node, host in batch:
                host.sendCmd(self._node_script(node, links_of[node.name], routes, macs))
            failures: list[str] = []
            for node, host in batch:
                try:
                    out = host.waitOutput()
                except Exception as exc:  # its shell died: the others are still waited for
                    host.waiting = False  # nothing more will come; the teardown may use the host
                    failures.append(f"{node.name}: {type(exc).__name__}: {exc}")
                    continue
                if _CONFIG_FAILED in out:
                    detail = " ".join(ln.strip() for ln in out.splitlines() if ln.strip() and _CONFIG_FAILED not in ln)
                    failures.append(f"{node.name}: {detail}")
            if failures:
                raise StartError("addresses/routes could not be set: " + "; ".join(failures))

    def _node_script(self, node: Any, links: list[Any], routes: dict[str, Any],
                     macs: dict[str, tuple[str, str]]) -> str:
        """One shell command line for a host: interfaces up with their addresses, the neighbour
        entries of its point-to-point links (``p2p_macs``) and its routes in one `ip -batch`, the
        sysctls written by the shell itself (no process), checksum offload off where needed."""
        ip_lines = ["link set lo up"]
        for link in links:
            end, peer = (link.a, link.b) if link.a.node == node.name else (link.b, link.a)
            if end.address is not None:
                ip_lines.append(f"address add {end.address.ip}/{end.address.network.prefixlen} dev {end.intf}")
            ip_lines.append(f"link set {end.intf} up")
            if link.name in macs and peer.address is not None:
                peer_mac = macs[link.name][0 if peer is link.a else 1]
                ip_lines.append(f"neigh replace {peer.address.ip} lladdr {peer_mac} dev {end.intf} nud permanent")
        ip_lines += [f"route replace {r.dest} via {r.via}" for r in routes.get(node.name, ())]
        quoted = " ".join(f"'{line}'" for line in ip_lines)
        script = [f"printf '%s\\n' {quoted} | ip -batch - 2>&1 || echo {_CONFIG_FAILED}"]
        # the namespace's own /proc/sys view, as `sysctl` would write it (errors ignored, as sysctl -q)
        forwarding = "1" if node.forwarding else "0"
        for key, value in (("net/ipv4/ip_forward", forwarding), ("net/ipv4/conf/all/rp_filter", "0"),
                           ("net/ipv4/conf/default/rp_filter", "0"), ("net/ipv6/conf/all/disable_ipv6", "1")):
            script.append(f"{{ echo {value} > /proc/sys/{key}; }} 2>/dev/null")
        if self.datapath == "user":
            # OVS's userspace datapath forwards veth frames whose checksums the sender left to TX
            # offload without completing them, so TCP across a switch dies (ping survives). Hosts
            # then compute their own checksums, as the kernel datapath's users never notice.
            for link in links:
                script.append(f"ethtool -K {link.end_of(node.name).intf} tx off >/dev/null 2>&1")
        return "; ".join(script)

    # --------------------------------------------------------------- teardown
    def stop(self) -> None:
        """Tear down everything, tolerating a partial build; never raises."""
        steps: list[tuple[str, Callable[[], None]]] = [
            ("service launcher", self._close_launcher),
            ("services", lambda: self.services and self.services.stop()),
            ("radio", lambda: self.radio and self.radio.stop()),
            ("network", self._stop_net),
            ("namespace names", self._drop_namespace_names),
            ("shaper", lambda: self.shaper and self.shaper.stop()),
            ("controller", lambda: self.controller and self.controller.stop()),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # teardown goes on; `emulab clean` catches the rest
                self.progress(f"warning: stopping {what}: {exc}")
        self.services = self.radio = self.net = self.shaper = self.controller = None
        run_id = os.environ.get(paths.RUN_ENV)
        if run_id:  # host shells Mininet killed may still be exiting: stop returns when none is left
            from emulab.cleanup import reap_run

            reap_run(run_id)

    def _stop_net(self) -> None:
        if self.net is not None:
            self.net.stop()

    def _drop_namespace_names(self) -> None:
        from pyroute2 import netns

        for name in self.netns.values():
            with contextlib.suppress(OSError):
                netns.remove(name)
        self.netns.clear()

    # ---------------------------------------------------------------- queries
    def host(self, node: str) -> Any:
        return self.net.get(node)

    def link(self, name: str) -> Any:
        return self.links[name]

    def controller_action(self, action: str) -> dict[str, Any]:
        """Kill or restart the os-ken controller (flows already installed keep forwarding meanwhile)."""
        from emulab.controller import ControllerProcess

        if action == "kill" and self.controller is not None:
            self.controller.kill()
        elif action == "restart":
            if self.controller is not None and self.controller.alive():
                self.controller.stop()
            self.controller = ControllerProcess.start(
                port=self.controller_port,
                log_path=paths.log_dir() / "controller.log",
                status_path=paths.controller_status(),
            )
        elif action != "status":
            raise ValueError(f"unknown controller action {action!r} (kill, restart, status)")
        return self.status()["controller"]

    def set_link_params(self, name: str, params: LinkParams) -> None:
        self.links[name].set_params(params)

    def replace_route(self, node: str, dest: str, via: str | None = None, dev: str | None = None,
                      src: str | None = None) -> None:
        """``ip route replace DEST [via VIA] [dev DEV] [src SRC]`` inside ``node`` (radio backends)."""
        from pyroute2 import NetNS

        with NetNS(self.netns[node]) as ns:
            kw: dict[str, Any] = {"dst": dest}
            if via is not None:
                kw["gateway"] = via
            if dev is not None:
                kw["oif"] = ns.link_lookup(ifname=dev)[0]
            if src is not None:
                kw["prefsrc"] = src
            ns.route("replace", **kw)

    def set_routes(self, node: str, present: bool, dev: str | None = None) -> None:
        """Install or withdraw the static routes the topology gives ``node`` (those out of ``dev`` only,
        if given); directly connected subnets stay.

        The emulated radio withdraws the UE's while it is detached, as a real UE's modem drops its
        default bearer: the UE then knows it has no network, and a connection to a remote address
        fails at once ("Network is unreachable") instead of running into a timeout."""
        from pyroute2 import NetNS

        routes = [r for r in self.spec.routes().get(node, ()) if dev is None or r.dev == dev]
        with NetNS(self.netns[node]) as ns:
            _apply_routes(ns, routes, present)

    def state(self) -> dict[str, Any]:
        """What was built, with pids: written to state.json for `status`, `exec` and `clean`."""
        return {
            "topology": self.spec.name,
            "topology_file": str(self.spec.source),
            "link_backend": self.link_backend,
            "ovs_datapath": self.datapath,
            "radio": self.radio_name,
            "ready_s": round(self.ready_s, 3),
            "phases": self.phases.as_list(),
            "started_at": self.started_at,
            "controller": {"pid": self.controller.pid if self.controller else None, "port": self.controller_port},
            "shaper_pid": self.shaper.pid if self.shaper else None,
            "bridges": [sw.bridge for sw in self.spec.switches.values()],
            "nodes": {
                name: {
                    "pid": self.net.get(name).pid,
                    "netns": self.netns.get(name),
                    "netns_path": f"/run/netns/{self.netns[name]}" if name in self.netns else None,
                }
                for name in self.spec.nodes
            },
        }

    def status(self) -> dict[str, Any]:
        """Live status: nodes, links with configured vs applied parameters, switches, controller, radio."""
        from emulab import ovs

        nodes = []
        for node in self.spec.nodes.values():
            nodes.append(
                {
                    "name": node.name,
                    "role": node.role,
                    "site": node.site,
                    "addresses": [str(a) for a in self.spec.addresses(node.name)],
                    "namespace": self.netns.get(node.name),
                    "pid": self.net.get(node.name).pid,
                    "forwarding": node.forwarding,
                    "services": [s.kind for s in node.services],
                }
            )
        links = []
        for spec in self.spec.links:
            emu = self.links.get(spec.name)
            links.append(
                {
                    "name": spec.name,
                    "ends": [f"{spec.a.node}:{spec.a.intf}", f"{spec.b.node}:{spec.b.intf}"],
                    "segment": spec.segment,
                    "radio": spec.radio,
                    "configured": spec.params.as_dict(),
                    "applied": emu.applied() if emu is not None else None,
                }
            )
        from emulab.controller import read_status

        # the controller's own view first: OVS's database learns of a connection up to a second late
        app = read_status(paths.controller_status())
        app_status = app or {}
        app_connected = {int(d, 16) for d in app_status.get("connected", [])} if app_status.get("alive") else set()
        switches = []
        for sw in self.spec.switches.values():
            switches.append(
                {
                    "name": sw.name,
                    "bridge": sw.bridge,
                    "site": sw.site,
                    "subnet": str(sw.subnet),
                    "datapath": self.datapath,
                    "controller_connected": int(self.net.get(sw.bridge).dpid, 16) in app_connected
                    or ovs.controller_connected(sw.bridge),
                }
            )
        controller = {
            "pid": self.controller.pid if self.controller else None,
            "port": self.controller_port,
            "alive": bool(self.controller and self.controller.alive()),
        }
        controller["app"] = app
        return {
            "topology": self.spec.name,
            "topology_file": str(self.spec.source),
            "ready_s": round(self.ready_s, 3),
            "phases": self.phases.as_list(),
            "uptime_s": round(time.time() - self.started_at, 1) if self.started_at else 0.0,
            "link_backend": self.link_backend,
            "ovs_datapath": self.datapath,
            "rserpool_transport": self.caps.rserpool_transport,
            "nodes": nodes,
            "links": links,
            "switches": switches,
            "controller": controller,
            "radio": self.radio.state() if self.radio else None,
            "services": self.services.status() if self.services else [],
        }


#: What the host shell prints when `ip -batch` failed while configuring a node.
_CONFIG_FAILED = "EMULAB-CONFIG-FAILED"


class _ControllerTarget:
    """What Mininet's OVSSwitch.start needs of a controller (protocol, IP, port) and Mininet's start
    and stop call; the controller itself is emulab's own process."""

    protocol = "tcp"

    def __init__(self, name: str, ip: str, port: int) -> None:
        self.name, self.ip, self.port = name, ip, port

    def IP(self) -> str:  # noqa: N802 - Mininet's name
        return self.ip

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def _apply_routes(ns: Any, routes: Any, present: bool) -> None:
    """``ip route replace`` (present) or ``ip route del`` (absent, tolerating routes already gone)."""
    from pyroute2 import NetlinkError

    for route in routes:
        if present:
            ns.route("replace", dst=str(route.dest), gateway=str(route.via))
        else:
            with contextlib.suppress(NetlinkError):
                ns.route("del", dst=str(route.dest), gateway=str(route.via))


def netns_path(name: str) -> Path:
    return Path("/run/netns") / name


def environment_marker(run_id: str) -> None:
    """Mark this process (and so every process the testbed starts) for `emulab clean`; the mark
    names the instance too (paths.run_marker), so cleaning one instance spares the others."""
    os.environ[paths.RUN_ENV] = paths.run_marker(run_id)


@contextlib.contextmanager
def marked(run_id: str) -> Iterator[str]:
    """``environment_marker`` for a ``with`` block (a testbed inside a longer-lived process, such as
    an experiment run from a test): a mark already there is kept, none is left behind. Yields the
    run id in force."""
    before = os.environ.get(paths.RUN_ENV)
    environment_marker(before or run_id)
    try:
        yield os.environ[paths.RUN_ENV]
    finally:
        if before is None:
            os.environ.pop(paths.RUN_ENV, None)

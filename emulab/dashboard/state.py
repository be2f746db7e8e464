"""What the dashboard knows about the running testbed, refreshed in the background: ``/api/state``.

Sources, all the ones the command line uses:

* the runner's control socket (``emulab.control.request({"cmd": "status"})``, as `emulab status`):
  nodes, links with configured and applied parameters, radio, services;
* the nodes' interface counters, read from ``/proc/<node pid>/net/dev`` (that file shows the network
  namespace of the process it belongs to, so no namespace is entered): each link's throughput in
  each direction;
* one ``emulab.dashboard.agent registry`` helper per registrar node: its ENRP peers and handlespace
  (what `rserpool peers` / `rserpool hsdump` show): pools, elements, load, home registrar;
* the fractal job (``emulab.dashboard.fractal``) and, when an experiment writes one, its event feed.

The layout of ``/api/state`` is documented in docs/dashboard.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from emulab import control, paths
from emulab.errors import EmulabError, NotRunning

ENRP_PORT = 9901
ASAP_PORT = 3863
RADIO_HISTORY_S = 300.0
REGISTRY_STALE_S = 10.0  # a registrar that answered longer ago than this is shown as unreachable


def read_counters(pid: int) -> dict[str, tuple[int, int]]:
    """Interface -> (rx bytes, tx bytes) in the network namespace of process ``pid``."""
    out: dict[str, tuple[int, int]] = {}
    try:
        text = Path(f"/proc/{pid}/net/dev").read_text()
    except OSError:
        return out
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) >= 9:
            out[name.strip()] = (int(fields[0]), int(fields[8]))
    return out


def _address(cidr: str) -> str:
    return cidr.split("/", 1)[0]


class AgentProcess:
    """One helper (``emulab.dashboard.agent``) in a node's namespace, its JSON lines fed to ``on_line``."""

    def __init__(self, node: str, netns_path: str, args: list[str], on_line: Any, run_id: str | None) -> None:
        self.node, self.netns_path, self.args, self.on_line, self.run_id = node, netns_path, args, on_line, run_id
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = dict(os.environ)
        if self.run_id:  # `emulab clean` finds and ends what carries the testbed's marker
            env[paths.RUN_ENV] = paths.run_marker(self.run_id)  # carries the instance too
        self.proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={self.netns_path}", sys.executable, "-m", "emulab.dashboard.agent", *self.args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env=env, limit=1 << 22)
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            self.on_line(self.node, obj)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 3.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.task, 1.0)


class LiveState:
    """The dashboard's model of the running testbed; ``refresh()`` brings it up to date."""

    def __init__(self, registry_interval: float = 2.0) -> None:
        self.registry_interval = registry_interval
        self.running = False
        self.seen = False  # a testbed was seen: when it goes, the dashboard ends
        self.message = "no testbed is running (start one with `emulab start TOPOLOGY --detach`)"
        self.status: dict[str, Any] = {}
        self.run_state: dict[str, Any] = {}
        self.counters: dict[str, tuple[float, dict[str, tuple[int, int]]]] = {}
        self.rates: dict[str, dict[str, float | None]] = {}
        self.registry: dict[str, dict[str, Any]] = {}
        self.agents: dict[str, AgentProcess] = {}
        self.radio_history: collections.deque[dict[str, Any]] = collections.deque()
        self.pe_names: dict[int, str] = {}  # PE identifier -> node, kept once learnt
        self.refresh_s: float = 0.0
        self.refreshed_at: float = 0.0
        self.experiment: dict[str, Any] | None = None
        self.fractal: Any = None  # emulab.dashboard.fractal.FractalJob, set by the server

    # ------------------------------------------------------------------ refresh
    async def refresh(self) -> None:
        t0 = time.perf_counter()
        state = control.read_state()
        try:
            if state is None or state.get("phase") != "ready":
                raise NotRunning("no testbed is running (start one with `emulab start TOPOLOGY --detach`)"
                                 if state is None else f"the testbed is {state.get('phase', '?')}")
            status = await asyncio.to_thread(self._status, state)
        except EmulabError as exc:
            self.running = False
            self.message = str(exc)
            await self.stop_agents()
            return
        self.running, self.seen, self.message = True, True, status.get("partial", "")
        self.run_state, self.status = state, status
        now = time.time()
        self._read_rates(now)
        self._record_radio(now)
        await self._ensure_agents()
        self._read_experiment()
        self.refresh_s = time.perf_counter() - t0
        self.refreshed_at = now

    @staticmethod
    def _status(state: dict[str, Any]) -> dict[str, Any]:
        """`emulab status` from the runner; when its process lives but answers no requests (an experiment
        holds the testbed in its own process, without a control socket), what the state file and the
        topology tell: nodes with their pids, links as configured, the services the topology lists."""
        try:
            return control.request({"cmd": "status"}, 10.0)
        except NotRunning:
            from emulab.runstate import pid_alive

            if not pid_alive(state.get("runner_pid")) or not state.get("topology_file"):
                raise
        from emulab.topology import load

        spec = load(state["topology_file"])
        pids = state.get("nodes", {})
        return {
            "topology": spec.name, "topology_file": str(spec.source), "uptime_s": time.time() - state.get("started_at", 0),
            "link_backend": state.get("link_backend"), "rserpool_transport": None,
            "nodes": [{"name": n.name, "role": n.role, "site": n.site, "pid": (pids.get(n.name) or {}).get("pid"),
                       "addresses": [str(a) for a in spec.addresses(n.name)]} for n in spec.nodes.values()],
            "links": [{"name": lk.name, "ends": [f"{lk.a.node}:{lk.a.intf}", f"{lk.b.node}:{lk.b.intf}"],
                       "segment": lk.segment, "radio": lk.radio, "configured": lk.params.as_dict(), "applied": None}
                      for lk in spec.links],
            "switches": [{"name": sw.name, "site": sw.site} for sw in spec.switches.values()],
            "services": [{"node": n.name, "kind": svc.kind, "pid": None, "alive": None}
                         for n in spec.nodes.values() for svc in n.services],
            "radio": None, "controller": {},
            "partial": "the testbed's runner answers no control requests (an experiment holds it): links as "
                       "configured, no radio, no controls",
        }

    def _read_rates(self, now: float) -> None:
        pids = {n["name"]: n.get("pid") for n in self.status.get("nodes", [])}
        fresh: dict[str, tuple[float, dict[str, tuple[int, int]]]] = {}
        for node, pid in pids.items():
            if pid:
                fresh[node] = (time.monotonic(), read_counters(int(pid)))
        rates: dict[str, dict[str, float | None]] = {}
        for link in self.status.get("links", []):
            rates[link["name"]] = self._link_rate(link, fresh)
        self.counters, self.rates = fresh, rates

    def _link_rate(self, link: dict[str, Any], fresh: dict[str, Any]) -> dict[str, float | None]:
        """Bits per second each way, from the counters of an end that is a node (a switch end has none)."""
        out: dict[str, float | None] = {"1to2": None, "2to1": None}
        for i, end in enumerate(link["ends"]):
            node, _, intf = end.partition(":")
            if node not in fresh or node not in self.counters:
                continue
            (t1, new), (t0, old) = fresh[node], self.counters[node]
            if intf not in new or intf not in old or t1 <= t0:
                continue
            rx = (new[intf][0] - old[intf][0]) * 8 / (t1 - t0)
            tx = (new[intf][1] - old[intf][1]) * 8 / (t1 - t0)
            # this end sends in the direction away from it
            out["1to2"], out["2to1"] = (tx, rx) if i == 0 else (rx, tx)
            break
        return out

    def _record_radio(self, now: float) -> None:
        r = self.status.get("radio")
        if not r:
            return
        self.radio_history.append({
            "t": now, "attached": str(r.get("attach", "")).lower() == "attached" or r.get("attached") is True,
            "attach": r.get("attach"), "coverage": r.get("coverage"), "snr_db": r.get("snr_db"),
            "cqi": r.get("cqi"), "rate_mbit": r.get("rate_mbit"),
        })
        while self.radio_history and now - self.radio_history[0]["t"] > RADIO_HISTORY_S:
            self.radio_history.popleft()

    def registrar_nodes(self) -> list[str]:
        return sorted({s["node"] for s in self.status.get("services", []) if s["kind"] == "registrar"})

    def primary(self, node: str) -> str | None:
        for n in self.status.get("nodes", []):
            if n["name"] == node and n["addresses"]:
                return _address(n["addresses"][0])
        return None

    async def _ensure_agents(self) -> None:
        nodes = self.run_state.get("nodes", {})
        for node in self.registrar_nodes():
            agent = self.agents.get(node)
            if agent is not None and agent.alive:
                continue
            addr, ns = self.primary(node), (nodes.get(node) or {}).get("netns_path")
            if not addr or not ns:
                continue
            agent = AgentProcess(node, ns, ["registry", f"{addr}:{ENRP_PORT}", "--interval",
                                            str(self.registry_interval)], self._on_registry,
                                 self.run_state.get("run_id"))
            await agent.start()
            self.agents[node] = agent

    def _on_registry(self, node: str, obj: dict[str, Any]) -> None:
        self.registry[node] = obj

    async def stop_agents(self) -> None:
        agents, self.agents = list(self.agents.values()), {}
        await asyncio.gather(*(a.stop() for a in agents), return_exceptions=True)

    def _read_experiment(self) -> None:
        """The running experiment's progress, from its event feed (``emulab.dashboard.feed``)."""
        from emulab.dashboard.feed import read_progress

        self.experiment = read_progress()

    # ------------------------------------------------------------------ views
    def node_of_address(self) -> dict[str, str]:
        return {_address(a): n["name"] for n in self.status.get("nodes", []) for a in n["addresses"]}

    def registrar_ids(self) -> dict[int, str]:
        return {int(v["peers"]["identifier"]): node for node, v in self.registry.items()
                if v.get("ok") and "identifier" in v.get("peers", {})}

    def pools(self) -> list[dict[str, Any]]:
        """Every pool, merged over the registrars' handlespaces (each element once, freshest view)."""
        by_addr, reg_ids = self.node_of_address(), self.registrar_ids()
        now = time.time()
        pools: dict[str, dict[int, dict[str, Any]]] = {}
        seen_by: dict[tuple[str, int], list[str]] = {}
        for reg_node, v in sorted(self.registry.items()):
            if not v.get("ok") or now - v.get("t", 0) > REGISTRY_STALE_S:
                continue
            for pool in v["handlespace"]["pools"]:
                for e in pool["elements"]:
                    ident = int(e["identifier"])
                    node = next((by_addr[a] for a in e.get("addresses", []) if a in by_addr), None)
                    if node:
                        self.pe_names[ident] = node
                    pol = e.get("policy", {})
                    pools.setdefault(pool["handle"], {})[ident] = {
                        "identifier": ident, "identifier_hex": e["identifier_hex"], "node": node,
                        "endpoint": e.get("endpoint"), "protocol": e.get("protocol"),
                        "policy": pol.get("name"), "load": pol.get("load_fraction"),
                        "load_degradation": pol.get("load_degradation"), "weight": pol.get("weight"),
                        "home_registrar": reg_ids.get(int(e["home_pr"]), f"0x{int(e['home_pr']):08x}"),
                        "home_registrar_id": int(e["home_pr"]),
                    }
                    seen_by.setdefault((pool["handle"], ident), []).append(reg_node)
        out = []
        for handle in sorted(pools):
            elements = sorted(pools[handle].values(), key=lambda e: (e["node"] or "", e["identifier"]))
            for e in elements:
                e["known_to"] = sorted(set(seen_by[(handle, e["identifier"])]))
            out.append({"handle": handle, "elements": elements})
        return out

    def registrars(self) -> list[dict[str, Any]]:
        reg_ids = self.registrar_ids()
        alive = {s["node"]: s["alive"] for s in self.status.get("services", []) if s["kind"] == "registrar"}
        now = time.time()
        out = []
        for node in self.registrar_nodes():
            v = self.registry.get(node, {})
            fresh = bool(v.get("ok")) and now - v.get("t", 0) <= REGISTRY_STALE_S
            peers = v.get("peers", {}) if fresh else {}
            out.append({
                "node": node, "address": f"{self.primary(node)}:{ENRP_PORT}", "service_alive": alive.get(node, False),
                "reachable": fresh, "error": None if fresh else (v.get("error") or "no answer yet"),
                "identifier": peers.get("identifier"), "identifier_hex": peers.get("identifier_hex"),
                "element_count": peers.get("element_count"), "pool_count": peers.get("pool_count"),
                "peers": [{"identifier": p["identifier"], "identifier_hex": p["identifier_hex"],
                           "address": p.get("address"), "node": reg_ids.get(int(p["identifier"]))}
                          for p in peers.get("peers", [])],
            })
        return out

    def to_json(self) -> dict[str, Any]:
        """The whole state (``GET /api/state``)."""
        s = self.status
        base: dict[str, Any] = {
            "running": self.running, "message": self.message,
            "dashboard": {"refreshed_at": self.refreshed_at, "refresh_ms": round(self.refresh_s * 1000, 2)},
        }
        if not self.running:
            return base | {"nodes": [], "links": [], "pools": [], "registrars": [], "radio": None,
                           "fractal": None, "experiment": self.experiment}
        services: dict[str, list[dict[str, Any]]] = {}
        for svc in s.get("services", []):
            services.setdefault(svc["node"], []).append({"kind": svc["kind"], "pid": svc["pid"], "alive": svc["alive"]})
        nodes = [{"name": n["name"], "role": n["role"], "site": n["site"],
                  "addresses": [_address(a) for a in n["addresses"]], "services": services.get(n["name"], [])}
                 for n in s.get("nodes", [])]
        links = []
        for lk in s.get("links", []):
            applied = lk.get("applied") or {}
            links.append({
                "name": lk["name"], "ends": [e.partition(":")[0] for e in lk["ends"]], "interfaces": lk["ends"],
                "segment": lk.get("segment"), "radio": lk.get("radio", False), "configured": lk.get("configured"),
                "applied": {d: {k: applied[d].get(k) for k in ("delay_ms", "jitter_ms", "loss_pct", "rate_mbit")}
                            for d in ("1to2", "2to1") if isinstance(applied.get(d), dict)},
                "backend": applied.get("backend"),
                "throughput_bps": self.rates.get(lk["name"], {"1to2": None, "2to1": None}),
            })
        radio = s.get("radio")
        return base | {
            "topology": s.get("topology"), "uptime_s": s.get("uptime_s"), "link_backend": s.get("link_backend"),
            "rserpool_transport": s.get("rserpool_transport"),
            "sites": sorted({n["site"] for n in nodes}),
            "switches": [{"name": sw["name"], "site": sw["site"]} for sw in s.get("switches", [])],
            "nodes": nodes, "links": links, "pools": self.pools(), "registrars": self.registrars(),
            "radio": None if radio is None else {"state": radio, "history": list(self.radio_history)},
            "controller": {"alive": s.get("controller", {}).get("alive")},
            "fractal": self.fractal.to_json(self.pe_names) if self.fractal is not None else None,
            "experiment": self.experiment,
        }

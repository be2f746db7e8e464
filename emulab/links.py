"""The link emulation layer: tc netem where the kernel has it, the userspace shaper where not.

`choose_backend` is the one place that decides between the two. Links are built in two steps,
by the testbed and by every test and benchmark alike: ``make_link_interfaces`` makes the veth pairs
of all the links (one ``ip -batch`` per namespace), then `EmuLink`, the Mininet link class, is
created on them for each link::

    middles = make_link_interfaces([LinkPlan(name, n1.pid, "eth0", n2.pid, "eth0", hop=...), ...],
                                   shaper_netns)
    net.addLink(n1, n2, cls=EmuLink, intfName1=..., intfName2=..., params=LinkParams(...),
                backend="netem" | "shaper", shaper=<emulab.shaper.Shaper or None>, link_id=name,
                dynamic=False, limit=1000, middle=middles.get(name))

(``emu_link`` does both for one link between two hosts.)

* backend "netem": one veth pair; a netem qdisc (handle 10:, root) on the egress of BOTH ends,
  installed with tc (nsenter into /proc/<pid>/ns/net; pyroute2 0.9 cannot encode netem's rate)
  and read back with pyroute2, failures raised. Rate uses
  netem's own ``rate`` (serialisation before the delay line), so one qdisc carries everything and
  a run-time change is a single ``replace``. With jitter and no rate we still set a very high
  rate (FIFO_RATE_BPS): netem then computes departures relative to the previous packet and does
  not reorder, which is what the shaper does too.
* backend "shaper": two veth pairs whose middle ends live in the shaper's namespace
  (``emulab-shaper``): node1:intf1 <-> emsh<N>a, emsh<N>b <-> node2:intf2; the shaper process
  forwards frames between emsh<N>a and emsh<N>b applying delay/jitter/loss/rate.
* A neutral link (no delay/jitter/loss/rate) is a plain veth pair on both backends, unless
  ``dynamic=True`` says it will be shaped at run time (radio links), which keeps the shaper hop.

Errors are raised (LinkError), never printed and ignored as Mininet's TCIntf does.
Directions: "1to2" is what node1 sends (egress of intf1, shaper direction ab), "2to1" the reverse.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mininet.link import Link
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.tcmsg import common as tc_common

from emulab import paths
from emulab.linkparams import LinkParams
from emulab.shaper_control import DEFAULT_NETNS, Shaper, ShaperError, delete_netns, netns_exists

BACKENDS = ("netem", "shaper")
ENV_BACKEND = "EMULAB_LINK_BACKEND"
#: Middle interfaces of shaped links: emsh<N>a / emsh<N>b (only inside the shaper namespace).
SHAPER_IFPREFIX = "emsh"
NETEM_HANDLE = 0x000A0000  # "10:"
TC_H_ROOT = 0xFFFFFFFF
#: netem rate used only to keep FIFO order with jitter (bytes/s; 32 Gbit/s, fits netem's u32).
FIFO_RATE_BPS = 4_000_000_000
#: Packets queued per direction before tail drop (netem's and Mininet's default).
DEFAULT_LIMIT = 1000
DIRECTIONS = ("1to2", "2to1")


class LinkError(RuntimeError):
    """A link could not be built, shaped or read back; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# capability and backend choice


def probe_netem() -> bool:
    """True when the kernel accepts a netem qdisc (tried on lo of a throwaway namespace).

    Raises LinkError when the answer cannot be known (not root, namespaces unavailable).
    """
    if os.geteuid() != 0:
        raise LinkError("probing sch_netem needs root (network namespaces)")
    name = f"{paths.probe_netns_prefix()}{os.getpid()}-{uuid.uuid4().hex[:6]}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        raise LinkError(f"cannot create a probe namespace: {r.stderr.strip()}")
    try:
        with IPRoute(netns=name, flags=0) as ipr:
            try:
                ipr.tc("add", "netem", index=1, handle=NETEM_HANDLE, delay=1000)
            except NetlinkError as e:
                # ENOENT/EOPNOTSUPP: "Specified qdisc kind is unknown"
                if e.code in (errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL):
                    return False
                raise LinkError(f"netem probe failed unexpectedly: {e}") from e
            return True
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def choose_backend(netem_available: bool, forced: str | None = None) -> str:
    """THE place the link backend is decided: "netem" or "shaper".

    Precedence: ``forced`` (e.g. a CLI option) > $EMULAB_LINK_BACKEND > netem if the kernel has
    it, else the shaper. "auto" or an empty value means no preference. Forcing netem on a kernel
    without sch_netem is an error, not a silent fallback.
    """
    choice = (forced or os.environ.get(ENV_BACKEND) or "auto").strip().lower()
    if choice in ("", "auto"):
        return "netem" if netem_available else "shaper"
    if choice not in BACKENDS:
        raise LinkError(f"unknown link backend {choice!r} (from {'argument' if forced else ENV_BACKEND}); "
                        f"use one of {', '.join(BACKENDS)} or auto")
    if choice == "netem" and not netem_available:
        raise LinkError("link backend netem was requested but this kernel has no sch_netem "
                        "('Specified qdisc kind is unknown'); use the shaper or a kernel with netem")
    return choice


# ---------------------------------------------------------------------------------------------
# netem translation (pure, unit-tested)


def netem_options(params: LinkParams, limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
    """LinkParams -> netem's fields: delay/jitter (us), loss (%), limit (packets), rate (bytes/s, 0 = none).

    Every field is always set, so a change really resets what the previous call set (loss 0
    clears loss; Mininet's TCIntf skips it). A rate of 0 cannot be sent (netem keeps the old one),
    so EmuLink recreates the qdisc when a rate is removed.
    """
    if params.rate_mbit:
        rate = min(int(params.rate_mbit * 1e6 / 8), 2**32 - 1)
    elif params.jitter_ms:
        rate = FIFO_RATE_BPS  # keep FIFO order under jitter, like the shaper
    else:
        rate = 0
    return {
        "delay": int(round(params.delay_ms * 1000)),  # microseconds
        "jitter": int(round(params.jitter_ms * 1000)),
        "loss": float(params.loss_pct),
        "limit": int(limit),
        "rate": rate,  # bytes per second
    }


def netem_readback(qdisc: Any) -> dict[str, Any]:
    """A root qdisc message (pyroute2) -> what is applied: {delay_ms, jitter_ms, loss_pct, rate_mbit, limit, qdisc}."""
    kind = qdisc.get_attr("TCA_KIND") if qdisc is not None else None
    if kind != "netem":
        return {"delay_ms": 0.0, "jitter_ms": 0.0, "loss_pct": 0.0, "rate_mbit": None, "limit": None,
                "qdisc": kind or "none"}
    opts = qdisc.get_attr("TCA_OPTIONS")
    tick = tc_common.tick_in_usec
    rate_attr = opts.get_attr("TCA_NETEM_RATE")
    rate = rate_attr["rate"] if rate_attr else 0
    return {
        "delay_ms": round(opts["delay"] / tick / 1000.0, 3),
        "jitter_ms": round(opts["jitter"] / tick / 1000.0, 3),
        "loss_pct": round(opts["loss"] / (2**32 - 1) * 100.0, 4),
        "rate_mbit": None if rate in (0, FIFO_RATE_BPS) else round(rate * 8 / 1e6, 6),
        "limit": opts["limit"],
        "qdisc": "netem",
    }


def netem_tc_args(params: LinkParams, limit: int = DEFAULT_LIMIT) -> list[str]:
    """LinkParams -> the netem part of a ``tc qdisc replace ... root handle 10:`` command.

    tc, not pyroute2, installs the qdisc: pyroute2 0.9 cannot encode netem's TCA_NETEM_RATE
    (struct.error in encode_field, seen on a kernel with netem). Delay, jitter and loss travel in
    netem's fixed struct, so 0 really resets them (unlike Mininet's TCIntf, which skips loss=0).
    """
    o = netem_options(params, limit)
    args = ["netem", "limit", str(o["limit"]), "delay", f"{o['delay']}us"]
    if o["jitter"]:
        args.append(f"{o['jitter']}us")
    args += ["loss", f"{o['loss']:.6f}%"]
    if o["rate"]:
        args += ["rate", f"{o['rate'] * 8}bit"]
    return args


def _tc(node: Any, args: list[str]) -> None:
    """Run tc inside the node's network namespace; raise LinkError with tc's message on failure."""
    cmd = ["nsenter", f"--net={_netns_path(node)}", "tc", *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise LinkError(f"tc {' '.join(args)} in {node} failed: {(r.stderr or r.stdout).strip()}")


# ---------------------------------------------------------------------------------------------
# the Mininet link


def _netns_path(node: Any) -> str:
    return f"/proc/{node.pid}/ns/net"


def needs_hop(backend: str, params: LinkParams, dynamic: bool) -> bool:
    """Whether a link's traffic goes through the shaper process (two veth pairs, see EmuLink)."""
    return backend == "shaper" and (dynamic or not params.is_neutral)


@dataclass(frozen=True)
class VethPair:
    """One veth pair for ``make_veth_pairs``: end 1 is created up, end 2 down (the kernel allows
    no more), to be brought up by its node's configuration or, for a switch's port, by the batch's
    ``extra`` lines; each end in the network namespace of process ``pid`` (None: the namespace
    ``ip`` runs in), with MAC address ``mac`` (None: the kernel's random one)."""

    name1: str
    name2: str
    pid1: int | None = None
    pid2: int | None = None
    mac1: str | None = None
    mac2: str | None = None

    def batch_line(self) -> str:
        def end(name: str, pid: int | None, mac: str | None) -> str:
            return f"name {name}" + (f" address {mac}" if mac else "") + (f" netns {pid}" if pid else "")

        # the kernel refuses IFF_UP on a veth's peer end at creation (ENOTCONN): only end 1 starts up
        return f"link add {end(self.name1, self.pid1, self.mac1)} up type veth peer {end(self.name2, self.pid2, self.mac2)}"


def make_veth_pairs(pairs: Sequence[VethPair], netns: str | None = None, extra: Sequence[str] = ()) -> None:
    """Create veth pairs with one ``ip -batch`` process (inside the named namespace ``netns``, else
    here), then run the ``extra`` batch lines: a testbed's links cost one process, not a process or
    a shell round trip per interface. Raises LinkError naming the line that failed."""
    lines = [p.batch_line() for p in pairs] + list(extra)
    if not lines:
        return
    cmd = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    r = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip()
        m = re.search(r"-:(\d+)", msg)
        failed = f" ({lines[int(m.group(1)) - 1]})" if m and 0 < int(m.group(1)) <= len(lines) else ""
        where = f" in namespace {netns}" if netns else ""
        raise LinkError(f"cannot create the links' interfaces{where}{failed}: {msg}")


def free_shaper_indexes(netns: str, count: int) -> list[int]:
    """``count`` numbers N whose middle interfaces emsh<N>a/b are free in the shaper namespace (one
    look at it for all the links of a testbed)."""
    with IPRoute(netns=netns, flags=0) as ipr:
        return _free_indexes(ipr, count)


@dataclass(frozen=True)
class LinkPlan:
    """One link's interfaces for ``make_link_interfaces``: each end's node (its shell's ``pid``
    names its network namespace), interface name and MAC address (None: the kernel's random one);
    ``port1``/``port2``: that end is a switch's port, in the namespace ``ip`` runs in, which no
    node's configuration brings up (the batch does); ``hop``: the link goes through the shaper
    (``needs_hop``)."""

    name: str
    pid1: int
    intf1: str
    pid2: int
    intf2: str
    hop: bool = False
    mac1: str | None = None
    mac2: str | None = None
    port1: bool = False
    port2: bool = False


def make_link_interfaces(plans: Sequence[LinkPlan], shaper_netns: str | None = None) -> dict[str, tuple[str, str]]:
    """Every planned link's veth pairs in one `ip -batch` per namespace: the shaper's (``shaper_netns``)
    for the shaped links' middle ends, then this one for the rest. A node's end is left down for
    its own configuration to bring up; a switch's port is brought up here. Returns the middle
    interfaces (emsh<N>a, emsh<N>b) of each shaped link, by name."""
    hops = [p for p in plans if p.hop]
    if hops and shaper_netns is None:
        raise LinkError(f"link {hops[0].name}: a shaped link needs the shaper's namespace")
    numbers = iter(free_shaper_indexes(shaper_netns, len(hops)) if hops and shaper_netns else [])
    middles: dict[str, tuple[str, str]] = {}
    shaped: list[VethPair] = []
    plain: list[VethPair] = []
    ports_up: list[str] = []  # a switch's port made down: of a shaped link, or end 2 between two switches
    for p in plans:
        ends = [(p.intf1, p.pid1, p.mac1, p.port1), (p.intf2, p.pid2, p.mac2, p.port2)]
        if p.hop:
            n = next(numbers)
            mids = middles[p.name] = (f"{SHAPER_IFPREFIX}{n}a", f"{SHAPER_IFPREFIX}{n}b")
            for mid, (intf, pid, mac, port) in zip(mids, ends, strict=True):
                shaped.append(VethPair(mid, intf, pid2=pid, mac2=mac))
                if port:
                    ports_up.append(f"link set {intf} up")
            continue
        if not p.port1:  # end 1 is made up: a switch's port, where there is one
            ends.reverse()
        (intf1, pid1, mac1, _), (intf2, pid2, mac2, port2) = ends
        plain.append(VethPair(intf1, intf2, pid1=pid1, pid2=pid2, mac1=mac1, mac2=mac2))
        if port2:
            ports_up.append(f"link set {intf2} up")
    if shaped:
        make_veth_pairs(shaped, netns=shaper_netns)
    make_veth_pairs(plain, extra=ports_up)
    return middles


def emu_link(node1: Any, node2: Any, intf1: str, intf2: str, *, backend: str, shaper: Shaper | None = None,
             params: LinkParams | None = None, dynamic: bool = False, link_id: str = "link",
             **kwargs: Any) -> EmuLink:
    """One EmuLink between two hosts, built as the testbed builds its links (``make_link_interfaces``,
    then the link on the interfaces made); the hosts' configuration (``setIP``) brings their ends up."""
    hop = needs_hop(backend, params or LinkParams(), dynamic)
    if hop and shaper is None:
        raise _no_shaper(link_id)
    middles = make_link_interfaces([LinkPlan(link_id, node1.pid, intf1, node2.pid, intf2, hop=hop)],
                                   shaper.netns if shaper is not None else None)
    try:
        return EmuLink(node1, node2, intfName1=intf1, intfName2=intf2, params=params, backend=backend,
                       shaper=shaper, link_id=link_id, dynamic=dynamic, middle=middles.get(link_id), **kwargs)
    except BaseException:  # EmuLink removes what it got; interfaces it never got are removed here
        _delete_interfaces(node1, intf1, middles.get(link_id), shaper)
        raise


def _no_shaper(link_id: Any) -> LinkError:
    return LinkError(f"link {link_id}: backend 'shaper' needs a running shaper (Shaper.start(...)) passed as shaper=")


def _delete_interfaces(node: Any, intf: str, middle: tuple[str, str] | None, shaper: Shaper | None) -> None:
    """Remove a link's interfaces (a veth end takes its peer along)."""
    with contextlib.suppress(Exception), _node_ipr(node) as ipr:
        if ipr.link_lookup(ifname=intf):
            ipr.link("del", ifname=intf)
    if middle is not None and shaper is not None:
        with contextlib.suppress(Exception), IPRoute(netns=shaper.netns, flags=0) as ipr:
            for mid in middle:
                if ipr.link_lookup(ifname=mid):
                    ipr.link("del", ifname=mid)


def _node_ipr(node: Any) -> IPRoute:
    """A netlink socket inside the node's (possibly unnamed) network namespace."""
    try:
        return IPRoute(netns=_netns_path(node), flags=0)
    except OSError as e:
        raise LinkError(f"cannot enter the network namespace of {node} (pid {node.pid}): {e}") from e


def _ifindex(ipr: IPRoute, name: str, where: str) -> int:
    idx = ipr.link_lookup(ifname=name)
    if not idx:
        raise LinkError(f"interface {name} not found in {where}")
    return idx[0]


class EmuLink(Link):
    """A Mininet link whose delay/jitter/loss/rate are emulated by netem or the userspace shaper.

    Extra keyword arguments over mininet.link.Link:
      params   LinkParams applied to both directions (None = neutral)
      backend  "netem" or "shaper" (from choose_backend; required)
      shaper   emulab.shaper.Shaper handle; needed when backend is "shaper" and the link is shaped
      link_id  name of the link in the shaper and in reports (default: the interface names)
      dynamic  keep the emulation hop even while neutral, because set_params will be called
      limit    packets queued per direction before tail drop (netem limit; shaper limit)
      seed     random seed for the shaper's loss/jitter (reproducible runs)
      middle   the middle interfaces (emsh<N>a, emsh<N>b) of a shaped link

    Its interfaces exist already, made for many links at once by ``make_link_interfaces`` (one
    link: ``emu_link``); the link runs no command of its own but the shaper's add or netem's
    qdiscs, and brings no interface up: a node's configuration brings up its own ends, the batch
    a switch's.
    """

    def __init__(self, node1: Any, node2: Any, port1: int | None = None, port2: int | None = None,
                 intfName1: str | None = None, intfName2: str | None = None,
                 addr1: str | None = None, addr2: str | None = None, *,
                 params: LinkParams | None = None, backend: str | None = None, shaper: Shaper | None = None,
                 link_id: str | int | None = None, dynamic: bool = False, limit: int = DEFAULT_LIMIT,
                 seed: int | None = None, middle: tuple[str, str] | None = None,
                 **kwargs: Any) -> None:
        if backend not in BACKENDS:
            raise LinkError(f"EmuLink needs backend='netem' or 'shaper' (see emulab.links.choose_backend), "
                            f"got {backend!r}")
        if kwargs.pop("fast", True) is not True:
            raise LinkError("EmuLink always creates interfaces directly in the nodes (fast=True)")
        params = params if params is not None else LinkParams()
        self.backend = backend
        self.dynamic = dynamic
        self.limit = int(limit)
        self.seed = seed
        self.shaper = shaper
        self.link_id = str(link_id) if link_id is not None else None
        self._params = {"1to2": params, "2to1": params}
        self._iprs: dict[int, IPRoute] = {}
        self._netem_state: dict[str, dict[str, Any] | None] = {"1to2": None, "2to1": None}
        # set_params (radio thread) and applied() (status) may race on the netlink sockets
        self._lock = threading.RLock()
        self.mid1: str | None = None
        self.mid2: str | None = None
        #: True when traffic goes through the shaper process (two veth pairs)
        self.hop = needs_hop(backend, params, dynamic)
        if self.hop and shaper is None:
            raise _no_shaper(link_id)
        if self.hop:
            if middle is None:
                raise LinkError(f"link {link_id}: a shaped link needs its middle interfaces (make_link_interfaces)")
            self.mid1, self.mid2 = middle
        kwargs.setdefault("up", None)  # Mininet's Intf would run `ifconfig up` per interface
        super().__init__(node1, node2, port1=port1, port2=port2, intfName1=intfName1, intfName2=intfName2,
                         addr1=addr1, addr2=addr2, fast=True, **kwargs)
        if self.link_id is None:
            self.link_id = f"{self.intf1.name}--{self.intf2.name}"
        try:
            if self.hop:
                self._shaper_add()
            elif backend == "netem" and not params.is_neutral:
                self._netem_apply()
        except BaseException:
            with contextlib.suppress(Exception):
                self.delete()
            raise

    # -- interface creation ----------------------------------------------------------------------

    def makeIntfPair(self, *_args: Any, **_kwargs: Any) -> None:  # noqa: N802 - Mininet's hook
        """Mininet's hook to make the interfaces: they exist already (make_link_interfaces)."""

    def _delete_middle(self) -> None:
        if self.shaper is None or not (self.mid1 or self.mid2):
            return
        with contextlib.suppress(Exception), IPRoute(netns=self.shaper.netns, flags=0) as ipr:
            for mid in (self.mid1, self.mid2):
                if mid and ipr.link_lookup(ifname=mid):
                    ipr.link("del", ifname=mid)  # deleting a veth end deletes its peer in the node
        self.mid1 = self.mid2 = None

    # -- netem -----------------------------------------------------------------------------------

    def _ipr(self, node: Any) -> IPRoute:
        ipr = self._iprs.get(node.pid)
        if ipr is None:
            ipr = self._iprs[node.pid] = _node_ipr(node)
        return ipr

    def _ends(self) -> list[tuple[str, Any, str]]:
        return [("1to2", self.intf1.node, self.intf1.name), ("2to1", self.intf2.node, self.intf2.name)]

    def _netem_apply(self, direction: str | None = None) -> None:
        for d, node, name in self._ends():
            if direction not in (None, d):
                continue
            p = self._params[d]
            prev = self._netem_state.get(d)
            if p.is_neutral and not self.dynamic:
                if prev is not None:
                    _tc(node, ["qdisc", "del", "dev", name, "root"])
                    self._netem_state[d] = None
                continue
            opts = netem_options(p, self.limit)
            if prev is not None and prev["rate"] and not opts["rate"]:
                # tc sends no rate attribute for rate 0 and netem then keeps the old rate:
                # the only way to drop a rate is a fresh qdisc.
                _tc(node, ["qdisc", "del", "dev", name, "root"])
            _tc(node, ["qdisc", "replace", "dev", name, "root", "handle", "10:", *netem_tc_args(p, self.limit)])
            self._netem_state[d] = opts

    def reapply(self) -> None:
        """Re-install the netem qdiscs (after Open vSwitch replaced the qdisc of a port it added)."""
        if self.backend == "netem":
            with self._lock:
                self._netem_apply()

    # -- shaper ----------------------------------------------------------------------------------

    def _shaper_add(self) -> None:
        assert self.shaper is not None and self.mid1 and self.mid2 and self.link_id
        try:
            self.shaper.client.add_link(self.link_id, self.mid1, self.mid2, self._params["1to2"],
                                        params_ba=self._params["2to1"], limit=self.limit, seed=self.seed)
        except ShaperError as e:
            raise LinkError(f"link {self.link_id}: {e}") from e

    # -- public API ------------------------------------------------------------------------------

    @property
    def params(self) -> LinkParams:
        """The configured parameters of direction 1to2 (both, for a symmetric link)."""
        return self._params["1to2"]

    def set_params(self, params: LinkParams, direction: str | None = None) -> None:
        """Change delay/jitter/loss/rate at run time, for both directions or one ("1to2"/"2to1")."""
        if direction not in (None, *DIRECTIONS):
            raise LinkError(f"direction must be one of {DIRECTIONS} or None, got {direction!r}")
        if self.backend == "shaper" and not self.hop:
            if params.is_neutral:
                return
            raise LinkError(f"link {self.link_id} was built neutral without dynamic=True, so it has no "
                            "shaper hop and cannot be shaped at run time")
        for d in DIRECTIONS:
            if direction in (None, d):
                self._params[d] = params
        if self.backend == "netem":
            with self._lock:
                self._netem_apply(direction)
            return
        assert self.shaper is not None and self.link_id
        shaper_dir = {None: None, "1to2": "ab", "2to1": "ba"}[direction]
        try:
            self.shaper.client.set_params(self.link_id, params, direction=shaper_dir)
        except ShaperError as e:
            raise LinkError(f"link {self.link_id}: {e}") from e

    def applied(self) -> dict[str, Any]:
        """What is really applied, read back from the kernel (netem) or the shaper, per direction."""
        out: dict[str, Any] = {"backend": self.backend, "link_id": self.link_id, "hop": self.hop}
        if self.backend == "netem":
            with self._lock:
                for d, node, name in self._ends():
                    ipr = self._ipr(node)
                    idx = _ifindex(ipr, name, str(node))
                    root = [q for q in ipr.get_qdiscs(index=idx) if q["parent"] == TC_H_ROOT]
                    out[d] = netem_readback(root[0] if root else None)
            return out
        if not self.hop:
            neutral = {"delay_ms": 0.0, "jitter_ms": 0.0, "loss_pct": 0.0, "rate_mbit": None, "limit": None}
            out["1to2"], out["2to1"] = dict(neutral), dict(neutral)
            return out
        assert self.shaper is not None and self.link_id
        try:
            st = self.shaper.client.stats(self.link_id)
        except ShaperError as e:
            raise LinkError(f"link {self.link_id}: {e}") from e
        for d, sd in (("1to2", "ab"), ("2to1", "ba")):
            stats = dict(st[sd])
            out[d] = {**stats.pop("params"), "stats": stats}
        return out

    def delete(self) -> None:
        """Remove the link: shaper entry, middle veths, qdisc sockets, then Mininet's interfaces."""
        if self.hop and self.shaper is not None and self.link_id:
            with contextlib.suppress(ShaperError):
                self.shaper.client.remove_link(self.link_id)
        self._delete_middle()
        for ipr in self._iprs.values():
            with contextlib.suppress(Exception):
                ipr.close()
        self._iprs.clear()
        if getattr(self, "intf1", None) is not None and getattr(self, "intf2", None) is not None:
            super().delete()


def _free_indexes(ipr: IPRoute, count: int) -> list[int]:
    used = set()
    pat = re.compile(rf"^{SHAPER_IFPREFIX}(\d+)[ab]$")
    for link in ipr.get_links():
        m = pat.match(link.get_attr("IFLA_IFNAME") or "")
        if m:
            used.add(int(m.group(1)))
    free: list[int] = []
    n = 1
    while len(free) < count:
        if n not in used:
            free.append(n)
        n += 1
    return free


# ---------------------------------------------------------------------------------------------
# cleanup


def _shaper_processes(netns_prefix: str) -> list[int]:
    """Pids of `python -m emulab.shaper` processes whose --netns starts with netns_prefix."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if "-m" not in argv or "emulab.shaper" not in argv:
            continue
        ns = argv[argv.index("--netns") + 1] if "--netns" in argv[:-1] else DEFAULT_NETNS
        if ns.startswith(netns_prefix):
            pids.append(int(entry))
    return pids


def cleanup_leftovers(netns_prefix: str | None = None, control_dir: str | None = None) -> list[str]:
    """Remove what a crashed run of the link layer left behind; return what was removed.

    Shaper processes (matched by their command line and --netns), namespaces named
    ``<netns_prefix>*`` (deleting one deletes every shaper veth in it and their peers),
    the instance's probe namespaces, stray ``emsh*`` interfaces in the root namespace, and stale
    shaper control sockets / pid files in control_dir. netns_prefix and control_dir default to the
    current instance's shaper namespace and run directory (emulab.paths), so another instance's
    shaper is never touched.
    """
    netns_prefix = paths.shaper_netns() if netns_prefix is None else netns_prefix
    control_dir = str(paths.run_dir()) if control_dir is None else control_dir
    probe_prefix = paths.probe_netns_prefix()
    removed: list[str] = []
    pids = _shaper_processes(netns_prefix)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3.0
    for pid in pids:
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}") and not _zombie(pid):
            time.sleep(0.02)
        if os.path.exists(f"/proc/{pid}") and not _zombie(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        removed.append(f"shaper process {pid}")
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir("/run/netns")):
            if name.startswith(netns_prefix) or name.startswith(probe_prefix):
                with contextlib.suppress(ShaperError):
                    delete_netns(name)
                    removed.append(f"network namespace {name}")
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            if re.match(rf"^{SHAPER_IFPREFIX}\d+[ab]$", name):
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", index=link["index"])
                    removed.append(f"link {name}")
    with contextlib.suppress(FileNotFoundError):
        for name in sorted(os.listdir(control_dir)):
            path = os.path.join(control_dir, name)
            if name.startswith("shaper") and name.endswith(".pid"):
                with contextlib.suppress(OSError, ValueError):
                    pid = int(open(path).read().strip())
                    if not os.path.exists(f"/proc/{pid}") or _zombie(pid):
                        os.unlink(path)
                        removed.append(path)
            elif name.startswith("shaper") and name.endswith(".sock"):
                from emulab.shaper_control import socket_alive

                if not socket_alive(path):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                        removed.append(path)
    return removed


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


__all__ = [
    "BACKENDS", "DEFAULT_LIMIT", "ENV_BACKEND", "EmuLink", "LinkError", "choose_backend", "cleanup_leftovers",
    "netem_options", "netem_readback", "netns_exists", "probe_netem",
]

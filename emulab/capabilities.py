"""What this kernel and machine offer, probed once, and the fallback each missing piece gets.

Every capability the testbed may lack (sch_netem, SCTP, the openvswitch kernel datapath) is probed
here and only here, together with what each radio backend says it needs (its ``probes()``,
collected by radio.registry: OAI's softmodems, UHD, an attached B210); `emulab doctor` prints the
result and the builder reads it to pick the link backend, the OVS datapath and the RSerPool
transport. Probes are cached per boot in the run directory, because a kernel's capabilities don't
change until it reboots.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from emulab import paths
from radio import probes as radio_probes


@dataclass(frozen=True)
class Capability:
    """One probed capability: whether it is present, what emulab does without it, and a detail line."""

    name: str
    present: bool
    required: bool
    fallback: str | None
    detail: str

    @property
    def verdict(self) -> str:
        if self.present:
            return "ok"
        if self.required:
            return "MISSING (required)"
        return f"missing -> {self.fallback}" if self.fallback else "missing"


@dataclass(frozen=True)
class Capabilities:
    """The probe result as a whole, with the choices the builder makes from it."""

    items: dict[str, Capability] = field(default_factory=dict)
    kernel: str = ""

    def __getitem__(self, name: str) -> Capability:
        return self.items[name]

    def has(self, name: str) -> bool:
        return name in self.items and self.items[name].present

    @property
    def can_run(self) -> bool:
        return all(c.present for c in self.items.values() if c.required)

    @property
    def link_backend(self) -> str:
        from emulab.links import choose_backend

        return choose_backend(self.has("sch_netem"))

    @property
    def ovs_datapath(self) -> str:
        from emulab.ovs import datapath_for

        return datapath_for(self.has("ovs_kernel_datapath"))

    @property
    def rserpool_transport(self) -> str:
        from rserpool.transport import ENV_TRANSPORT

        forced = os.environ.get(ENV_TRANSPORT)
        if forced in ("sctp", "tcp"):
            return forced
        return "sctp" if self.has("sctp") else "tcp"

    def to_json(self) -> dict:
        return {
            "kernel": self.kernel,
            "can_run": self.can_run,
            "choices": {
                "link_backend": self.link_backend,
                "ovs_datapath": self.ovs_datapath,
                "rserpool_transport": self.rserpool_transport,
            },
            "capabilities": {name: asdict(c) | {"verdict": c.verdict} for name, c in self.items.items()},
        }


def _run(cmd: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _probe_root() -> tuple[bool, str]:
    return os.geteuid() == 0, f"euid {os.geteuid()}"


def _probe_netns() -> tuple[bool, str]:
    # A throwaway child in a new namespace: nothing is left behind, whatever happens.
    out = _run(["unshare", "--net", "true"])
    ok = out is not None and out.returncode == 0
    return ok, "unshare --net works" if ok else "cannot create a network namespace"


def _probe_netem() -> tuple[bool, str]:
    from emulab.links import probe_netem

    ok = probe_netem()
    return ok, "tc qdisc netem accepted" if ok else "tc: 'Specified qdisc kind is unknown' (no sch_netem)"


def _probe_sctp() -> tuple[bool, str]:
    from rserpool.transport import sctp_available

    ok = sctp_available()
    return ok, "SCTP sockets open" if ok else "socket(IPPROTO_SCTP) not supported by this kernel"


def _probe_ovs_userspace() -> tuple[bool, str]:
    missing = [b for b in ("ovs-vsctl", "ovs-vswitchd", "ovsdb-server", "ovs-ofctl") if not shutil.which(b)]
    if missing:
        return False, "not installed: " + ", ".join(missing)
    from emulab.ovs import probe_userspace_datapath

    ok = probe_userspace_datapath()
    return ok, "datapath_type=netdev bridge works" if ok else "netdev bridge could not be created"


def _probe_ovs_kernel() -> tuple[bool, str]:
    if not shutil.which("ovs-vsctl"):
        return False, "Open vSwitch not installed"
    from emulab.ovs import probe_kernel_datapath

    ok = probe_kernel_datapath()
    return ok, "openvswitch kernel datapath works" if ok else "no openvswitch kernel module"


def _probe_mininet() -> tuple[bool, str]:
    if importlib.util.find_spec("mininet") is None:
        return False, "Python package mininet not importable"
    if not shutil.which("mnexec"):
        return False, "mnexec not found (Debian package mininet)"
    import mininet.net

    return True, f"mininet {getattr(mininet.net, 'VERSION', '?')}"


def _probe_os_ken() -> tuple[bool, str]:
    spec = importlib.util.find_spec("os_ken")
    if spec is None:
        return False, "os-ken not installed (pip install os-ken)"
    from importlib.metadata import PackageNotFoundError, version

    try:
        return True, f"os-ken {version('os-ken')}"
    except PackageNotFoundError:
        return True, "os-ken (version unknown)"


def _probe_binary(*names: str) -> Callable[[], tuple[bool, str]]:
    def probe() -> tuple[bool, str]:
        found = [n for n in names if shutil.which(n)]
        if found:
            return True, ", ".join(shutil.which(n) or n for n in found)
        return False, "not found: " + ", ".join(names)

    return probe


# name -> (probe, required, fallback)
PROBES: dict[str, tuple[Callable[[], tuple[bool, str]], bool, str | None]] = {
    "root": (_probe_root, True, None),
    "network_namespaces": (_probe_netns, True, None),
    "mininet": (_probe_mininet, True, None),
    "os_ken": (_probe_os_ken, True, None),
    "ovs_userspace": (_probe_ovs_userspace, True, None),
    "ovs_kernel_datapath": (_probe_ovs_kernel, False, "OVS userspace datapath (datapath_type=netdev)"),
    "sch_netem": (_probe_netem, False, "userspace link shaper (emulab.shaper)"),
    "sctp": (_probe_sctp, False, "RSerPool over TCP, framed by message length"),
    "tshark": (_probe_binary("tshark", "text2pcap"), False, "conformance tests skipped"),
    # and what each radio backend needs (radio.registry: oai, uhd, usrp_b210 …)
    **{p.name: (p.check, False, p.fallback) for p in radio_probes()},
}


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _cache_key(boot: str) -> str:
    """Valid for this boot, this set of probes and this emulab version."""
    from emulab import __version__

    return f"{boot}/{__version__}/{','.join(sorted(PROBES))}"


def probe(fresh: bool = False) -> Capabilities:
    """Probe every capability (or return this boot's cached result unless ``fresh``)."""
    cache = paths.run_dir() / "capabilities.json"
    boot = _boot_id()
    if not fresh and cache.exists():
        try:
            data = json.loads(cache.read_text())
            if data.get("key") == _cache_key(boot):
                items = {k: Capability(**v) for k, v in data["items"].items()}
                return Capabilities(items=items, kernel=data["kernel"])
        except (OSError, ValueError, TypeError, KeyError):
            pass  # a damaged cache is simply re-probed
    items = {}
    for name, (fn, required, fallback) in PROBES.items():
        try:
            present, detail = fn()
        except Exception as exc:  # a probe that breaks means "not available", with the reason
            present, detail = False, f"probe failed: {exc}"
        items[name] = Capability(name, present, required, fallback, detail)
    caps = Capabilities(items=items, kernel=os.uname().release)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(
            json.dumps(
                {
                    "key": _cache_key(boot),
                    "kernel": caps.kernel,
                    "probes": sorted(PROBES),
                    "items": {k: asdict(v) for k, v in items.items()},
                }
            )
        )
    except OSError:
        pass  # not root: nothing cached, the probe is just repeated next time
    return caps

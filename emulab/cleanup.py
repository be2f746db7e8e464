"""`emulab clean`: remove what a crashed or killed testbed left behind — and only what emulab created.

Found by emulab's own marks, never by guessing: processes carrying the EMULAB_RUN_ID environment
marker (every process a testbed starts inherits it), OVS bridges and root-namespace links named
with emulab's prefix, named network namespaces ``em-*``, and the run directory's state.
Unlike `mn -c`, it leaves other people's bridges, controllers and /tmp files alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from emulab import paths
from emulab.errors import EmulabError
from emulab.runstate import pid_alive, read_state

# System daemons that may have been (re)started from inside a testbed and so inherited the marker.
_SPARE = {"ovsdb-server", "ovs-vswitchd"}
NETDEV_TAP = "ovs-netdev"  # the tap device of OVS's userspace datapath


def _state_files() -> tuple[Path, ...]:
    """The run directory's files of a running testbed besides state.json and the control socket: the
    shaper's control socket and the controller's status (rewritten at every start)."""
    return (paths.run_dir() / "shaper.sock", paths.run_dir() / "controller.json")


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def marked_processes(run_id: str | None = None) -> list[tuple[int, str]]:
    """(pid, command name) of every live process that carries emulab's run marker (that of run
    ``run_id`` only, if given), except this process and its ancestors."""
    marker = paths.RUN_ENV.encode() + b"="
    exact = None if run_id is None else marker + run_id.encode()
    spare = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spare:
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if marker not in environ or (exact is not None and exact not in environ.split(b"\0")):
                continue
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm not in _SPARE:
            found.append((int(entry.name), comm))
    return found


def reap_run(run_id: str, timeout: float = 5.0) -> None:
    """Wait until no process of run ``run_id`` is left (processes the teardown killed may still be
    exiting), finishing off whatever has not gone within ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := marked_processes(run_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        kill_processes([p for p, _ in left])


def kill_processes(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _named_namespaces() -> list[str]:
    from pyroute2 import netns

    return [n for n in netns.listnetns() if n.startswith((paths.PREFIX, "emulab-shaper", "emulab-probe-"))]


def clean() -> list[str]:
    """Remove every leftover; returns a line per thing removed."""
    removed: list[str] = []
    state = read_state()
    runner = state.get("runner_pid") if state else None
    if runner and pid_alive(runner):
        kill_processes([runner])
        removed.append(f"runner process {runner}")
    procs = marked_processes()
    if procs:
        kill_processes([p for p, _ in procs])
        removed.extend(f"process {pid} ({comm})" for pid, comm in procs)

    from pyroute2 import netns

    for name in _named_namespaces():
        with contextlib.suppress(OSError):
            netns.remove(name)
            removed.append(f"network namespace {name}")

    ovs_problem = _clean_bridges(removed)

    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            if name and name.startswith(paths.PREFIX):
                with contextlib.suppress(Exception):
                    ipr.link("del", index=link["index"])
                    removed.append(f"link {name}")

    from emulab.links import cleanup_leftovers

    removed.extend(cleanup_leftovers())

    for leftover in (paths.state_file(), paths.control_socket(), *_state_files()):
        if leftover.exists() or leftover.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
            removed.append(str(leftover))
    generated = paths.run_dir() / "oai"  # the OAI backend's generated configuration and scheduling shim
    if generated.is_dir():
        shutil.rmtree(generated, ignore_errors=True)
        removed.append(str(generated))
    if ovs_problem:  # everything else is gone; the bridges need Open vSwitch back first
        raise EmulabError(f"Open vSwitch is not usable, so emulab's bridges could not be removed: {ovs_problem}")
    return removed


def _clean_bridges(removed: list[str]) -> str | None:
    """Delete emulab's OVS bridges, first bringing Open vSwitch back if one of its daemons is gone (a
    killed ovs-vswitchd or ovsdb-server: emulab starts OVS when it is not running, so it restarts it
    here too rather than leave the machine unable to start a testbed). Returns what went wrong, or None."""
    from emulab import ovs

    if not ovs.installed():
        return None
    try:
        if not ovs.is_running():
            ovs.ensure_running()
            removed.append("Open vSwitch daemons (restarted: one of them was not running)")
        bridges = ovs.delete_bridges(paths.PREFIX)
        removed.extend(f"OVS bridge {b}" for b in bridges)
        # The userspace datapath's own tap device is persistent: a killed ovs-vswitchd leaves it, and
        # the restarted one does not remove it with the last bridge. Gone with it when no userspace
        # bridge is left, whoever's (the next netdev bridge creates it afresh).
        datapaths = ovs.vsctl("--bare", "--columns=datapath_type", "list", "Bridge").stdout.split()
    except ovs.OvsError as exc:
        return str(exc)
    if "netdev" not in datapaths and Path(f"/sys/class/net/{NETDEV_TAP}/tun_flags").exists():
        from pyroute2 import IPRoute

        with IPRoute() as ipr, contextlib.suppress(Exception):
            ipr.link("del", index=ipr.link_lookup(ifname=NETDEV_TAP)[0])
            removed.append(f"link {NETDEV_TAP} (OVS userspace datapath, no bridge uses it)")
    return None


def find_leftovers() -> list[str]:
    """What `clean` would remove, without removing anything (tests assert this is empty after a stop)."""
    found = [f"process {pid} ({comm})" for pid, comm in marked_processes()]
    found += [f"network namespace {n}" for n in _named_namespaces()]
    from emulab import ovs

    found += [f"OVS bridge {b}" for b in ovs.list_bridges(paths.PREFIX)]
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            if name.startswith((paths.PREFIX, "emsh")):
                found.append(f"link {name}")
    found += [str(p) for p in (paths.state_file(), paths.control_socket()) if p.exists()]
    return found

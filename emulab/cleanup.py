"""`emulab clean`: remove what a crashed or killed testbed left behind — and only what emulab created.

Found by emulab's own marks, never by guessing: processes carrying the EMULAB_RUN_ID environment
marker (every process a testbed starts inherits it), OVS bridges and root-namespace links named
with emulab's prefix, named network namespaces ``em-*``, and the run directory's state.
Unlike `mn -c`, it leaves other people's bridges, controllers and /tmp files alone.

Everything is per instance (emulab.paths): cleaning one instance removes only what carries its
prefix, its marker and its run directory, so another testbed on the same machine keeps running;
``clean_all()`` cleans every instance found on the machine, carrying on past one it cannot finish.
The Open vSwitch daemons are shared by all instances and never stopped here.
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


def _state_files(name: str) -> tuple[Path, ...]:
    """The run directory's files of a running testbed besides state.json and the control socket: the
    shaper's control socket and the controller's status (rewritten at every start)."""
    return (paths.shaper_socket(name), paths.controller_status(name))


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def process_markers() -> list[tuple[int, str, str]]:
    """(pid, run marker value, command name) of every process that carries emulab's run marker,
    except this process, its ancestors and the OVS daemons: the one walk of /proc behind everything
    that looks for a testbed's processes."""
    marker = paths.RUN_ENV.encode() + b"="
    spare = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spare:
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if marker not in environ:  # most processes: one read, no split
                continue
            value = next((v[len(marker):] for v in environ.split(b"\0") if v.startswith(marker)), None)
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if value is not None and comm not in _SPARE:
            found.append((int(entry.name), value.decode(errors="replace"), comm))
    return found


def marked_processes(run_id: str | None = None, instance: str | None = None, *,
                     every_instance: bool = False) -> list[tuple[int, str]]:
    """(pid, command name) of every live process that carries emulab's run marker of ``instance``
    (None: the current one; ``every_instance``: any), of run ``run_id`` only if given (the marker's
    full value, as in os.environ), except this process and its ancestors."""
    wanted = None if every_instance else paths.resolve(instance)
    return [(pid, comm) for pid, value, comm in process_markers()
            if (run_id is None or value == run_id)
            and (wanted is None or paths.marker_instance(value) == wanted)]


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


def named_namespaces(name: str | None = None) -> list[str]:
    """The named network namespaces of instance ``name`` (None: the current one)."""
    from pyroute2 import netns

    name = paths.resolve(name)
    return [n for n in netns.listnetns() if paths.instance_of_netns(n) == name]


class CleanError(EmulabError):
    """Clean-up removed what it could but could not finish; ``removed`` says what went, per instance."""

    def __init__(self, message: str, removed: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.removed = removed


def clean_all() -> dict[str, list[str]]:
    """`emulab clean --all`: clean every instance found on this machine; what was removed, per instance.

    An instance that cannot be cleaned completely does not stop the others: the failures are raised
    together at the end, as a CleanError that still carries what was removed."""
    from emulab.instances import on_host

    removed: dict[str, list[str]] = {}
    failed: list[str] = []
    for name in on_host():
        try:
            removed[name] = clean(name)
        except CleanError as exc:
            removed[name] = exc.removed.get(name, [])
            failed.append(f"[{name}] {exc}")
        except EmulabError as exc:
            removed[name] = []
            failed.append(f"[{name}] {exc}")
    if failed:
        raise CleanError(f"{len(failed)} instance(s) not cleaned completely: " + "; ".join(failed), removed)
    return removed


def clean(name: str | None = None) -> list[str]:
    """Remove every leftover of instance ``name`` (None: the current one); returns a line per thing removed."""
    name = paths.resolve(name)
    removed: list[str] = []
    state = read_state(name)
    runner = state.get("runner_pid") if state else None
    if runner and pid_alive(runner):
        kill_processes([runner])
        removed.append(f"runner process {runner}")
    procs = marked_processes(instance=name)
    if procs:
        kill_processes([p for p, _ in procs])
        removed.extend(f"process {pid} ({comm})" for pid, comm in procs)

    from pyroute2 import netns

    for ns_name in named_namespaces(name):
        with contextlib.suppress(OSError):
            netns.remove(ns_name)
            removed.append(f"network namespace {ns_name}")

    ovs_problem = _clean_bridges(removed, name)

    from pyroute2 import IPRoute

    prefix = paths.prefix(name)
    with IPRoute() as ipr:
        for link in ipr.get_links():
            ifname = link.get_attr("IFLA_IFNAME")
            if ifname and ifname.startswith(prefix):
                with contextlib.suppress(Exception):
                    ipr.link("del", index=link["index"])
                    removed.append(f"link {ifname}")

    from emulab.links import cleanup_leftovers

    removed.extend(cleanup_leftovers(paths.shaper_netns(name), str(paths.run_dir(name))))

    for leftover in (paths.state_file(name), paths.control_socket(name), *_state_files(name)):
        if leftover.exists() or leftover.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
            removed.append(str(leftover))
    generated = paths.run_dir(name) / "oai"  # the OAI backend's generated configuration and scheduling shim
    if generated.is_dir():
        shutil.rmtree(generated, ignore_errors=True)
        removed.append(str(generated))
    if ovs_problem:  # everything else is gone; the bridges need Open vSwitch back first
        raise CleanError(f"Open vSwitch is not usable, so emulab's bridges could not be removed: {ovs_problem}",
                         {name: removed})
    return removed


def _clean_bridges(removed: list[str], name: str) -> str | None:
    """Delete emulab's OVS bridges, first bringing Open vSwitch back if one of its daemons is gone (a
    killed ovs-vswitchd or ovsdb-server: emulab starts OVS when it is not running, so it restarts it
    here too rather than leave the machine unable to start a testbed). Whether ovs-vswitchd answers
    is asked only when there are bridges of ours to remove (listing them is ovsdb-server's work), so
    a clean with nothing to remove never waits on a busy daemon; a hung one is reported with the fix.
    Returns what went wrong, or None."""
    from emulab import ovs

    if not ovs.installed():
        return None
    try:
        if not ovs.is_running():
            ovs.ensure_running()
            removed.append("Open vSwitch daemons (restarted: one of them was not running)")
        prefix = paths.prefix(name)
        if ovs.list_bridges(prefix) and not ovs.check_answering():
            ovs.ensure_running()  # a daemon died since: start it again
        bridges = ovs.delete_bridges(prefix)
        removed.extend(f"OVS bridge {b}" for b in bridges)
        # The userspace datapath's own tap device is persistent: a killed ovs-vswitchd leaves it, and
        # the restarted one does not remove it with the last bridge. Gone with it when no userspace
        # bridge is left, whoever's (the next netdev bridge creates it afresh).
        datapaths = ovs.vsctl("--bare", "--columns=datapath_type", "list", "Bridge").stdout.split()
    except ovs.OvsError as exc:  # e.g. ovsdb-server hung: ovs-vsctl timed out
        problem = str(exc)
        hint = ovs.restart_hint()
        return problem if hint in problem or problem == ovs.NOT_INSTALLED else f"{problem}: {hint}"
    if "netdev" not in datapaths and Path(f"/sys/class/net/{NETDEV_TAP}/tun_flags").exists():
        from pyroute2 import IPRoute

        with IPRoute() as ipr, contextlib.suppress(Exception):
            ipr.link("del", index=ipr.link_lookup(ifname=NETDEV_TAP)[0])
            removed.append(f"link {NETDEV_TAP} (OVS userspace datapath, no bridge uses it)")
    return None


def find_leftovers(name: str | None = None) -> list[str]:
    """What `clean` would remove from instance ``name`` (None: the current one), without removing
    anything (tests assert this is empty after a stop)."""
    name = paths.resolve(name)
    found = [f"process {pid} ({comm})" for pid, comm in marked_processes(instance=name)]
    found += [f"network namespace {n}" for n in named_namespaces(name)]
    from emulab import ovs
    from emulab.links import SHAPER_IFPREFIX

    prefix = paths.prefix(name)
    found += [f"OVS bridge {b}" for b in ovs.list_bridges(prefix)]
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for link in ipr.get_links():
            ifname = link.get_attr("IFLA_IFNAME") or ""
            if ifname.startswith((prefix, SHAPER_IFPREFIX)):
                found.append(f"link {ifname}")
    found += [str(p) for p in (paths.state_file(name), paths.control_socket(name)) if p.exists()]
    return found

"""The testbed instances on this machine: which exist (`emulab instances`, `emulab clean --all`) and
what each one is doing.

An instance is found by anything it owns (emulab.paths names them): its run directory, processes
carrying its run marker, named network namespaces, OVS bridges or root-namespace links with its
prefix. So a crashed instance whose run directory is gone is still found and can be cleaned.
"""

from __future__ import annotations

import contextlib
from typing import Any

from emulab import paths
from emulab.cleanup import marked_processes, named_namespaces, process_markers
from emulab.runstate import pid_alive, read_state

Markers = list[tuple[int, str, str]]
"""``emulab.cleanup.process_markers()``: read once, handed to each function that needs it."""


def _sort_key(name: str) -> int:
    return -1 if name == paths.DEFAULT_INSTANCE else int(name)


def on_host(markers: Markers | None = None) -> list[str]:
    """Every instance that has something on this machine (default first, then by number); the
    current instance is always listed (its run directory may be $EMULAB_RUN_DIR)."""
    found = set(paths.known_instances())
    found.add(paths.instance())
    for _, value, _ in process_markers() if markers is None else markers:
        with contextlib.suppress(paths.InstanceError):
            found.add(paths.check_instance(paths.marker_instance(value)))
    from pyroute2 import IPRoute, netns

    for n in netns.listnetns():
        if (owner := paths.instance_of_netns(n)) is not None:
            found.add(owner)
    with IPRoute() as ipr:
        for link in ipr.get_links():
            if (owner := paths.instance_of_prefixed(link.get_attr("IFLA_IFNAME") or "")) is not None:
                found.add(owner)
    from emulab import ovs

    if ovs.installed() and ovs.is_running():
        with contextlib.suppress(ovs.OvsError):
            for bridge in ovs.vsctl("list-br").stdout.split():
                if (owner := paths.instance_of_prefixed(bridge)) is not None:
                    found.add(owner)
    return sorted(found, key=_sort_key)


def describe_all() -> list[dict[str, Any]]:
    """``describe`` of every instance ``on_host``, the processes looked through once for all of them."""
    markers = process_markers()
    return [describe(name, markers) for name in on_host(markers)]


def describe(name: str, markers: Markers | None = None) -> dict[str, Any]:
    """One instance at a glance: its names and places, and its testbed's phase, topology and runner."""
    state = read_state(name) or {}
    runner = state.get("runner_pid")
    phase = state.get("phase") or "none"
    if runner and not pid_alive(runner):
        phase = f"{phase} (runner gone: `{paths.command(name)} clean`)"
    markers = process_markers() if markers is None else markers
    processes = sum(1 for _, value, _ in markers if paths.marker_instance(value) == name)
    topology = state.get("topology")
    if isinstance(topology, dict):
        topology = topology.get("name")
    return {
        "instance": name, "prefix": paths.prefix(name), "run_dir": str(paths.run_dir(name)),
        "phase": phase, "topology": topology, "runner_pid": runner, "processes": processes,
    }


def footprint(name: str) -> dict[str, list[str]]:
    """What instance ``name`` has on this machine: marked processes, named namespaces, OVS bridges and
    root-namespace links (tests and benchmarks compare it before and after touching another instance)."""
    from pyroute2 import IPRoute

    from emulab import ovs

    prefix = paths.prefix(name)
    with IPRoute() as ipr:
        links = sorted(n for link in ipr.get_links() if (n := link.get_attr("IFLA_IFNAME") or "").startswith(prefix))
    bridges: list[str] = []
    if ovs.installed() and ovs.is_running():
        bridges = ovs.list_bridges(prefix)
    return {
        "processes": sorted(f"{pid} {comm}" for pid, comm in marked_processes(instance=name)),
        "namespaces": sorted(named_namespaces(name)),
        "bridges": bridges,
        "links": links,
    }

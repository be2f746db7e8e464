"""Where emulab keeps its run-time state, logs and topology files, and what it names things on the host.

This module is the one home of every host-visible name and place, per *instance*: several
independent testbeds can run on one machine at once, each an instance with its own names.

Instances
---------
The current instance comes from the environment variable ``EMULAB_INSTANCE`` (``emulab --instance
NAME`` sets it, so every process a testbed starts — services, shaper, controller, the in-process
builder of ``emulab experiment`` — inherits it). Unset, empty or ``"default"`` is the *default
instance*, which keeps the names emulab always had. Other instances are named by a number from 1
to 99, written without leading zeros ("1", "2", … "99"): Linux interface names have at most 15
characters and a switch port "em-<switch ≤8>-<port ≤3>" uses all of them, so an instance's prefix
must stay 3 characters; "e" + two digits is that, and cannot be mistaken for a host's own
interfaces (eth0, enp3s0, eno1 have a letter after the "e") nor for the default's "em-"/"emsh"/
"emulab-". Anything else is refused with InstanceError.

=================  =========================  ===============================
what               default instance           instance N (e.g. 7)
=================  =========================  ===============================
prefix             ``em-``                    ``e07``
OVS bridge         ``em-sgi``                 ``e07sgi``
switch port        ``em-sgi-1``               ``e07sgi-1``
node netns         ``em-ue``                  ``e07ue``
shaper netns       ``emulab-shaper``          ``emulab7-shaper``
probe netns        ``emulab-probe-*``         ``emulab7-probe-*``
run directory      ``/run/emulab``            ``/run/emulab-7``
process marker     ``EMULAB_RUN_ID=<id>``     ``EMULAB_RUN_ID=<id>@7``
switch dpids       ``0xe0000001``…            ``0xe0070001``…
=================  =========================  ===============================

The controller listens on a free port at every start and the dashboard moves off its default
port when another instance's has it, so no port is fixed either. The Open vSwitch daemons are
shared by every instance; emulab never stops them.

``EMULAB_RUN_DIR`` still overrides the current instance's run directory (tests run beside a
user's testbed with it). Logs, the control socket, the shaper's control socket and the state all
live in the run directory. Results stay in the one results/ tree (a sweep merger wants them side by
side); the instance is recorded in each run's manifest.

Logs deliberately avoid /tmp/*.log, which `mn -c` deletes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Environment variable naming the current instance (unset/""/"default": the default instance).
INSTANCE_ENV = "EMULAB_INSTANCE"
#: Environment variable overriding the current instance's run directory.
RUN_DIR_ENV = "EMULAB_RUN_DIR"
#: The name of the default instance (the one with today's names).
DEFAULT_INSTANCE = "default"
#: Highest instance number (two digits in the 3-character prefix).
INSTANCE_MAX = 99
#: Prefix of everything the *default* instance creates on the host (bridges, links, named netns).
#: Kept for compatibility; code that names things calls prefix() so that instances get theirs.
PREFIX = "em-"
#: Environment marker inherited by every process a testbed starts, so `emulab clean` finds them;
#: its value is the run id, with "@<instance>" appended for a non-default instance.
RUN_ENV = "EMULAB_RUN_ID"
#: Where the default instance keeps its state; instance N uses the sibling "<this>-N".
DEFAULT_RUN_DIR = "/run/emulab"

_NAME = re.compile(r"[1-9][0-9]?")


class InstanceError(ValueError):
    """An instance name that is not "default" nor a number from 1 to 99."""


def check_instance(name: str | None) -> str:
    """The canonical instance name for ``name`` ("default" for None/""/"default"); InstanceError if invalid."""
    if name is None or name == "" or name == DEFAULT_INSTANCE:
        return DEFAULT_INSTANCE
    name = str(name)
    if not _NAME.fullmatch(name):
        raise InstanceError(
            f"invalid emulab instance name {name!r}: use a number from 1 to {INSTANCE_MAX} without leading "
            f"zeros (or '{DEFAULT_INSTANCE}'); instance names become part of 15-character Linux interface "
            "names, so they must be this short")
    return name


def instance() -> str:
    """The current instance: $EMULAB_INSTANCE checked ("default" when unset or empty)."""
    return check_instance(os.environ.get(INSTANCE_ENV))


def resolve(name: str | None = None) -> str:
    """``name`` checked, or the current instance when it is None."""
    return instance() if name is None else check_instance(name)


def is_default(name: str | None = None) -> bool:
    """True for the default instance (``name`` None: the current one)."""
    return resolve(name) == DEFAULT_INSTANCE


def prefix(name: str | None = None) -> str:
    """The 3-character prefix of bridges, switch ports and node namespaces ("em-" or "e07")."""
    name = resolve(name)
    return PREFIX if name == DEFAULT_INSTANCE else f"e{int(name):02d}"


def command(name: str | None = None) -> str:
    """How a user calls emulab for an instance, for messages: "emulab" or "emulab --instance 7"."""
    name = resolve(name)
    return "emulab" if name == DEFAULT_INSTANCE else f"emulab --instance {name}"


def instance_of_prefixed(host_name: str) -> str | None:
    """The instance owning a host name made with prefix() ("em-sgi" -> "default", "e07sgi" -> "7"), or None."""
    if host_name.startswith(PREFIX):
        return DEFAULT_INSTANCE
    m = re.match(r"e([0-9]{2})", host_name)
    if m and 1 <= int(m.group(1)) <= INSTANCE_MAX:
        return str(int(m.group(1)))
    return None


def _tag(name: str | None = None) -> str:
    """"emulab" for the default instance, "emulab7" for instance 7 (names with no length limit)."""
    name = resolve(name)
    return "emulab" if name == DEFAULT_INSTANCE else f"emulab{name}"


def shaper_netns(name: str | None = None) -> str:
    """The shaper's network namespace ("emulab-shaper", "emulab7-shaper")."""
    return f"{_tag(name)}-shaper"


def probe_netns_prefix(name: str | None = None) -> str:
    """Prefix of the throwaway namespaces that probe the kernel ("emulab-probe-", "emulab7-probe-")."""
    return f"{_tag(name)}-probe-"


_TAGGED_NETNS = re.compile(r"emulab([0-9]*)-(?:shaper|probe-.*)")  # shaper_netns(), probe_netns_prefix()


def instance_of_netns(netns: str) -> str | None:
    """The instance owning a named network namespace — a node's (prefix()), the shaper's or a kernel
    probe's — or None when it is not emulab's."""
    m = _TAGGED_NETNS.fullmatch(netns)
    if m:
        try:
            return check_instance(m.group(1))
        except InstanceError:
            return None
    return instance_of_prefixed(netns)


def dpid_base(name: str | None = None) -> int:
    """First OpenFlow datapath id of an instance's switches (switch i gets base + i): the default's
    0xE0000000, instance N's 0xE0000000 + N * 2**16, so no two bridges of one Open vSwitch share one."""
    name = resolve(name)
    return 0xE0000000 + (0 if name == DEFAULT_INSTANCE else int(name) << 16)


def default_run_dir(name: str | None = None) -> Path:
    """The run directory an instance has without EMULAB_RUN_DIR (/run/emulab, /run/emulab-7)."""
    name = resolve(name)
    return Path(DEFAULT_RUN_DIR if name == DEFAULT_INSTANCE else f"{DEFAULT_RUN_DIR}-{name}")


def run_dir(name: str | None = None) -> Path:
    """The run directory of instance ``name`` (None: the current one; $EMULAB_RUN_DIR overrides the
    current instance's, never another's)."""
    override = os.environ.get(RUN_DIR_ENV)
    if override and (name is None or check_instance(name) == instance()):
        return Path(override)
    return default_run_dir(name)


def state_file(name: str | None = None) -> Path:
    return run_dir(name) / "state.json"


def control_socket(name: str | None = None) -> Path:
    return run_dir(name) / "control.sock"


def shaper_socket(name: str | None = None) -> Path:
    """The shaper's control socket."""
    return run_dir(name) / "shaper.sock"


def controller_status(name: str | None = None) -> Path:
    """The status document the controller keeps (emulab.controller.read_status reads it)."""
    return run_dir(name) / "controller.json"


def log_dir(name: str | None = None) -> Path:
    return run_dir(name) / "logs"


def run_marker(run_id: str, name: str | None = None) -> str:
    """The value of RUN_ENV for run ``run_id`` of an instance: the run id, "@<instance>" appended
    unless default (so `emulab clean` of one instance never ends another's processes)."""
    name = resolve(name)
    if "@" in run_id:  # already marked
        return run_id
    return run_id if name == DEFAULT_INSTANCE else f"{run_id}@{name}"


def marker_instance(value: str) -> str:
    """The instance a RUN_ENV value belongs to ("default" when it has no "@<instance>")."""
    _, sep, name = value.rpartition("@")
    if not sep:
        return DEFAULT_INSTANCE
    try:
        return check_instance(name)
    except InstanceError:
        return name  # a foreign value: never equal to a valid instance, so nobody's to clean


def known_instances() -> list[str]:
    """Instances that have a run directory on this machine (default first, then by number)."""
    found = [DEFAULT_INSTANCE] if default_run_dir(DEFAULT_INSTANCE).is_dir() else []
    base = Path(DEFAULT_RUN_DIR)
    with_dirs = []
    if base.parent.is_dir():
        for p in base.parent.glob(base.name + "-*"):
            n = p.name[len(base.name) + 1:]
            if _NAME.fullmatch(n) and p.is_dir():
                with_dirs.append(int(n))
    return found + [str(n) for n in sorted(with_dirs)]


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def topologies_dir() -> Path:
    return Path(os.environ.get("EMULAB_TOPOLOGIES", repo_root() / "topologies"))


def netns_name(node: str) -> str:
    """Name under /run/netns of a node's network namespace (so `ip netns exec em-ue …` works;
    ``e07ue`` in instance 7)."""
    return f"{prefix()}{node}"

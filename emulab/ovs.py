"""Open vSwitch on the host: start the daemons, pick the datapath, inspect and remove emulab's bridges.

Everything emulab asks of OVS outside Mininet goes through here:

* `ensure_running()` starts ovsdb-server and ovs-vswitchd with Debian's `ovs-ctl` when they are not
  running (CI machines boot with OVS stopped) or have died (a killed daemon, even a zombie), and
  otherwise asks each running daemon for its version over its control socket (`check_answering()`,
  one `ovs-appctl` per daemon), so a hung daemon fails the start with the fix instead of hanging
  Mininet's ovs-vsctl. Logs stay in OVS's own log directory (/var/log/openvswitch by default),
  never in /tmp/*.log, which `mn -c` deletes.
* `probe_kernel_datapath()` / `probe_userspace_datapath()` try a throwaway bridge of each kind, and
  `datapath_for()` is the one place that turns the probe into Mininet's `OVSSwitch(datapath=...)`
  argument ("kernel" or "user"); EMULAB_OVS_DATAPATH=kernel|user overrides it.
* `list_bridges()` / `delete_bridges()` only ever see bridges named with emulab's prefix, so a
  user's own bridges are never touched; `controller_connected()` and `dump_flows()` let the builder
  and the tests look at the OpenFlow side.

The daemons' locations follow OVS's own environment variables (OVS_RUNDIR, OVS_SYSCONFDIR,
OVS_LOGDIR), which `ovs-ctl`, `ovs-vsctl` and `ovs-ofctl` honour too; tests use that to run a
private OVS instance beside the system one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from emulab import paths as emulab_paths
from emulab.errors import EmulabError

#: Environment variable that overrides the datapath choice.
DATAPATH_ENV = "EMULAB_OVS_DATAPATH"
#: Where distributions put the OVS control script (Debian/Ubuntu, Fedora/RHEL, source installs).
OVS_CTL_CANDIDATES = (
    "/usr/share/openvswitch/scripts/ovs-ctl",
    "/usr/local/share/openvswitch/scripts/ovs-ctl",
)
NOT_INSTALLED = "Open vSwitch is not installed: run make setup"
#: The two daemons emulab needs, in the order ovs-ctl starts them.
DAEMONS = ("ovsdb-server", "ovs-vswitchd")
#: Environment variable that overrides ANSWER_TIMEOUT (seconds).
ANSWER_TIMEOUT_ENV = "EMULAB_OVS_ANSWER_TIMEOUT"
#: How long a running daemon may take to answer `ovs-appctl version`. An idle one answers in
#: milliseconds, but ovs-vswitchd answers from its main thread, which is blocked while it adds or
#: removes ports: with several testbeds building on one daemon (`--cluster local:N`) that can take
#: seconds. A daemon counts as hung only after two such timeouts in a row, or one while it is stopped.
ANSWER_TIMEOUT = 10.0
#: How long a missing control socket or unreadable pid file counts as a daemon still starting
#: (ovs-vswitchd writes its pid file before it creates its control socket).
_CONNECT_GRACE = 5.0
#: Mininet's OVSSwitch port number of a bridge's own (LOCAL) interface once the datapath has it.
_OFPP_LOCAL = 65534
#: Interface names are limited to 15 characters by the kernel (IFNAMSIZ - 1).
IFNAME_MAX = 15


class OvsError(EmulabError):
    """Open vSwitch is missing, would not start, or refused a command."""


@dataclass(frozen=True)
class OvsPaths:
    """Where the daemons keep their sockets, pid files, database and logs."""

    rundir: Path
    dbdir: Path
    logdir: Path

    @classmethod
    def from_env(cls) -> OvsPaths:
        # Same rules as /usr/share/openvswitch/scripts/ovs-lib, so we look where ovs-ctl writes.
        rundir = Path(os.environ.get("OVS_RUNDIR", "/var/run/openvswitch"))
        logdir = Path(os.environ.get("OVS_LOGDIR", "/var/log/openvswitch"))
        if os.environ.get("OVS_DBDIR"):
            dbdir = Path(os.environ["OVS_DBDIR"])
        else:
            dbdir = Path(os.environ.get("OVS_SYSCONFDIR", "/etc")) / "openvswitch"
        return cls(rundir=rundir, dbdir=dbdir, logdir=logdir)

    @property
    def db_sock(self) -> Path:
        return self.rundir / "db.sock"

    def pidfile(self, daemon: str) -> Path:
        return self.rundir / f"{daemon}.pid"

    def logfile(self, daemon: str) -> Path:
        return self.logdir / f"{daemon}.log"


# ---------------------------------------------------------------------------------------------
# running commands


def _run(args: Sequence[str], *, timeout: float = 15.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise OvsError(NOT_INSTALLED) from exc
    except subprocess.TimeoutExpired as exc:
        raise OvsError(f"{' '.join(args)} timed out after {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise OvsError(f"{' '.join(args)} failed: {msg[-1] if msg else f'exit {proc.returncode}'}")
    return proc


def vsctl(*args: str, timeout: float = 10.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ovs-vsctl` with a timeout (it otherwise waits forever when ovsdb-server is down)."""
    return _run(["ovs-vsctl", f"--timeout={max(1, int(timeout))}", *args], timeout=timeout + 5, check=check)


def ofctl(*args: str, timeout: float = 10.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ovs-ofctl` speaking OpenFlow 1.3 (the only version emulab's bridges enable)."""
    return _run(
        ["ovs-ofctl", f"--timeout={max(1, int(timeout))}", "-O", "OpenFlow13", *args],
        timeout=timeout + 5,
        check=check,
    )


# ---------------------------------------------------------------------------------------------
# daemons


def _ovs_ctl() -> str:
    for path in OVS_CTL_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    raise OvsError(NOT_INSTALLED)


def installed() -> bool:
    """Are the OVS binaries emulab needs present?"""
    binaries = ("ovs-vsctl", "ovs-ofctl", "ovs-appctl", "ovsdb-server", "ovs-vswitchd")
    return all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in binaries) and any(
        os.access(p, os.X_OK) for p in OVS_CTL_CANDIDATES
    )


def _daemon_state(paths: OvsPaths, daemon: str) -> tuple[int, str] | None:
    """(pid, process state letter) of the process the daemon's pid file names, when it is a live
    process of that name (cheap: no subprocess), else None.

    A zombie is not alive: a killed daemon keeps its /proc entry until its parent reaps it, and a
    detached daemon's parent is init, which in a container may take its time. ovs-ctl's own check
    (`test -d /proc/PID`) takes such a zombie for a running daemon.
    """
    try:
        pid = int(paths.pidfile(daemon).read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so split at the last ')'.
    comm = stat.partition("(")[2].rpartition(")")[0]
    fields = stat.rpartition(")")[2].split()
    # COMM is truncated to 15 characters ("ovs-vswitchd" and "ovsdb-server" fit).
    if comm != daemon[:15] or not fields or fields[0] in ("Z", "X"):
        return None
    return pid, fields[0]


def _daemon_pid(paths: OvsPaths, daemon: str) -> int | None:
    """The pid in the daemon's pid file when it names a live (not zombie) process of that name."""
    found = _daemon_state(paths, daemon)
    return found[0] if found else None


def _daemon_alive(paths: OvsPaths, daemon: str) -> bool:
    return _daemon_pid(paths, daemon) is not None


def _drop_stale_pidfiles(paths: OvsPaths) -> None:
    """Remove the pid file of a daemon that is dead or a zombie, so ovs-ctl starts it again instead of
    reporting it "already running", and the control sockets (`DAEMON.PID.ctl`) of every dead
    process of that name, which a killed daemon leaves behind in the run directory."""
    for daemon in DAEMONS:
        live = _daemon_pid(paths, daemon)
        if live is None:
            with contextlib.suppress(OSError):
                paths.pidfile(daemon).unlink()
        for ctl in paths.rundir.glob(f"{daemon}.*.ctl"):
            pid = ctl.name[len(daemon) + 1:-len(".ctl")]
            if pid.isdigit() and int(pid) != live:
                with contextlib.suppress(OSError):
                    ctl.unlink()


def is_running(paths: OvsPaths | None = None) -> bool:
    """Are both ovsdb-server and ovs-vswitchd running (and the database socket there)?"""
    paths = paths or OvsPaths.from_env()
    return all(_daemon_alive(paths, d) for d in DAEMONS) and paths.db_sock.exists()


def restart_hint() -> str:
    """How a user brings a broken Open vSwitch back."""
    ctl = next((p for p in OVS_CTL_CANDIDATES if os.access(p, os.X_OK)), OVS_CTL_CANDIDATES[0])
    return f"restart Open vSwitch (`{ctl} restart`, or `systemctl restart openvswitch-switch` where systemd runs it)"


def answer_timeout() -> float:
    """ANSWER_TIMEOUT, or the seconds EMULAB_OVS_ANSWER_TIMEOUT gives."""
    raw = os.environ.get(ANSWER_TIMEOUT_ENV, "").strip()
    if not raw:
        return ANSWER_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise OvsError(f"{ANSWER_TIMEOUT_ENV} must be a number of seconds above 0, not {raw!r}")
    return value


def _appctl_version(daemon: str, timeout: float) -> tuple[str, str]:
    """Ask the daemon for its version: ("ok" | "timeout" | "error", the last line ovs-appctl printed
    on stderr)."""
    # -t DAEMON finds the control socket through the pid file in OVS_RUNDIR, as ovs-ctl does.
    args = ["ovs-appctl", f"--timeout={max(1, math.ceil(timeout))}", "-t", daemon, "version"]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout + 2, check=False)
    except FileNotFoundError as exc:
        raise OvsError(NOT_INSTALLED) from exc
    except subprocess.TimeoutExpired:
        return "timeout", ""
    lines = proc.stderr.strip().splitlines()
    # a log line ("2026-…Z|00001|unixctl|WARN|failed to connect …") without its log prefix
    last = re.sub(r"^\S+\|\d+\|[\w-]+\|[A-Z]+\|", "", lines[-1]) if lines else ""
    if proc.returncode == 0:
        return "ok", last
    # On --timeout ovs-appctl's alarm kills it with SIGALRM.
    return ("timeout" if proc.returncode == -signal.SIGALRM else "error"), last or f"exit {proc.returncode}"


def _starting_up(stderr_line: str) -> bool:
    """Does ovs-appctl's error mean a daemon that is still starting (or just went), rather than one
    that refuses? No control socket yet, or a pid file not yet written or locked."""
    return ("cannot connect" in stderr_line or "cannot read pidfile" in stderr_line) and (
        "No such file" in stderr_line or "Connection refused" in stderr_line or "No such process" in stderr_line
    )


def _check_daemon(paths: OvsPaths, daemon: str, timeout: float) -> bool:
    """check_answering() for one daemon."""
    found = _daemon_state(paths, daemon)
    if found is None:
        return False
    pid = found[0]
    log = paths.logfile(daemon)
    timeouts = 0
    grace_until = time.monotonic() + _CONNECT_GRACE
    while True:
        outcome, detail = _appctl_version(daemon, timeout)
        if outcome == "ok":
            return True
        found = _daemon_state(paths, daemon)
        if found is None:  # it died while we asked: the caller starts it again
            return False
        if found[0] != pid:  # restarted by someone else meanwhile: ask the new one
            pid, timeouts = found[0], 0
            if time.monotonic() < grace_until:
                continue
        state = found[1]
        if outcome == "timeout":
            timeouts += 1
            stopped = state in ("T", "t")
            if stopped or timeouts >= 2:
                why = (f"its process is stopped (state {state})" if stopped
                       else f"it did not answer `ovs-appctl version` within {timeout:g} s, twice")
                raise OvsError(
                    f"{daemon} (pid {pid}) is hung: {why}; if it is only busy, allow it longer with "
                    f"{ANSWER_TIMEOUT_ENV}=SECONDS (see {log}): {restart_hint()}")
            continue
        if _starting_up(detail) and time.monotonic() < grace_until:
            time.sleep(0.1)
            continue
        said = detail if detail.startswith("ovs-appctl") else f"ovs-appctl: {detail}"
        root = " (emulab needs root)" if "Permission denied" in detail else ""
        raise OvsError(f"{daemon} (pid {pid}) could not be asked over its control socket: {said}{root} "
                       f"(see {log}): {restart_hint()}")


def check_answering(paths: OvsPaths | None = None, timeout: float | None = None) -> bool:
    """True when both daemons run and answer `ovs-appctl version` on their control sockets; False
    when one of them is not running (dead, a zombie, or gone while asked: ensure_running() starts it
    then). Raises OvsError, naming the daemon and the fix, when one runs but is hung (no answer within
    `timeout` seconds twice, or once while its process is stopped) or cannot be asked at all (its
    control socket stays missing, permission denied).

    `timeout` defaults to answer_timeout(). Mininet runs ovs-vsctl without a timeout, and ovs-vsctl
    waits for ovs-vswitchd to apply each change: handed a hung daemon, a start would hang instead of
    failing.
    """
    paths = paths or OvsPaths.from_env()
    timeout = answer_timeout() if timeout is None else timeout
    return all(_check_daemon(paths, daemon, timeout) for daemon in DAEMONS)


@contextmanager
def _startup_lock(paths: OvsPaths) -> Iterator[None]:
    # Several emulab processes (or test workers) may call ensure_running() at once; two ovs-ctl
    # runs racing each other can start two ovsdb-servers on one database.
    lockdir = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")
    tag = str(paths.rundir).strip("/").replace("/", "_")
    with open(lockdir / f"emulab-ovs-{tag}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_running(*, vswitchd_options: Sequence[str] = (), timeout: float = 30.0) -> None:
    """Start ovsdb-server and ovs-vswitchd unless both are already running and answering.

    Idempotent. When OVS runs it costs a few file reads and two subprocesses (`ovs-appctl version`
    to each daemon, check_answering()), which turn a hung daemon into an OvsError with the fix
    instead of a hang later; a daemon that is only busy gets a second chance. A daemon that is dead
    (or a zombie, or dies during the check) is started again. `vswitchd_options` are extra
    ovs-vswitchd arguments used only when it has to be started (tests pass --disable-system for a
    private instance so it never touches the kernel datapath of the system instance).
    Raises OvsError with "run make setup" when OVS is not installed.
    """
    paths = OvsPaths.from_env()
    if is_running(paths) and check_answering(paths):
        return
    ctl = _ovs_ctl()
    if not installed():
        raise OvsError(NOT_INSTALLED)
    with _startup_lock(paths):
        # someone else may have started it while we waited for the lock
        if is_running(paths) and check_answering(paths):
            return
        try:
            _start(paths, ctl, vswitchd_options, timeout)
        except OvsError as exc:
            if str(exc) == NOT_INSTALLED:
                raise
            raise OvsError(f"{exc}: {restart_hint()}") from exc


def _start(paths: OvsPaths, ctl: str, vswitchd_options: Sequence[str], timeout: float) -> None:
    """Start whichever daemon is not running with ovs-ctl (under the start-up lock), then wait
    until the database answers."""
    _drop_stale_pidfiles(paths)
    args = [
        ctl,
        "start",
        "--system-id=random",
        # mlockall pins all of vswitchd's memory: pointless for an emulator on a small VM.
        "--no-mlockall",
        # Recording the hostname runs `hostname -f`, which can hang without DNS.
        "--no-record-hostname",
    ]
    if vswitchd_options:
        args.append("--ovs-vswitchd-options=" + " ".join(vswitchd_options))
    # ovs-ctl prints a harmless "ulimit: error setting limit" in containers; only the exit
    # status and the daemons' presence matter.
    proc = _run(args, timeout=timeout, check=False)
    deadline = time.monotonic() + timeout
    while not is_running(paths):
        if time.monotonic() > deadline:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise OvsError(
                f"Open vSwitch did not start (ovs-ctl exit {proc.returncode}: {' | '.join(tail)}); "
                f"see {paths.logfile('ovs-vswitchd')}"
            )
        time.sleep(0.05)
    # The database may still be replaying its log; one round trip proves it answers.
    vsctl("show", timeout=timeout)


def stop_daemons() -> None:
    """Stop ovsdb-server and ovs-vswitchd (all bridges stop forwarding). Tests use it on a private
    instance; emulab itself never stops the system's OVS, which other software may use."""
    paths = OvsPaths.from_env()
    _run([_ovs_ctl(), "stop"], timeout=30, check=False)
    deadline = time.monotonic() + 10
    while _daemon_alive(paths, "ovsdb-server") or _daemon_alive(paths, "ovs-vswitchd"):
        if time.monotonic() > deadline:
            raise OvsError("Open vSwitch daemons did not stop")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# datapath choice


def _probe_name(kind: str) -> str:
    name = f"{emulab_paths.prefix()}p{kind}{os.getpid() % 100000}"
    assert len(name) <= IFNAME_MAX
    return name


def _probe_bridge(datapath_type: str) -> bool:
    ensure_running()
    name = _probe_name("k" if datapath_type == "system" else "u")
    try:
        proc = vsctl(
            "--may-exist", "add-br", name, "--", "set", "Bridge", name, f"datapath_type={datapath_type}",
            check=False,
        )
        # With no openvswitch kernel module ovs-vsctl exits 0 but prints "Error detected while
        # setting up" and the bridge's own interface never gets its port number.
        if proc.returncode != 0 or "Error detected" in proc.stderr:
            return False
        ofport = vsctl("get", "Interface", name, "ofport", check=False).stdout.strip()
        error = vsctl("get", "Interface", name, "error", check=False).stdout.strip()
        return ofport == str(_OFPP_LOCAL) and error in ("", "[]")
    finally:
        vsctl("--if-exists", "del-br", name, check=False)


def probe_kernel_datapath() -> bool:
    """Can OVS create a bridge on the kernel datapath (datapath_type=system)?"""
    if not _probe_bridge("system"):
        return False
    # The bridge worked; `ovs-dpctl show` talking to the module is the second witness.
    return _run(["ovs-dpctl", "show"], check=False).returncode == 0


def probe_userspace_datapath() -> bool:
    """Can OVS create a bridge on the userspace datapath (datapath_type=netdev)?"""
    return _probe_bridge("netdev")


def datapath_for(kernel_ok: bool) -> str:
    """Mininet's OVSSwitch `datapath` argument: "kernel" when the kernel datapath works, else "user".

    The one place that decides. EMULAB_OVS_DATAPATH=kernel|user overrides the probe.
    """
    forced = os.environ.get(DATAPATH_ENV, "").strip().lower()
    if forced:
        if forced not in ("kernel", "user"):
            raise OvsError(f"{DATAPATH_ENV} must be 'kernel' or 'user', not {forced!r}")
        return forced
    return "kernel" if kernel_ok else "user"


def switch_params(datapath: str, *, reconnect_ms: int = 1000) -> dict[str, object]:
    """Keyword arguments for Mininet's OVSSwitch as emulab wants it.

    fail_mode=secure: when the controller dies, installed flows keep forwarding (standalone would
    flush them and fall back to MAC learning). reconnectms becomes the Controller record's
    max_backoff, so a restarted controller is found again within about a second.
    """
    return {
        "datapath": datapath,
        "protocols": "OpenFlow13",
        "failMode": "secure",
        "reconnectms": reconnect_ms,
    }


# ---------------------------------------------------------------------------------------------
# bridges


def _check_prefix(prefix: str) -> None:
    # An empty prefix would make delete_bridges() remove every bridge on the machine.
    if not prefix:
        raise ValueError("bridge prefix must not be empty")


def list_bridges(prefix: str | None = None) -> list[str]:
    """Names of the bridges whose name starts with `prefix` (the current instance's by default)."""
    prefix = emulab_paths.prefix() if prefix is None else prefix
    _check_prefix(prefix)
    out = vsctl("list-br").stdout
    return sorted(b for b in out.split() if b.startswith(prefix))


def delete_bridges(prefix: str | None = None) -> list[str]:
    """Delete the bridges named with `prefix` (the current instance's by default; never any other)
    and return their names.

    With the userspace datapath a bridge's own interface is a tap device that ovs-vswitchd removes
    with the bridge; the ports' veths belong to whoever created them (Mininet's links).
    """
    bridges = list_bridges(prefix)
    if not bridges:
        return []
    args: list[str] = []
    for br in bridges:
        args += ["--", "--if-exists", "del-br", br]
    vsctl(*args[1:])
    return bridges


def _ovs_json_rows(proc: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    data = json.loads(proc.stdout or "{}")
    headings = data.get("headings", [])
    return [dict(zip(headings, row, strict=False)) for row in data.get("data", [])]


def _uuids(value: object) -> list[str]:
    # OVSDB JSON: ["uuid", "…"] for one reference, ["set", [["uuid", "…"], …]] for several.
    if isinstance(value, list) and value and value[0] == "uuid":
        return [str(value[1])]
    if isinstance(value, list) and value and value[0] == "set":
        return [str(v[1]) for v in value[1]]
    return []


@dataclass(frozen=True)
class ControllerRecord:
    """One row of OVS's Controller table that belongs to a bridge."""

    target: str
    connected: bool
    max_backoff_ms: int | None
    state: str


def controller_records(bridge: str) -> list[ControllerRecord]:
    """The bridge's OpenFlow controller records (target, is_connected, max_backoff, state)."""
    bridge_rows = _ovs_json_rows(
        vsctl("--format=json", "--columns=controller", "find", "Bridge", f"name={bridge}")
    )
    if not bridge_rows:
        raise OvsError(f"no such bridge: {bridge}")
    wanted = set(_uuids(bridge_rows[0].get("controller")))
    if not wanted:
        return []
    rows = _ovs_json_rows(
        vsctl("--format=json", "--columns=_uuid,target,is_connected,max_backoff,status", "list", "Controller")
    )
    records = []
    for row in rows:
        uuid = _uuids(row.get("_uuid"))
        if not uuid or uuid[0] not in wanted:
            continue
        backoff = row.get("max_backoff")
        # OVSDB JSON: a map is ["map", [[key, value], ...]]; an empty optional is ["set", []].
        status = dict(row["status"][1]) if isinstance(row.get("status"), list) else {}
        records.append(
            ControllerRecord(
                target=str(row["target"]),
                connected=row.get("is_connected") is True,
                max_backoff_ms=backoff if isinstance(backoff, int) else None,
                state=str(status.get("state", "")),
            )
        )
    return records


def controller_targets(bridge: str) -> dict[str, bool]:
    """The bridge's controller targets (e.g. "tcp:127.0.0.1:6653") mapped to is_connected."""
    return {r.target: r.connected for r in controller_records(bridge)}


def controller_connected(bridge: str) -> bool:
    """Is the bridge connected to at least one of its OpenFlow controllers?"""
    return any(controller_targets(bridge).values())


def wait_controller_connected(bridges: Sequence[str], timeout: float = 10.0) -> bool:
    """Wait until every bridge is connected to its controller; False on timeout.

    ovs-vswitchd refreshes Controller.is_connected in the database lazily (a fraction of a second
    to about a second after the fact), so poll rather than ask once.
    """
    deadline = time.monotonic() + timeout
    while True:
        if all(controller_connected(b) for b in bridges):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def dump_flows(bridge: str, *, cookie: int | None = None, cookie_mask: int = 0xFFFFFFFFFFFFFFFF) -> list[str]:
    """The bridge's OpenFlow 1.3 flows, one string per flow (as `ovs-ofctl dump-flows` prints them).

    With `cookie`, only flows whose cookie matches under `cookie_mask` (e.g. emulab's controller
    flows: emulab.controller_app.COOKIE / COOKIE_MASK).
    """
    args = ["dump-flows", bridge]
    if cookie is not None:
        args.append(f"cookie={cookie:#x}/{cookie_mask:#x}")
    out = ofctl(*args).stdout
    # The first line is the reply header ("OFPST_FLOW reply (OF1.3) (xid=0x2):").
    return [line.strip() for line in out.splitlines() if line.strip() and "reply" not in line]

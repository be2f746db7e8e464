"""Tests of emulab.ovs: starting the daemons, the datapath choice, and emulab-only bridge cleanup.

The cold-start test runs a private OVS instance (its own run, database and log directories, no
kernel datapath) so it never stops the system's OVS that other tests and users may rely on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emulab import ovs

needs_ovs = pytest.mark.skipif(not ovs.installed(), reason="Open vSwitch is not installed")


def _tag() -> str:
    # Unique per test process, so parallel runs on one machine don't fight over names.
    return f"o{os.getpid() % 10000}"


# ---------------------------------------------------------------------------------------------
# no root needed


def test_datapath_for_follows_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ovs.DATAPATH_ENV, raising=False)
    assert ovs.datapath_for(True) == "kernel"
    assert ovs.datapath_for(False) == "user"


@pytest.mark.parametrize("forced", ["kernel", "user", "USER"])
def test_datapath_env_override(monkeypatch: pytest.MonkeyPatch, forced: str) -> None:
    monkeypatch.setenv(ovs.DATAPATH_ENV, forced)
    assert ovs.datapath_for(True) == forced.lower()
    assert ovs.datapath_for(False) == forced.lower()


def test_datapath_env_rejects_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ovs.DATAPATH_ENV, "dpdk")
    with pytest.raises(ovs.OvsError, match="EMULAB_OVS_DATAPATH"):
        ovs.datapath_for(True)


def test_empty_prefix_is_refused() -> None:
    # delete_bridges("") would otherwise remove every bridge on the machine.
    with pytest.raises(ValueError):
        ovs.delete_bridges("")
    with pytest.raises(ValueError):
        ovs.list_bridges("")


def test_switch_params_are_secure_openflow13() -> None:
    params = ovs.switch_params("user")
    assert params["failMode"] == "secure"
    assert params["protocols"] == "OpenFlow13"
    assert params["datapath"] == "user"
    assert params["reconnectms"] == 1000


def test_missing_ovs_ctl_gives_setup_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ovs, "OVS_CTL_CANDIDATES", (str(tmp_path / "no-ovs-ctl"),))
    monkeypatch.setenv("OVS_RUNDIR", str(tmp_path / "run"))  # nothing runs there
    with pytest.raises(ovs.OvsError, match="run make setup"):
        ovs.ensure_running()


def test_paths_follow_ovs_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OVS_RUNDIR", str(tmp_path / "run"))
    monkeypatch.setenv("OVS_SYSCONFDIR", str(tmp_path / "etc"))
    monkeypatch.setenv("OVS_LOGDIR", str(tmp_path / "log"))
    monkeypatch.delenv("OVS_DBDIR", raising=False)
    paths = ovs.OvsPaths.from_env()
    assert paths.db_sock == tmp_path / "run" / "db.sock"
    assert paths.dbdir == tmp_path / "etc" / "openvswitch"
    assert paths.logfile("ovs-vswitchd") == tmp_path / "log" / "ovs-vswitchd.log"
    assert not ovs.is_running(paths)


# ---------------------------------------------------------------------------------------------
# root: the real daemons


@pytest.fixture
def private_ovs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ovs.OvsPaths]:
    """A private, stopped OVS instance; stopped again (bridges deleted) whatever the test does."""
    for sub in ("run", "etc", "log"):
        (tmp_path / sub).mkdir()
    monkeypatch.setenv("OVS_RUNDIR", str(tmp_path / "run"))
    monkeypatch.setenv("OVS_SYSCONFDIR", str(tmp_path / "etc"))
    monkeypatch.setenv("OVS_LOGDIR", str(tmp_path / "log"))
    monkeypatch.delenv("OVS_DBDIR", raising=False)
    paths = ovs.OvsPaths.from_env()
    try:
        yield paths
    finally:
        if ovs.is_running(paths):
            out = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True)
            for br in out.stdout.split():
                subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", br], check=False)
        ovs.stop_daemons()


@pytest.mark.root
@needs_ovs
def test_ensure_running_from_stopped(private_ovs: ovs.OvsPaths) -> None:
    assert not ovs.is_running(private_ovs)
    t0 = time.monotonic()
    # --disable-system: this private vswitchd must never touch the kernel datapath.
    ovs.ensure_running(vswitchd_options=["--disable-system"])
    cold = time.monotonic() - t0
    assert ovs.is_running(private_ovs)
    assert cold < 20
    # Logs land in OVS's log directory, not in /tmp/*.log (which `mn -c` deletes).
    assert private_ovs.logfile("ovs-vswitchd").exists()
    t0 = time.monotonic()
    ovs.ensure_running()
    assert time.monotonic() - t0 < 0.5


@pytest.mark.root
@needs_ovs
def test_delete_bridges_spares_foreign_bridges(private_ovs: ovs.OvsPaths) -> None:
    ovs.ensure_running(vswitchd_options=["--disable-system"])
    tag = _tag()
    ours = [f"em-{tag}a", f"em-{tag}b"]
    foreign = f"zz-{tag}"
    for br in [*ours, foreign]:
        ovs.vsctl("add-br", br, "--", "set", "Bridge", br, "datapath_type=netdev")
    assert ovs.list_bridges(f"em-{tag}") == sorted(ours)
    assert ovs.delete_bridges(f"em-{tag}") == sorted(ours)
    assert ovs.list_bridges(f"em-{tag}") == []
    assert foreign in ovs.vsctl("list-br").stdout.split()
    # A bridge without controllers is not connected; asking about an unknown bridge is an error.
    assert not ovs.controller_connected(foreign)
    with pytest.raises(ovs.OvsError):
        ovs.controller_connected(f"em-{tag}a")


@pytest.mark.root
@needs_ovs
def test_ensure_running_when_already_running() -> None:
    ovs.ensure_running()  # the system instance: started if CI booted with it stopped
    t0 = time.monotonic()
    ovs.ensure_running()
    assert time.monotonic() - t0 < 0.5
    assert ovs.is_running()


@pytest.mark.root
@needs_ovs
def test_datapath_probes() -> None:
    ovs.ensure_running()
    before = set(ovs.list_bridges())
    assert ovs.probe_userspace_datapath() is True
    kernel_ok = ovs.probe_kernel_datapath()
    if not Path("/sys/module/openvswitch").exists():
        # This project's CI kernel has no openvswitch module: the userspace datapath it is.
        assert kernel_ok is False
        assert ovs.datapath_for(kernel_ok) == "user" or os.environ.get(ovs.DATAPATH_ENV)
    # The throwaway probe bridges are gone again.
    assert set(ovs.list_bridges()) == before


def _wait_until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.01)


def test_zombie_daemon_is_not_running(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A killed daemon stays a zombie until its parent reaps it; its pid file and /proc entry remain.
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("OVS_RUNDIR", str(tmp_path / "run"))
    paths = ovs.OvsPaths.from_env()
    fake = tmp_path / "ovs-vswitchd"  # the kernel names the process after its executable
    fake.write_bytes(Path("/bin/sleep").read_bytes())
    fake.chmod(0o755)
    proc = subprocess.Popen([str(fake), "30"])
    try:
        paths.pidfile("ovs-vswitchd").write_text(f"{proc.pid}\n")
        assert ovs._daemon_alive(paths, "ovs-vswitchd")
        proc.kill()
        _wait_until(lambda: Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z",
                    "the killed child became a zombie")
        assert not ovs._daemon_alive(paths, "ovs-vswitchd")
        ovs._drop_stale_pidfiles(paths)  # so that ovs-ctl starts it again rather than trust the pid
        assert not paths.pidfile("ovs-vswitchd").exists()
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------
# no root: the answer check against stand-in daemons that speak OVS's control protocol

# A stand-in daemon: named like the real one (prctl PR_SET_NAME), its pid file written and locked
# as OVS does (ovs-appctl checks the lock), then its control socket DAEMON.PID.ctl, answering
# `version` as JSON-RPC. MODE "ok" answers at once, "busy" lets the first request go unanswered,
# "hung" never answers, "late" creates its socket a second after its pid file (as ovs-vswitchd does
# while it starts up).
_FAKE_DAEMON = r"""
import ctypes, fcntl, json, os, socket, sys, time
rundir, name, mode = sys.argv[1:4]
ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)
pid = os.getpid()
pidfile = open(os.path.join(rundir, name + ".pid.tmp"), "w")
pidfile.write(f"{pid}\n"); pidfile.flush(); fcntl.lockf(pidfile, fcntl.LOCK_EX)
os.rename(pidfile.name, os.path.join(rundir, name + ".pid"))
if mode == "late":
    time.sleep(1.0)
server = socket.socket(socket.AF_UNIX)
server.bind(os.path.join(rundir, f"{name}.{pid}.ctl"))
server.listen(8)
unanswered, held = {"busy": 1, "hung": 10**9}.get(mode, 0), []
while True:
    conn, _ = server.accept()
    if len(held) < unanswered:
        held.append(conn)
        continue
    data = b""
    while True:
        data += conn.recv(4096)
        try:
            request = json.loads(data)
            break
        except ValueError:
            continue
    conn.sendall(json.dumps({"id": request["id"], "result": name + " (stand-in)", "error": None}).encode())
    conn.close()
"""

needs_appctl = pytest.mark.skipif(shutil.which("ovs-appctl") is None, reason="ovs-appctl is not installed")


@pytest.fixture
def fake_rundir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ovs.OvsPaths, Callable[..., int]]]:
    """An OVS run directory for stand-in daemons, and a function that starts one (name, mode) and
    returns its pid once its pid file is there; they are all killed afterwards."""
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("OVS_RUNDIR", str(tmp_path / "run"))
    paths = ovs.OvsPaths.from_env()
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, mode: str = "ok") -> int:
        proc = subprocess.Popen([sys.executable, "-c", _FAKE_DAEMON, str(paths.rundir), name, mode])
        procs.append(proc)
        _wait_until(lambda: ovs._daemon_pid(paths, name) == proc.pid, f"stand-in {name} wrote its pid file")
        if mode != "late":
            _wait_until(lambda: (paths.rundir / f"{name}.{proc.pid}.ctl").exists(), f"stand-in {name} listens")
        return proc.pid

    try:
        yield paths, start
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()


def _count_asks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record what every `ovs-appctl version` came back with."""
    outcomes: list[tuple[str, str]] = []
    real = ovs._appctl_version

    def asking(daemon: str, timeout: float) -> tuple[str, str]:
        outcomes.append(real(daemon, timeout))
        return outcomes[-1]

    monkeypatch.setattr(ovs, "_appctl_version", asking)
    return outcomes


@needs_appctl
def test_answering_daemons(fake_rundir: tuple[ovs.OvsPaths, Callable[..., int]]) -> None:
    paths, start = fake_rundir
    for daemon in ovs.DAEMONS:
        start(daemon)
    assert ovs.check_answering(paths, timeout=1) is True


@needs_appctl
def test_a_busy_daemon_gets_a_second_chance(fake_rundir: tuple[ovs.OvsPaths, Callable[..., int]],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    paths, start = fake_rundir
    start("ovsdb-server")
    start("ovs-vswitchd", "busy")
    asks = _count_asks(monkeypatch)
    assert ovs.check_answering(paths, timeout=1) is True
    assert [outcome for outcome, _ in asks] == ["ok", "timeout", "ok"]


@needs_appctl
def test_a_daemon_that_times_out_twice_is_hung(fake_rundir: tuple[ovs.OvsPaths, Callable[..., int]],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    paths, start = fake_rundir
    start("ovsdb-server")
    pid = start("ovs-vswitchd", "hung")
    asks = _count_asks(monkeypatch)
    with pytest.raises(ovs.OvsError, match=rf"ovs-vswitchd \(pid {pid}\) is hung: it did not answer .* within 1 s, "
                       rf"twice.*{ovs.ANSWER_TIMEOUT_ENV}=SECONDS.*restart Open vSwitch"):
        ovs.check_answering(paths, timeout=1)
    assert [outcome for outcome, _ in asks] == ["ok", "timeout", "timeout"]


@needs_appctl
def test_a_stopped_daemon_is_hung_after_one_timeout(fake_rundir: tuple[ovs.OvsPaths, Callable[..., int]],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    paths, start = fake_rundir
    pid = start("ovsdb-server")
    start("ovs-vswitchd")
    os.kill(pid, signal.SIGSTOP)
    asks = _count_asks(monkeypatch)
    with pytest.raises(ovs.OvsError, match=rf"ovsdb-server \(pid {pid}\) is hung: its process is stopped \(state T\)"
                       ".*restart Open vSwitch"):
        ovs.check_answering(paths, timeout=1)
    assert [outcome for outcome, _ in asks] == ["timeout"]


@needs_appctl
def test_a_daemon_still_creating_its_socket_is_waited_for(fake_rundir: tuple[ovs.OvsPaths, Callable[..., int]],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    paths, start = fake_rundir
    start("ovsdb-server")
    start("ovs-vswitchd", "late")  # pid file now, control socket a second later
    asks = _count_asks(monkeypatch)
    assert ovs.check_answering(paths, timeout=1) is True
    assert asks[-1][0] == "ok" and "timeout" not in [outcome for outcome, _ in asks]
    assert any("cannot connect" in detail for _, detail in asks), asks


@needs_appctl
def test_a_daemon_gone_while_asked_is_started_again(fake_rundir: tuple[ovs.OvsPaths, Callable[..., int]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    paths, start = fake_rundir
    start("ovsdb-server")
    pid = start("ovs-vswitchd")
    paths.db_sock.touch()
    assert ovs.is_running(paths)
    real = ovs._appctl_version

    def dies_meanwhile(daemon: str, timeout: float) -> tuple[str, str]:
        if daemon == "ovs-vswitchd" and ovs._daemon_alive(paths, daemon):
            os.kill(pid, signal.SIGKILL)
            _wait_until(lambda: not ovs._daemon_alive(paths, daemon), "the killed stand-in is dead")
        return real(daemon, timeout)

    monkeypatch.setattr(ovs, "_appctl_version", dies_meanwhile)
    assert ovs.check_answering(paths, timeout=1) is False
    # ensure_running() takes the start path then, rather than reporting the daemon
    started: list[ovs.OvsPaths] = []
    monkeypatch.setattr(ovs, "installed", lambda: True)
    monkeypatch.setattr(ovs, "_ovs_ctl", lambda: "ovs-ctl")
    monkeypatch.setattr(ovs, "_start", lambda p, *_a: started.append(p))
    ovs.ensure_running()
    assert started == [paths]


def test_a_daemon_that_cannot_be_asked_is_not_called_hung(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("OVS_RUNDIR", str(tmp_path / "run"))
    paths = ovs.OvsPaths.from_env()
    denied = f'ovs-appctl: cannot read pidfile "{paths.pidfile("ovsdb-server")}" (Permission denied)'
    asks: list[str] = []
    monkeypatch.setattr(ovs, "_daemon_state", lambda _p, _d: (4242, "S"))
    monkeypatch.setattr(ovs, "_appctl_version", lambda d, _t: (asks.append(d), ("error", denied))[1])
    with pytest.raises(ovs.OvsError) as err:
        ovs.check_answering(paths, timeout=1)
    msg = str(err.value)
    assert "hung" not in msg and denied in msg and "needs root" in msg and "restart Open vSwitch" in msg
    assert asks == ["ovsdb-server"]  # not a daemon starting up: no retries


def test_answer_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ovs.ANSWER_TIMEOUT_ENV, raising=False)
    assert ovs.answer_timeout() == ovs.ANSWER_TIMEOUT >= 10
    monkeypatch.setenv(ovs.ANSWER_TIMEOUT_ENV, "2.5")
    assert ovs.answer_timeout() == 2.5
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv(ovs.ANSWER_TIMEOUT_ENV, bad)
        with pytest.raises(ovs.OvsError, match=ovs.ANSWER_TIMEOUT_ENV):
            ovs.answer_timeout()


def test_a_failed_start_says_how_to_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run").mkdir()
    monkeypatch.setenv("OVS_RUNDIR", str(tmp_path / "run"))  # nothing runs there
    monkeypatch.setattr(ovs, "installed", lambda: True)
    monkeypatch.setattr(ovs, "_ovs_ctl", lambda: "ovs-ctl")

    def times_out(args: list[str], **kw: object) -> None:
        raise ovs.OvsError(f"{' '.join(args)} timed out after {kw['timeout']:.0f} s")

    monkeypatch.setattr(ovs, "_run", times_out)
    with pytest.raises(ovs.OvsError, match=r"ovs-ctl start .* timed out after 30 s: restart Open vSwitch"):
        ovs.ensure_running()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_control_sockets_go_with_stale_pid_files(fake_rundir: tuple[ovs.OvsPaths, Callable[..., int]]) -> None:
    paths, start = fake_rundir
    live = start("ovsdb-server")
    dead = _dead_pid()
    paths.pidfile("ovs-vswitchd").write_text(f"{dead}\n")
    stale = [paths.rundir / f"ovs-vswitchd.{dead}.ctl", paths.rundir / f"ovsdb-server.{dead}.ctl"]
    for ctl in stale:
        ctl.touch()
    ovs._drop_stale_pidfiles(paths)
    assert not paths.pidfile("ovs-vswitchd").exists() and not any(c.exists() for c in stale)
    assert paths.pidfile("ovsdb-server").exists() and (paths.rundir / f"ovsdb-server.{live}.ctl").exists()


def test_installed_needs_ovs_appctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctl = tmp_path / "ovs-ctl"
    ctl.write_text("#!/bin/sh\n")
    ctl.chmod(0o755)
    monkeypatch.setattr(ovs, "OVS_CTL_CANDIDATES", (str(ctl),))
    missing: set[str] = set()
    monkeypatch.setattr(ovs.shutil, "which", lambda b: None if b in missing else f"/usr/bin/{b}")
    assert ovs.installed()
    missing.add("ovs-appctl")
    assert not ovs.installed()


# ---------------------------------------------------------------------------------------------
# no root: `emulab clean` and a broken Open vSwitch


def test_clean_asks_ovs_vswitchd_only_with_bridges_to_remove(monkeypatch: pytest.MonkeyPatch) -> None:
    from emulab import cleanup

    bridges: list[str] = []
    calls: list[str] = []
    monkeypatch.setattr(ovs, "installed", lambda: True)
    monkeypatch.setattr(ovs, "is_running", lambda: True)
    monkeypatch.setattr(ovs, "ensure_running", lambda: calls.append("ensure_running"))
    monkeypatch.setattr(ovs, "list_bridges", lambda _prefix: list(bridges))
    monkeypatch.setattr(ovs, "check_answering", lambda: calls.append("check_answering") or True)
    monkeypatch.setattr(ovs, "delete_bridges", lambda _prefix: calls.append("delete_bridges") or list(bridges))
    monkeypatch.setattr(ovs, "vsctl", lambda *_a, **_k: subprocess.CompletedProcess([], 0, "netdev\n", ""))
    removed: list[str] = []
    assert cleanup._clean_bridges(removed, "default") is None
    assert "check_answering" not in calls and "ensure_running" not in calls and removed == []
    bridges.append("em-s1")
    calls.clear()
    assert cleanup._clean_bridges(removed, "default") is None
    assert calls == ["check_answering", "delete_bridges"] and removed == ["OVS bridge em-s1"]
    # a daemon that died since is started again before the bridges go
    monkeypatch.setattr(ovs, "check_answering", lambda: calls.append("check_answering") and False)
    calls.clear()
    assert cleanup._clean_bridges(removed, "default") is None
    assert calls == ["check_answering", "ensure_running", "delete_bridges"]
    # a hung ovsdb-server (ovs-vsctl times out) is reported with the fix too

    def times_out(_prefix: str) -> list[str]:
        raise ovs.OvsError("ovs-vsctl --timeout=10 list-br timed out after 15 s")

    monkeypatch.setattr(ovs, "list_bridges", times_out)
    problem = cleanup._clean_bridges(removed, "default")
    assert problem is not None and "timed out after 15 s: restart Open vSwitch" in problem


def test_clean_all_carries_on_past_a_failed_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from emulab import cleanup, instances
    from emulab.cli import main
    from emulab.errors import EmulabError

    cleaned: list[str] = []

    def clean(name: str) -> list[str]:
        cleaned.append(name)
        if name == "a":
            raise cleanup.CleanError("Open vSwitch is not usable: ovs-vswitchd is hung", {"a": ["link em-a1"]})
        if name == "b":
            raise EmulabError("no permission")
        return ["process 1 (runner)"]

    monkeypatch.setattr(instances, "on_host", lambda: ["a", "b", "c"])
    monkeypatch.setattr(cleanup, "clean", clean)
    with pytest.raises(cleanup.CleanError) as err:
        cleanup.clean_all()
    assert cleaned == ["a", "b", "c"]
    assert err.value.removed == {"a": ["link em-a1"], "b": [], "c": ["process 1 (runner)"]}
    assert "[a] Open vSwitch is not usable" in str(err.value) and "[b] no permission" in str(err.value)
    # the command says what went before it fails
    res = CliRunner().invoke(main, ["clean", "--all"])
    assert res.exit_code == 2
    assert "[a] removed link em-a1" in res.output and "[c] removed process 1 (runner)" in res.output
    assert "2 instance(s) not cleaned completely" in res.output


# ---------------------------------------------------------------------------------------------
# root: broken real daemons (a private instance)


@pytest.mark.root
@needs_ovs
def test_killed_vswitchd_is_started_again(private_ovs: ovs.OvsPaths) -> None:
    ovs.ensure_running(vswitchd_options=["--disable-system"])
    old = int(private_ovs.pidfile("ovs-vswitchd").read_text())
    stale_ctl = private_ovs.rundir / f"ovs-vswitchd.{old}.ctl"
    assert stale_ctl.exists()
    os.kill(old, signal.SIGKILL)
    # SIGKILL takes effect asynchronously
    _wait_until(lambda: not ovs._daemon_alive(private_ovs, "ovs-vswitchd"), "the killed ovs-vswitchd is gone")
    t0 = time.monotonic()
    ovs.ensure_running(vswitchd_options=["--disable-system"])
    assert time.monotonic() - t0 < 20
    assert ovs.is_running(private_ovs)
    assert int(private_ovs.pidfile("ovs-vswitchd").read_text()) != old
    assert not stale_ctl.exists()
    assert ovs.check_answering(private_ovs)


@pytest.mark.root
@needs_ovs
@pytest.mark.parametrize("daemon", ovs.DAEMONS)
def test_stopped_daemon_fails_fast_with_the_fix(private_ovs: ovs.OvsPaths, daemon: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ovs.ensure_running(vswitchd_options=["--disable-system"])
    pid = int(private_ovs.pidfile(daemon).read_text())
    monkeypatch.setenv(ovs.ANSWER_TIMEOUT_ENV, "2")
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(ovs.OvsError, match=rf"{daemon} \(pid {pid}\) is hung: its process is stopped"
                           ".*restart Open vSwitch"):
            ovs.ensure_running()
        assert time.monotonic() - t0 < 2 + 3  # one timeout: a stopped daemon gets no second chance
    finally:
        os.kill(pid, signal.SIGCONT)
    assert ovs.check_answering(private_ovs)

"""Tests of emulab.ovs: starting the daemons, the datapath choice, and emulab-only bridge cleanup.

The cold-start test runs a private OVS instance (its own run, database and log directories, no
kernel datapath) so it never stops the system's OVS that other tests and users may rely on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
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
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the killed child never became a zombie"
            time.sleep(0.01)
        assert not ovs._daemon_alive(paths, "ovs-vswitchd")
        ovs._drop_stale_pidfiles(paths)  # so that ovs-ctl starts it again rather than trust the pid
        assert not paths.pidfile("ovs-vswitchd").exists()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.root
@needs_ovs
def test_killed_vswitchd_is_started_again(private_ovs: ovs.OvsPaths) -> None:
    ovs.ensure_running(vswitchd_options=["--disable-system"])
    old = int(private_ovs.pidfile("ovs-vswitchd").read_text())
    os.kill(old, signal.SIGKILL)
    while ovs._daemon_alive(private_ovs, "ovs-vswitchd"):  # SIGKILL takes effect asynchronously
        time.sleep(0.01)
    t0 = time.monotonic()
    ovs.ensure_running(vswitchd_options=["--disable-system"])
    assert time.monotonic() - t0 < 20
    assert ovs.is_running(private_ovs)
    assert int(private_ovs.pidfile("ovs-vswitchd").read_text()) != old
    ovs.check_answering(private_ovs)


@pytest.mark.root
@needs_ovs
@pytest.mark.parametrize("daemon", ovs.DAEMONS)
def test_hung_daemon_fails_fast_with_the_fix(private_ovs: ovs.OvsPaths, daemon: str) -> None:
    ovs.ensure_running(vswitchd_options=["--disable-system"])
    pid = int(private_ovs.pidfile(daemon).read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(ovs.OvsError, match=rf"{daemon} \(pid {pid}\) does not answer.*restart Open vSwitch"):
            ovs.ensure_running()
        assert time.monotonic() - t0 < ovs.ANSWER_TIMEOUT + 3
    finally:
        os.kill(pid, signal.SIGCONT)
    ovs.check_answering(private_ovs)

"""Tests of testbed instances without building one: naming per instance (the default's names unchanged),
refused instance names, the run marker, `emulab clean`'s process scoping and the dashboard's port."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from emulab import paths
from emulab.cleanup import marked_processes, process_markers
from emulab.dashboard.launch import DEFAULT_PORT, choose_port
from emulab.topology import load

from helpers.testbed import run_emulab


@pytest.fixture
def instance(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - a setter
    monkeypatch.delenv(paths.INSTANCE_ENV, raising=False)
    monkeypatch.delenv(paths.RUN_DIR_ENV, raising=False)

    def use(name: str | None) -> None:
        if name is None:
            monkeypatch.delenv(paths.INSTANCE_ENV, raising=False)
        else:
            monkeypatch.setenv(paths.INSTANCE_ENV, name)
    return use


@pytest.mark.parametrize("value", [None, "", "default"])
def test_default_instance_keeps_todays_names(instance, value: str | None) -> None:
    instance(value)
    assert paths.instance() == "default" and paths.is_default()
    assert paths.prefix() == paths.PREFIX == "em-"
    assert paths.run_dir() == Path("/run/emulab")
    assert paths.state_file() == Path("/run/emulab/state.json")
    assert paths.control_socket() == Path("/run/emulab/control.sock")
    assert paths.shaper_socket() == Path("/run/emulab/shaper.sock")
    assert paths.log_dir() == Path("/run/emulab/logs")
    assert paths.shaper_netns() == "emulab-shaper"
    assert paths.probe_netns_prefix() == "emulab-probe-"
    assert paths.netns_name("ue") == "em-ue"
    assert paths.run_marker("abc") == "abc"
    assert paths.dpid_base() == 0xE0000000
    spec = load("paper-topology")
    assert spec.switches["sgi"].bridge == "em-sgi"
    assert all(e.intf.startswith("em-sgi-") for e in spec.interfaces("sgi"))


def test_instance_names(instance) -> None:
    instance("7")
    assert paths.instance() == "7" and not paths.is_default()
    assert paths.prefix() == "e07"
    assert paths.run_dir() == Path("/run/emulab-7")
    assert paths.shaper_socket() == Path("/run/emulab-7/shaper.sock")
    assert paths.shaper_netns() == "emulab7-shaper"
    assert paths.probe_netns_prefix() == "emulab7-probe-"
    assert paths.netns_name("ue") == "e07ue"
    spec = load("paper-topology")
    assert spec.switches["sgi"].bridge == "e07sgi"
    assert [e.intf for e in spec.interfaces("sgi")] == [f"e07sgi-{k}" for k in range(1, 6)]
    # another instance's names on demand, whatever the current one is
    assert paths.prefix("default") == "em-" and paths.prefix("42") == "e42"
    assert paths.run_dir("default") == Path("/run/emulab") and paths.run_dir("42") == Path("/run/emulab-42")


def test_every_prefix_fits_the_longest_port_name() -> None:
    # "<prefix><switch of 8>-<port of 3>" must fit IFNAMSIZ - 1 in every instance
    for n in ["default", *map(str, range(1, paths.INSTANCE_MAX + 1))]:
        assert len(f"{paths.prefix(n)}{'s' * 8}-999") == 15


def test_names_of_instances_never_overlap() -> None:
    names = ["default", *map(str, range(1, paths.INSTANCE_MAX + 1))]
    for a in names:
        for b in names:
            if a == b:
                continue
            # a's cleanup matches by prefix: none of b's names may start with a's prefixes
            for theirs in (f"{paths.prefix(b)}ue", f"{paths.prefix(b)}sgi-1", paths.shaper_netns(b),
                           f"{paths.probe_netns_prefix(b)}12-abcdef"):
                assert not theirs.startswith(paths.prefix(a)), (a, theirs)
                assert paths.instance_of_netns(theirs) != a, (a, theirs)
        assert paths.instance_of_prefixed(f"{paths.prefix(a)}sgi-1") == a
        assert paths.instance_of_netns(paths.shaper_netns(a)) == a
        assert paths.instance_of_netns(f"{paths.probe_netns_prefix(a)}1-abcdef") == a
        assert paths.instance_of_netns(paths.netns_name("ue") if a == "default" else f"{paths.prefix(a)}ue") == a
        assert paths.marker_instance(paths.run_marker("r1", a)) == a
    bases = [paths.dpid_base(n) for n in names]
    assert len(set(bases)) == len(bases) and max(bases) + 0xFFFF < 2**32
    # the host's own interfaces are nobody's
    for host in ("eth0", "enp3s0", "eno1", "ens33", "em1", "emsh1a", "lo", "docker0"):
        assert paths.instance_of_prefixed(host) is None, host
    # nor are other software's namespaces, or names emulab never makes
    for ns in ("netns1", "cni-1234", "emulab07-shaper", "emulab100-shaper", "emulab-shaperx", "emulabx-probe-1"):
        assert paths.instance_of_netns(ns) is None, ns


def test_run_dir_override_is_the_current_instances_only(instance, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    instance("3")
    monkeypatch.setenv(paths.RUN_DIR_ENV, str(tmp_path))
    assert paths.run_dir() == tmp_path and paths.run_dir("3") == tmp_path
    assert paths.run_dir("4") == Path("/run/emulab-4") and paths.run_dir("default") == Path("/run/emulab")


@pytest.mark.parametrize("bad", ["0", "07", "100", "a", "w1", "-1", "1a", " 1", "1 ", "default2", "../x"])
def test_bad_instance_names_are_refused(bad: str) -> None:
    with pytest.raises(paths.InstanceError, match="number from 1 to 99"):
        paths.check_instance(bad)


@pytest.mark.parametrize("how", ["option", "environment"])
def test_cli_refuses_a_bad_instance_clearly(how: str) -> None:
    if how == "option":
        r = run_emulab("--instance", "07", "status", timeout=60)
    else:
        env = {**os.environ, paths.INSTANCE_ENV: "lab-a"}
        r = subprocess.run([*run_emulab.__globals__["EMULAB"], "status"], capture_output=True, text=True,
                           timeout=60, env=env)
    assert r.returncode == 2
    assert "invalid emulab instance name" in r.stderr and "number from 1 to 99" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_instance_reaches_the_commands() -> None:
    # an instance nothing runs in: status says so, about that instance's run directory
    r = run_emulab("--instance", "98", "status", timeout=60)
    assert r.returncode == 2 and "no testbed is running" in r.stderr


def _sleeper(marker: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], env={**os.environ, paths.RUN_ENV: marker})


def test_marked_processes_are_per_instance() -> None:
    ours = {"default": _sleeper(f"t{os.getpid()}"), "7": _sleeper(f"t{os.getpid()}@7"),
            "8": _sleeper(f"t{os.getpid()}@8")}
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
                not Path(f"/proc/{p.pid}/environ").read_bytes() for p in ours.values()):
            time.sleep(0.01)  # environ is readable once exec is done
        for name, proc in ours.items():
            found = {pid for pid, _ in marked_processes(instance=name)}
            assert proc.pid in found, name
            assert not {p.pid for n, p in ours.items() if n != name} & found, name
        every = {pid for pid, _ in marked_processes(every_instance=True)}
        assert {p.pid for p in ours.values()} <= every
        exact = {pid for pid, _ in marked_processes(f"t{os.getpid()}@7", instance="7")}
        assert exact == {ours["7"].pid}
        values = {pid: value for pid, value, _ in process_markers()}
        assert {name: values.get(p.pid) for name, p in ours.items()} == {
            "default": f"t{os.getpid()}", "7": f"t{os.getpid()}@7", "8": f"t{os.getpid()}@8"}
    finally:
        for proc in ours.values():
            proc.kill()
            proc.wait()


def test_dashboard_port_moves_off_a_taken_default() -> None:
    with socket.socket() as default, socket.socket() as named:
        try:
            default.bind(("127.0.0.1", DEFAULT_PORT))
            default.listen()
        except OSError:
            pass  # taken already (someone's dashboard): the same situation
        port = choose_port("127.0.0.1", DEFAULT_PORT)
        assert port != DEFAULT_PORT and port > 0
        # a port the user named is kept, even when taken (the dashboard then reports the clash)
        named.bind(("127.0.0.1", 0))
        named.listen()
        taken = named.getsockname()[1]
        assert choose_port("127.0.0.1", taken) == taken

"""Start-up without a testbed: the phase record, what a failed start says, the runner's failure
reasons, the detached start's timeout, the service launcher, and the start-up benchmark's topologies."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from pathlib import Path

import pytest

from emulab import network, runner
from emulab.errors import StartError
from emulab.network import StartPhases
from emulab.topology import load

ROOT = Path(__file__).resolve().parents[2]


def test_phases_record_order_duration_and_the_failing_one():
    phases = StartPhases()
    with phases("links"):
        time.sleep(0.02)
    assert phases.current is None
    with pytest.raises(RuntimeError), phases("switches"):
        assert phases.current == "switches"
        raise RuntimeError("boom")
    assert phases.current == "switches"  # what a failed start reports
    names = [p["phase"] for p in phases.as_list()]
    assert names == ["links", "switches"]
    assert phases.as_list()[0]["s"] >= 0.02


def test_a_failed_start_names_the_phase_and_the_cause_and_tears_down(monkeypatch):
    from emulab.capabilities import Capabilities

    stopped = []
    spec = load("small")
    tb = network.Testbed(spec, Capabilities(), services=False)

    def failing_start(self: network.Testbed) -> None:
        with self.phases("namespaces"):
            pass
        with self.phases("addresses/routes"):
            raise OSError("File exists")

    monkeypatch.setattr(network.Testbed, "_start", failing_start)
    monkeypatch.setattr(network.Testbed, "stop", lambda self: stopped.append(True))
    with pytest.raises(StartError) as err:
        tb.start()
    assert "phase addresses/routes" in str(err.value) and "File exists" in str(err.value)
    assert stopped == [True]


def test_failure_reason_prefers_the_runners_own_line(tmp_path):
    log = tmp_path / "runner.log"
    log.write_text("emulab: probing kernel capabilities\n"
                   "emulab: error: small: start failed in phase links: cannot create veth\n")
    assert runner._failure_reason(2, log) == "small: start failed in phase links: cannot create veth"
    log.write_text("emulab: probing kernel capabilities\nTraceback (most recent call last):\nMemoryError\n")
    reason = runner._failure_reason(-9, log)
    assert "killed by signal 9" in reason and "MemoryError" in reason and str(log) in reason


def test_detached_start_timeout_grows_with_the_topology():
    assert runner.default_timeout(15) >= 60
    assert runner.default_timeout(1000) >= 300  # 1,000 nodes on a busy machine are not a failure


@pytest.mark.root  # setns needs CAP_SYS_ADMIN, even into one's own namespace
def test_launcher_forks_services_that_are_our_children(tmp_path):
    from emulab.controller import free_tcp_port
    from emulab.services import READY_LINES, Launcher

    port, enrp = free_tcp_port(), free_tcp_port()
    launcher = Launcher()
    procs = []
    try:
        log = tmp_path / "reg.log"
        reg = launcher.spawn("/proc/self/ns/net", ["registrar", "--listen", f"127.0.0.1:{port}",
                                                   "--enrp-listen", f"127.0.0.1:{enrp}"], log, append=False)
        procs.append(reg)
        pe_log = tmp_path / "pe.log"
        deadline = time.monotonic() + 30
        while READY_LINES["registrar"] not in log.read_bytes():
            assert reg.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        pe_logs = [tmp_path / "pe1.log", tmp_path / "pe2.log"]
        pes = [launcher.spawn("/proc/self/ns/net", ["pe", "--registrar", f"127.0.0.1:{port}", "--pool", "P",
                                                    "--service", "echo"], p, append=False) for p in pe_logs]
        procs += pes
        for pe, pe_log in zip(pes, pe_logs, strict=True):
            while True:
                with contextlib.suppress(OSError):
                    if READY_LINES["pe"] in pe_log.read_bytes():
                        break
                assert pe.poll() is None, pe_log.read_text()
                assert time.monotonic() < deadline
                time.sleep(0.02)
            # re-parented to this process: poll/wait/terminate work as for a child of our own
            ppid = int(Path(f"/proc/{pe.pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            assert ppid == os.getpid()
        # forked from one process, yet each drew its own identifier
        ids = [next(ln.split()[1] for ln in p.read_text().splitlines() if ln.startswith("PE $")) for p in pe_logs]
        assert ids[0] != ids[1]
    finally:
        launcher.close()
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
    assert all(p.returncode is not None for p in procs)


def _bench():
    spec = importlib.util.spec_from_file_location("startup_bench", ROOT / "benchmarks" / "startup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("nodes", [10, 50, 1000])
def test_generated_topologies_have_the_asked_size_and_route(tmp_path, nodes):
    bench = _bench()
    spec = load(str(bench.generate(nodes, tmp_path)))
    assert len(spec.nodes) == nodes
    assert all(len(spec.links_of(sw)) <= bench.HOSTS_PER_SWITCH + 1 for sw in spec.switches)
    routes = spec.routes()
    assert all(routes.get(n) for n in spec.nodes if n != "r0" and len(spec.switches) > 1)


def test_benchmark_median_phases_follow_the_first_runs_order():
    bench = _bench()
    runs = [[{"phase": "links", "s": 0.5}, {"phase": "services/registration", "s": 1.0}],
            [{"phase": "links", "s": 0.3}, {"phase": "services/registration", "s": 0.8}],
            [{"phase": "links", "s": 0.4}, {"phase": "services/registration", "s": 2.0}]]
    assert bench.median_phases(runs) == [{"phase": "links", "s": 0.4}, {"phase": "services/registration", "s": 1.0}]


def test_veth_batch_lines_make_end_one_up_with_its_namespace_and_mac():
    from emulab.links import VethPair

    line = VethPair("eth0", "em-sgi-1", pid1=41, pid2=42, mac1="02:e1:00:00:01:01").batch_line()
    assert line == ("link add name eth0 address 02:e1:00:00:01:01 netns 41 up "
                    "type veth peer name em-sgi-1 netns 42")
    # the peer end is never created up: the kernel refuses IFF_UP there (ENOTCONN)
    assert VethPair("emsh1a", "eth1", pid2=7).batch_line() == "link add name emsh1a up type veth peer name eth1 netns 7"


def test_a_failed_veth_batch_names_the_line_that_failed(monkeypatch):
    import subprocess

    from emulab import links

    seen = {}

    def fake_run(cmd, input, capture_output, text):  # noqa: A002 - subprocess.run's name
        seen["cmd"], seen["input"] = cmd, input
        return subprocess.CompletedProcess(cmd, 1, "", 'RTNETLINK answers: File exists\nCommand failed -:2\n')

    monkeypatch.setattr(links.subprocess, "run", fake_run)
    pairs = [links.VethPair("a0", "b0", pid2=1), links.VethPair("a1", "b1", pid2=1)]
    with pytest.raises(links.LinkError, match=r"in namespace ns1 \(link add name a1 .*File exists"):
        links.make_veth_pairs(pairs, netns="ns1", extra=["link set x up"])
    assert seen["cmd"] == ["ip", "-n", "ns1", "-batch", "-"]
    assert seen["input"].splitlines()[-1] == "link set x up"


def test_free_shaper_indexes_skip_the_ones_in_use():
    from emulab.links import _free_indexes

    class Link:
        def __init__(self, name):
            self.name = name

        def get_attr(self, _key):
            return self.name

    class Ipr:
        def get_links(self):
            return [Link(n) for n in ("lo", "emsh1a", "emsh1b", "emsh3a", "emsh3b", "emsh3x")]

    assert _free_indexes(Ipr(), 3) == [2, 4, 5]


def test_point_to_point_links_get_fixed_macs_and_each_end_the_others_neighbour_entry():
    from emulab.capabilities import Capabilities

    spec = load("paper-topology")
    tb = network.Testbed(spec, Capabilities(), services=False)
    macs = tb.p2p_macs()
    wan = spec.link("nornet-oslo--pmc-haikou")
    assert wan.name in macs and "sgi" not in " ".join(macs)  # links to a switch keep ARP
    assert len({m for pair in macs.values() for m in pair}) == 2 * len(macs)
    node = spec.nodes["pmc-haikou"]
    script = tb._node_script(node, list(spec.links_of("pmc-haikou")), spec.routes(), macs)
    oslo = wan.end_of("nornet-oslo")
    assert f"neigh replace {oslo.address.ip} lladdr {macs[wan.name][0]} dev eth0 nud permanent" in script
    assert "link set lo up" in script and "link set eth0 up" in script


def test_pool_elements_farthest_from_their_registrar_are_started_first(monkeypatch):
    from emulab.capabilities import Capabilities
    from emulab.services import ServiceManager

    spec = load("paper-topology")
    tb = network.Testbed(spec, Capabilities(), services=True)
    svc = ServiceManager(tb)
    spawned = []
    monkeypatch.setattr(svc, "spawn", lambda node, kind, cmd, append: spawned.append((node, kind)) or object())
    monkeypatch.setattr(svc, "wait_up", lambda procs, deadline: None)
    assert svc.start() == 10
    kinds = [k for _, k in spawned]
    assert kinds == sorted(kinds, key=lambda k: k != "registrar")  # registrars first, then every element
    pes = [n for n, k in spawned if k == "pe"]
    assert pes[0] == "pmc-haikou" and pes[-1] in ("ue", "mec-pe1", "mec-pe2")


def test_a_pool_element_backs_off_from_a_refused_start_and_waits_fully_otherwise():
    from rserpool.pe import PEConfig, PoolElement

    pe = PoolElement(PEConfig(b"P", retry_delay=1.0, start_retry_delay=0.05))
    assert [pe._retry_delay(refused=True) for _ in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    fresh = PoolElement(PEConfig(b"P", retry_delay=1.0, start_retry_delay=0.05))
    assert fresh._retry_delay(refused=False) == 1.0  # unreachable or timed out: no fast retry
    fresh.stats["registrations"] = 1  # registered once: a later outage waits the full delay
    assert fresh._retry_delay(refused=True) == 1.0


def test_a_refused_start_warns_once_after_the_quick_retries(caplog):
    """The quick retries (up to half the retry delay) are quiet; the next refusal warns, once."""
    import asyncio
    import logging

    from rserpool import pe as pe_mod
    from rserpool.session import NoRegistrarError

    element = pe_mod.PoolElement(pe_mod.PEConfig(b"P", retry_delay=0.04, start_retry_delay=0.005))
    tries = []

    async def refuse(*_args, **_kwargs):
        tries.append(time.monotonic())
        if len(tries) >= 6:
            element._stopping = True
        raise NoRegistrarError("no registrar reachable (127.0.0.1:1: refused)", refused=True)

    caplog.set_level(logging.DEBUG, logger=pe_mod.log.name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pe_mod.RegistrarChannel, "connect_any", refuse)
        asyncio.run(element._registrar_loop())
    levels = [r.levelno for r in caplog.records if "retrying" in r.getMessage()]
    # pauses 5, 10 ms (quiet: below half of 40 ms), then 20 ms: the third refusal warns, later ones not
    assert levels[:2] == [logging.DEBUG] * 2 and levels[2] == logging.WARNING, levels
    assert levels.count(logging.WARNING) == 1, levels
    assert tries[-1] - tries[0] >= 0.005 + 0.01 + 0.02 + 0.04 + 0.04


def test_the_runner_says_ready_on_the_pipe_it_was_given_and_closes_it(monkeypatch):
    r, w = os.pipe()
    monkeypatch.setenv(runner.READY_FD_ENV, str(w))
    fd = runner._ready_fd()
    assert fd == w and not os.get_inheritable(w)  # never passed on to the testbed's processes
    assert runner.READY_FD_ENV not in os.environ
    monkeypatch.setattr(runner, "_READY_FD", [fd])
    runner._say_ready()
    runner._say_ready()  # once only
    assert os.read(r, 64) == b"ready\n" and os.read(r, 64) == b""  # then end of file
    os.close(r)


EARLY_TOPOLOGY = """\
name: early-start
sites:
  lab: {}
nodes:
  a:
    role: host
    site: lab
    services:
      - {kind: registrar, options: {peers: [b]}}
      - {kind: pe, options: {pool: P, registrar: a}}
  b:
    role: router
    site: lab
    services:
      - {kind: registrar, options: {peers: [a, c]}}
  c:
    role: router
    site: lab
    services:
      - {kind: registrar}
  f:
    role: host
    site: lab
    services:
      - {kind: pe, options: {pool: P, registrar: c}}
  g:
    role: host
    site: lab
    services:
      - {kind: pe, options: {pool: P, registrar: c}}
      - {kind: pe, options: {pool: P, registrar: a}}
switches:
  s1: {site: lab, subnet: 10.0.0.0/24}
links:
  - {ends: [a, b], subnet: 10.9.0.0/30}
  - ends: [b, s1]
  - ends: [c, s1]
  - ends: [f, s1]
  - {ends: [c, g], subnet: 10.9.1.0/30}
"""


def test_what_needs_no_switch_or_radio_is_spawned_early_and_waited_for_with_the_rest(monkeypatch, tmp_path):
    """Early: registrar c (no peers) and g's element of c (over a point-to-point link). Not early:
    b, whose peer c is across the switch; a, whose peer b starts late (it would refuse a's first
    connect); the elements of a late registrar or across the switch, among them g's second one
    (a node with two elements, one early and one not, starts both)."""
    from emulab.capabilities import Capabilities
    from emulab.services import ServiceManager

    path = tmp_path / "early.yaml"
    path.write_text(EARLY_TOPOLOGY)
    spec = load(str(path))
    tb = network.Testbed(spec, Capabilities(), services=True)
    svc = ServiceManager(tb)
    spawned, waited = [], []
    monkeypatch.setattr(svc, "spawn", lambda node, kind, cmd, append: spawned.append((node, kind, cmd)) or object())
    monkeypatch.setattr(svc, "wait_up", lambda procs, deadline: waited.append([(n, k) for n, k, _ in procs]))
    early = svc.start_early()
    assert [(n, k) for n, k, _ in spawned] == [("c", "registrar"), ("g", "pe")]
    assert spawned[1][2][spawned[1][2].index("--registrar") + 1].startswith(str(spec.primary_address("c")))
    assert svc.start(early=early) == 7
    late = spawned[2:]
    assert [(n, k) for n, k, _ in late[:2]] == [("a", "registrar"), ("b", "registrar")]  # registrars first
    assert sorted((n, k) for n, k, _ in late[2:]) == [("a", "pe"), ("f", "pe"), ("g", "pe")]
    g_late = next(cmd for n, _, cmd in late if n == "g")
    assert g_late[g_late.index("--registrar") + 1].startswith(str(spec.primary_address("a")))
    assert sorted(waited[0]) == sorted((n, k) for n, k, _ in spawned)


def test_no_registrar_of_the_paper_topology_starts_before_the_network_is_up():
    """Every registrar's ENRP peers are reached only through the SGi switch (or the radio): started
    early, their first connects would be lost and peering complete only after a retransmission."""
    from emulab.capabilities import Capabilities
    from emulab.services import ServiceManager

    tb = network.Testbed(load("paper-topology"), Capabilities(), services=True)
    assert ServiceManager(tb).early_services() == []


@pytest.mark.parametrize("backend", ["netem", "shaper"])
def test_every_switch_end_of_the_switch_chain_is_brought_up(monkeypatch, backend):
    """A switch's interfaces are brought up by nobody but the interface batch: end 1 of a plain pair
    is created up, and a switch's end 2 (a link between two switches) or its end of a shaped link is
    set up by the batch's extra lines. The nodes' ends are left to their own configuration."""
    from types import SimpleNamespace

    from emulab import links
    from emulab.capabilities import Capabilities

    spec = load(str(ROOT / "tests" / "emulab" / "data" / "good-switch-chain.yaml"))
    tb = network.Testbed(spec, Capabilities(), services=False)
    tb.__dict__["link_backend"] = backend
    tb.shaper = SimpleNamespace(netns="emulab-shaper-test")
    pids = {name: 100 + i for i, name in enumerate([*spec.nodes, *(s.bridge for s in spec.switches.values())])}
    tb.net = SimpleNamespace(get=lambda name: SimpleNamespace(pid=pids[name]))
    calls = []
    monkeypatch.setattr(links, "make_veth_pairs",
                        lambda pairs, netns=None, extra=(): calls.append((netns, list(pairs), list(extra))))
    monkeypatch.setattr(links, "free_shaper_indexes", lambda netns, count: list(range(1, count + 1)))
    middles = tb._make_interfaces()
    made_up = set()  # (interface, pid) created up, or set up by an extra line of the root batch
    for netns, pairs, extra in calls:
        for p in pairs:
            made_up.add((p.name1, p.pid1))
        if netns is None:
            made_up |= {(line.split()[2], "root") for line in extra}
        else:
            assert not extra
    switch_ends = [end for link in spec.links for end in link.ends if end.node in spec.switches]
    assert len(switch_ends) == 5  # s1's two ports, s2's three
    for end in switch_ends:
        # a switch's ports live in the namespace its shell runs in (the root one): created there
        # up, or set up there by the root batch
        assert (end.intf, pids[spec.switches[end.node].bridge]) in made_up or (end.intf, "root") in made_up, end
    chain = next(lk for lk in spec.links if {lk.a.node, lk.b.node} == {"s1", "s2"})
    plain_root = next(extra for netns, _, extra in calls if netns is None)
    assert sum(f"link set {e.intf} up" in plain_root for e in chain.ends) == 1  # end 2 only; end 1 is made up
    shaped = {lk.name for lk in spec.links if links.needs_hop(backend, lk.params, lk.radio)}
    assert set(middles) == shaped and (backend == "netem") == (not shaped)


def test_a_failed_address_step_waits_for_every_host_and_names_each_failure():
    """A host whose configuration fails must not leave the others of its window with a command
    outstanding (Mininet's teardown would then assert in sendCmd): all are waited for, then the
    error names every failed host."""
    from types import SimpleNamespace

    from emulab.capabilities import Capabilities

    spec = load("paper-topology")
    tb = network.Testbed(spec, Capabilities(), services=False)
    tb.datapath = "kernel"
    failing = {"ue": "RTNETLINK answers: File exists", "pmc-haikou": "Error: Nexthop has invalid gateway."}
    dead = "enb"

    class Shell:
        def __init__(self, name):
            self.name, self.waiting, self.sent = name, False, None

        def sendCmd(self, cmd):  # noqa: N802 - Mininet's name
            assert not self.waiting  # as Mininet's own assert
            self.sent, self.waiting = cmd, True

        def waitOutput(self):  # noqa: N802 - Mininet's name
            assert self.waiting
            if self.name == dead:
                raise OSError(5, "Input/output error")
            self.waiting = False
            if self.name in failing:
                return f"{failing[self.name]}\n{network._CONFIG_FAILED}\n"
            return ""

    shells = {name: Shell(name) for name in spec.nodes}
    tb.net = SimpleNamespace(get=shells.__getitem__)
    with pytest.raises(StartError) as err:
        tb._configure_ip()
    assert all(s.sent and not s.waiting for s in shells.values())  # every host asked, and answered
    msg = str(err.value)
    assert all(f"{name}: {detail}" in msg for name, detail in failing.items()), msg
    assert f"{dead}: OSError" in msg, msg


class _FakeRunner:
    """What _wait_ready needs of the runner's Popen: its pid and poll()."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self):
        return self.returncode


def test_a_detached_start_returns_only_once_the_runner_said_ready_on_its_pipe(monkeypatch, tmp_path):
    """The state file says ready before the control server answers: the start must wait for the
    pipe, on which the runner says ready after its server is up."""
    import threading

    log = tmp_path / "runner.log"
    log.write_text("emulab: probing kernel capabilities\n")
    proc = _FakeRunner(4242)
    state = {"phase": "ready", "runner_pid": 4242, "topology": "small", "ready_s": 1.0, "nodes": {"h1": {}},
             "link_backend": "shaper", "ovs_datapath": "kernel"}
    monkeypatch.setattr(runner.control, "read_state", lambda: state)
    r, w = os.pipe()
    said_at = []

    def say_ready_later():
        time.sleep(0.3)
        said_at.append(time.monotonic())
        os.write(w, b"ready\n")
        os.close(w)

    t = threading.Thread(target=say_ready_later)
    t.start()
    try:
        summary = runner._wait_ready(proc, log, r, timeout=10, progress=lambda _m: None)
        returned_at = time.monotonic()
    finally:
        t.join()
        os.close(r)
    assert "small is up in 1.0 s" in summary
    assert said_at and returned_at >= said_at[0]


def test_a_detached_start_reports_a_runner_that_dies_before_ready(monkeypatch, tmp_path):
    log = tmp_path / "runner.log"
    log.write_text("emulab: probing kernel capabilities\nemulab: error: small: start failed in phase ovs: no ovs\n")
    proc = _FakeRunner(4243)
    proc.returncode = 2
    monkeypatch.setattr(runner.control, "read_state", lambda: None)
    monkeypatch.setattr(runner, "_left_behind", lambda: "")
    r, w = os.pipe()
    os.close(w)  # the runner exited: end of file, no ready
    t0 = time.monotonic()
    try:
        with pytest.raises(StartError, match="start failed in phase ovs: no ovs"):
            runner._wait_ready(proc, log, r, timeout=10, progress=lambda _m: None)
    finally:
        os.close(r)
    assert time.monotonic() - t0 < 2


def test_the_runner_keeps_its_distutils_choice_from_the_processes_it_starts(monkeypatch):
    monkeypatch.setenv(runner.DISTUTILS_ENV, "stdlib")
    monkeypatch.setenv(runner.DISTUTILS_SET_ENV, "1")
    runner._forget_distutils_choice()
    assert runner.DISTUTILS_ENV not in os.environ and runner.DISTUTILS_SET_ENV not in os.environ
    monkeypatch.setenv(runner.DISTUTILS_ENV, "local")  # the user's own choice is left alone
    runner._forget_distutils_choice()
    assert os.environ[runner.DISTUTILS_ENV] == "local"


class _PtyShell:
    """What finish_shells uses of a Mininet host, around a real process on a terminal."""

    def __init__(self, name: str, script: str) -> None:
        import pty
        import select
        import subprocess

        self.name = name
        self.master, self.slave = pty.openpty()  # the slave stays open here, as in Mininet
        self.shell = subprocess.Popen(["sh", "-c", script], stdin=self.slave, stdout=self.slave,
                                      stderr=self.slave)
        self.stdout = os.fdopen(os.dup(self.master), "rb", buffering=0)
        self.pollOut = select.poll()  # as Mininet's: the terminal is also always writable
        self.pollOut.register(self.master)

    def read(self, size: int) -> str:
        return os.read(self.master, size).decode()

    def close(self) -> None:
        if self.shell.poll() is None:
            self.shell.kill()
        self.shell.wait()
        self.stdout.close()
        os.close(self.master)
        os.close(self.slave)


def test_a_shell_that_dies_at_start_says_why_and_one_that_hangs_is_given_up():
    from emulab.hosts import finish_shells

    dead = _PtyShell("h1", "echo 'mnexec: setns: Invalid argument'; exit 1")
    try:
        with pytest.raises(RuntimeError, match=r"h1: its shell exited at start \(code 1\): "
                                               r"mnexec: setns: Invalid argument"):
            finish_shells([dead], timeout=30)
    finally:
        dead.close()
    silent = _PtyShell("h2", "echo starting; exec sleep 30")
    t0 = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match=r"h2: its shell gave no prompt within 0.5 s: starting"):
            finish_shells([silent], timeout=0.5)
    finally:
        silent.close()
    assert time.monotonic() - t0 < 5

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


def test_a_pool_element_retries_soon_only_at_start():
    from rserpool.pe import PEConfig, PoolElement

    pe = PoolElement(PEConfig(b"P", retry_delay=1.0, start_retry_window=3.0, start_retry_delay=0.05))
    pe._started_at = time.monotonic()
    assert pe._retry_delay() == 0.05
    pe._started_at -= 5.0  # the start window is over
    assert pe._retry_delay() == 1.0
    pe._started_at = time.monotonic()
    pe.stats["registrations"] = 1  # registered once: a later outage waits the full delay
    assert pe._retry_delay() == 1.0


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


def test_what_needs_no_switch_or_radio_is_spawned_early_and_waited_for_with_the_rest(monkeypatch):
    from emulab.capabilities import Capabilities
    from emulab.services import ServiceManager

    spec = load("paper-topology")
    tb = network.Testbed(spec, Capabilities(), services=True)
    svc = ServiceManager(tb)
    spawned, waited = [], []
    monkeypatch.setattr(svc, "spawn", lambda node, kind, cmd, append: spawned.append((node, kind)) or object())
    monkeypatch.setattr(svc, "wait_up", lambda procs, deadline: waited.append([(n, k) for n, k, _ in procs]))
    early = svc.start_early()
    first = list(spawned)
    assert [k for _, k in first[:3]] == ["registrar"] * 3
    pes = [n for n, k in first if k == "pe"]
    assert pes[0] == "pmc-haikou" and "ue" in pes
    assert not {"mec-pe1", "mec-pe2"} & set(pes)  # they register across the SGi switch
    assert svc.start(early=early) == 10
    assert sorted(spawned[len(first):]) == [("mec-pe1", "pe"), ("mec-pe2", "pe")]
    assert sorted(waited[0]) == sorted(spawned)

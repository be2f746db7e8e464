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

"""`emulab experiment paper` and `emulab experiment coverage-loss`: CalcApp sweeps in the emulated testbed.

For the topology (default paper-topology) this builds the testbed in this process (so it needs root
and no other testbed running), starts the registrars once, and then for every PU setting and run:

1. starts every pool element afresh (``rserpool pe --service calcapp`` with the scenario's per-class
   capacity, max requests, policy and increment), so runs are independent; each PE writes its
   RSPLIB-style statistics (used calculations, accepted, rejected) to a JSON file when it stops;
2. waits until the UE's registrar lists all elements (ENRP brings the MEC and PMC ones);
3. runs ``rserpool calcapp-pu --pus N`` in the UE's namespace for the run's duration, and dumpcap on
   the UE's interfaces (pcaps of the run, capped in size);
4. stops the elements, reads the records and the statistics, and hands them to ``ResultsWriter``.

`coverage-loss` is the same run with the UE's radio coverage taken away (``radio.detach()``) at
``--lose-at`` and given back at ``--restore-at`` seconds (counted from the start of the pool users'
process, so a few tenths of a second before their clock starts; the summary has the exact times on
the PUs' clock), and with a drain phase so that every request issued can finish. Its summary adds
``failover_s`` (coverage lost → first Accept from a UE element), ``recovery_s`` (coverage back →
first Accept from a MEC element) and the request counts; ``events.csv`` has every Accept,
completion and coverage change for the timeline plot.

If the UE's registrar never sees the remote elements (ENRP peering not available in this build),
the elements register at the UE's registrar directly (``--pe-registrar ue``, chosen automatically
by ``auto``); the manifest says which was used, because it changes how stale the PLU loads are.
The results directory has the format of `emulab simulate`, so `emulab plot A --compare B` works.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulab import paths, results
from emulab.errors import EmulabError, StartError
from emulab.results import ElementUsage, EventRecord, RequestRecord, ResultsWriter, UsageSample
from emulab.scenario import Scenario, run_seed
from emulab.sim.engine import CoverageLoss

ASAP_PORT = 3863
ENRP_PORT = 9901
PCAP_LIMIT_KB = 20_000  # per run and interface: enough for CalcApp + ASAP at 64 PUs for a quick run
REGISTRATION_WAIT = 20.0


class ExperimentError(EmulabError):
    """The experiment cannot run (not root, a testbed already running, a service failed …)."""


@dataclass(frozen=True)
class Element:
    node: str
    element_class: str
    options: dict[str, Any]


def pool_elements(spec: Any, scenario: Scenario) -> list[Element]:
    """The topology's CalcApp PEs with the scenario's per-class values applied."""
    from emulab.sim.model import element_class

    out = []
    for name, node in spec.nodes.items():
        for svc in node.services:
            if svc.kind != "pe":
                continue
            cls = element_class(node.role, node.site, name)
            opts = dict(svc.options)
            opts["application"] = "calcapp"
            opts["capacity"] = scenario.capacity.get(cls, opts.get("capacity", 1e6))
            opts["max_requests"] = scenario.max_requests
            opts["policy"] = scenario.policy
            if cls in scenario.increments:
                opts["load_increment"] = scenario.increments[cls]
            out.append(Element(name, cls, opts))
    if not out:
        raise ExperimentError(f"{spec.name}: no pool elements (services of kind pe)")
    return out


def address_map(spec: Any) -> dict[str, str]:
    """Every interface address -> its node (PUs record the element's address)."""
    return {str(a.ip): name for name in spec.nodes for a in spec.addresses(name)}


def to_records(lines: list[dict[str, Any]], setting: int, run: int, addrs: dict[str, str],
               classes: dict[str, str]) -> list[RequestRecord]:
    out = []
    for d in lines:
        elem = addrs.get(d["element"], d["element"]) if d.get("element") else None
        out.append(RequestRecord(
            setting=setting, run=run, pu=d["pu"], request_id=int(d["request_id"]), size=float(d["size"]),
            queued_at=d["queued_at"], started_at=d["started_at"], accepted_at=d["accepted_at"],
            completed_at=d["completed_at"], element=elem, element_class=classes.get(elem) if elem else None,
            rejected_by=tuple(addrs.get(x, x) for x in d.get("rejected_by", ())), failovers=int(d.get("failovers", 0)),
            status=d["status"]))
    return out


def request_events(lines: list[dict[str, Any]], setting: int, run: int, addrs: dict[str, str],
                   classes: dict[str, str]) -> list[EventRecord]:
    """Every Accept (first and after fail-overs) and every completion, on the PUs' clock."""
    out = []
    for d in lines:
        for t, host in d.get("accepts", ()):
            elem = addrs.get(host, host)
            out.append(EventRecord(setting, run, float(t), "accept", d["pu"], int(d["request_id"]), elem,
                                   classes.get(elem)))
        if d.get("status") == "completed" and d.get("completed_at") is not None:
            elem = addrs.get(d["element"], d["element"]) if d.get("element") else None
            out.append(EventRecord(setting, run, float(d["completed_at"]), "complete", d["pu"],
                                   int(d["request_id"]), elem, classes.get(elem) if elem else None))
    return out


def read_pu_output(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    records, summary = [], {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                if "summary" in d:
                    summary = d["summary"]
                else:
                    records.append(d)
    return records, summary


@dataclass
class RunOutput:
    """What one run leaves for the results directory."""

    requests: list[RequestRecord]
    usage: list[ElementUsage]
    events: list[EventRecord]
    samples: list[UsageSample]
    summary: dict[str, Any]  # the pool users' summary line (counters, t0_epoch, elapsed)


class PaperExperiment:
    """One sweep on one freshly built testbed; ``run()`` returns the results directory."""

    def __init__(self, scenario: Scenario, *, pe_registrar: str = "auto", pcaps: bool = True,
                 progress: bool = True, log: Callable[[str], None] | None = None,
                 coverage: CoverageLoss | None = None, drain: float = 0.0) -> None:
        self.scenario = scenario
        self.coverage = coverage
        self.drain = drain
        self.name = "coverage-loss" if coverage is not None else "paper"
        self.coverage_runs: list[dict[str, Any]] = []
        self.pe_registrar = pe_registrar
        self.want_pcaps = pcaps and shutil.which("dumpcap") is not None
        self.show_progress = progress
        self.log = log or (lambda m: print(f"emulab: {m}", file=sys.stderr, flush=True))
        self.testbed: Any = None
        self.registrars: list[subprocess.Popen[bytes]] = []
        self.pes: dict[str, subprocess.Popen[bytes]] = {}
        self.work = Path(tempfile.mkdtemp(prefix="emulab-experiment-"))
        self.notes: list[str] = []
        self.pcaps: list[Path] = []

    # ------------------------------------------------------------------ testbed
    def _start_testbed(self, run_id: str) -> None:
        from emulab import control
        from emulab.capabilities import probe
        from emulab.network import Testbed
        from emulab.topology import load

        if os.geteuid() != 0:
            raise ExperimentError("emulab experiment needs root (network namespaces, Open vSwitch)")
        state = control.read_state()
        if state:
            raise ExperimentError("a testbed is already running (`emulab stop` it first): the experiment builds its own")
        self.spec = load(self.scenario.target)
        self.caps = probe()
        self.testbed = Testbed(self.spec, self.caps, services=False, progress=self.log)
        self.testbed.start()
        control.write_state({"phase": "ready", "runner_pid": os.getpid(), "run_id": run_id,
                             "options": {"topology": self.scenario.target, "services": False}} | self.testbed.state())
        self._state_written = True
        from emulab.services import ServiceManager

        self.svc = ServiceManager(self.testbed)
        self.elements = pool_elements(self.spec, self.scenario)
        self.ue = next((n for n, s in self.spec.nodes.items() if s.role == "ue"), None)
        if self.ue is None:
            raise ExperimentError(f"{self.spec.name}: no node with role ue for the pool users")
        for name, node in self.spec.nodes.items():
            for s in node.services:
                if s.kind == "registrar":
                    cmd = self.svc.command(name, "registrar", dict(s.options))
                    self.registrars.append(self._popen(name, cmd, f"{name}-registrar.log"))
        if not any(s.kind == "registrar" for s in self.spec.nodes[self.ue].services):
            raise ExperimentError(f"{self.spec.name}: the UE runs no registrar for its PUs")
        time.sleep(1.0)
        dead = [p for p in self.registrars if p.poll() is not None]
        if dead:
            raise StartError(f"a registrar exited at start-up; see {paths.log_dir()}")

    def _popen(self, node: str, cmd: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        paths.log_dir().mkdir(parents=True, exist_ok=True)
        if env:
            cmd = ["env", *(f"{k}={v}" for k, v in env.items()), *cmd]
        with open(paths.log_dir() / log_name, "ab") as out:
            return self.testbed.host(node).popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    @staticmethod
    def _stop(procs: list[subprocess.Popen[bytes]], timeout: float = 8.0) -> None:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            if p.poll() is None:
                p.kill()
                p.wait()

    # ------------------------------------------------------------------ elements
    def _start_pes(self, tag: str, home: str) -> None:
        for e in self.elements:
            opts = dict(e.options)
            if home == "ue":
                opts["registrar"] = self.ue
            cmd = self.svc.command(e.node, "pe", opts)
            cmd += ["--reregistration-interval", "30"]
            env = {"EMULAB_CALCAPP_STATS": str(self.work / f"{tag}-{e.node}.json")}
            self.pes[e.node] = self._popen(e.node, cmd, f"{e.node}-pe.log", env)

    def _stop_pes(self) -> None:
        self._stop(list(self.pes.values()))
        self.pes.clear()

    def _ue_sees(self) -> int:
        ue_addr = str(self.spec.primary_address(self.ue))
        p = self.testbed.host(self.ue).popen(
            [sys.executable, "-m", "rserpool", "hsdump", "--registrar", f"{ue_addr}:{ENRP_PORT}", "--json",
             "--timeout", "3"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            out, _ = p.communicate(timeout=10)
            return int(json.loads(out).get("element_count", 0))
        except (subprocess.TimeoutExpired, ValueError):
            p.kill()
            p.wait()
            return 0

    def _wait_registered(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self.pes.items() if p.poll() is not None]
            if dead:
                raise ExperimentError(f"pool element(s) {', '.join(dead)} exited; see {paths.log_dir()}")
            if self._ue_sees() >= len(self.elements):
                return True
            time.sleep(0.5)
        return False

    def _prepare_run(self, tag: str) -> None:
        home = self.pe_registrar if self.pe_registrar != "auto" else "topology"
        self._start_pes(tag, home)
        if self._wait_registered(REGISTRATION_WAIT):
            if self.pe_registrar == "auto":
                self.pe_registrar = "topology"
            return
        if self.pe_registrar != "auto":
            raise ExperimentError(f"the UE's registrar does not list all {len(self.elements)} pool elements")
        self._stop_pes()
        note = ("the UE's registrar did not learn the remote pool elements over ENRP within "
                f"{REGISTRATION_WAIT:.0f} s: all elements register at the UE's registrar instead")
        self.log("warning: " + note)
        self.notes.append(note)
        self.pe_registrar = "ue"
        self._start_pes(tag, "ue")
        if not self._wait_registered(REGISTRATION_WAIT):
            raise ExperimentError("the pool elements did not register at the UE's registrar")

    def _read_usage(self, tag: str, setting: int, run: int, duration: float,
                    t0_epoch: float | None) -> tuple[list[ElementUsage], list[UsageSample]]:
        """Each PE's statistics file: its totals, and its used capacity over time on the PUs' clock."""
        out, samples = [], []
        for e in self.elements:
            f = self.work / f"{tag}-{e.node}.json"
            st: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                st = json.loads(f.read_text())
            if not st:
                self.notes.append(f"{tag}: no statistics from {e.node}")
            out.append(ElementUsage(
                setting=setting, run=run, element=e.node, element_class=e.element_class,
                capacity=float(e.options["capacity"]), duration_s=duration,
                used_calculations=float(st.get("used_calculations", 0.0)), max_requests=int(e.options["max_requests"]),
                accepted=int(st.get("accepted", 0)), rejected=int(st.get("rejected", 0))))
            if t0_epoch is not None:
                samples += [UsageSample(setting, run, round(t - t0_epoch, 3), e.node, e.element_class, float(used),
                                        int(jobs)) for t, used, jobs in st.get("series", ())]
        return out, samples

    # ------------------------------------------------------------------ pcaps
    def _start_capture(self, tag: str) -> tuple[subprocess.Popen[bytes] | None, Path]:
        pcap = self.work / f"{tag}-{self.ue}.pcapng"
        if not self.want_pcaps:
            return None, pcap
        cmd = ["dumpcap", "-q"]
        for end in self.spec.interfaces(self.ue):
            cmd += ["-i", end.intf]
        cmd += ["-a", f"filesize:{PCAP_LIMIT_KB}", "-w", str(pcap)]
        return self._popen(self.ue, cmd, f"{self.ue}-dumpcap.log"), pcap

    # ------------------------------------------------------------------ the sweep
    def tasks(self) -> Iterator[tuple[int, int]]:
        for setting in self.scenario.pus:
            for run in range(1, self.scenario.runs + 1):
                yield setting, run

    def run(self) -> Path:
        from emulab.network import marked

        with marked(f"experiment-{os.getpid()}") as run_id, _sigterm_raises():
            return self._run(run_id)

    def _run(self, run_id: str) -> Path:
        sc = self.scenario
        from emulab.capabilities import probe

        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        seeds: dict[str, int] = {}
        writer: ResultsWriter | None = None
        try:
            self._start_testbed(run_id)
            addrs = address_map(self.spec)
            classes = {e.node: e.element_class for e in self.elements}
            manifest = {
                "kind": "emulation", "label": "emulated", "tool": f"emulab experiment {self.name}",
                "created_at": started, "host": platform.node(), "python": platform.python_version(),
                "cpus": os.cpu_count(), "scenario": sc.to_dict(),
                "topology": {"name": self.spec.name, "file": str(self.spec.source)},
                "elements": [{"node": e.node, "class": e.element_class, **{k: v for k, v in e.options.items()}}
                             for e in self.elements],
                "pu_node": self.ue, "versions": _versions(),
                "capabilities": probe().to_json(),
                "testbed": {"link_backend": self.testbed.link_backend, "datapath": self.testbed.datapath,
                            "radio": self.testbed.radio_name},
                "drain_s": self.drain,
            }
            if self.coverage is not None:
                manifest["coverage_loss"] = {"lose_at": self.coverage.at,
                                             "restore_at": self.coverage.at + self.coverage.duration}
            prefix = "exp" if self.coverage is None else "coverage-loss"
            writer = ResultsWriter(sc.out, f"{prefix}-{Path(sc.target).stem}", manifest)
            tasks = list(self.tasks())
            with _progress(self.show_progress, len(tasks) * sc.duration) as bar:
                for i, (setting, run) in enumerate(tasks, 1):
                    tag = f"{setting}pus-run{run}"
                    seed = run_seed(sc.seed, setting, run)
                    seeds[tag] = seed
                    bar.describe(f"run {i}/{len(tasks)}: {setting} PUs, run {run}")
                    self._prepare_run(tag)
                    out = self._one_run(tag, setting, run, seed, addrs, classes, bar)
                    writer.add_requests(out.requests)
                    writer.add_usage(out.usage)
                    writer.add_events(out.events)
                    writer.add_usage_samples(out.samples)
                    writer.set_pu_counters(setting, run, out.summary.get("counters_by_pu") or {})
                    writer.manifest.setdefault("pu_counters", {})[tag] = out.summary.get("counters", {})
            writer.manifest["seeds"] = seeds
            writer.manifest["pe_registrar"] = self.pe_registrar
            for pcap in self.pcaps:
                writer.add_file(pcap, "pcaps")
            if not self.want_pcaps:
                self.notes.append("no pcaps: dumpcap not installed or --no-pcaps")
            writer.manifest["notes"] = self.notes
            return writer.finish(self._coverage_summary())
        finally:
            if writer is not None and not writer._finished:
                writer.manifest["aborted"] = True
                with contextlib.suppress(Exception):
                    writer.finish()
            self.close()

    def _one_run(self, tag: str, setting: int, run: int, seed: int, addrs: dict[str, str], classes: dict[str, str],
                 bar: Any) -> RunOutput:
        sc = self.scenario
        out = self.work / f"{tag}-pus.jsonl"
        ue_addr = str(self.spec.primary_address(self.ue))
        cap, pcap = self._start_capture(tag)
        cmd = [sys.executable, "-m", "rserpool", "calcapp-pu", "--registrar", f"{ue_addr}:{ASAP_PORT}",
               "--pus", str(setting), "--duration", f"{sc.duration:g}", "--size-mean", f"{sc.size_mean:g}",
               "--size-dist", sc.size_dist, "--interval-mean", f"{sc.interval_mean:g}",
               "--interval-dist", sc.interval_dist, "--drain", f"{self.drain:g}", "--seed", str(seed),
               "-o", str(out)]
        pu = self._popen(self.ue, cmd, f"{self.ue}-calcapp-pu.log")
        t0 = time.monotonic()
        cut: dict[str, float] = {}  # "lost"/"restored" -> wall-clock time
        try:
            while pu.poll() is None:
                elapsed = time.monotonic() - t0
                self._coverage_step(elapsed, cut)
                bar.tick(min(elapsed, sc.duration))
                if elapsed > sc.duration + self.drain + 60:
                    raise ExperimentError(f"{tag}: the pool users did not finish (see {paths.log_dir()})")
                time.sleep(0.05 if self.coverage is not None else 0.5)
            bar.tick(sc.duration)
            bar.commit(sc.duration)
        finally:
            if "lost" in cut and "restored" not in cut:
                with contextlib.suppress(Exception):  # the next run (or the teardown) finds the UE covered
                    self.testbed.radio.attach()
            if pu.poll() is None:
                self._stop([pu])
            self._stop_pes()  # writes the elements' statistics files
            if cap is not None:
                self._stop([cap])
        if pu.returncode != 0:
            raise ExperimentError(f"{tag}: calcapp-pu exited with code {pu.returncode}; see "
                                  f"{paths.log_dir() / f'{self.ue}-calcapp-pu.log'}")
        lines, summ = read_pu_output(out)
        recs = to_records(lines, setting, run, addrs, classes)
        events = request_events(lines, setting, run, addrs, classes)
        if self.coverage is not None:
            t0_epoch = float(summ.get("t0_epoch") or 0.0)
            lost_at = cut["lost"] - t0_epoch if "lost" in cut else None
            restored_at = cut["restored"] - t0_epoch if "restored" in cut else None
            for what, at in (("coverage_lost", lost_at), ("coverage_restored", restored_at)):
                if at is not None:
                    events.append(EventRecord(setting, run, at, what))
            m = results.coverage_metrics(events, recs, lost_at, restored_at)
            self.coverage_runs.append({"setting": setting, "run": run, **m})
            self.log(f"{tag}: fail-over {m['failover_s']} s, recovery {m['recovery_s']} s, "
                     f"{m['requests_completed']}/{m['requests_issued']} requests completed")
        usage, samples = self._read_usage(tag, setting, run, float(summ.get("elapsed") or sc.duration),
                                          summ.get("t0_epoch"))
        if pcap.exists():
            self.pcaps.append(pcap)
        return RunOutput(recs, usage, events, samples, summ)

    def _coverage_step(self, elapsed: float, cut: dict[str, float]) -> None:
        """Take coverage away / give it back when the run's clock passes the scheduled times."""
        c = self.coverage
        if c is None:
            return
        # the time is taken before the radio acts (its link update takes a moment): the loss and
        # the restore count from the request, so fail-over and recovery are not measured short
        if "lost" not in cut and elapsed >= c.at:
            cut["lost"] = time.time()
            self.testbed.radio.detach()
            self.log(f"coverage lost at {elapsed:.1f} s")
        elif "lost" in cut and "restored" not in cut and elapsed >= c.at + c.duration:
            cut["restored"] = time.time()
            self.testbed.radio.attach()
            self.log(f"coverage restored at {elapsed:.1f} s")

    def _coverage_summary(self) -> dict[str, Any] | None:
        """summary.json's coverage-loss keys: per run, and over all runs (worst times, summed counts)."""
        if self.coverage is None:
            return None
        return {**results.coverage_summary(self.coverage_runs), "timers": self._timers()}

    def _timers(self) -> dict[str, Any]:
        """The timers that bound fail-over and recovery, as this run used them."""
        from rserpool.pu import PUConfig
        from rserpool.registrar import RegistrarConfig
        from rserpool.services.calcapp import KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT

        radio = self.testbed.radio.state() if self.testbed is not None and self.testbed.radio else {}
        reg = RegistrarConfig()
        return {
            "radio": radio.get("timers", {}),
            "calcapp_keepalive_interval_s": KEEPALIVE_INTERVAL,
            "calcapp_keepalive_timeout_s": KEEPALIVE_TIMEOUT,
            "pu_connect_timeout_s": PUConfig().connect_timeout,
            "pu_watch_routes": PUConfig().watch_routes,
            "registrar_max_bad_pe_reports": reg.max_bad_pe_reports,
            "enrp_peer_max_time_last_heard_s": reg.peer_max_time_last_heard,
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stop_pes()
        with contextlib.suppress(Exception):
            self._stop(self.registrars)
        self.registrars.clear()
        if self.testbed is not None:
            self.testbed.stop()
            self.testbed = None
        if getattr(self, "_state_written", False):
            with contextlib.suppress(FileNotFoundError):
                paths.state_file().unlink()
        shutil.rmtree(self.work, ignore_errors=True)


class _Terminated(ExperimentError):
    """SIGTERM arrived: the experiment stops, tearing its testbed down on the way out."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Python ends on SIGTERM without running ``finally``; make it an exception instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def handler(signum: int, _frame: Any) -> None:
        if os.getpid() != owner:  # a fork (pyroute2's NetNS helper) inherited this: die as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the teardown short
        raise _Terminated(f"stopped by signal {signum}; the testbed was torn down")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "kernel": platform.release()}
    for pkg in ("emulab", "mininet", "numpy", "click", "rich"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["ovs"] = subprocess.run(["ovs-vsctl", "--version"], capture_output=True, text=True,
                                    timeout=5).stdout.splitlines()[0]
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        out["git"] = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "HEAD"],
                                    capture_output=True, text=True, timeout=5).stdout.strip()
    return out


class _Bar:
    """A rich progress bar over the sweep's total emulated seconds (or nothing when not a terminal)."""

    def __init__(self, progress: Any, total: float) -> None:
        self.p = progress
        self.done = 0.0
        self.tid = progress.add_task("starting", total=total) if progress is not None else None

    def describe(self, text: str) -> None:
        if self.p is not None:
            self.p.update(self.tid, description=text)
        else:
            print(f"emulab: {text}", file=sys.stderr, flush=True)

    def tick(self, run_elapsed: float) -> None:
        if self.p is not None:
            self.p.update(self.tid, completed=self.done + run_elapsed)

    def commit(self, run_total: float) -> None:
        self.done += run_total


@contextlib.contextmanager
def _progress(show: bool, total: float) -> Iterator[_Bar]:
    if not show:
        yield _Bar(None, total)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeRemainingColumn(), transient=True) as p:
        yield _Bar(p, total)


def run_paper(scenario: Scenario, *, pe_registrar: str = "auto", pcaps: bool = True,
              progress: bool = True) -> Path:
    """Run the sweep; returns the results directory (pcaps under ``pcaps/``)."""
    return PaperExperiment(scenario, pe_registrar=pe_registrar, pcaps=pcaps, progress=progress).run()


def run_coverage_loss(scenario: Scenario, lose_at: float, restore_at: float, *, drain: float = 60.0,
                      pe_registrar: str = "auto", pcaps: bool = True, progress: bool = True) -> Path:
    """The paper run with the UE out of coverage from ``lose_at`` to ``restore_at`` s; returns the results directory."""
    if not 0 <= lose_at < restore_at:
        raise ExperimentError(f"--lose-at ({lose_at:g}) must be >= 0 and before --restore-at ({restore_at:g})")
    if restore_at >= scenario.duration:
        raise ExperimentError(f"--restore-at ({restore_at:g}) must be before the end of the run "
                              f"(--duration {scenario.duration:g})")
    if drain < 0:
        raise ExperimentError(f"--drain must not be negative, got {drain:g}")
    return PaperExperiment(scenario, pe_registrar=pe_registrar, pcaps=pcaps, progress=progress,
                           coverage=CoverageLoss(lose_at, restore_at - lose_at), drain=drain).run()

"""``EmulatedSweep``: what every `emulab experiment NAME` shares — one testbed, one CalcApp run per
(PU setting, run), one results directory in emulab.results' format — and the hooks an experiment fills.

For the topology (default paper-topology) the sweep builds the testbed in this process through
``emulab.runner.build`` (so it needs root and no other testbed running), starts the topology's
registrars once through ``emulab.services.ServiceManager``, and then for every PU setting and run:

1. starts every pool element afresh (``rserpool pe --service calcapp`` with the scenario's per-class
   capacity, max requests, policy and increment), so runs are independent; each PE writes its
   RSPLIB-style statistics (used calculations, accepted, rejected) to a JSON file when it stops;
2. waits until the UE's registrar lists all elements (ENRP brings the MEC and PMC ones);
3. runs ``rserpool calcapp-pu --pus N`` in the UE's namespace for the run's duration (then the
   drain, if any), and dumpcap on the UE's interfaces (pcaps of the run, capped in size);
4. stops the elements, reads the records and the statistics, and hands them to ``ResultsWriter``.

If the UE's registrar never sees the remote elements (ENRP peering not available in this build),
the elements register at the UE's registrar directly (``--pe-registrar ue``, chosen automatically
by ``auto``); the manifest says which was used, because it changes how stale the PLU loads are.

An experiment is a subclass that sets ``name`` (its `emulab experiment` command) and overrides the
hooks it needs, each a no-op here:

* ``manifest_extra()`` — its keys for manifest.json;
* ``before_run(ctx)`` — the run's elements are registered, the pool users not started yet;
* ``during_run(ctx, elapsed)`` — every ``poll_s`` s while the pool users run (``elapsed``: seconds
  since they were started);
* ``end_run(ctx)`` — the pool users stopped, also when the run failed: undo what ``during_run`` did;
* ``after_run(ctx, out)`` — the run's records are read: add events, compute the run's metrics (into
  ``out.metrics`` when ``summarise`` needs them: on a cluster this runs on a worker);
* ``collect(ctx, out)`` — where the results are written: fold ``out.metrics`` into the summary;
* ``summarise()`` — its keys for summary.json (besides the statistics every sweep has);
* ``pu_command(ctx, path)`` — the workload (default: CalcApp pool users with the scenario's values).

One (setting, run) is ``run_one(ctx)`` on a built testbed, written by ``write_run``: the local sweep
loops over them, and a sweep on a cluster (``emulab.cluster``) runs each on a worker's testbed and
writes it where it gathers the results.

Code that watches an experiment (the progress bar, a dashboard) subscribes to its events
(``subscribe``; the kinds are listed in ``emulab.experiments.events``).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import click

from emulab import paths
from emulab.experiments.events import ExperimentEvent, Listener, ProgressBar
from emulab.experiments.records import (
    Element,
    ExperimentError,
    RunOutput,
    address_map,
    element_usage,
    pool_elements,
    read_pu_output,
    request_events,
    to_records,
)
from emulab.results import ElementUsage, ResultsWriter, UsageSample
from emulab.scenario import Scenario, run_seed
from emulab.services import ASAP_PORT, ENRP_PORT

PCAP_LIMIT_KB = 20_000  # per run and interface: enough for CalcApp + ASAP at 64 PUs for a quick run
REGISTRATION_WAIT = 20.0
"""Seconds the registration of a run's elements may go without progress (an element logging its
registration, the UE's registrar listing more of them) before it counts as failed: the wait follows
progress, so a slow machine still starting the elements (qemu TCG: ~16 s for the paper topology's 7;
more on a busy host) is waited for, while a registrar that never learns them fails in bounded time."""
REGISTRATION_WAIT_MAX = 180.0  # the whole wait, however slowly progress trickles in
STARTING_CPU_S = 0.2  # CPU seconds the unregistered elements must use between checks to count as starting
STOP_TIMEOUT = 8.0  # the PEs write their statistics file on SIGTERM: give them time to
PU_GRACE_S = 60.0  # the pool users end by themselves after duration + drain; this much later they are stuck


@dataclass
class RunContext:
    """One (PU setting, run) of the sweep, as every hook sees it."""

    index: int
    """1-based position in the sweep."""
    total: int
    setting: int
    """The number of pool users."""
    run: int
    seed: int
    started: float = 0.0
    """``time.monotonic()`` when the pool users were started (0 before)."""
    marks: dict[str, float] = field(default_factory=dict)
    """What the experiment's hooks note during the run (e.g. wall-clock times of coverage changes)."""

    @property
    def tag(self) -> str:
        return f"{self.setting}pus-run{self.run}"


class EmulatedSweep:
    """One sweep on one freshly built testbed; ``run()`` returns the results directory."""

    name: ClassVar[str] = "sweep"
    """`emulab experiment NAME`; also the manifest's ``tool``."""
    results_prefix: ClassVar[str] = "exp"
    """The results directory is ``<out>/<stamp>-<prefix>-<topology>``."""
    poll_s: ClassVar[float] = 0.5
    """How often ``during_run`` is called (and progress reported) while the pool users run."""
    needs_root: ClassVar[bool] = True
    """Building its testbed needs root (a sweep on ``local:N`` checks it before starting workers)."""

    def __init__(self, scenario: Scenario, *, pe_registrar: str = "auto", pcaps: bool = True,
                 progress: bool = True, log: Callable[[str], None] | None = None, drain: float = 0.0,
                 radio: str | None = None) -> None:
        self.scenario = scenario
        self.radio = radio  # the radio backend (None: the topology's)
        self.drain = drain
        self.pe_registrar = pe_registrar
        self.want_pcaps = pcaps and shutil.which("dumpcap") is not None
        self._print = log or (lambda m: print(f"emulab: {m}", file=sys.stderr, flush=True))
        self.testbed: Any = None
        self.svc: Any = None
        self.spec: Any = None
        self.elements: list[Element] = []
        self.ue: str = ""
        self.pes: dict[str, subprocess.Popen[bytes]] = {}
        self._pe_log_marks: dict[str, int] = {}  # element -> its log's size when it was started
        self.work = Path(tempfile.mkdtemp(prefix="emulab-experiment-"))
        self.notes: list[str] = []
        self._listeners: list[Listener] = []
        self.subscribe(ProgressBar(progress))

    # ------------------------------------------------------------------ hooks (no-ops here)
    def manifest_extra(self) -> dict[str, Any]:
        """The experiment's keys for manifest.json."""
        return {}

    def before_run(self, ctx: RunContext) -> None:
        """The run's elements are registered; the pool users start next."""

    def during_run(self, ctx: RunContext, elapsed: float) -> None:
        """Called every ``poll_s`` s while the pool users run."""

    def end_run(self, ctx: RunContext) -> None:
        """The pool users stopped (also when the run failed): undo what ``during_run`` changed."""

    def after_run(self, ctx: RunContext, out: RunOutput) -> None:
        """The run's records are read (add events to ``out``, compute the run's metrics)."""

    def collect(self, ctx: RunContext, out: RunOutput) -> None:
        """Fold one run's ``out.metrics`` into what ``summarise`` reports; runs where the results are
        written (here, or on the machine gathering a sweep on a cluster), after ``after_run`` ran
        wherever the run did."""

    def summarise(self) -> dict[str, Any] | None:
        """The experiment's keys for summary.json (None: the common statistics only)."""
        return None

    def pu_command(self, ctx: RunContext, output: Path) -> list[str]:
        """The run's workload in the UE's namespace: CalcApp pool users writing their records to ``output``."""
        sc = self.scenario
        ue_addr = str(self.spec.primary_address(self.ue))
        return [sys.executable, "-m", "rserpool", "calcapp-pu", "--registrar", f"{ue_addr}:{ASAP_PORT}",
                "--pus", str(ctx.setting), "--duration", f"{sc.duration:g}", "--size-mean", f"{sc.size_mean:g}",
                "--size-dist", sc.size_dist, "--interval-mean", f"{sc.interval_mean:g}",
                "--interval-dist", sc.interval_dist, "--drain", f"{self.drain:g}", "--seed", str(ctx.seed),
                "-o", str(output)]

    # ------------------------------------------------------------------ events
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Hand every event of this experiment to ``listener``; returns the function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def emit(self, kind: str, **data: Any) -> None:
        event = ExperimentEvent(kind, self.name, data)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # a watcher's bug must not end a sweep of hours
                self._listeners.remove(listener)
                self._print(f"warning: dropped an event listener that failed: {type(exc).__name__}: {exc}")

    def log(self, message: str) -> None:
        self._print(message)
        self.emit("log", message=message)

    # ------------------------------------------------------------------ testbed
    def describe(self) -> Any:
        """Load the topology and its pool elements (no testbed, no root: what a sweep on a cluster
        needs on the machine that writes the results); returns the topology."""
        from emulab.topology import load

        spec = load(self.scenario.target)
        self.elements = pool_elements(spec, self.scenario)
        ue = next((n for n, s in spec.nodes.items() if s.role == "ue"), None)
        if ue is None:
            raise ExperimentError(f"{spec.name}: no node with role ue for the pool users")
        if not any(s.kind == "registrar" for s in spec.nodes[ue].services):
            raise ExperimentError(f"{spec.name}: the UE runs no registrar for its PUs")
        self.ue = ue
        self.spec = spec
        return spec

    def _start_testbed(self, run_id: str) -> None:
        from emulab import control, runner
        from emulab.services import ServiceManager

        self.check_root("emulab experiment")
        if control.read_state():
            raise ExperimentError("a testbed is already running (`emulab stop` it first): the experiment builds its own")
        spec = self.describe()
        options = runner.StartOptions(topology=str(spec.source), services=False, radio=self.radio)
        self.testbed = runner.build(options, self.log, run_id=run_id)
        self.spec = self.testbed.spec
        from emulab.dashboard.feed import EventFeed  # the dashboard (another process) reads the progress

        self.subscribe(EventFeed())
        self.svc = ServiceManager(self.testbed)
        self.svc.start(kinds={"registrar"})

    def check_root(self, command: str) -> None:
        """Fail at once, naming ``command``, when building this sweep's testbeds needs root and this
        process has not got it (a sweep on ``local:N`` builds them on this machine too)."""
        if self.needs_root and os.geteuid() != 0:
            raise ExperimentError(f"{command} needs root to build its testbeds (network namespaces, Open vSwitch)")

    def build(self, run_id: str) -> None:
        """Build the testbed and start its registrars: ``run_one`` can run (``close`` tears it down)."""
        self._start_testbed(run_id)
        self.emit("testbed_ready", topology=self.spec.name, pu_node=self.ue,
                  elements={e.node: e.element_class for e in self.elements})

    def close(self) -> None:
        """Stop every process and tear the testbed down (also after a failure)."""
        from emulab import runner

        if self.svc is not None:
            with contextlib.suppress(Exception):
                self.svc.stop(timeout=STOP_TIMEOUT)
            self.pes.clear()
        if self.testbed is not None:
            runner.teardown(self.testbed, self.log)
            self.testbed = None
            self.emit("testbed_stopped")
        shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------------ elements
    def _start_pes(self, tag: str, home: str) -> None:
        from rserpool.services.calcapp import STATS_ENV

        for e in self.elements:
            opts = dict(e.options)
            if home == "ue":
                opts["registrar"] = self.ue
            cmd = [*self.svc.command(e.node, "pe", opts), "--reregistration-interval", "30"]
            env = {STATS_ENV: str(self.work / f"{tag}-{e.node}.json")}
            log = paths.log_dir() / f"{e.node}-pe.log"  # appended to across runs: read from here on
            self._pe_log_marks[e.node] = log.stat().st_size if log.exists() else 0
            self.pes[e.node] = self.svc.spawn(e.node, "pe", cmd, env=env)

    def _pes_registered(self) -> tuple[int, float]:
        """How many of the elements started last have logged their registration since (at any
        registrar), and the CPU seconds the others have used so far (they are still starting while
        it grows: Python's start-up and imports, seconds each under qemu TCG on a busy host)."""
        from emulab.services import READY_LINES

        n, cpu = 0, 0.0
        for node, mark in self._pe_log_marks.items():
            done = False
            with contextlib.suppress(OSError), open(paths.log_dir() / f"{node}-pe.log", "rb") as f:
                f.seek(mark)
                done = READY_LINES["pe"] in f.read()
            n += done
            proc = self.pes.get(node)
            if not done and proc is not None:
                cpu += _cpu_seconds(proc.pid)
        return n, cpu

    def _stop_pes(self) -> None:
        self.svc.stop(list(self.pes.values()), timeout=STOP_TIMEOUT)
        self.pes.clear()

    def _ue_sees(self) -> int:
        ue_addr = str(self.spec.primary_address(self.ue))
        out = self.svc.output(self.ue, [sys.executable, "-m", "rserpool", "hsdump", "--registrar",
                                        f"{ue_addr}:{ENRP_PORT}", "--json", "--timeout", "3"], timeout=10)
        try:
            return int(json.loads(out or "").get("element_count", 0))
        except ValueError:
            return 0

    def _wait_registered(self, timeout: float) -> bool:
        """True once the UE's registrar lists every element; False after ``timeout`` s without
        progress (REGISTRATION_WAIT) or REGISTRATION_WAIT_MAX in all. The UE's registrar is asked by
        a process of its own (seconds under TCG, CPU the starting elements need): only once every
        element logged its registration, or when that stalls."""
        want = len(self.elements)
        start = last = time.monotonic()
        best = (0, 0)
        cpu_mark = 0.0
        while True:
            now = time.monotonic()
            if now - last > timeout or now - start > REGISTRATION_WAIT_MAX:
                self.log(f"registration stalled: {best[0]}/{want} elements registered, the UE's registrar "
                         f"lists {best[1]}, after {now - start:.1f} s")
                return False
            dead = [n for n, p in self.pes.items() if p.poll() is not None]
            if dead:
                raise ExperimentError(f"pool element(s) {', '.join(dead)} exited; see {paths.log_dir()}")
            registered, cpu = self._pes_registered()
            seen = self._ue_sees() if registered >= want or now - last > timeout / 2 else 0
            if seen >= want:
                self.log(f"the UE's registrar lists all {want} elements after {time.monotonic() - start:.1f} s")
                return True
            # progress: more registered or listed, or the unregistered ones still busy starting (an
            # element waiting for an answer that never comes uses next to no CPU)
            if registered > best[0] or seen > best[1] or cpu - cpu_mark >= STARTING_CPU_S:
                last = time.monotonic()
                best = (max(registered, best[0]), max(seen, best[1]))
                cpu_mark = cpu
            time.sleep(0.5)

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
        note = ("the UE's registrar did not learn the remote pool elements over ENRP (no progress for "
                f"{REGISTRATION_WAIT:.0f} s): all elements register at the UE's registrar instead")
        self.log("warning: " + note)
        self.notes.append(note)
        self.pe_registrar = "ue"
        self._start_pes(tag, "ue")
        if not self._wait_registered(REGISTRATION_WAIT):
            raise ExperimentError("the pool elements did not register at the UE's registrar")

    def _read_usage(self, ctx: RunContext, duration: float,
                    t0_epoch: float | None) -> tuple[list[ElementUsage], list[UsageSample]]:
        """Each PE's statistics file: its totals, and its used capacity over time on the PUs' clock."""
        out, samples = [], []
        for e in self.elements:
            st: dict[str, Any] = {}
            with contextlib.suppress(OSError, ValueError):
                st = json.loads((self.work / f"{ctx.tag}-{e.node}.json").read_text())
            if not st:
                self.notes.append(f"{ctx.tag}: no statistics from {e.node}")
            usage, series = element_usage(st, e, ctx.setting, ctx.run, duration, t0_epoch)
            out.append(usage)
            samples += series
        return out, samples

    def _start_capture(self, tag: str) -> tuple[subprocess.Popen[bytes] | None, Path]:
        pcap = self.work / f"{tag}-{self.ue}.pcapng"
        if not self.want_pcaps:
            return None, pcap
        cmd = ["dumpcap", "-q"]
        for end in self.spec.interfaces(self.ue):
            cmd += ["-i", end.intf]
        cmd += ["-a", f"filesize:{PCAP_LIMIT_KB}", "-w", str(pcap)]
        return self.svc.spawn(self.ue, "dumpcap", cmd), pcap

    # ------------------------------------------------------------------ the sweep
    def tasks(self) -> Iterator[tuple[int, int]]:
        for setting in self.scenario.pus:
            for run in range(1, self.scenario.runs + 1):
                yield setting, run

    def run(self) -> Path:
        from emulab.network import marked

        with marked(f"experiment-{os.getpid()}") as run_id, sigterm_raises():
            return self._sweep(run_id)

    def testbed_facts(self) -> dict[str, Any]:
        """The manifest's keys that only the built testbed knows (what this machine offered)."""
        return {
            "capabilities": self.testbed.caps.to_json(),
            "testbed": {"link_backend": self.testbed.link_backend, "datapath": self.testbed.datapath,
                        "radio": self.testbed.radio_name},
        }

    def manifest(self, started: str, facts: dict[str, Any] | None = None) -> dict[str, Any]:
        """manifest.json's keys; ``facts``: ``testbed_facts()`` (of the machine that ran the runs)."""
        sc = self.scenario
        return {
            "kind": "emulation", "label": "emulated", "tool": f"emulab experiment {self.name}",
            "created_at": started, "host": platform.node(), "instance": paths.instance(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(), "scenario": sc.to_dict(),
            "topology": {"name": self.spec.name, "file": str(self.spec.source)},
            "elements": [{"node": e.node, "class": e.element_class, **e.options} for e in self.elements],
            "pu_node": self.ue, "versions": versions(),
            **(facts if facts is not None else self.testbed_facts()),
            "drain_s": self.drain,
            **self.manifest_extra(),
        }

    def _sweep(self, run_id: str) -> Path:
        sc = self.scenario
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        seeds: dict[str, int] = {}
        writer: ResultsWriter | None = None
        path: Path | None = None
        try:
            self.build(run_id)
            writer = ResultsWriter(sc.out, self.results_name(), self.manifest(started))
            tasks = list(self.tasks())
            self.sweep_started(writer, len(tasks))
            for i, (setting, run) in enumerate(tasks, 1):
                ctx = self.context(i, len(tasks), setting, run)
                seeds[ctx.tag] = ctx.seed
                self.emit("run_started", index=i, total=len(tasks), setting=setting, run=run, seed=ctx.seed,
                          tag=ctx.tag)
                out = self.run_one(ctx)
                self.write_run(writer, ctx, out)
                self.run_finished(i, len(tasks), ctx.tag, out)
            writer.manifest["seeds"] = seeds
            writer.manifest["pe_registrar"] = self.pe_registrar
            path = self.finish(writer)
            return path
        finally:
            self.end_sweep(writer, path)

    def sweep_started(self, writer: ResultsWriter, runs: int) -> None:
        """Tell the listeners the sweep's runs begin (``runs`` of them, written to ``writer``)."""
        self.emit("sweep_started", runs=runs, total_s=runs * self.scenario.duration, results=str(writer.path))

    def run_finished(self, index: int, total: int, tag: str, out: RunOutput) -> None:
        """Tell the listeners one run is done (``index``: how many are, of ``total``)."""
        self.emit("run_finished", index=index, total=total, tag=tag, duration=self.scenario.duration,
                  requests=len(out.requests), completed=sum(1 for r in out.requests if r.status == "completed"))

    def end_sweep(self, writer: ResultsWriter | None, path: Path | None) -> None:
        """How every sweep ends, local or on a cluster, also after a failure: a results directory not
        finished (``path`` None) is finished marked aborted, the listeners hear ``sweep_ended``, and
        the testbed goes down."""
        if writer is not None and not writer.finished:
            writer.manifest["aborted"] = True
            try:
                writer.finish()
            except Exception as exc:  # already failing: say so, do not hide the first error
                self.log(f"warning: could not finish the aborted results directory: {exc}")
        self.emit("sweep_ended", ok=path is not None, results=None if path is None else str(path))
        self.close()

    def results_name(self) -> str:
        """The results directory's name after its time stamp."""
        return f"{self.results_prefix}-{Path(self.scenario.target).stem}"

    def context(self, index: int, total: int, setting: int, run: int) -> RunContext:
        return RunContext(index, total, setting, run, run_seed(self.scenario.seed, setting, run))

    def run_one(self, ctx: RunContext) -> RunOutput:
        """One (PU setting, run) on the built testbed, from starting its elements to its records: what
        the local sweep does for each of its runs and what a cluster worker does for one task. The
        output carries the run's pcaps and the notes it added (``out.notes``)."""
        noted = len(self.notes)
        self._prepare_run(ctx.tag)
        self.before_run(ctx)
        out = self._one_run(ctx, address_map(self.spec), {e.node: e.element_class for e in self.elements})
        self.after_run(ctx, out)
        out.notes = self.notes[noted:]
        return out

    def write_run(self, writer: ResultsWriter, ctx: RunContext, out: RunOutput) -> None:
        """Hand one run's output to the results writer (on the machine that writes the results)."""
        writer.add_requests(out.requests)
        writer.add_usage(out.usage)
        writer.add_events(out.events)
        writer.add_usage_samples(out.samples)
        writer.set_pu_counters(ctx.setting, ctx.run, out.summary.get("counters_by_pu") or {})
        writer.manifest.setdefault("pu_counters", {})[ctx.tag] = out.summary.get("counters", {})
        for pcap in out.pcaps:
            writer.add_file(pcap, "pcaps")
        self.collect(ctx, out)

    def finish(self, writer: ResultsWriter) -> Path:
        """Write the notes and the summary: the results directory is complete."""
        if not self.want_pcaps:
            self.notes.append("no pcaps: dumpcap not installed or --no-pcaps")
        writer.manifest["notes"] = self.notes
        return writer.finish(self.summarise())

    def _one_run(self, ctx: RunContext, addrs: dict[str, str], classes: dict[str, str]) -> RunOutput:
        sc = self.scenario
        output = self.work / f"{ctx.tag}-pus.jsonl"
        cap, pcap = self._start_capture(ctx.tag)
        pu = self.svc.spawn(self.ue, "calcapp-pu", self.pu_command(ctx, output))
        ctx.started = time.monotonic()
        try:
            while pu.poll() is None:
                elapsed = time.monotonic() - ctx.started
                self.during_run(ctx, elapsed)
                self.emit("run_progress", tag=ctx.tag, elapsed=min(elapsed, sc.duration), duration=sc.duration)
                if elapsed > sc.duration + self.drain + PU_GRACE_S:
                    raise ExperimentError(f"{ctx.tag}: the pool users did not finish (see {paths.log_dir()})")
                time.sleep(self.poll_s)
            self.emit("run_progress", tag=ctx.tag, elapsed=sc.duration, duration=sc.duration)
        finally:
            self.end_run(ctx)
            if pu.poll() is None:
                self.svc.stop([pu], timeout=STOP_TIMEOUT)
            self._stop_pes()  # writes the elements' statistics files
            if cap is not None:
                self.svc.stop([cap], timeout=STOP_TIMEOUT)
        if pu.returncode != 0:
            raise ExperimentError(f"{ctx.tag}: calcapp-pu exited with code {pu.returncode}; see "
                                  f"{paths.log_dir() / f'{self.ue}-calcapp-pu.log'}")
        lines, summ = read_pu_output(output)
        recs = to_records(lines, ctx.setting, ctx.run, addrs, classes)
        events = request_events(lines, ctx.setting, ctx.run, addrs, classes)
        usage, samples = self._read_usage(ctx, float(summ.get("elapsed") or sc.duration), summ.get("t0_epoch"))
        return RunOutput(recs, usage, events, samples, summ, pcaps=[pcap] if pcap.exists() else [])


# --------------------------------------------------------------------------- shared by every sweep


def _cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def emulated_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every `emulab experiment` command has besides the sweep's (``scenario_options``):
    ``pe_registrar`` and ``pcaps``, handed to the command as keyword arguments."""
    func = click.option("--pcaps/--no-pcaps", default=True, show_default=True,
                        help="Capture the UE's traffic per run.")(func)
    return click.option(
        "--pe-registrar", type=click.Choice(["auto", "topology", "ue"]), default="auto", show_default=True,
        help="Where the PEs register: the topology's registrars (UE learns them over ENRP), the UE's, "
             "or auto (topology, falling back to ue when ENRP does not bring them to the UE).")(func)


class _Terminated(ExperimentError):
    """SIGTERM arrived: the experiment stops, tearing its testbed down on the way out."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
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


def versions() -> dict[str, str]:
    """The versions the manifest records (Python, kernel, packages, OVS, the git commit)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "kernel": platform.release()}
    for pkg in ("emulab", "mininet", "numpy", "click", "rich"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["ovs"] = subprocess.run(["ovs-vsctl", "--version"], capture_output=True, text=True,
                                    timeout=5).stdout.splitlines()[0]
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        out["git"] = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[2]), "rev-parse", "HEAD"],
                                    capture_output=True, text=True, timeout=5).stdout.strip()
    return out

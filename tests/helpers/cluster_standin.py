"""A stand-in for the testbed in a sweep on a cluster: the paper experiment whose runs make their
records from their seed (a few requests per PU, a tiny pcap) instead of running processes in a
built testbed, so the cluster's emulated path (tasks, gathering, writing, faults) is tested without
root. Everything else is the experiment's own code: ``run_one``, ``after_run``, ``write_run``,
``finish``. Importable by the workers (the tests' folder is on their path)."""

from __future__ import annotations

import random
import shutil
import time
from types import SimpleNamespace
from typing import Any

from emulab.experiments.base import RunContext
from emulab.experiments.paper import PaperExperiment
from emulab.experiments.records import ExperimentError, RunOutput, element_usage, request_events, to_records


class StandInPaper(PaperExperiment):
    """``run_s``: how long each run takes (the wall-clock time a worker is busy with it);
    ``fail_setting``: the runs of that PU setting fail as a run whose pool users crashed."""

    needs_root = False

    def __init__(self, *args: Any, run_s: float = 0.0, fail_setting: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.want_pcaps = bool(kwargs.get("pcaps", True))  # no dumpcap needed: the stand-in writes its pcap
        self.run_s = run_s
        self.fail_setting = fail_setting

    def _start_testbed(self, run_id: str) -> None:
        self.describe()
        self.testbed = SimpleNamespace(caps=SimpleNamespace(to_json=lambda: {"stand_in": True}), link_backend="none",
                                       datapath="none", radio_name="emulated")

    def _prepare_run(self, tag: str) -> None:
        pass

    def _one_run(self, ctx: RunContext, addrs: dict[str, str], classes: dict[str, str]) -> RunOutput:
        time.sleep(self.run_s)
        if ctx.setting == self.fail_setting:
            raise ExperimentError(f"{ctx.tag}: calcapp-pu exited with code 3 (stand-in)")
        rnd = random.Random(ctx.seed)
        nodes = [e.node for e in self.elements]
        lines = []
        for pu in range(1, ctx.setting + 1):
            t = 0.0
            for rid in range(1, 4):
                t += rnd.expovariate(0.2)
                node = rnd.choice(nodes)
                lines.append({"pu": f"pu{pu}", "request_id": rid, "size": 1e6, "queued_at": t, "started_at": t,
                              "accepted_at": t + 0.1, "completed_at": t + 1.0, "element": node,
                              "status": "completed", "accepts": [[t + 0.1, node]]})
        summary = {"t0_epoch": 1000.0, "elapsed": self.scenario.duration, "counters": {"requests": len(lines)}}
        usage, samples = [], []
        for e in self.elements:
            u, ss = element_usage({"used_calculations": rnd.random() * 1e6, "accepted": 3, "rejected": 0,
                                   "series": [[1001.0, 5.0, 1]]}, e, ctx.setting, ctx.run, self.scenario.duration,
                                  1000.0)
            usage.append(u)
            samples += ss
        pcaps = []
        if self.want_pcaps:
            pcap = self.work / f"{ctx.tag}-{self.ue}.pcapng"
            pcap.write_bytes(rnd.randbytes(256))
            pcaps.append(pcap)
        return RunOutput(to_records(lines, ctx.setting, ctx.run, addrs, classes),
                         usage, request_events(lines, ctx.setting, ctx.run, addrs, classes), samples, summary,
                         pcaps=pcaps)

    def close(self) -> None:
        self.testbed = None
        shutil.rmtree(self.work, ignore_errors=True)

"""`emulab experiment paper`: the papers' CalcApp sweep in the emulated testbed.

PUs 1 … 64 on the UE, 5 runs of 300 s per setting by default (``--quick``: PUs 1, 16, 64, one run of
60 s), with the papers' pool (Priority Least Used, per-class increments and capacities). Everything
it does is ``EmulatedSweep``'s; its metrics are the statistics every results directory has (the
papers' Figures 4-8 and Table 1, and per setting the work thrown away: ``counts.restarted``,
``restarts``, ``calculations_discarded``), so it adds no summary keys; it logs each run's restarts
(``calculations_discarded`` needs every request completed: a sweep with a drain).
The results directory has the format of `emulab simulate`, so `emulab plot A --compare B` overlays the two.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from emulab.cluster.options import cluster_options
from emulab.experiments.base import EmulatedSweep, RunContext, emulated_options
from emulab.experiments.records import RunOutput
from emulab.scenario import Scenario, scenario_options

if TYPE_CHECKING:
    from emulab.cluster.options import ClusterRun


class PaperExperiment(EmulatedSweep):
    """The papers' sweep: the base's runs, and a line for each run that threw work away."""

    name = "paper"
    results_prefix = "exp"

    def after_run(self, ctx: RunContext, out: RunOutput) -> None:
        restarted = [r for r in out.requests if r.restarts]
        if restarted:  # work thrown away: worth a line while the sweep runs, not only in summary.json
            self.log(f"{ctx.tag}: {len(restarted)} request(s) restarted from scratch after an Accept "
                     f"({sum(r.restarts or 0 for r in restarted)} restarts)")


def run_paper(scenario: Scenario, *, pe_registrar: str = "auto", pcaps: bool = True,
              progress: bool = True, cluster: ClusterRun | None = None) -> Path:
    """Run the sweep (here, or with ``cluster`` each run on a worker's testbed); returns the results
    directory (pcaps under ``pcaps/``)."""
    make = functools.partial(PaperExperiment, scenario, pe_registrar=pe_registrar, pcaps=pcaps)
    if cluster is not None:
        from emulab.cluster.sweeps import run_emulated_on_cluster

        return run_emulated_on_cluster(make, cluster, progress=progress)
    return make(progress=progress).run()


@click.command(name="paper")
@scenario_options
@emulated_options
@cluster_options
def command(scenario: Scenario, pe_registrar: str, pcaps: bool, cluster: ClusterRun | None) -> None:
    """Run the CalcApp sweep on TARGET (default paper-topology) in the emulated testbed; prints the results path last.

    Same sweep options as `emulab simulate` and the same results format, so
    `emulab plot DIR --compare SIMDIR` overlays emulated and simulated results. With --cluster every
    (setting, run) runs on a worker's testbed (`emulab worker`, or local:N instances here).
    """
    path = run_paper(scenario, pe_registrar=pe_registrar, pcaps=pcaps, progress=sys.stderr.isatty(), cluster=cluster)
    click.echo(str(path))

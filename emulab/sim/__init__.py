"""The discrete-event twin of the CalcApp testbed (`emulab simulate`, issue 7).

``model`` turns a topology (or a synthetic scenario) into pool elements with capacities, policies
and delays; ``engine`` simulates one run with the same ``rserpool.policy`` selection code as the
live registrar (its ``Simulation`` event loop on ``state``'s columns, with ``faults``' timeline and
``runs``' parameters and result); ``sweep`` runs a whole PU sweep in parallel processes and writes
the results in ``emulab.results``'s format.
"""

from emulab.sim.engine import CoverageLoss, Failure, RunParams, RunResult, simulate_run
from emulab.sim.model import ElementModel, ModelError, PoolModel, build_model
from emulab.sim.sweep import make_tasks, parse_coverage, parse_failure, run_tasks, simulate

__all__ = [
    "CoverageLoss", "ElementModel", "Failure", "ModelError", "PoolModel", "RunParams", "RunResult",
    "build_model", "make_tasks", "parse_coverage", "parse_failure", "run_tasks", "simulate", "simulate_run",
]

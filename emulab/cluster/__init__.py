"""Sweeps spread over machines with Dask distributed: every (PU setting, run) a task on a worker.

* ``address`` — what `--cluster` accepts: ``tcp://HOST:PORT`` (a running scheduler) or ``local:N``;
* ``connect`` — a client on that scheduler, or a local cluster of N worker processes, each with a
  testbed slot and its own testbed instance (``EMULAB_INSTANCE``); the checks that turn an
  unreachable scheduler or a cluster without testbed slots into one clear message;
* ``tasks`` — what a worker runs: one simulated run (``simulate_task``) or one emulated run on the
  worker's own testbed (``emulate_task``, through ``EmulatedSweep.run_one``, as the local sweep);
* ``gather`` — submits the tasks and gathers their results keyed by (setting, run), so that a
  run re-done after its worker died replaces, never adds; timeouts, a lost scheduler and runs no
  worker can take end as a list of what is missing;
* ``sweeps`` — the sweeps on a cluster: `emulab simulate --cluster` and `emulab experiment
  paper|coverage-loss --cluster`, written through ``emulab.results`` exactly as a local run;
* ``worker`` — `emulab worker --scheduler ADDRESS --slots N`: a lab machine's workers;
* ``options`` — the ``--cluster`` options the sweep commands share.

Emulation tasks ask for the worker resource ``testbed`` (one per slot: one testbed instance each);
simulation tasks ask for nothing, so any worker takes them.
"""

from emulab.cluster.address import ClusterAddress, ClusterError, parse_address

__all__ = ["ClusterAddress", "ClusterError", "parse_address"]

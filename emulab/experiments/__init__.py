"""The emulated experiments (`emulab experiment NAME`): sweeps of CalcApp runs in a testbed built here.

* ``base`` — ``EmulatedSweep``: builds the testbed (``emulab.runner``), starts every process
  (``emulab.services``), runs the sweep and writes the results directory; the hooks an experiment
  fills (before / during / after a run, its summary) and the events watchers subscribe to;
* ``events`` — ``ExperimentEvent``, the event kinds, and the progress bar (a subscriber);
* ``records`` — pool elements from the topology, and the processes' output as results records;
* ``paper`` — `emulab experiment paper`: the papers' sweep;
* ``coverage`` — `emulab experiment coverage-loss`: the UE loses coverage and gets it back; its
  fail-over metrics are shared with `emulab simulate --coverage-loss`.

Adding an experiment: one module here (a subclass of ``EmulatedSweep`` and its click ``command``),
one ``experiment.add_command`` line in ``emulab/cli.py``, and its figure in ``emulab/plots.py``
(see docs/guides/experiment.md).
"""

"""The fault timeline of a simulated run, and what a cut-off element does on its own.

``fault_schedule`` turns ``RunParams``' element crashes and coverage losses into timed fault steps
(crash, unregister, recover, coverage cut, radio link failure, coverage back, partition) on the
emulation's timeline; ``orphan_work`` is the work a PE the UE was cut off from still does on jobs
nobody waits for any more. The event loop that applies them is ``emulab.sim.engine.Simulation``.
"""

from __future__ import annotations

from emulab.sim.model import PoolModel
from emulab.sim.runs import RunParams

DONE_EPSILON = 1e-3
"""Calculations: a job with less than this left is done (floating-point slack)."""

# fault steps (``Simulation`` has one handler for each)
CRASH, UNREGISTER, RECOVER, CUT, RADIO_LINK_FAILURE, REACH, RELEARN, PARTITION = (
    "fail", "unregister", "recover", "cut", "rlf", "reach", "relearn", "partition")


def fault_schedule(model: PoolModel, params: RunParams) -> list[tuple[float, str, int]]:
    """Every fault step known before the run, as (time, step, element index or -1), in the order
    the run schedules them (equal times happen in this order)."""
    steps: list[tuple[float, str, int]] = []
    names = [e.name for e in model.elements]
    for failure in params.failures:
        if failure.element not in names:
            raise ValueError(f"failure of unknown element {failure.element!r}")
        element = names.index(failure.element)
        steps.append((failure.at, CRASH, element))
        steps.append((failure.at + params.registrar_detect_s, UNREGISTER, element))
        if failure.duration is not None:
            steps.append((failure.at + failure.duration, RECOVER, element))
    radio = model.radio
    for loss in params.coverage_losses:
        steps.append((loss.at, CUT, -1))
        rlf_at = loss.at + radio.rlf_s
        back_at = loss.at + loss.duration
        if back_at > rlf_at:
            # T310 ran out: the UE detaches, its routes go, and it must re-attach once covered again
            steps.append((rlf_at, RADIO_LINK_FAILURE, -1))
            steps.append((back_at + radio.reattach_s(back_at - rlf_at), REACH, -1))
        else:
            steps.append((back_at, REACH, -1))  # back before T310 expired: the UE never noticed
        steps.append((loss.at + params.partition_detect_s, PARTITION, -1))
    return steps


def orphan_work(
    capacity: float, remaining: list[float], drops: list[float], t0: float, t_end: float,
) -> float:
    """Calculations a cut-off PE still spends on ``remaining`` from ``t0`` (processor sharing, nobody
    else) until each job completes or its keep-alive drop time in ``drops`` comes, at most until ``t_end``."""
    jobs = [[r, d] for r, d in zip(remaining, drops, strict=True) if r > DONE_EPSILON and d > t0]
    t, used = t0, 0.0
    while jobs and t < t_end:
        n = len(jobs)
        dt = min(min(j[0] for j in jobs) * n / capacity, min(j[1] for j in jobs) - t, t_end - t)
        dt = max(dt, 0.0)
        used += dt * capacity
        t += dt
        for j in jobs:
            j[0] -= dt * capacity / n
        jobs = [j for j in jobs if j[0] > DONE_EPSILON and j[1] > t + 1e-12]
    return used

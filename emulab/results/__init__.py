"""The one results format of emulab: what an emulated or a simulated CalcApp sweep leaves behind.

A results directory ``<base>/<YYYYmmdd-HHMMSS>-<name>/`` holds

* ``requests.csv`` — one row per CalcApp request as its pool user saw it (``RequestRecord``);
* ``elements.csv`` — the used capacity of every pool element in every run (``ElementUsage``);
* ``manifest.json`` — what was run (the scenario, the topology, versions …), given by the producer;
* ``summary.json`` — ``summarize()``'s statistics per PU setting (the papers' figures and Table 1);
* ``sca/<PUs>pus-run<N>.sca`` — RSPLIB-style OMNeT++ scalar files, one per run, with exactly the
  scalar names RSPLIB's ``calcappclient`` and ``rspserver -calcapp`` write;
* ``events.csv`` (optional) — time-stamped events of runs with faults (``EventRecord``): every Accept,
  completion and coverage change, for the fail-over timeline;
* ``elements_timeline.csv`` (optional) — every element's cumulative used calculations and job count
  sampled over each run (``UsageSample``, 1 s apart on emulated runs): the used capacity over time;
* optional extra files (``pcaps/`` …) added by the producer.

Definitions follow RSPLIB's calcappclient (and the papers): queuing = queued → dequeued (a PU serves
one request at a time, FIFO); start-up = dequeued → accept received (handle resolution, rejections
and re-selections included); processing = accept → complete; handling = the sum; handling speed =
size / handling time. Like RSPLIB, the times are taken over *completed* requests only.

Rows are written as they arrive (``add_requests`` streams to the CSV) and the statistics are
accumulated in compact arrays, so a run with millions of requests does not hold millions of objects.

The package: ``records`` (the row dataclasses and column names), ``summary`` (summary.json's
statistics), ``sca`` (the RSPLIB scalar files), ``store`` (``ResultsWriter`` and the readers).
Metrics that belong to one experiment (the coverage-loss fail-over keys) live with that experiment
(``emulab.experiments``) and reach summary.json through ``ResultsWriter.finish(extra_summary)``.
"""

from emulab.results.records import (
    CLASSES,
    EVENT_FIELDS,
    EVENTS,
    FORMAT_VERSION,
    REQUEST_FIELDS,
    SAMPLE_FIELDS,
    STATUSES,
    USAGE_FIELDS,
    ElementUsage,
    EventRecord,
    IncompleteSweep,
    RequestRecord,
    ResultsError,
    UsageSample,
)
from emulab.results.sca import parse_sca, sca_text
from emulab.results.store import (
    Results,
    ResultsWriter,
    iter_requests,
    load_events,
    load_results,
    load_usage_samples,
)
from emulab.results.summary import stats, summarize

__all__ = [
    "CLASSES", "EVENTS", "EVENT_FIELDS", "FORMAT_VERSION", "REQUEST_FIELDS", "SAMPLE_FIELDS", "STATUSES",
    "USAGE_FIELDS", "ElementUsage", "EventRecord", "IncompleteSweep", "RequestRecord", "Results", "ResultsError", "ResultsWriter",
    "UsageSample", "iter_requests", "load_events", "load_results", "load_usage_samples", "parse_sca", "sca_text",
    "stats", "summarize",
]

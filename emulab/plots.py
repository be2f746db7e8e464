"""The papers' figures from a results directory (emulated or simulated), and Table 1 beside theirs.

``plot_results(A, compare=B)`` writes PNGs (matplotlib, Agg):

* fig4-used-capacity.png — used capacity of every pool element vs PUs, coloured by class (Fig. 4);
* fig4b-class-shares.png — each class's share of all the work done vs PUs;
* fig5-queuing.png, fig6-startup.png, fig7-processing.png — per-request times vs PUs (Figs. 5–7);
* fig8-handling-speed.png — handling speed per PU (completed calculations / total handling time, as
  RSPLIB's "Average Handling Speed") vs PUs with the UE's 200,000 calc/s line (Fig. 8), and
  fig8b-handling-speed-per-request.png the same per request;
and, from ``RESULT_FIGURES`` — the figures of one kind of results, each drawn only when the results
directory has what it needs (an experiment adds its figure there):

* coverage-<N>pus-run<R>.png — for runs with a coverage loss (``events.csv``; `emulab experiment
  coverage-loss`, `emulab simulate --coverage-loss`): requests in service per element class over
  time and every Accept, with the loss shaded and the fail-over and recovery times marked;
* utilisation-<N>pus-run1.png — where the elements were sampled (``elements_timeline.csv``): each
  element's used capacity second by second over the first run of every setting (a heat map, one
  row per element, grouped by class), with any coverage loss marked.

Times and speeds are drawn as the papers draw them: the mean (marker), a box from the 10 % to the
90 % quantile and whiskers from the minimum to the maximum. With ``compare`` the second results are
drawn beside the first on the same axes. Everything is read from ``summary.json``, so plotting a
huge run is as quick as plotting a small one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from emulab.results import (  # noqa: E402
    EventRecord,
    Results,
    UsageSample,
    load_events,
    load_results,
    load_usage_samples,
)

# The papers' Table 1 (M2EC/AINA 2021): average per-PU TOTAL queuing time over a 300 s run, in
# seconds — THE PAPERS' NUMBERS, reference data only (from shared/reference/paper.md).
PAPER_TABLE1: dict[int, dict[str, float]] = {
    1: {"mean": 37.51, "min": 3.79, "max": 106.98, "p10": 4.16, "p90": 88.29},
    2: {"mean": 9.88, "min": 1.11, "max": 39.18, "p10": 2.68, "p90": 17.95},
    4: {"mean": 9.50, "min": 0.42, "max": 26.44, "p10": 0.90, "p90": 21.98},
    8: {"mean": 10.32, "min": 0.64, "max": 29.96, "p10": 3.88, "p90": 20.72},
    16: {"mean": 15.57, "min": 0.00, "max": 78.19, "p10": 1.47, "p90": 33.12},
    32: {"mean": 31.26, "min": 0.00, "max": 173.75, "p10": 4.66, "p90": 65.87},
    48: {"mean": 37.90, "min": 0.60, "max": 341.95, "p10": 5.97, "p90": 73.62},
    64: {"mean": 174.33, "min": 1.46, "max": 1081.93, "p10": 27.24, "p90": 435.95},
}
# The papers' offered pool load (6 PEs of 1,000,000 calc/s) — THE PAPERS' NUMBERS.
PAPER_OFFERED_LOAD: dict[int, float] = {1: 0.0167, 16: 0.267, 32: 0.533, 48: 0.80, 64: 1.07}
UE_CAPACITY = 200_000.0
"""The UE's own PE: what a PU would get without offloading (Fig. 8's reference line)."""

CLASS_COLOURS: dict[str, list[str]] = {
    "ue": ["#d62728"],
    "mec": ["#1f77b4", "#17becf", "#4a6fa5", "#0b3d91"],
    "pmc": ["#2ca02c", "#8c564b", "#bcbd22", "#9467bd", "#e377c2", "#7f7f7f"],
}
CLASS_LABELS = {"ue": "UE", "mec": "MEC", "pmc": "PMC"}
SERIES_COLOURS = ("#1f77b4", "#ff7f0e")  # first results, compared results
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _settings(results: Sequence[Results]) -> list[int]:
    return sorted({s for r in results for s in r.settings})


def _setup_x(ax: Axes, settings: list[int]) -> None:
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels([str(s) for s in settings])
    ax.set_xlabel("number of pool users (PUs)")
    ax.set_xlim(-0.6, len(settings) - 0.4)
    ax.grid(True, axis="y", alpha=0.3)


def _title(results: Sequence[Results], what: str) -> str:
    if len(results) == 1:
        return f"{what} — {results[0].label}"
    return f"{what} — {results[0].label} vs {results[1].label}"


def _element_colours(res: Results) -> dict[str, str]:
    counters: dict[str, int] = {}
    out: dict[str, str] = {}
    first = res.summary["settings"][str(res.settings[0])]["elements"] if res.settings else {}
    for name, info in first.items():
        cls = info["class"]
        pal = CLASS_COLOURS.get(cls, ["#444444"])
        k = counters.get(cls, 0)
        counters[cls] = k + 1
        out[name] = pal[k % len(pal)]
    return out


def fig_used_capacity(results: Sequence[Results], out: Path) -> Path:
    """Fig. 4: utilisation of every element vs PUs (mean over runs, whiskers min/max of the runs)."""
    settings = _settings(results)
    fig, ax = plt.subplots(figsize=(11, 6))
    handles: list[Any] = []
    for ri, res in enumerate(results):
        colours = _element_colours(res)
        style = "-" if ri == 0 else "--"
        names = list(colours)
        for ei, name in enumerate(names):
            xs, ys, lo, hi = [], [], [], []
            for xi, s in enumerate(settings):
                el = res.summary["settings"].get(str(s), {}).get("elements", {}).get(name)
                if el is None:
                    continue
                u = 100.0 * el["utilisation"]
                runs = el.get("utilisation_runs") or {}
                xs.append(xi + (ri - 0.5 * (len(results) - 1)) * 0.12 + (ei - len(names) / 2) * 0.015)
                ys.append(u)
                lo.append(u - 100.0 * (runs.get("min") if runs.get("min") is not None else el["utilisation"]))
                hi.append(100.0 * (runs.get("max") if runs.get("max") is not None else el["utilisation"]) - u)
            if not xs:
                continue
            ax.errorbar(
                xs, ys, yerr=[lo, hi], color=colours[name], linestyle=style, marker=MARKERS[ei % len(MARKERS)],
                markersize=6, linewidth=1.6, capsize=3, alpha=0.9 if ri == 0 else 0.7,
                markerfacecolor=colours[name] if ri == 0 else "white",
            )
            if ri == 0:
                handles.append(Line2D([], [], color=colours[name], marker=MARKERS[ei % len(MARKERS)],
                                      label=f"{name} ({CLASS_LABELS.get(res.summary['settings'][str(res.settings[0])]['elements'][name]['class'], '?')})"))
    if len(results) > 1:
        handles.append(Line2D([], [], color="black", linestyle="-", label=results[0].label))
        handles.append(Line2D([], [], color="black", linestyle="--", markerfacecolor="white", marker="o",
                              label=results[1].label))
    _setup_x(ax, settings)
    ax.set_ylabel("used capacity of the pool element [%]")
    ax.set_ylim(-2, 105)
    ax.set_title(_title(results, "Used capacity per pool element (papers' Fig. 4)"))
    ax.legend(handles=handles, loc="upper left", fontsize=9, ncol=2, framealpha=0.9)
    return _save(fig, out / "fig4-used-capacity.png")


def fig_class_shares(results: Sequence[Results], out: Path) -> Path:
    """Share of all work done by each element class, stacked, plus the pool utilisation."""
    settings = _settings(results)
    fig, ax = plt.subplots(figsize=(11, 6))
    width = 0.8 / len(results)
    classes = ["mec", "pmc", "ue"]
    for ri, res in enumerate(results):
        for xi, s in enumerate(settings):
            st = res.summary["settings"].get(str(s))
            if st is None:
                continue
            x = xi + (ri - 0.5 * (len(results) - 1)) * width
            bottom = 0.0
            for cls in classes:
                share = 100.0 * st["classes"].get(cls, {}).get("work_share", 0.0)
                ax.bar(x, share, width * 0.9, bottom=bottom, color=CLASS_COLOURS[cls][0],
                       alpha=1.0 if ri == 0 else 0.55, edgecolor="black", linewidth=0.5,
                       hatch=None if ri == 0 else "//")
                if share >= 6:
                    ax.text(x, bottom + share / 2, f"{share:.0f}", ha="center", va="center", fontsize=8, color="white")
                bottom += share
            ax.text(x, 101, f"{100 * st['pool_utilisation']:.0f}%", ha="center", va="bottom", fontsize=7)
    handles = [Patch(color=CLASS_COLOURS[c][0], label=f"{CLASS_LABELS[c]} share of the work") for c in classes]
    if len(results) > 1:
        handles += [Patch(facecolor="white", edgecolor="black", label=f"left: {results[0].label}"),
                    Patch(facecolor="white", edgecolor="black", hatch="//", label=f"right: {results[1].label}")]
    _setup_x(ax, settings)
    ax.set_ylim(0, 112)
    ax.set_ylabel("share of all calculations done [%]  (numbers on top: pool utilisation)")
    ax.set_title(_title(results, "Who does the work: share per element class"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(len(handles), 3),
              fontsize=9, frameon=False)
    return _save(fig, out / "fig4b-class-shares.png")


def _box_plot(
    results: Sequence[Results], key: str, ylabel: str, title: str, path: Path,
    scale: float = 1.0, reference: tuple[float, str] | None = None, log: bool = False, section: str | None = "times",
) -> Path:
    """Mean, 10–90 % box and min–max whiskers of ``summary[setting][section][key]`` per setting
    (``section=None``: ``summary[setting][key]``)."""
    settings = _settings(results)
    fig, ax = plt.subplots(figsize=(11, 6))
    width = 0.6 / len(results)
    for ri, res in enumerate(results):
        colour = SERIES_COLOURS[ri % len(SERIES_COLOURS)]
        means_x, means_y = [], []
        for xi, s in enumerate(settings):
            st = res.summary["settings"].get(str(s))
            if st is None:
                continue
            v = (st[section] if section else st).get(key)
            if not v or v.get("mean") is None:
                continue
            x = xi + (ri - 0.5 * (len(results) - 1)) * (width + 0.05)
            lo, hi = v["p10"] * scale, v["p90"] * scale
            ax.vlines(x, v["min"] * scale, v["max"] * scale, color=colour, linewidth=1.2)
            ax.hlines([v["min"] * scale, v["max"] * scale], x - width / 4, x + width / 4, color=colour, linewidth=1.2)
            ax.add_patch(Rectangle((x - width / 2, lo), width, max(hi - lo, 1e-12), facecolor=colour, alpha=0.35,
                                   edgecolor=colour, linewidth=1.2))
            means_x.append(x)
            means_y.append(v["mean"] * scale)
        ax.plot(means_x, means_y, color=colour, marker="o", markersize=6, linewidth=1.5,
                markeredgecolor="black", label=f"{res.label}: mean")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(facecolor="grey", alpha=0.35, label="box: 10 % … 90 % quantile"),
                Line2D([], [], color="grey", label="whiskers: min … max")]
    if reference is not None:
        ax.axhline(reference[0], color="#d62728", linestyle=":", linewidth=1.8)
        handles.append(Line2D([], [], color="#d62728", linestyle=":", label=reference[1]))
    _setup_x(ax, settings)
    if log:
        ax.set_yscale("symlog", linthresh=0.1, linscale=0.5)
        ylabel += "\n(log scale above 0.1, linear below)"
    ax.set_ylim(bottom=0)
    ax.set_ylabel(ylabel)
    ax.set_title(_title(results, title))
    # below the axes: boxes and whiskers span the whole height, a legend inside would hide them
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(len(handles), 3),
              fontsize=9, frameon=False)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_results(results_dir: Path, compare: Path | None = None, out: Path | None = None) -> list[Path]:
    """Write all figures; returns the PNG paths. ``out`` defaults to ``<results_dir>/plots``."""
    res = [load_results(results_dir, with_requests=False)]
    if compare is not None:
        res.append(load_results(compare, with_requests=False))
        _distinct_labels(res[0], res[1])
    out = Path(out) if out is not None else Path(results_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    files = ResultsFiles(Path(results_dir), res[0])
    return [
        fig_used_capacity(res, out),
        fig_class_shares(res, out),
        _box_plot(res, "queuing", "queuing time per request [s]", "Queuing time (papers' Fig. 5)",
                  out / "fig5-queuing.png", log=True),
        _box_plot(res, "startup", "start-up time per request [s]", "Start-up time (papers' Fig. 6)",
                  out / "fig6-startup.png", log=True),
        _box_plot(res, "processing", "processing time per request [s]", "Processing time (papers' Fig. 7)",
                  out / "fig7-processing.png", log=True),
        _box_plot(res, "pu_handling_speed", "handling speed per PU [1,000 calculations/s]",
                  "Handling speed per PU (papers' Fig. 8)", out / "fig8-handling-speed.png", scale=1e-3,
                  reference=(UE_CAPACITY / 1e3, "UE's own PE: 200,000 calc/s"), section=None),
        _box_plot(res, "handling_speed", "handling speed per request [1,000 calculations/s]",
                  "Handling speed per request", out / "fig8b-handling-speed-per-request.png", scale=1e-3,
                  reference=(UE_CAPACITY / 1e3, "UE's own PE: 200,000 calc/s")),
        *(path for figure in RESULT_FIGURES for path in figure(files, out)),
    ]


@dataclass
class ResultsFiles:
    """A results directory as the ``RESULT_FIGURES`` read it: its optional files, each read once."""

    path: Path
    results: Results

    @cached_property
    def events(self) -> list[EventRecord]:
        return load_events(self.path)

    @cached_property
    def samples(self) -> list[UsageSample]:
        return load_usage_samples(self.path)


def _coverage_figures(files: ResultsFiles, out: Path) -> list[Path]:
    return fig_coverage_timelines(files.results, files.events, out)


def _utilisation_figures(files: ResultsFiles, out: Path) -> list[Path]:
    return fig_utilisation_timelines(files.results, files.samples, files.events, out)


def fig_chaos(files: ResultsFiles, out: Path) -> list[Path]:
    """Per chaos run (`emulab experiment chaos`): every fault as a bar on its target's lane, and the
    requests completed over time; [] without a chaos.csv."""
    import csv

    path = files.path / "chaos.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    runs = {(r["setting"], r["run"]) for r in rows}
    written = []
    for setting, run in sorted(runs, key=lambda k: (int(k[0]), int(k[1]))):
        mine = [r for r in rows if (r["setting"], r["run"]) == (setting, run)]
        lanes = sorted({(r["kind"], r["target"]) for r in mine})
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 2.5 + 0.25 * len(lanes)), sharex=True,
                                          height_ratios=[max(2, len(lanes)) * 0.3, 2])
        colours = {"pe": "tab:red", "registrar": "tab:purple", "link": "tab:orange", "coverage": "tab:blue"}
        for i, lane in enumerate(lanes):
            begun: float | None = None
            for r in (r for r in mine if (r["kind"], r["target"]) == lane):
                if r["action"] == "fault":
                    begun = float(r["done_s"])
                elif begun is not None:
                    top.barh(i, float(r["done_s"]) - begun, left=begun, color=colours.get(lane[0], "grey"))
                    begun = None
        top.set_yticks(range(len(lanes)), [f"{k} {t}" for k, t in lanes], fontsize=8)
        top.set_title(f"Chaos, {setting} PUs, run {run}: faults (bars) and requests completed")
        done = sorted(e.t for e in files.events
                      if e.event == "complete" and (str(e.setting), str(e.run)) == (setting, run))
        bottom.step(done, range(1, len(done) + 1), where="post", color="black", lw=1.2)
        bottom.set_ylabel("completed")
        bottom.set_xlabel("time since the pool users started [s]")
        written.append(_save(fig, out / f"chaos-{setting}pus-run{run}.png"))
    return written


Figure = Callable[[ResultsFiles, Path], list[Path]]
RESULT_FIGURES: tuple[Figure, ...] = (_coverage_figures, _utilisation_figures, fig_chaos)
"""Figures of one kind of results: each returns the PNGs it wrote, [] when the directory lacks its data."""


def fig_coverage_timelines(res: Results, events: list[EventRecord], out: Path) -> list[Path]:
    """One timeline per run that lost coverage (none when the results have no coverage events)."""
    runs = sorted({(e.setting, e.run) for e in events if e.event == "coverage_lost"})
    per_run = {(r["setting"], r["run"]): r for r in res.summary.get("coverage_runs", [])}
    return [_coverage_timeline([e for e in events if (e.setting, e.run) == key], per_run.get(key, {}),
                               out / f"coverage-{key[0]}pus-run{key[1]}.png") for key in runs]


def _coverage_timeline(events: list[EventRecord], metrics: dict[str, Any], path: Path) -> Path:
    lost = next((e.t for e in events if e.event == "coverage_lost"), None)
    restored = next((e.t for e in events if e.event == "coverage_restored"), None)
    end = max((e.t for e in events), default=1.0)
    # a request is in service at the class of its latest Accept until its next Accept, its restart
    # from scratch or its completion
    by_req: dict[tuple[str | None, int | None], list[EventRecord]] = {}
    for e in events:
        if e.event in ("accept", "complete", "restart"):
            by_req.setdefault((e.pu, e.request_id), []).append(e)
    steps: dict[str, list[tuple[float, int]]] = {c: [] for c in CLASS_LABELS}
    for evs in by_req.values():
        evs.sort(key=lambda e: e.t)
        for cur, nxt in zip(evs, [*evs[1:], None], strict=True):
            if cur.event == "accept" and cur.element_class in steps:
                steps[cur.element_class] += [(cur.t, +1), (nxt.t if nxt is not None else end, -1)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, height_ratios=[3, 1.4])
    for cls, deltas in steps.items():
        if not deltas:
            continue
        deltas.sort()
        ts, level, levels = [0.0], 0, [0]
        for t, d in deltas:
            level += d
            ts.append(t)
            levels.append(level)
        top.step(ts, levels, where="post", color=CLASS_COLOURS[cls][0], label=f"{CLASS_LABELS[cls]} elements", lw=1.6)
    lanes = {"ue": 0, "mec": 1, "pmc": 2}
    for e in events:
        if e.event == "accept" and e.element_class in lanes:
            bottom.plot(e.t, lanes[e.element_class], "|", ms=12, color=CLASS_COLOURS[e.element_class][0])
        elif e.event == "restart" and e.element_class in lanes:  # work thrown away on the element left
            bottom.plot(e.t, lanes[e.element_class], "x", ms=7, color="black")
    bottom.set_yticks(list(lanes.values()), [CLASS_LABELS[c] for c in lanes])
    bottom.set_ylim(-0.6, 2.6)
    bottom.set_ylabel("Accepts")
    bottom.set_xlabel("time since the pool users started [s]")
    for ax in (top, bottom):
        if lost is not None:
            ax.axvspan(lost, restored if restored is not None else end, color="0.85", zorder=0)
        ax.grid(True, axis="x", alpha=0.3)
    notes = []
    if lost is not None:
        fo = metrics.get("failover_s")
        notes.append(f"coverage lost at {lost:.1f} s; first UE Accept after {fo:.2f} s" if fo is not None
                     else f"coverage lost at {lost:.1f} s; the UE element accepted nothing")
        jobs = metrics.get("failover_job_s") or {}
        if jobs.get("n"):
            notes.append(f"per cut-off job p50 {jobs['p50']:.2f} s, max {jobs['max']:.2f} s (n {jobs['n']})")
    if restored is not None:
        rc = metrics.get("recovery_s")
        notes.append(f"back at {restored:.1f} s; first MEC Accept after {rc:.2f} s" if rc is not None
                     else f"back at {restored:.1f} s; no MEC Accept afterwards")
    if metrics:
        notes.append(f"{metrics.get('requests_completed')}/{metrics.get('requests_issued')} requests completed, "
                     f"{metrics.get('requests_lost')} lost"
                     + (f", {metrics['requests_restarted']} restarted (x)" if metrics.get("requests_restarted") else ""))
    top.set_ylabel("requests in service")
    top.set_title("Coverage loss and fail-over (shaded: UE without coverage)\n" + "; ".join(notes), fontsize=10)
    top.legend(loc="upper right", fontsize=9)
    return _save(fig, path)


def fig_utilisation_timelines(res: Results, samples: list[UsageSample], events: list[EventRecord],
                              out: Path) -> list[Path]:
    """Per setting, the first run's per-element utilisation over time (none without samples)."""
    if not samples:
        return []
    capacity = {u.element: u.capacity for u in res.usage}
    paths = []
    for setting in sorted({s.setting for s in samples}):
        run = min(s.run for s in samples if s.setting == setting)
        mine = [s for s in samples if (s.setting, s.run) == (setting, run)]
        cuts = [e for e in events if (e.setting, e.run) == (setting, run) and e.event.startswith("coverage_")]
        paths.append(_utilisation_heatmap(mine, capacity, cuts, setting, run,
                                          out / f"utilisation-{setting}pus-run{run}.png"))
    return paths


def utilisation_grid(samples: list[UsageSample], capacity: dict[str, float]) -> tuple[list[str], np.ndarray]:
    """Elements (UE, MEC, PMC order) and their used capacity in every second from 0 as a share of
    their capacity, from the cumulative counters: what an interval between two samples used is
    spread evenly over the seconds it covers."""
    cls_of = {s.element: s.element_class for s in samples}
    order = {c: i for i, c in enumerate(CLASS_LABELS)}
    elements = sorted(cls_of, key=lambda n: (order.get(cls_of[n], 9), n))
    bins = max(1, int(np.ceil(max(s.t for s in samples))))
    grid = np.zeros((len(elements), bins))
    for row, name in enumerate(elements):
        pts = sorted((s.t, s.used_calculations) for s in samples if s.element == name)
        for (t0, u0), (t1, u1) in zip(pts, pts[1:], strict=False):
            if t1 <= max(t0, 0.0) or u1 < u0:
                continue
            rate = (u1 - u0) / (t1 - t0)
            for b in range(max(0, int(t0)), min(bins, int(np.ceil(t1)))):
                overlap = min(t1, b + 1) - max(t0, b)
                if overlap > 0:
                    grid[row, b] += rate * overlap
        grid[row] /= capacity.get(name) or 1.0
    return elements, grid


def _utilisation_heatmap(samples: list[UsageSample], capacity: dict[str, float], cuts: list[EventRecord],
                         setting: int, run: int, path: Path) -> Path:
    elements, grid = utilisation_grid(samples, capacity)
    bins = grid.shape[1]
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(elements) + 2.2))
    im = ax.imshow(np.clip(grid, 0, 1), aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1,
                   extent=(0, bins, len(elements) - 0.5, -0.5))
    cls_of = {s.element: s.element_class for s in samples}
    ax.set_yticks(range(len(elements)), [f"{n} ({CLASS_LABELS.get(cls_of[n], cls_of[n])})" for n in elements])
    ax.set_xlabel("time since the pool users started [s]")
    lost = next((e.t for e in cuts if e.event == "coverage_lost"), None)
    back = next((e.t for e in cuts if e.event == "coverage_restored"), None)
    for t, label in ((lost, "coverage lost"), (back, "coverage back")):
        if t is not None:
            ax.axvline(t, color="white", ls="--", lw=1.2)
            ax.text(t, -0.6, label, color="black", fontsize=8, ha="center", va="bottom")
    fig.colorbar(im, ax=ax, label="used capacity (share of the element's capacity)", pad=0.01)
    ax.set_title(f"Used capacity per pool element over time — {setting} PUs, run {run}", fontsize=10,
                 pad=14 if lost is not None else 6)
    return _save(fig, path)


def _distinct_labels(a: Results, b: Results) -> None:
    """Two runs of one kind (e.g. two simulations) get short labels that tell them apart."""
    if a.label != b.label:
        return
    sa = a.manifest.get("scenario", {}).get("seed")
    sb = b.manifest.get("scenario", {}).get("seed")
    if sa is not None and sb is not None and sa != sb:
        a.manifest["label"], b.manifest["label"] = f"{a.label}, seed {sa}", f"{b.label}, seed {sb}"
    else:
        a.manifest["label"], b.manifest["label"] = f"A: {a.label}", f"B: {b.label}"


def table1(results_dir: Path, compare: Path | None = None) -> Any:
    """Table 1 (per-PU total queuing time over a run) beside the papers' numbers, as a rich Table."""
    from rich.table import Table

    res = [load_results(results_dir, with_requests=False)]
    if compare is not None:
        res.append(load_results(compare, with_requests=False))
        _distinct_labels(res[0], res[1])
    from rich.markup import escape

    durations = sorted({r.manifest.get("scenario", {}).get("duration") for r in res} - {None})
    caption = None
    if any(d != 300 for d in durations):
        caption = (f"runs of {', '.join(f'{d:g}' for d in durations)} s; the papers' runs are 300 s, and a total "
                   "over a run grows with the run's length")
    table = Table(title=escape("Table 1: per-PU total queuing time over a run [s], beside the papers' values"),
                  caption=caption)
    table.add_column("PUs", justify="right")
    table.add_column("source")
    for col in ("mean", "min", "max", "10 %", "90 %"):
        table.add_column(col, justify="right")
    keys = ("mean", "min", "max", "p10", "p90")
    for s in _settings(res):
        for i, r in enumerate(res):
            t = r.summary["settings"].get(str(s), {}).get("table1") or {}
            table.add_row(str(s) if i == 0 else "", r.label, *[_num(t.get(k)) for k in keys])
        p = PAPER_TABLE1.get(s)
        table.add_row("", "papers (Table 1)", *[_num(p[k]) if p else "—" for k in keys], style="dim",
                      end_section=True)
    return table


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"

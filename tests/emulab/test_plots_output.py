"""`emulab plot`: PNGs for a small results directory, the compare overlay, Table 1, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from emulab.cli import main
from emulab.plots import PAPER_TABLE1, plot_results, table1, utilisation_grid
from emulab.scenario import Scenario
from emulab.sim import simulate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("res")
    a, _ = simulate(Scenario(pus=(1, 16, 64), runs=1, duration=60.0, out=base, jobs=1, seed=1), progress=False)
    b, _ = simulate(Scenario(pus=(1, 16, 64), runs=1, duration=60.0, out=base, jobs=1, seed=2), progress=False)
    return a, b


def test_plot_writes_pngs(two_results: tuple[Path, Path], tmp_path: Path) -> None:
    paths = plot_results(two_results[0], out=tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted([
        "fig4-used-capacity.png", "fig4b-class-shares.png", "fig5-queuing.png", "fig6-startup.png",
        "fig7-processing.png", "fig8-handling-speed.png", "fig8b-handling-speed-per-request.png",
        # the simulated elements' samples (elements_timeline.csv): one heat map per setting
        "utilisation-1pus-run1.png", "utilisation-16pus-run1.png", "utilisation-64pus-run1.png",
    ])
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_plot_compare_and_table(two_results: tuple[Path, Path], tmp_path: Path) -> None:
    paths = plot_results(two_results[0], compare=two_results[1], out=tmp_path)
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in paths)
    console = Console(width=200, record=True)
    console.print(table1(two_results[0], compare=two_results[1]))
    text = console.export_text()
    assert "papers (Table 1)" in text and f"{PAPER_TABLE1[64]['mean']:.2f}" in text
    assert "over a run [s]" in text  # not eaten as rich markup
    assert "runs of 60 s; the papers' runs are 300 s" in text  # short runs are not silently compared


def test_utilisation_grid_spreads_used_capacity_over_seconds() -> None:
    from emulab.results import UsageSample

    def smp(t: float, elem: str, cls: str, used: float) -> UsageSample:
        return UsageSample(1, 1, t, elem, cls, used, 0)

    # mec-pe1 (1e6/s) works flat out from 0.5 s to 2.5 s; ue (2e5/s) half the second 1..2
    samples = [smp(0.5, "mec-pe1", "mec", 0.0), smp(2.5, "mec-pe1", "mec", 2e6), smp(3.0, "mec-pe1", "mec", 2e6),
               smp(0.0, "ue", "ue", 0.0), smp(1.0, "ue", "ue", 0.0), smp(2.0, "ue", "ue", 1e5)]
    elements, grid = utilisation_grid(samples, {"mec-pe1": 1e6, "ue": 2e5})
    assert elements == ["ue", "mec-pe1"]  # UE first, then MEC, then PMC
    assert grid.shape == (2, 3)
    assert grid[0].tolist() == pytest.approx([0.0, 0.5, 0.0])
    assert grid[1].tolist() == pytest.approx([0.5, 1.0, 0.5])


def test_coverage_and_utilisation_figures_from_events_and_samples(tmp_path: Path) -> None:
    from emulab.results import ElementUsage, EventRecord, ResultsWriter, UsageSample

    w = ResultsWriter(tmp_path, "cov", {"scenario": {"size_mean": 1e6, "interval_mean": 10.0, "duration": 30.0}})
    w.add_usage([ElementUsage(8, 1, "ue", "ue", 2e5, 30.0, 1e6), ElementUsage(8, 1, "mec-pe1", "mec", 1e6, 30.0, 9e6)])
    w.add_usage_samples([UsageSample(8, 1, float(t), e, c, u * t, 1) for t in range(31)
                         for e, c, u in (("ue", "ue", 2e5 if 10 <= t < 20 else 0.0), ("mec-pe1", "mec", 3e5))])
    w.add_events([EventRecord(8, 1, 10.0, "coverage_lost"), EventRecord(8, 1, 20.0, "coverage_restored"),
                  EventRecord(8, 1, 5.0, "accept", "pu0", 1, "mec-pe1", "mec"),
                  EventRecord(8, 1, 12.0, "accept", "pu0", 2, "ue", "ue"),
                  EventRecord(8, 1, 18.0, "complete", "pu0", 2, "ue", "ue")])
    path = w.finish({"coverage_runs": [{"setting": 8, "run": 1, "failover_s": 2.0, "recovery_s": None,
                                        "requests_issued": 2, "requests_completed": 1, "requests_lost": 1}]})
    names = {p.name for p in plot_results(path, out=tmp_path / "plots")}
    assert {"coverage-8pus-run1.png", "utilisation-8pus-run1.png"} <= names
    for n in ("coverage-8pus-run1.png", "utilisation-8pus-run1.png"):
        assert (tmp_path / "plots" / n).read_bytes().startswith(PNG_MAGIC)


def test_cli_plot(two_results: tuple[Path, Path], tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["plot", str(two_results[0]), "--compare", str(two_results[1]),
                                  "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "fig8-handling-speed.png").is_file()
    assert r.output.strip().splitlines()[-1].endswith(".png")


def test_cli_plot_missing_dir_is_exit_2(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["plot", str(tmp_path / "nope")])
    assert r.exit_code == 2
    assert "no such results directory" in r.output

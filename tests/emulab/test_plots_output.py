"""`emulab plot`: PNGs for a small results directory, the compare overlay, Table 1, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from emulab.cli import main
from emulab.plots import PAPER_TABLE1, plot_results, table1
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
        "fig7-processing.png", "fig8-handling-speed.png",
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

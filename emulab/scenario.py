"""The CalcApp sweep scenario shared by `emulab simulate` and `emulab experiment paper`.

One frozen dataclass, ``Scenario``, holds what a sweep varies and what it keeps fixed; its defaults
are the papers' values (paper.md): PUs 1 … 64 on the UE, 5 runs of 300 s per setting, Priority Least
Used with increments UE 100 %, MEC 10 %, PMC 50 %, capacities 200,000 / 1,000,000 / 1,000,000
calculations/s, at most 4 simultaneous requests per PE, request sizes of mean 1,000,000 calculations
and inter-request times of mean 10 s, both negative-exponential.

``scenario_options`` is the click decorator both commands use so their option names and defaults can
never drift apart; it hands the command a ready ``Scenario`` as the keyword argument ``scenario``.
Per-class values (``--capacity mec=2e6``) are merged onto the papers' defaults and, when a topology is
simulated or emulated, override the per-PE values in its ``pe`` service options class by class.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import click

from emulab.errors import EmulabError

ELEMENT_CLASSES: tuple[str, ...] = ("ue", "mec", "pmc")
"""Where a pool element runs: on the UE, in the MEC cloud, in the public multi-cloud."""

PAPER_PUS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 48, 64)
PAPER_INCREMENTS: Mapping[str, float] = MappingProxyType({"ue": 1.0, "mec": 0.1, "pmc": 0.5})
PAPER_CAPACITY: Mapping[str, float] = MappingProxyType({"ue": 200_000.0, "mec": 1_000_000.0, "pmc": 1_000_000.0})
DISTRIBUTIONS: tuple[str, ...] = ("exp", "const", "uniform")
"""exp = negative-exponential (the papers, RSPLIB's randomExpDouble); uniform = U(0, 2 × mean)."""

# --quick: a smoke-test sweep that still shows low, medium and overload behaviour.
QUICK_PUS: tuple[int, ...] = (1, 16, 64)
QUICK_RUNS = 1
QUICK_DURATION = 60.0


def run_seed(seed: int, setting: int, run: int) -> int:
    """The seed of one run (PU setting, run number) of a sweep with base seed ``seed``: what
    `emulab experiment` hands its pool users and what `emulab simulate` draws the same PUs from."""
    return seed * 100_000 + setting * 100 + run


class ScenarioError(EmulabError):
    """A sweep option has a bad value (one line, shown by the CLI with exit code 2)."""


@dataclass(frozen=True)
class Scenario:
    """One sweep: for every PU count in ``pus``, ``runs`` runs of ``duration`` seconds."""

    target: str = "paper-topology"
    """Topology name/path (or a built-in simulator scenario name, see ``emulab.sim.model``)."""
    pus: tuple[int, ...] = PAPER_PUS
    runs: int = 5
    duration: float = 300.0
    seed: int = 1
    policy: str = "PLU"
    increments: Mapping[str, float] = field(default_factory=lambda: dict(PAPER_INCREMENTS))
    capacity: Mapping[str, float] = field(default_factory=lambda: dict(PAPER_CAPACITY))
    max_requests: int = 4
    size_mean: float = 1_000_000.0
    size_dist: str = "exp"
    interval_mean: float = 10.0
    interval_dist: str = "exp"
    quick: bool = False
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    out: Path = Path("results")

    def __post_init__(self) -> None:
        if not self.pus or any(n < 1 for n in self.pus):
            raise ScenarioError(f"--pus: expected positive integers, got {self.pus!r}")
        if self.runs < 1:
            raise ScenarioError(f"--runs: expected at least 1, got {self.runs}")
        if self.duration <= 0:
            raise ScenarioError(f"--duration: expected > 0 seconds, got {self.duration}")
        if self.max_requests < 1:
            raise ScenarioError(f"--max-requests: expected at least 1, got {self.max_requests}")
        if self.size_mean <= 0 or self.interval_mean <= 0:
            raise ScenarioError("--size-mean and --interval-mean must be > 0")
        for name in ("size_dist", "interval_dist"):
            if getattr(self, name) not in DISTRIBUTIONS:
                raise ScenarioError(f"--{name.replace('_', '-')}: expected one of {', '.join(DISTRIBUTIONS)}")
        for name in ("increments", "capacity"):
            for cls, v in getattr(self, name).items():
                if v < 0 or (name == "capacity" and v == 0):
                    raise ScenarioError(f"--{name}: bad value {v} for class {cls}")

    @property
    def offered_load_per_pu(self) -> float:
        """Calculations per second one PU asks for on average."""
        return self.size_mean / self.interval_mean

    def policy_spec(self, element_class: str) -> str:
        """RSPLIB ``-policy=`` text for an element of a class, e.g. ``PLU:0.1``."""
        inc = self.increments.get(element_class)
        return self.policy if inc is None else f"{self.policy}:{inc:g}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, stored as ``manifest["scenario"]``."""
        d = asdict(self)
        d["pus"] = list(self.pus)
        d["increments"] = dict(self.increments)
        d["capacity"] = dict(self.capacity)
        d["out"] = str(self.out)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scenario:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        if "pus" in kw:
            kw["pus"] = tuple(int(n) for n in kw["pus"])
        if "out" in kw:
            kw["out"] = Path(kw["out"])
        return cls(**kw)

    def quickened(self, explicit: set[str] = frozenset()) -> Scenario:  # type: ignore[assignment]
        """The --quick variant: fewer settings, 1 run, 60 s, except for options given explicitly."""
        changes: dict[str, Any] = {"quick": True}
        if "pus" not in explicit:
            changes["pus"] = QUICK_PUS
        if "runs" not in explicit:
            changes["runs"] = QUICK_RUNS
        if "duration" not in explicit:
            changes["duration"] = QUICK_DURATION
        return replace(self, **changes)


# --------------------------------------------------------------------------- parsing helpers


def parse_pus(text: str) -> tuple[int, ...]:
    """"1,2,4" -> (1, 2, 4); ranges "1-4" are allowed too."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise ScenarioError(f"--pus: expected a comma-separated list of integers, got {text!r}") from None
    if not out:
        raise ScenarioError(f"--pus: expected at least one PU count, got {text!r}")
    return tuple(out)


def parse_class_values(text: str, option: str, base: Mapping[str, float]) -> dict[str, float]:
    """"ue=1.0,mec=0.1" merged onto ``base``; unknown classes are an error (a typo would be silent)."""
    values = dict(base)
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        cls, sep, val = part.partition("=")
        cls = cls.strip().lower()
        if not sep or cls not in ELEMENT_CLASSES:
            raise ScenarioError(f"{option}: expected CLASS=VALUE with CLASS in {'/'.join(ELEMENT_CLASSES)}, got {part!r}")
        try:
            values[cls] = float(val)
        except ValueError:
            raise ScenarioError(f"{option}: {val!r} is not a number") from None
    return values


def _fmt_classes(m: Mapping[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in m.items())


# --------------------------------------------------------------------------- click decorator

_OPTION_NAMES = (
    "pus", "runs", "duration", "seed", "policy", "increments", "capacity", "max_requests",
    "size_mean", "size_dist", "interval_mean", "interval_dist", "quick", "jobs", "out",
)


def scenario_options(func: Callable[..., Any] | None = None, /, *, pus: str | None = None, runs: int = 5,
                     duration: float = 300.0, quick: bool = True) -> Any:
    """Add the sweep options and a TARGET argument; the command receives ``scenario: Scenario``.

    Usage::

        @main.command()
        @scenario_options
        def simulate(scenario: Scenario) -> None: ...

        @scenario_options(pus="8", runs=1, duration=90.0, quick=False)   # other defaults, no --quick
        def coverage_loss(scenario: Scenario) -> None: ...
    """
    if func is None:
        return lambda f: scenario_options(f, pus=pus, runs=runs, duration=duration, quick=quick)
    import functools

    pus_default = pus if pus is not None else ",".join(map(str, PAPER_PUS))

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        explicit = {
            name for name in _OPTION_NAMES
            if ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)
        }
        raw = {name: kwargs.pop(name) for name in _OPTION_NAMES if name in kwargs}  # no --quick: absent
        target = kwargs.pop("target")
        scenario = Scenario(
            target=target,
            pus=parse_pus(raw["pus"]),
            runs=raw["runs"],
            duration=raw["duration"],
            seed=raw["seed"],
            policy=raw["policy"],
            increments=parse_class_values(raw["increments"], "--increments", PAPER_INCREMENTS),
            capacity=parse_class_values(raw["capacity"], "--capacity", PAPER_CAPACITY),
            max_requests=raw["max_requests"],
            size_mean=raw["size_mean"],
            size_dist=raw["size_dist"],
            interval_mean=raw["interval_mean"],
            interval_dist=raw["interval_dist"],
            jobs=max(1, raw["jobs"] or (os.cpu_count() or 1)),
            out=Path(raw["out"]),
        )
        if raw.get("quick"):
            scenario = scenario.quickened(explicit)
        return func(*args, scenario=scenario, **kwargs)

    opts = [
        click.argument("target", default="paper-topology", required=False),
        click.option("--pus", default=pus_default, show_default=True,
                     help="PU counts to sweep (comma-separated; ranges like 1-4 allowed)."),
        click.option("--runs", default=runs, show_default=True, type=int, help="Runs per PU setting."),
        click.option("--duration", default=duration, show_default=True, type=float, help="Seconds per run."),
        click.option("--seed", default=1, show_default=True, type=int, help="Base random seed."),
        click.option("--policy", default="PLU", show_default=True,
                     help="Pool policy (RSPLIB name or short name, e.g. PLU, LU, RR, RAND)."),
        click.option("--increments", default=_fmt_classes(PAPER_INCREMENTS), show_default=True,
                     help="Per-class PLU load increment (RSPLIB's load degradation field)."),
        click.option("--capacity", default=_fmt_classes(PAPER_CAPACITY), show_default=True,
                     help="Per-class PE capacity in calculations/s."),
        click.option("--max-requests", default=4, show_default=True, type=int,
                     help="Simultaneous requests per PE (RSPLIB -capmaxjobs); more are rejected."),
        click.option("--size-mean", default=1_000_000.0, show_default=True, type=float,
                     help="Mean request size in calculations."),
        click.option("--size-dist", default="exp", show_default=True, type=click.Choice(DISTRIBUTIONS),
                     help="Request size distribution."),
        click.option("--interval-mean", default=10.0, show_default=True, type=float,
                     help="Mean time between a PU's requests in seconds."),
        click.option("--interval-dist", default="exp", show_default=True, type=click.Choice(DISTRIBUTIONS),
                     help="Inter-request time distribution."),
        *([click.option("--quick", is_flag=True,
                        help=f"Smoke test: PUs {','.join(map(str, QUICK_PUS))}, {QUICK_RUNS} run, "
                             f"{QUICK_DURATION:g} s (explicit options win).")] if quick else []),
        click.option("--jobs", default=0, type=int, help="Parallel processes (default: number of cores)."),
        click.option("--out", default="results", show_default=True, type=click.Path(file_okay=False),
                     help="Base directory for the results directory."),
    ]
    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper

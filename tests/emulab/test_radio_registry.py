"""The radio backend registry and the radio/emulab boundary: one list of backends that the topology
loader, the CLI, `doctor` and the simulator all read; each backend checks its own options; the
``radio`` package imports nothing of emulab. No root, no network."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from emulab.capabilities import PROBES
from emulab.cli import start
from emulab.sim.model import ModelError, RadioTimers
from emulab.topology import TopologyError, load
from radio import (
    DEFAULT_BACKEND,
    RadioBackend,
    RadioError,
    RadioOptionError,
    RrcTimers,
    backend_names,
    get_backend,
    probes,
    registry,
)
from radio.emulated import EmulatedRadio
from radio.oai import B210Radio, OaiRfsimRadio

ROOT = Path(__file__).resolve().parents[2]

TOPOLOGY = """\
name: reg
sites: {lab: {}}
nodes:
  ue: {role: ue, site: lab}
  enb: {role: enb, site: lab}
links:
  - {ends: [ue, enb], subnet: 10.0.0.0/30, radio: true, delay: 8ms}
radio: {backend: %s, options: %s}
"""


class QuietRadio(RadioBackend):
    """A backend that only checks its options and has its own timers: what a new one adds."""

    name = "quiet"

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], where: str = "radio.options", base: Any = None) -> None:
        if set(options) - {"gain_db"}:
            raise RadioOptionError(where, "only gain_db", ", ".join(sorted(set(options) - {"gain_db"})))

    @classmethod
    def rrc_timers(cls, options: Mapping[str, Any]) -> RrcTimers:
        return RrcTimers(n310=1, t310_ms=0.0, n311=1, t311_ms=0.0, attach_time_s=0.5, reestablish_time_s=None)

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def attach(self) -> None: ...
    def detach(self, duration_s: float | None = None) -> None: ...
    def state(self) -> dict[str, Any]:
        return {"backend": self.name}


@pytest.fixture
def quiet_backend(monkeypatch: pytest.MonkeyPatch) -> type[QuietRadio]:
    monkeypatch.setitem(registry.BACKENDS, "quiet", QuietRadio)  # undone after the test
    return QuietRadio


def test_one_list_of_backends() -> None:
    assert backend_names()[:3] == ("emulated", "oai", "b210") and DEFAULT_BACKEND in backend_names()
    assert [get_backend(n) for n in backend_names()[:3]] == [EmulatedRadio, OaiRfsimRadio, B210Radio]
    assert all(get_backend(n).name == n for n in backend_names())
    with pytest.raises(RadioError, match=r"unknown radio backend 'sdr' \(choose emulated, oai.* b210"):
        get_backend("sdr")


def test_cli_and_doctor_take_the_registrys_names_and_probes() -> None:
    radio_opt = next(p for p in start.params if p.name == "radio")
    assert tuple(radio_opt.type.choices) == backend_names()  # type: ignore[attr-defined]
    assert [p.name for p in probes()][:3] == ["oai", "uhd", "usrp_b210"]
    for p in probes():
        assert PROBES[p.name][1:] == (False, p.fallback)


def test_loader_asks_the_backend_to_check_its_options(tmp_path: Path, quiet_backend: type[QuietRadio]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(TOPOLOGY % ("quiet", "{gain_db: 3}"))
    spec = load(good)
    assert spec.radio is not None and (spec.radio.backend, dict(spec.radio.options)) == ("quiet", {"gain_db": 3})
    bad = tmp_path / "bad.yaml"
    bad.write_text(TOPOLOGY % ("quiet", "{gain: 3}"))
    with pytest.raises(TopologyError) as err:
        load(bad)
    assert str(err.value) == f"{bad}: radio.options: expected only gain_db, got gain"
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(TOPOLOGY % ("sdr", "{}"))
    with pytest.raises(TopologyError) as err:
        load(unknown)
    assert f"radio.backend: expected a radio backend ({', '.join(backend_names())}), got 'sdr'" in str(err.value)
    assert backend_names()[-1] == "quiet"


def test_simulator_takes_the_backends_timers(quiet_backend: type[QuietRadio]) -> None:
    assert RadioTimers.from_options({}, "quiet").rlf_s == pytest.approx(0.01)
    assert RadioTimers.from_options({"t310_ms": 500}) == RadioTimers.from_options({"t310_ms": 500}, "oai")
    with pytest.raises(ModelError, match="radio.options: bandwidth_mhz must be one of"):
        RadioTimers.from_options({"bandwidth_mhz": 7})


def test_emulated_option_errors_name_the_field() -> None:
    with pytest.raises(RadioOptionError) as err:
        EmulatedRadio.validate_options({"tick_s": 0}, "radio.options")
    assert (err.value.where, err.value.expected, err.value.got) == (
        "radio.options", "options the emulated radio understands", "tick_s must be positive, got 0")
    assert str(pickle.loads(pickle.dumps(err.value))) == str(err.value)
    OaiRfsimRadio.validate_options({"telnet_port": 9090})  # OAI's options are read at start


def test_radio_imports_nothing_of_emulab() -> None:
    code = ("import sys, radio, radio.emulated, radio.oai, radio.lte, radio.registry; radio.probes(); "
            "bad = sorted(m for m in sys.modules if m == 'emulab' or m.startswith('emulab.')); "
            "assert not bad, bad")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert not issubclass(RadioError, __import__("emulab.errors").errors.EmulabError)

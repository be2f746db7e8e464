"""Unit tests of emulab.links: the backend choice and the LinkParams -> netem translation."""

from __future__ import annotations

import pytest

from emulab.linkparams import LinkParams
from emulab.links import (
    DEFAULT_LIMIT,
    ENV_BACKEND,
    FIFO_RATE_BPS,
    LinkError,
    choose_backend,
    netem_options,
    netem_readback,
    netem_tc_args,
)
from emulab.shaper_control import params_to_wire


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BACKEND, raising=False)


def test_choose_backend_auto() -> None:
    assert choose_backend(True) == "netem"
    assert choose_backend(False) == "shaper"
    assert choose_backend(True, "auto") == "netem"


def test_choose_backend_forced_argument() -> None:
    assert choose_backend(True, "shaper") == "shaper"
    assert choose_backend(True, " NETEM ") == "netem"
    with pytest.raises(LinkError, match="no sch_netem"):
        choose_backend(False, "netem")
    with pytest.raises(LinkError, match="unknown link backend"):
        choose_backend(True, "tbf")


def test_choose_backend_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_BACKEND, "shaper")
    assert choose_backend(True) == "shaper"
    monkeypatch.setenv(ENV_BACKEND, "netem")
    with pytest.raises(LinkError, match="no sch_netem"):
        choose_backend(False)
    # an explicit argument wins over the environment
    assert choose_backend(True, "netem") == "netem"
    monkeypatch.setenv(ENV_BACKEND, "")
    assert choose_backend(False) == "shaper"


def test_netem_options_units() -> None:
    opts = netem_options(LinkParams(delay_ms=20, jitter_ms=0, loss_pct=1.5, rate_mbit=50), limit=500)
    assert opts == {"delay": 20000, "jitter": 0, "loss": 1.5, "limit": 500, "rate": 6_250_000}


def test_netem_options_always_reset_loss_and_rate() -> None:
    # Mininet's TCIntf skips loss=0, so loss 100 -> 0 never clears; we always send every field.
    opts = netem_options(LinkParams(delay_ms=5))
    assert opts["loss"] == 0.0
    assert opts["rate"] == 0  # explicit 0: netem keeps an old rate when the attribute is missing
    assert opts["limit"] == DEFAULT_LIMIT


def test_netem_options_jitter_keeps_fifo() -> None:
    opts = netem_options(LinkParams(delay_ms=20, jitter_ms=5))
    assert opts["jitter"] == 5000
    assert opts["rate"] == FIFO_RATE_BPS


def test_netem_options_sub_millisecond_and_huge_rate() -> None:
    opts = netem_options(LinkParams(delay_ms=0.25, rate_mbit=100_000))
    assert opts["delay"] == 250
    assert opts["rate"] == 2**32 - 1


class _FakeNla(dict):
    def __init__(self, fields: dict, attrs: dict) -> None:
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name: str):
        return self.attrs.get(name)


def test_netem_readback() -> None:
    from pyroute2.netlink.rtnl.tcmsg import common

    tick = common.tick_in_usec
    opts = _FakeNla({"delay": int(20000 * tick), "jitter": int(5000 * tick), "loss": (2**32 - 1) // 100,
                     "limit": 1000}, {"TCA_NETEM_RATE": {"rate": FIFO_RATE_BPS}})
    q = _FakeNla({}, {"TCA_KIND": "netem", "TCA_OPTIONS": opts})
    got = netem_readback(q)
    assert got["delay_ms"] == pytest.approx(20.0)
    assert got["jitter_ms"] == pytest.approx(5.0)
    assert got["loss_pct"] == pytest.approx(1.0, abs=1e-3)
    assert got["rate_mbit"] is None  # the FIFO sentinel is not a configured rate
    assert got["limit"] == 1000


def test_netem_readback_no_qdisc() -> None:
    assert netem_readback(None) == {"delay_ms": 0.0, "jitter_ms": 0.0, "loss_pct": 0.0, "rate_mbit": None,
                                    "limit": None, "qdisc": "none"}
    q = _FakeNla({}, {"TCA_KIND": "noqueue"})
    assert netem_readback(q)["qdisc"] == "noqueue"


def test_params_to_wire() -> None:
    assert params_to_wire(LinkParams(delay_ms=1, jitter_ms=2, loss_pct=3, rate_mbit=4)) == {
        "delay_ms": 1.0, "jitter_ms": 2.0, "loss_pct": 3.0, "rate_mbit": 4.0}
    assert params_to_wire(LinkParams())["rate_mbit"] is None


def test_netem_tc_args() -> None:
    assert netem_tc_args(LinkParams(delay_ms=20, loss_pct=0)) == [
        "netem", "limit", "1000", "delay", "20000us", "loss", "0.000000%"]
    assert netem_tc_args(LinkParams(delay_ms=20, jitter_ms=5, loss_pct=2.5, rate_mbit=10), limit=50) == [
        "netem", "limit", "50", "delay", "20000us", "5000us", "loss", "2.500000%", "rate", "10000000bit"]
    assert netem_tc_args(LinkParams(delay_ms=1, jitter_ms=1))[-2:] == ["rate", f"{FIFO_RATE_BPS * 8}bit"]

"""Unit tests of the userspace shaper's data path decisions (no sockets, no root)."""

from __future__ import annotations

import random
import struct

import pytest

from emulab.shaper import VNET_HDR_LEN, Direction, DirParams, wire_len


class _FakeSock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, frame: bytes) -> int:
        self.sent.append(frame)
        return len(frame)


def _frame(payload_len: int, tag: int = 0) -> bytes:
    return bytes(VNET_HDR_LEN) + tag.to_bytes(4, "big") + bytes(max(payload_len - 4, 0))


def _direction(**kw: float | None) -> tuple[Direction, _FakeSock]:
    tx = _FakeSock()
    p = DirParams.from_dict({"delay_ms": 0.0, **kw})
    return Direction("ab", tx, p, random.Random(1)), tx  # type: ignore[arg-type]


def test_dirparams_roundtrip_and_validation() -> None:
    p = DirParams.from_dict({"delay_ms": 20, "jitter_ms": 2, "loss_pct": 5, "rate_mbit": 10}, limit=7)
    assert p.delay_s == pytest.approx(0.02) and p.loss == pytest.approx(0.05)
    assert p.rate_bps == pytest.approx(1.25e6)
    assert p.as_dict() == {"delay_ms": 20.0, "jitter_ms": 2.0, "loss_pct": 5.0, "rate_mbit": 10.0, "limit": 7}
    for bad in ({"delay_ms": -1}, {"loss_pct": 101}, {"rate_mbit": 0}, {"limit": -3}):
        with pytest.raises(ValueError):
            DirParams.from_dict(bad)


def test_zero_delay_is_sent_at_once() -> None:
    d, tx = _direction()
    assert d.offer(_frame(100), now=10.0) is False
    assert len(tx.sent) == 1 and d.tx_packets == 1


def test_delay_holds_frame_until_deadline() -> None:
    d, tx = _direction(delay_ms=20)
    assert d.offer(_frame(100), now=10.0) is True
    assert d.flush(10.019) == pytest.approx(10.02)
    assert tx.sent == []
    assert d.flush(10.02) is None
    assert len(tx.sent) == 1


def test_jitter_never_reorders() -> None:
    d, tx = _direction(delay_ms=20, jitter_ms=15)
    for i in range(500):
        d.offer(_frame(60, i), now=10.0 + i * 0.0001)
    deadlines = [t for t, _ in d.queue]
    assert deadlines == sorted(deadlines)
    assert min(deadlines) >= 10.0
    d.flush(100.0)
    assert [int.from_bytes(f[VNET_HDR_LEN:VNET_HDR_LEN + 4], "big") for f in tx.sent] == list(range(500))


def test_rate_serialises_frames() -> None:
    d, _ = _direction(delay_ms=10, rate_mbit=8)  # 1 MB/s: 1000 bytes take 1 ms
    for _ in range(3):
        d.offer(_frame(1000), now=0.0)
    deadlines = [t for t, _ in d.queue]
    assert deadlines == pytest.approx([0.011, 0.012, 0.013])


def test_full_and_zero_loss() -> None:
    d, tx = _direction(loss_pct=100)
    for _ in range(100):
        d.offer(_frame(60), now=0.0)
    assert d.dropped_loss == 100 and tx.sent == []
    d.p = DirParams.from_dict({"loss_pct": 0})
    for _ in range(100):
        d.offer(_frame(60), now=0.0)
    assert len(tx.sent) == 100


def test_partial_loss_rate() -> None:
    d, _ = _direction(loss_pct=30)
    for _ in range(5000):
        d.offer(_frame(60), now=0.0)
    assert 0.27 < d.dropped_loss / 5000 < 0.33


def test_limit_tail_drops() -> None:
    d, _ = _direction(delay_ms=10, limit=5)
    for _ in range(8):
        d.offer(_frame(60), now=0.0)
    assert len(d.queue) == 5 and d.dropped_limit == 3


def test_wire_len_of_gso_frame() -> None:
    hdr = struct.pack("<BBHHHH", 1, 1, 66, 1448, 34, 16)  # NEEDS_CSUM, TCPv4, 66 header bytes, MSS 1448
    frame = hdr + bytes(66 + 3 * 1448)
    assert wire_len(frame) == 3 * (66 + 1448)
    assert wire_len(bytes(VNET_HDR_LEN) + bytes(100)) == 100


def test_lateness_is_recorded_per_release() -> None:
    import time

    from emulab.shaper import LATE_EDGES

    d, tx = _direction(delay_ms=1)
    now = time.monotonic()
    d.offer(_frame(60), now=now - 0.010)  # due 9 ms ago: released ~9 ms late
    d.flush(time.monotonic())
    st = d.stats()
    assert len(tx.sent) == 1 and st["late_n"] == 1
    assert 9.0 <= st["late_sum_ms"] < 9.0 + 50.0 and st["late_max_ms"] == pytest.approx(st["late_sum_ms"])
    assert sum(st["late_hist"]) == 1 and len(st["late_hist"]) == len(LATE_EDGES) + 1
    assert st["late_hist"][LATE_EDGES.index(0.01)] == 1 or st["late_hist"][LATE_EDGES.index(0.02)] == 1


def test_flush_releases_what_is_due_within_the_lead() -> None:
    d, tx = _direction(delay_ms=10)
    d.offer(_frame(60, 1), now=0.0)  # due 0.010
    d.offer(_frame(60, 2), now=0.001)  # due 0.011
    assert d.flush(0.0098, lead=0.0) == pytest.approx(0.010) and tx.sent == []
    assert d.flush(0.0098, lead=0.0003) == pytest.approx(0.011)  # 0.2 ms early is within the lead
    assert len(tx.sent) == 1


def test_server_learns_its_wake_up_lead(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import time

    from emulab.shaper import LEAD_MAX, LEAD_STEP, ShaperServer

    server = ShaperServer(str(tmp_path / "s.sock"))
    try:
        assert server.lead == 0.0
        for _ in range(10):  # woke 1 ms after the armed time, every time: the lead grows step by step
            server._fired_at = time.monotonic() - 0.001
            server._flush()
        assert server.lead == pytest.approx(10 * LEAD_STEP)
        server.lead = LEAD_MAX
        server._fired_at = time.monotonic() + 1.0  # (impossible) early wake-up: the lead shrinks
        server._flush()
        assert server.lead == pytest.approx(LEAD_MAX - LEAD_STEP)
        assert server.handle({"op": "ping"})["late_edges_ms"][0] == pytest.approx(-0.5)
    finally:
        server.close()

"""The RSPLIB 3.4.4 reference capture: every ASAP/ENRP/CalcApp payload decodes and re-encodes
byte-exactly, and the per-type counts match captures/README.md."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from rserpool import wire
from rserpool.cli import main
from rserpool.pcapfile import CaptureError, CaptureStats, read_payloads

CAPTURE = Path(__file__).resolve().parents[1] / "data" / "captures" / "rsplib-3.4.4-calcapp-plu-enrp.pcap"


@pytest.fixture(scope="module")
def payloads():
    stats = CaptureStats()
    ps = [p for p in read_payloads(str(CAPTURE), stats) if p.protocol]
    return ps, stats


def test_every_payload_roundtrips(payloads) -> None:
    ps, _ = payloads
    assert len(ps) > 300
    for p in ps:
        msg = wire.decode(p.protocol, p.data)
        assert msg.encode() == p.data, f"frame {p.index} {msg.NAME}"
        # RSPLIB follows the RFC parameter order, so nothing lands in `extra`.
        assert getattr(msg, "extra", ()) == (), f"frame {p.index} {msg.NAME}"


def test_counts_match_readme(payloads) -> None:
    ps, stats = payloads
    counts = Counter(wire.decode(p.protocol, p.data).NAME for p in ps)
    # Exact counts stated in captures/README.md.
    assert counts["ASAP Registration"] == 21 and counts["ASAP Registration Response"] == 21
    assert counts["ASAP Deregistration"] == 3 and counts["ASAP Deregistration Response"] == 3
    assert counts["ASAP Handle Resolution"] == 18 and counts["ASAP Handle Resolution Response"] == 18
    assert counts["ASAP Endpoint Keep-Alive"] == 15 and counts["ASAP Endpoint Keep-Alive Ack"] == 15
    assert counts["ASAP Server Announce"] == 73
    assert counts["CalcApp Request"] == 18 and counts["CalcApp Accept"] == 18 and counts["CalcApp Complete"] == 17
    # Approximate ones ("~60", "~19") and presence-only ones.
    assert 55 <= counts["ENRP Presence"] <= 65
    assert 17 <= counts["ENRP Handle Update"] <= 21
    for name in ("ENRP List Request", "ENRP List Response", "ENRP Handle Table Request", "CalcApp Keep-Alive",
                 "CalcApp Keep-Alive Ack"):
        assert counts[name] >= 1, name
    # Server announces and ENRP presences over UDP multicast go to RSPLIB's default groups.
    udp = [p for p in ps if p.transport == "udp"]
    assert {(p.dst, p.dport) for p in udp} == {
        (wire.ASAP_ANNOUNCE_ADDRESS, wire.ASAP_ANNOUNCE_PORT),
        (wire.ENRP_ANNOUNCE_ADDRESS, wire.ENRP_ANNOUNCE_PORT),
    }


def test_plu_load_degradation_scale(payloads) -> None:
    # -policy=PriorityLeastUsed:0.1 / :0.5 / :1.0 appear as round(x * 0xFFFFFFFF) in the degradation field.
    ps, _ = payloads
    degs = {m.pool_element.identifier: m.pool_element.policy.load_degradation
            for m in (wire.decode(p.protocol, p.data) for p in ps) if isinstance(m, wire.Registration)}
    from rserpool.policytypes import fraction_to_u32

    assert degs == {1001: fraction_to_u32(0.1), 1002: fraction_to_u32(0.5), 1003: fraction_to_u32(1.0)}


def test_cli_check_roundtrip_and_json() -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["pcap", str(CAPTURE), "--check-roundtrip"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 332
    assert any("ASAP Registration pool=CalcAppPool pe=0x000003e9 policy=PLU" in ln for ln in lines)
    res = runner.invoke(main, ["pcap", str(CAPTURE), "--json"])
    assert res.exit_code == 0
    import json

    objs = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert objs[0]["message"] == "ASAP Registration" and objs[0]["ppid"] == 11


def test_cli_bad_files(tmp_path: Path) -> None:
    runner = CliRunner()
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture")
    trunc = tmp_path / "trunc.pcap"
    trunc.write_bytes(CAPTURE.read_bytes()[:1000])
    for path, needle in ((junk, "not a pcap"), (trunc, "truncated"), (tmp_path / "missing.pcap", "cannot read")):
        res = runner.invoke(main, ["pcap", str(path)])
        assert res.exit_code == 2, (path, res.output)
        assert needle in res.stderr
        assert "Traceback" not in res.output
    with pytest.raises(CaptureError):
        read_payloads(str(junk))

"""Replaying recorded payloads through Wireshark: hex dumps for text2pcap, SCTP captures with a PPID,
and tshark's verdict per frame (info column, malformed, expert severity, extra fields).

Used by the conformance tests that record what emulab's channels really sent (``record_sends``) and
check that stock tshark dissects it as RSPLIB's traffic would be."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rserpool.session import SessionChannel

TOOLS = ("tshark", "text2pcap")
TSHARK_MARKS = [
    pytest.mark.tshark,
    pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS), reason="tshark/text2pcap missing"),
]


def hexdump(packets: list[bytes]) -> str:
    """text2pcap's input format: one offset-prefixed dump per packet, separated by a blank line."""
    lines = []
    for data in packets:
        for off in range(0, len(data), 16):
            lines.append(f"{off:06x} " + " ".join(f"{b:02x}" for b in data[off:off + 16]))
        lines.append("")
    return "\n".join(lines) + "\n"


def record_sends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, int]]:
    """Every (payload, PPID) a session channel sends from now on, in order (the send still happens)."""
    sent: list[tuple[bytes, int]] = []
    orig = SessionChannel.send

    def spy(self: SessionChannel, data: bytes, ppid: int) -> None:
        sent.append((bytes(data), ppid))
        orig(self, data, ppid)

    monkeypatch.setattr(SessionChannel, "send", spy)
    return sent


def dissect(tmp_path: Path, name: str, packets: list[bytes], ppid: int, ports: tuple[int, int] = (40000, 40001),
            fields: tuple[str, ...] = ()) -> list[list[str]]:
    """Dissect ``packets`` as SCTP DATA chunks with ``ppid``; one row per frame: number, info,
    malformed, expert severity, then ``fields``. Fails on a frame count mismatch, a malformed frame or an
    expert error."""
    txt = tmp_path / f"{name}.txt"
    txt.write_text(hexdump(packets))
    pcap = tmp_path / f"{name}.pcap"
    subprocess.run(["text2pcap", "-q", "-S", f"{ports[0]},{ports[1]},{ppid}", str(txt), str(pcap)], check=True,
                   capture_output=True)
    cmd = ["tshark", "-r", str(pcap), "-T", "fields", "-E", "separator=|", "-e", "frame.number", "-e", "_ws.col.Info",
           "-e", "_ws.malformed", "-e", "_ws.expert.severity"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = [ln.split("|") for ln in out.strip().splitlines()]
    assert len(rows) == len(packets)
    for row in rows:
        assert row[2] == "" and row[3] == "", f"malformed/expert in {row}"
    return rows

"""Captures of the TCP fallback decode in stock tshark with emulab's Lua dissector: a recorded run of
two registrars (ENRP), Fractal Generator and CalcApp pool elements and pool users over TCP shows
ASAP, ENRP, CalcApp and FGP messages and not one undissected payload; without the script the same
capture has undissected ``data`` (so the test measures the script, not the capture)."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulab import wireshark

from helpers import fallback_capture

pytestmark = [pytest.mark.tshark, pytest.mark.skipif(not shutil.which("tshark"), reason="tshark missing")]

PROTOCOLS = ("asap", "enrp", "calcappprotocol", "fractalgeneratorprotocol")


@pytest.fixture(scope="module")
def fallback_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("capturing on lo needs root (CAP_NET_RAW)")
    if fallback_capture.capture_tool() is None:
        pytest.skip("neither dumpcap nor tcpdump is installed")
    path = tmp_path_factory.mktemp("fallback") / "fallback.pcap"
    did = fallback_capture.record(path)
    assert did["fractal_elements"] >= 1 and did["calcapp_requests"] >= 1, did
    return path


def _frames(pcap: Path, lua: bool) -> list[dict[str, str]]:
    fields = ["frame.number", "frame.protocols", "tcp.len", "tcp.reassembled_in", "_ws.malformed"]
    cmd = ["tshark", "-r", str(pcap), *(wireshark.lua_args() if lua else []), "-T", "fields",
           "-E", "separator=|", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines()]


def test_stock_tshark_leaves_fallback_payload_undissected(fallback_pcap: Path) -> None:
    frames = _frames(fallback_pcap, lua=False)
    assert any(f["frame.protocols"].endswith(":data") for f in frames)


def test_lua_dissector_decodes_every_fallback_payload(fallback_pcap: Path) -> None:
    frames = _frames(fallback_pcap, lua=True)
    seen: collections.Counter[str] = collections.Counter()
    for f in frames:
        layers = f["frame.protocols"].split(":")
        assert "data" not in layers, f
        assert f["_ws.malformed"] == "", f
        if int(f["tcp.len"] or 0) > 0:
            # every TCP payload is a message (or the start of one, reassembled in a later frame)
            assert set(layers) & set(PROTOCOLS) or f["tcp.reassembled_in"], f
        seen.update(p for p in PROTOCOLS if p in layers)
    assert all(seen[p] > 0 for p in PROTOCOLS), seen


def test_lua_dissector_fields_match_rserpools_reading(fallback_pcap: Path) -> None:
    """tshark (with the script) and ``rserpool pcap`` find the same messages of each protocol."""
    from rserpool.pcapfile import read_payloads

    counts: collections.Counter[str] = collections.Counter(
        p.protocol for p in read_payloads(str(fallback_pcap)) if p.protocol is not None)
    cmd = ["tshark", "-r", str(fallback_pcap), *wireshark.lua_args(), "-T", "fields", "-E", "occurrence=a",
           "-E", "separator=|", "-e", "asap.message_type", "-e", "enrp.message_type",
           "-e", "calcappprotocol.message_type", "-e", "fractalgeneratorprotocol.message_type"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    shark: collections.Counter[str] = collections.Counter()
    for line in out.splitlines():
        for name, col in zip(("asap", "enrp", "calcapp", "fractal"), line.split("|"), strict=True):
            shark[name] += len([v for v in col.split(",") if v])
    assert shark == counts, (shark, counts)


def test_emulab_tshark_wrapper_loads_the_script(fallback_pcap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from emulab.cli import main

    ran: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: ran.append(list(argv)))
    res = CliRunner().invoke(main, ["tshark", "-r", str(fallback_pcap), "-Y", "enrp"])
    assert res.exit_code == 0, res.output
    [argv] = ran
    assert argv[1:3] == ["-X", f"lua_script:{wireshark.LUA_SCRIPT}"] and argv[3:] == ["-r", str(fallback_pcap),
                                                                                          "-Y", "enrp"]
    # and the command it builds really filters the ENRP messages out of the capture
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    assert out.count("ENRP") >= 2

"""Component Status Protocol: the codec against RSPLIB's layout, what registrars, pool elements and
pool users report, the receiver the dashboard reads, Wireshark's ``componentstatusprotocol``
dissector and RSPLIB's own ``cspmonitor`` (UDP only, so it runs without SCTP)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from rserpool import csp
from rserpool.wire.fractal import PPID_FGP

from helpers.pool_lab import pu_config, run_with_registrar, start_pe


def _sample() -> csp.ComponentReport:
    return csp.ComponentReport(
        sender_id=csp.component_id(csp.GROUP_POOLELEMENT, 0x1234ABCD), sender_timestamp_us=5_000_123,
        report_interval_us=250_000, location="ue: 10.1.1.2", status="2 Sessions", workload=0.25,
        associations=(csp.Association(csp.component_id(csp.GROUP_REGISTRAR, 0xCAFE), 1_000_000, csp.IPPROTO_TCP,
                                      csp.PPID_ASAP),
                      csp.Association(csp.component_id(csp.GROUP_POOLUSER, 0x42), None, csp.IPPROTO_SCTP, PPID_FGP)))


def test_layout_is_rsplibs() -> None:
    rep = _sample()
    data = rep.encode()
    assert len(data) == 288 + 2 * 24
    typ, flags, length, version, sender, stamp = struct.unpack_from("!BBHIQQ", data)
    assert (typ, flags, length, version) == (1, 0, len(data), 0x0200)
    assert sender == 0x0200_0000_1234_ABCD and stamp == 5_000_123
    assert struct.unpack_from("!I", data, 24)[0] == 250_000
    assert data[28:28 + 11] == b"ue: 10.1.1.2"[:11] and data[28 + 12] == 0
    assert data[156:166] == b"2 Sessions"
    workload, assocs = struct.unpack_from("!HH", data, 284)
    assert workload == round(0.25 * 0xFFFE) and assocs == 2
    rid, dur, aflags, proto, ppid = struct.unpack_from("!QQHHI", data, 288 + 24)
    assert (rid, dur, aflags, proto, ppid) == (0x0300_0000_0000_0042, 0xFFFFFFFFFFFFFFFF, 0, 132, 32)
    back = csp.ComponentReport.decode(data)
    assert back.workload == pytest.approx(0.25, abs=1 / 0xFFFE)  # 16-bit fixed point
    assert back == dataclasses.replace(rep, length_field=len(data), workload=back.workload)


def test_decode_accepts_rsplibs_zero_length_and_rejects_bad_datagrams() -> None:
    data = bytearray(_sample().encode())
    data[2:4] = b"\0\0"  # what RSPLIB's htonl()-into-u16 leaves on little-endian hosts
    rep = csp.ComponentReport.decode(bytes(data))
    assert rep.length_field == 0 and rep.status == "2 Sessions" and len(rep.associations) == 2
    for bad in (bytes(data[:287]), bytes(data[:-1]), b"\x02" + bytes(data[1:]),
                bytes(data[:4]) + b"\0\0\x01\0" + bytes(data[8:])):
        with pytest.raises(csp.CSPError):
            csp.ComponentReport.decode(bad)


def test_texts_are_cut_to_127_bytes_and_workload_none() -> None:
    rep = csp.ComponentReport(csp.component_id(csp.GROUP_REGISTRAR, 1), location="x" * 300, status="y" * 128)
    data = rep.encode()
    assert struct.unpack_from("!H", data, 284)[0] == 0xFFFF
    back = csp.ComponentReport.decode(data)
    assert back.location == "x" * 127 and back.status == "y" * 127 and back.workload is None
    assert back.label == "PR $00000001" and back.kind == "registrar"


def test_config_from_options_and_environment() -> None:
    assert csp.CSPConfig.from_options(None, None, environ={}) is None
    c = csp.CSPConfig.from_options(None, None, environ={"CSP_SERVER": "10.0.0.1", "CSP_INTERVAL": "250"})
    assert c == csp.CSPConfig(("10.0.0.1", 2960), 250)
    c = csp.CSPConfig.from_options("[::1]:3000", 100, environ={"CSP_SERVER": "10.0.0.1"})
    assert c == csp.CSPConfig(("::1", 3000), 100)
    assert csp.CSPConfig.from_options("h:1", None, environ={}).interval_ms == csp.DEFAULT_INTERVAL_MS
    with pytest.raises(ValueError):
        csp.CSPConfig.from_options("h:1", None, environ={"CSP_INTERVAL": "soon"})


def test_receiver_keeps_latest_and_purges() -> None:
    recv = csp.CSPReceiver(purge_after=30.0)
    pe = _sample()
    recv.feed(b"garbage")
    recv.feed(pe.encode(), ("10.0.0.2", 4000))
    recv.feed(csp.ComponentReport(pe.sender_id, status="3 Sessions", report_interval_us=10_000).encode())
    assert recv.invalid == 1
    [only] = recv.latest()
    assert only.report.status == "3 Sessions" and only.count == 2
    time.sleep(0.12)  # 10 report intervals of silence
    assert recv.latest() == []
    recv.feed(pe.encode())
    recv.feed(csp.ComponentReport(pe.sender_id, final=True).encode())
    assert recv.latest() == []


@pytest.fixture
def monitor_config():
    """Clears the process-wide CSP configuration after the test."""
    yield
    csp.configure(None, 0)


def test_registrar_pe_pu_report_to_a_receiver(monitor_config) -> None:
    from rserpool.services.fractal_pu import DEFAULT_POOL, FractalPU
    from rserpool.wire.fractal import FGPParameter

    seen: dict[int, csp.ComponentReport] = {}
    history: list[csp.ComponentReport] = []

    def on_report(rep: csp.ComponentReport, _src: tuple[str, int]) -> None:
        seen[rep.sender_id] = rep
        history.append(rep)

    async def body(reg, pes) -> None:
        recv = await csp.CSPReceiver.listen("127.0.0.1", 0, on_report=on_report)
        try:
            csp.configure(csp.CSPConfig(recv.address, 50), PPID_FGP)
            reg._csp = csp.attach(reg)  # the registrar started before the monitor was configured
            pe = await start_pe(reg, pool=DEFAULT_POOL, service="fractal", capacity=0, identifier=0x5EED)
            pes.append(pe)
            async with FractalPU(pu_config(reg), DEFAULT_POOL) as fpu:
                await fpu.compute(FGPParameter(400, 250, 512, 1, -1.5, 1.5, 1.5, -1.5, 2.0))
                await asyncio.sleep(0.15)
                kinds = {r.report.kind: r.report for r in recv.latest()}
                assert set(kinds) == {"registrar", "pool element", "pool user"}
            pr, pe_rep, pu = kinds["registrar"], kinds["pool element"], kinds["pool user"]
            assert pr.sender_id == csp.component_id(csp.GROUP_REGISTRAR, reg.identifier)
            assert pr.status == "1[1] PEs in 1 Pools, 0 Peers" and pr.report_interval_us == 50_000  # RSPLIB's words
            assert pr.location.endswith(f"127.0.0.1:{reg.port}")
            assert pe_rep.sender_id == csp.component_id(csp.GROUP_POOLELEMENT, 0x5EED)
            assert [a.ppid for a in pe_rep.associations] == [csp.PPID_ASAP]
            assert pu.associations[0].receiver_id >> 56 == csp.GROUP_REGISTRAR
            during = [r for r in history if r.group == csp.GROUP_POOLUSER and r.status == "1 Session"]
            assert during, [r.status for r in history]
            # while computing, the PU's association to the PE carries the Fractal Generator PPID
            assert (csp.component_id(csp.GROUP_POOLELEMENT, 0x5EED), PPID_FGP) in {
                (a.receiver_id, a.ppid) for r in during for a in r.associations}
            assert pe_rep.location.endswith(f"127.0.0.1:{pe.port}")
            # the PU closed: its final report removed it
            await asyncio.sleep(0.1)
            assert pu.sender_id not in {r.report.sender_id for r in recv.latest()}
            json_rows = recv.to_json()
            assert {row["label"] for row in json_rows} >= {f"PR ${reg.identifier:08x}", "PE $00005eed"}
            assert seen[pu.sender_id].final  # the last word of the PU
        finally:
            await csp.detach(reg._csp)
            reg._csp = None
            recv.close()

    run_with_registrar(body)


def _text2pcap_udp(tmp: Path, datagrams: list[bytes]) -> Path:
    lines = []
    for data in datagrams:
        for off in range(0, len(data), 16):
            lines.append(f"{off:06x} " + " ".join(f"{b:02x}" for b in data[off:off + 16]))
        lines.append("")
    (tmp / "csp.txt").write_text("\n".join(lines) + "\n")
    subprocess.run(["text2pcap", "-q", "-u", "41000,2960", str(tmp / "csp.txt"), str(tmp / "csp.pcap")],
                   check=True, capture_output=True)
    return tmp / "csp.pcap"


@pytest.mark.tshark
@pytest.mark.skipif(not all(shutil.which(t) for t in ("tshark", "text2pcap")), reason="tshark/text2pcap missing")
def test_tshark_componentstatusprotocol_decodes_cleanly(tmp_path: Path) -> None:
    reports = [_sample(), csp.ComponentReport(csp.component_id(csp.GROUP_REGISTRAR, 0xABCDEF01), 7, 1_000_000,
                                              "pr: 10.0.0.1", "1 PE in 1 Pool"),
               csp.ComponentReport(csp.component_id(csp.GROUP_POOLUSER, 99), final=True, workload=0.0)]
    pcap = _text2pcap_udp(tmp_path, [r.encode() for r in reports])
    fields = ["frame.protocols", "_ws.malformed", "_ws.expert.severity", "componentstatusprotocol.message_type",
              "componentstatusprotocol.message_flags", "componentstatusprotocol.message_sender_id",
              "componentstatusprotocol.componentstatusreport_location",
              "componentstatusprotocol.componentstatusreport_status",
              "componentstatusprotocol.componentstatusreport_associations",
              "componentstatusprotocol.componentassociation_ppid"]
    cmd = ["tshark", "-r", str(pcap), "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]
    for f in fields:
        cmd += ["-e", f]
    rows = [line.split("|") for line in subprocess.run(cmd, check=True, capture_output=True, text=True)
            .stdout.splitlines()]
    assert len(rows) == 3
    for row, rep in zip(rows, reports, strict=True):
        protos, malformed, severity, typ, flags, sender, loc, status, nassoc, ppids = row
        assert protos.endswith("udp:componentstatusprotocol"), protos
        assert malformed == "" and severity == ""
        assert (typ, int(flags)) == ("1", int(rep.final))
        assert int(sender, 16) == rep.sender_id
        assert (loc, status, int(nassoc)) == (rep.location, rep.status, len(rep.associations))
        assert [int(p) for p in ppids.split(",") if p] == [a.ppid for a in rep.associations]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


@pytest.mark.skipif(not shutil.which("cspmonitor"), reason="RSPLIB's cspmonitor (Debian rsplib-tools) missing")
def test_rsplib_cspmonitor_lists_emulab_components(tmp_path: Path, monitor_config) -> None:
    """RSPLIB's monitor (UDP, no SCTP needed) shows our registrar, PE and PU with their statuses."""
    from rserpool.pu import PoolUser

    port = _free_udp_port()
    out = open(tmp_path / "cspmonitor.out", "wb")  # noqa: SIM115 - closed below
    mon = subprocess.Popen(["cspmonitor", f"-localaddress=127.0.0.1:{port}", "-full", "-updateinterval=200"],
                           stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(0.3)
        assert mon.poll() is None, (tmp_path / "cspmonitor.out").read_text(errors="replace")

        async def body(reg, pes) -> None:
            csp.configure(csp.CSPConfig(("127.0.0.1", port), 100), 34)
            reg._csp = csp.attach(reg)
            try:
                pes.append(await start_pe(reg, identifier=0xE0A1AB))
                async with PoolUser(pu_config(reg)) as pu:
                    s = await pu.connect(b"Processing Pool")
                    await asyncio.sleep(1.0)
                    s.close()
            finally:
                await csp.detach(reg._csp)
                reg._csp = None

        run_with_registrar(body)
    finally:
        os.killpg(mon.pid, signal.SIGINT)
        try:
            mon.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(mon.pid, signal.SIGKILL)
            mon.wait()
        out.close()
    text = strip_ansi((tmp_path / "cspmonitor.out").read_text(errors="replace"))
    counts = re.findall(r"Current Component Status -- (\d+) PRs, (\d+) PEs, (\d+) PUs", text)
    assert ("1", "1", "1") in counts, text[-2000:]
    assert re.search(r"PE \$00e0a1ab \[[^\]]*127\.0\.0\.1:\d+\]\s+U=\S+ l=\S+ A=1 L=\s*\d+% \"1 Session\"", text), text[-2000:]
    assert re.search(r"PR \$[0-9a-f]{8} \[[^\]]*\]\s+U=\S+ l=\S+ A=0 \"1\[1\] PEs in 1 Pools, 0 Peers\"", text), text[-2000:]
    assert re.search(r"PU \$[0-9a-f]{14} \[[^\]]*\]\s+U=\S+ l=\S+ A=2 \"1 Session\"", text), text[-2000:]
    assert re.search(r"-> PE \$00e0a1ab CalcApp/TCP|-> PE \$00e0a1ab \$00000022/TCP", text), text[-2000:]


def test_emulab_services_pass_the_monitor_to_registrars_and_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from emulab.services import ServiceManager
    from rserpool.registrar_cli import pe_cmd, registrar_cmd

    class Spec:
        nodes = {"pr": SimpleNamespace(name="pr", services=[SimpleNamespace(kind="registrar")])}

        def primary_address(self, node: str) -> str:
            return "10.0.0.1"

    monkeypatch.setenv("CSP_SERVER", "10.9.9.9:2960")
    monkeypatch.setenv("CSP_INTERVAL", "500")
    manager = ServiceManager(SimpleNamespace(spec=Spec()))
    for kind, command in (("registrar", registrar_cmd), ("pe", pe_cmd)):
        cmd = manager.command("pr", kind, {"pool": "P"})
        assert cmd[-4:] == ["--cspserver", "10.9.9.9:2960", "--cspinterval", "500"]
        params = command.make_context(kind, cmd[4:]).params  # the rserpool command takes them
        assert (params["cspserver"], params["cspinterval"]) == ("10.9.9.9:2960", 500)
    monkeypatch.delenv("CSP_SERVER")
    assert "--cspserver" not in ServiceManager(SimpleNamespace(spec=Spec())).command("pr", "registrar", {})

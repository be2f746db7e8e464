"""The Fractal Generator service and Component Status reports against RSPLIB 3.4.4's own programs,
over kernel SCTP in a fresh namespace (the ``lab`` fixture; see test_rsplib_interop.py).

1. RSPLIB's fractal pool elements (``rspserver -fractal``, one of them dropping its sessions after a
   few Data messages, ``-fgpfailureafter``) serve emulab's ``rserpool fractal-pu``: both images
   complete, every point comes from an RSPLIB element, and the fail-over resumes with RSPLIB's cookie.
2. emulab's fractal pool elements (``rserpool pe --service fractal``) serve RSPLIB's
   ``fractalpooluser`` (Qt, run headless with ``QT_QPA_PLATFORM=offscreen``). Its
   ``-imagestorageprefix`` stored no file in such a run (Debian's 3.4.4), so completion is read
   from emulab's elements (images computed, the next Parameter only after the previous image's
   finalizer: fractalpooluser's thread ends only on it), from fractalpooluser's log (no fail-over,
   no invalid data block) and from its own Component Status reports to emulab's receiver (a
   session with emulab's elements, Fractal Generator PPID 32 over SCTP).
3. RSPLIB's ``cspmonitor`` lists emulab's registrar, fractal pool element and pool user (Component
   Status reports, ``--cspserver``) next to an ``rspserver``; and emulab's CSP receiver decodes the
   reports RSPLIB's own ``rspregistrar`` sends.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rserpool import transport as tp

from helpers.rsplib_lab import (
    LINEBUF,
    LO,
    MISSING_RSPLIB,
    RSERPOOL,
    RSP_LOG,
    Lab,
    emulab_pe,
    emulab_registrar,
    rsp_hsdump,
    rsp_registrar,
    rsp_server,
    wait_for,
)

MISSING = MISSING_RSPLIB + [b for b in ("fractalpooluser", "cspmonitor") if shutil.which(b) is None]
pytestmark = [
    pytest.mark.realkernel,
    pytest.mark.skipif(not tp.sctp_available(), reason="kernel without SCTP: run in the real-kernel lane "
                       "(scripts/realkernel/run.sh)"),
    pytest.mark.skipif(bool(MISSING), reason=f"RSPLIB programs missing: {', '.join(MISSING)} "
                       "(Debian rsplib-registrar, rsplib-services, rsplib-tools)"),
]

POOL = "FractalGeneratorPool"  # RSPLIB's default pool handle of the service


_RECEIVER = textwrap.dedent("""
    import asyncio, json, sys
    from rserpool.csp import CSPReceiver

    async def main():
        def show(rep, src):
            print(json.dumps({**rep.to_dict(), "length_field": rep.length_field}), flush=True)
        recv = await CSPReceiver.listen(sys.argv[1], int(sys.argv[2]), on_report=show)
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


def _lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def test_rspserver_fractal_serves_emulab_fractal_pu(lab: Lab) -> None:
    rsp_registrar(lab, "pr", 3863, 9901)
    # Both fail after 8 data messages: which one RSPLIB's round robin names first varies from run to
    # run (with 2 elements and several items per resolution it can name the same one every time).
    rsp_server(lab, "rsp-a", "fractal", POOL, 3863, 0x0F1, "-fgpfailureafter=8")
    rsp_server(lab, "rsp-b", "fractal", POOL, 3863, 0x0F2, "-fgpfailureafter=8")
    wait_for("both rspserver registered", lambda: all(
        i in rsp_hsdump(lab, 9901).lower() for i in ("$000000f1", "$000000f2")), lab)
    out = lab.tmp / "fractal-pu.jsonl"
    lab.spawn("fractal-pu", [*RSERPOOL, "fractal-pu", "--registrar", f"{LO}:3863", "--pool", POOL,
                             "--width", "160", "--height", "100", "--max-iterations", "256", "--images", "2",
                             "--inter-image-time", "1", "--transport", "sctp", "--json", str(lab.tmp / "img-{n}.json"),
                             "-o", str(out)])
    assert lab.wait_exit("fractal-pu", 240) == 0, lab.logs()
    events = _lines(out)
    summaries = [e for e in events if e.get("event") == "summary"]
    assert len(summaries) == 2, events
    used: set[int] = set()
    for s in summaries:
        points = s["elements"]
        assert sum(points.values()) == 160 * 100, s  # the whole image
        used |= {int(k, 16) for k in points}
    assert used <= {0x0F1, 0x0F2} and used, used  # every point from an RSPLIB element
    failovers = [e for e in events if e.get("event") == "failover"]
    assert failovers, f"rspserver -fgpfailureafter=8 should force a fail-over\n{events}"
    assert all(f["from_pe"] in (0x0F1, 0x0F2) for f in failovers)
    # RSPLIB's element sent cookies: the session resumed where its last cookie said
    assert any(f["cookie"] for f in failovers), failovers


def test_emulab_fractal_pe_serves_rsplib_fractalpooluser(lab: Lab) -> None:
    rsp_registrar(lab, "pr", 3863, 9901)
    for name, ident in (("pe-a", 0xE1), ("pe-b", 0xE2)):
        emulab_pe(lab, name, POOL, 3863, ident, "--service", "fractal", "--capacity", "0", "--log-level", "info")
    wait_for("emulab's fractal PEs registered", lambda: all(
        " registered in pool " in lab.log(n) for n in ("pe-a", "pe-b")), lab)
    lab.spawn("receiver", [sys.executable, "-c", _RECEIVER, LO, "2961"])
    wait_for("the CSP receiver", lambda: '"ready": true' in lab.log("receiver"), lab)
    # fractalpooluser is a Qt GUI: the offscreen platform plugin runs it without a display. RSPLIB
    # reports a component only with a non-zero identifier: a PU has none unless given one.
    lab.spawn("fractalpooluser", [*LINEBUF, "fractalpooluser", f"-registrar={LO}:3863", f"-poolhandle={POOL}",
                                  "-threads=1", "-interimagetime=1", "-recvtimeout=20000", "-identifier=0xfa11",
                                  f"-cspserver={LO}:2961", "-cspinterval=300", *RSP_LOG],
              env={"QT_QPA_PLATFORM": "offscreen"})

    def images_done() -> int | None:
        logs = [lab.log(n) for n in ("pe-a", "pe-b")]
        done = sum(len(re.findall(r"image \d+x\d+ completed", t)) for t in logs)
        started = sum(len(re.findall(r"Parameter: w=\d+ h=\d+", t)) for t in logs)
        return done if done >= 2 and started > done else None  # two images done, the next begun

    wait_for("fractalpooluser to complete two images and begin the next", images_done, lab, deadline=240)
    lab.alive("fractalpooluser")
    fpu_log = lab.log("fractalpooluser")
    assert "FAILOVER" not in fpu_log and "Invalid data block" not in fpu_log, fpu_log[-3000:]
    # what fractalpooluser says of itself in its Component Status reports: in a session with one of
    # emulab's elements, over SCTP with the Fractal Generator PPID
    reports = [json.loads(ln) for ln in lab.log("receiver").splitlines() if ln.startswith("{") and "label" in ln]
    mine = [r for r in reports if r["label"] == "PU $0000000000fa11"]
    print("fractalpooluser's CSP reports:", sorted({(r["status"], tuple(a["receiver"] for a in r["associations"]))
                                                    for r in mine}))
    # PPID 0: RSPLIB's report of an association on which nothing has been sent yet (just connected)
    served_by = {(a["receiver"], a["ppid"], a["protocol_id"]) for r in mine if r["status"] == "1 Session"
                 for a in r["associations"] if a["receiver"].startswith("PE ") and a["ppid"] != 0}
    assert served_by and served_by <= {("PE $000000e1", 32, 132), ("PE $000000e2", 32, 132)}, mine[-5:]


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def test_cspmonitor_lists_emulab_components(lab: Lab) -> None:
    lab.spawn("cspmonitor", [*LINEBUF, "cspmonitor", f"-localaddress={LO}:2960", "-full", "-updateinterval=500"])
    lab.spawn("receiver", [sys.executable, "-c", _RECEIVER, LO, "2961"])
    wait_for("the CSP receiver", lambda: '"ready": true' in lab.log("receiver"), lab)
    csp = ["--cspserver", f"{LO}:2960", "--cspinterval", "500"]
    emulab_registrar(lab, "pr", 3863, 9901, "--identifier", "0xE0E0", *csp)
    rsp_registrar(lab, "rsp-pr", 3864, 9902, f"-cspserver={LO}:2961", "-cspinterval=500")
    emulab_pe(lab, "pe", POOL, 3863, 0xE1, "--service", "fractal", "--capacity", "2000000", *csp)
    rsp_server(lab, "rsp-pe", "fractal", POOL, 3863, 0x0F1, f"-cspserver={LO}:2960", "-cspinterval=500")
    wait_for("the PEs registered", lambda: " registered in pool " in lab.log("pe"), lab)
    lab.spawn("fractal-pu", [*RSERPOOL, "fractal-pu", "--registrar", f"{LO}:3863", "--pool", POOL,
                             "--width", "300", "--height", "200", "--images", "3", "--inter-image-time", "1",
                             "--transport", "sctp", "-o", str(lab.tmp / "pu.jsonl"), *csp])

    def shown() -> str | None:
        text = _strip_ansi(lab.log("cspmonitor"))
        busy = re.search(r"PU \$[0-9a-f]{14} \[[^\]]*\]\s+U=\S+ l=\S+ A=2 \"1 Session\"", text)
        return text if busy and "PE $000000e1" in text else None

    text = wait_for("cspmonitor to list emulab's pool user in a session", shown, lab, deadline=180)
    time.sleep(2)
    text = _strip_ansi(lab.log("cspmonitor"))
    # What RSPLIB's monitor shows of emulab's components (kept in the log of the test run)
    rows = sorted(set(re.findall(r"(P[RUE] \$[0-9a-f]+ \[[^\]]*\]\s+U=\S+ l=\S+ A=\d+(?: L=\s*\d+%)? \"[^\"]*\")",
                                 text)))
    print("cspmonitor rows:\n" + "\n".join(re.sub(r" l=\S+", "", r) for r in rows))
    assert re.search(r"PR \$0000e0e0 \[[^\]]*" + re.escape(LO) + r":3863\]\s+U=\S+ l=\S+ A=\d+ "
                     r"\"2\[2\] PEs in 1 Pools, 0 Peers\"", text), text[-3000:]
    assert re.search(r"PE \$000000e1 \[[^\]]*" + re.escape(LO) + r":\d+\]\s+U=\S+ l=\S+ A=1(?: L=\s*\d+%)? "
                     r"\"\d+ Sessions?\"", text), text[-3000:]
    assert re.search(r"PE \$000000f1 \[", text), text[-3000:]  # RSPLIB's own element beside ours
    assert re.search(r"PU \$[0-9a-f]{14} \[[^\]]*\]\s+U=\S+ l=\S+ A=2 \"1 Session\"", text), text[-3000:]
    assert re.search(r"-> PE \$000000(e1|f1) FractGen/SCTP|-> PE \$000000(e1|f1) \$00000020/SCTP", text), text[-3000:]
    # ... and emulab's receiver reads RSPLIB's registrar's reports
    reports = [json.loads(ln) for ln in lab.log("receiver").splitlines() if ln.startswith("{") and "label" in ln]
    rsp = [r for r in reports if r["kind"] == "registrar"]
    assert rsp, lab.logs()
    print("rspregistrar's report as emulab decodes it:", json.dumps(rsp[-1]))
    assert rsp[-1]["location"] and rsp[-1]["report_interval_us"] > 0

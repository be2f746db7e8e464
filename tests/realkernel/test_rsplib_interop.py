"""Interoperability of emulab's RSerPool stack with RSPLIB 3.4.4 (Debian's rsplib-* packages).

Each test runs RSPLIB's real programs (``rspregistrar``, ``rspserver``, ``hsdump``,
``calcappclient``) next to emulab's ``rserpool`` command in a fresh network namespace with only
loopback and a dummy interface, over kernel SCTP (RSPLIB has no TCP mode, so none of this can run
on a kernel without SCTP). Marked ``realkernel``: the lane ``scripts/realkernel/run.sh`` boots a
kernel that has SCTP; elsewhere the tests skip with the reason. Processes are stopped and the
namespace deleted in the fixture's teardown, also when an assertion fails; their logs are part of
failure messages (and, in the lane, copied to the artifacts).

Assertions are on what RSPLIB itself reports (``calcappclient``'s and ``rspserver``'s .sca
scalars, ``hsdump``'s output, its logs), on emulab's own records (``calcapp-pu`` JSON lines, the
CalcApp PE's statistics file, ``rserpool pu``/``hsdump --json``) and, for cookies, on the bytes
that went over the wire (``sctp_sniff.py`` on the namespace's loopback, decoded with
``rserpool.wire``).

1. RSPLIB PE at emulab's registrar: ``rspserver -echo`` is resolved and used by emulab's PU, RSPLIB's
   ``hsdump`` reads emulab's handlespace; ``rspserver -calcapp`` serves RSPLIB's ``calcappclient``
   and emulab's ``calcapp-pu``; emulab's PU fails over between two ``rspserver`` with RSPLIB's
   CalcApp cookie (Cookie Echo, the job resumes where the cookie said).
2. emulab's PE at ``rspregistrar``: resolved by emulab's PU, shown by RSPLIB's ``hsdump``; emulab's
   CalcApp PE serves ``calcappclient`` and ``calcapp-pu`` (at either registrar); ``calcappclient``
   fails over between two emulab CalcApp PEs with emulab's cookie.
3. ENRP peering emulab registrar <-> ``rspregistrar``: each one's PE visible and selectable at both
   (whichever side names the other as static peer); SIGKILL ``rspregistrar`` -> emulab's registrar
   takes over RSPLIB's PE (Home Keep-Alive to the PE's ASAP endpoint), which adopts it.
4. PriorityLeastUsed pools: emulab's registrar and RSPLIB's choose the same element class, also in a
   pool mixing ``rspserver`` and emulab PEs. Control-channel use must agree within a pool: both
   registrars refuse a PE that differs with the same ASAP error cause (0x8).
"""

from __future__ import annotations

import json

import pytest

from rserpool.services.calcapp import decode_cookie
from rserpool.wire import CookieEcho, CookieMessage

from helpers.rsplib_lab import (
    ASAP_COOKIE,
    ASAP_COOKIE_ECHO,
    LO,
    RSP_LOG,
    RSPLIB_MARKS,
    Lab,
    asap_chunks,
    calcapp_records,
    emulab_calcapp_pe,
    emulab_calcapp_pu,
    emulab_pe,
    emulab_registrar,
    pu,
    resolved,
    resolved_ids,
    rsp_calcapp_server,
    rsp_hsdump,
    rsp_registrar,
    rsp_server,
    scalars,
    start_sniffer,
    wait_for,
)

pytestmark = RSPLIB_MARKS


# ---- 1: RSPLIB PE at emulab's registrar ------------------------------------------------------

def test_rsplib_pe_at_emulab_registrar(lab: Lab) -> None:
    emulab_registrar(lab, "emulab-registrar", 3863, 9901)
    rsp_server(lab, "rspserver-echo", "echo", "EchoPool", 3863, 0x5E0001)
    ids = wait_for("emulab's PU to resolve RSPLIB's echo PE", lambda: resolved_ids(lab, 3863, "EchoPool"), lab)
    assert ids == [0x5E0001], lab.logs()
    lab.alive("rspserver-echo")
    # Data path: emulab's PU session to RSPLIB's Echo service (SCTP, PPID as RSPLIB sends it).
    r = pu(lab, 3863, "EchoPool", "--echo", "hello-rsplib")
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{lab.logs()}"
    assert json.loads(r.stdout).get("echo") == "hello-rsplib", r.stdout
    # RSPLIB's hsdump reads emulab's handlespace over ENRP.
    assert "$005e0001" in rsp_hsdump(lab, 9901).lower(), lab.logs()


def test_rspserver_calcapp_serves_calcappclient_and_emulab_pu(lab: Lab) -> None:
    """Combination 1: RSPLIB's CalcApp PE at emulab's registrar serves RSPLIB's and emulab's PUs."""
    emulab_registrar(lab, "emulab-registrar", 3863, 9901)
    sca = rsp_calcapp_server(lab, "rspserver-calcapp", 3863, 0xCA0001)
    wait_for("the RSPLIB CalcApp PE at emulab's registrar", lambda: resolved_ids(lab, 3863, "CalcAppPool"), lab)
    records = emulab_calcapp_pu(lab, "emulab-calcapp-pu", 3863, jobs=3, size=300_000)
    client = calcappclient_ok(lab, 3863)
    assert lab.wait_exit("emulab-calcapp-pu", 120) == 0, lab.logs()
    recs, summary = calcapp_records(records)
    assert len(recs) == 3 and all(r["status"] == "completed" and r["element_id"] == 0xCA0001 for r in recs), recs
    assert summary["counters"]["completes"] == 3, summary
    # What RSPLIB's CalcApp server says it did: every job of both PUs accepted, none rejected.
    assert lab.stop("rspserver-calcapp") == 0, lab.logs()
    pe = scalars(sca)
    assert pe.get("CalcAppPE Total Jobs Rejected") == 0, pe
    assert pe.get("CalcAppPE Total Jobs Accepted", 0) >= 3 + client["CalcAppPU Total Jobs Completed"], (pe, client)
    assert pe.get("CalcAppPE Total Used Capacity", 0) >= 3 * 300_000, pe


def test_emulab_pu_fails_over_between_rspservers_with_rsplib_cookie(lab: Lab) -> None:
    """Combination 1, cookies: RSPLIB's PE sends its CalcApp cookie, emulab's PU echoes it to the
    other ``rspserver`` after the first one is killed, and the job resumes where the cookie says."""
    size = 6_000_000  # 6 s at rspserver's 1,000,000 calculations/s; a cookie every 1,000,000
    emulab_registrar(lab, "emulab-registrar", 3863, 9901)
    ids = {"rspserver-a": 0xCA0101, "rspserver-b": 0xCA0102}
    sca = {n: rsp_calcapp_server(lab, n, 3863, i, "-capcookiemaxcalculations=1000000") for n, i in ids.items()}
    els = wait_for("both rspservers at emulab's registrar",
                   lambda: (e := resolved(lab, 3863, "CalcAppPool")) and len(e) == 2 and e, lab)
    port_of = {int(e["identifier"]): int(e["port"]) for e in els}
    start_sniffer(lab)
    records = emulab_calcapp_pu(lab, "emulab-calcapp-pu", 3863, jobs=1, size=size)
    first, _ = wait_for("RSPLIB's first ASAP Cookie to emulab's PU", lambda: asap_chunks(lab, ASAP_COOKIE), lab)[0]
    serving = next(n for n, i in ids.items() if port_of[i] == first["sport"])
    survivor = next(n for n in ids if n != serving)
    lab.kill(serving)
    assert lab.wait_exit("emulab-calcapp-pu", 120) == 0, lab.logs()

    recs, summary = calcapp_records(records)
    assert len(recs) == 1, recs
    rec = recs[0]
    assert rec["status"] == "completed" and rec["failovers"] >= 1, rec
    assert rec["element_id"] == ids[survivor] and len(rec["accepts"]) >= 2, rec
    # On the wire: the Cookie Echo to the survivor carries the last cookie the killed PE sent.
    cookies = [m.cookie for c, m in asap_chunks(lab, ASAP_COOKIE) if c["sport"] == port_of[ids[serving]]]
    echoes = [(c, m) for c, m in asap_chunks(lab, ASAP_COOKIE_ECHO) if c["dport"] == port_of[ids[survivor]]]
    assert len(echoes) == 1 and isinstance(echoes[0][1], CookieEcho), echoes
    echoed = echoes[0][1].cookie
    assert echoed == cookies[-1], (echoed.hex(), [c.hex() for c in cookies])
    job_id, job_size, completed = decode_cookie(echoed)  # RSPLIB's struct CalcAppCookie
    assert (job_id, job_size) == (rec["request_id"], size) and 0 < completed < size, (job_id, job_size, completed)
    assert all(isinstance(m, CookieMessage) for _, m in asap_chunks(lab, ASAP_COOKIE))
    # RSPLIB's survivor took the job from the cookie and computed only what was left.
    assert "accepted from cookie echo" in lab.log(survivor), lab.logs()
    assert lab.stop(survivor) == 0, lab.logs()
    pe = scalars(sca[survivor])
    assert pe.get("CalcAppPE Total Jobs Accepted") == 1, pe
    used = pe.get("CalcAppPE Total Used Capacity", 0)
    assert abs(used - (size - completed)) <= 0.02 * size, (used, size, completed)
    assert summary["counters"]["completes"] == 1, summary


# ---- 2: emulab PE at rspregistrar ------------------------------------------------------------

def test_emulab_pe_at_rspregistrar(lab: Lab) -> None:
    rsp_registrar(lab, "rspregistrar", 3863, 9901)
    emulab_pe(lab, "emulab-pe", "EmuPool", 3863, 0xE0001)
    ids = wait_for("emulab's PE at rspregistrar", lambda: resolved_ids(lab, 3863, "EmuPool"), lab)
    assert ids == [0xE0001], lab.logs()
    r = pu(lab, 3863, "EmuPool", "--echo", "hello-emulab")
    assert r.returncode == 0 and json.loads(r.stdout).get("echo") == "hello-emulab", f"{r.stdout}{r.stderr}"
    wait_for("RSPLIB's hsdump to show emulab's PE $000e0001",
             lambda: "$000e0001" in rsp_hsdump(lab, 9901).lower(), lab, deadline=45)


def calcappclient_ok(lab: Lab, registrar_port: int, runtime: int = 12) -> dict[str, float]:
    """Run RSPLIB's calcappclient against the CalcApp pool; its scalars say it was served."""
    sca = lab.tmp / "calcappclient.sca"
    r = lab.run(["timeout", str(runtime + 48), "calcappclient", "-poolhandle=CalcAppPool",
                 f"-registrar={LO}:{registrar_port}", f"-runtime={runtime}", "-jobinterval=1", "-jobsize=100000",
                 f"-scalar={sca}", f"-vector={lab.tmp / 'calcappclient.vec'}", *RSP_LOG], timeout=runtime + 78)
    (lab.tmp / "calcappclient.out").write_text(r.stdout + r.stderr)
    tail = "\n".join((r.stdout + r.stderr).splitlines()[-30:])
    client = scalars(sca)
    assert client, f"calcappclient wrote no scalars\n{tail}\n{lab.logs()}"
    assert "Unable to send CalcAppRequest" not in r.stdout + r.stderr, f"{tail}\n{lab.logs()}"
    assert client.get("CalcAppPU Total Jobs Completed", 0) > 0, f"{client}\n{tail}\n{lab.logs()}"
    assert client.get("CalcAppPU Total CalcAppAccepts", 0) >= client["CalcAppPU Total Jobs Completed"], client
    assert client.get("CalcAppPU Total CalcAppRejects", -1) == 0, client
    return client


@pytest.mark.parametrize("registrar", ["rsplib", "emulab"])
def test_emulab_calcapp_pe_serves_calcappclient_and_emulab_pu(lab: Lab, registrar: str) -> None:
    """Combination 2 (registrar="rsplib"): emulab's CalcApp PE registered at rspregistrar, shown by
    RSPLIB's hsdump, serves RSPLIB's calcappclient and emulab's calcapp-pu; "emulab": the same PE
    and clients at emulab's registrar."""
    start = rsp_registrar if registrar == "rsplib" else emulab_registrar
    start(lab, "registrar", 3863, 9901)
    stats = emulab_calcapp_pe(lab, "emulab-calcapp-pe", 3863, 0xCA0201)
    wait_for("emulab's CalcApp PE", lambda: resolved_ids(lab, 3863, "CalcAppPool") == [0xCA0201], lab)
    wait_for("RSPLIB's hsdump to show emulab's CalcApp PE $00ca0201",
             lambda: "$00ca0201" in rsp_hsdump(lab, 9901).lower(), lab, deadline=45)
    records = emulab_calcapp_pu(lab, "emulab-calcapp-pu", 3863, jobs=3, size=300_000)
    client = calcappclient_ok(lab, 3863)
    assert lab.wait_exit("emulab-calcapp-pu", 120) == 0, lab.logs()
    recs, _ = calcapp_records(records)
    assert len(recs) == 3 and all(r["status"] == "completed" and r["element_id"] == 0xCA0201 for r in recs), recs
    assert lab.stop("emulab-calcapp-pe") == 0, lab.logs()
    pe = json.loads(stats.read_text())
    assert pe["rejected"] == 0, pe
    assert pe["accepted"] >= 3 + client["CalcAppPU Total Jobs Completed"], (pe, client)
    assert pe["completed"] >= 3 + client["CalcAppPU Total Jobs Completed"], (pe, client)


def test_calcappclient_fails_over_between_emulab_pes_with_emulab_cookie(lab: Lab) -> None:
    """Combination 2, cookies: emulab's CalcApp PE sends its cookie to RSPLIB's calcappclient, which
    echoes it to the other emulab PE when the first is killed; the job resumes there."""
    rsp_registrar(lab, "rspregistrar", 3863, 9901)
    ids = {"emulab-pe-a": 0xCA0301, "emulab-pe-b": 0xCA0302}
    stats = {n: emulab_calcapp_pe(lab, n, 3863, i) for n, i in ids.items()}
    els = wait_for("both emulab CalcApp PEs at rspregistrar",
                   lambda: (e := resolved(lab, 3863, "CalcAppPool")) and len(e) == 2 and e, lab)
    port_of = {int(e["identifier"]): int(e["port"]) for e in els}
    start_sniffer(lab)
    sca = lab.tmp / "calcappclient.sca"
    # Jobs of 10^10 calculations on average (exponential): the first one runs far beyond the test,
    # so the PE sends cookies (every 5 s) and is still working on it when it is killed.
    lab.spawn("calcappclient", ["calcappclient", "-poolhandle=CalcAppPool", f"-registrar={LO}:3863",
                                "-runtime=30", "-jobinterval=1", "-jobsize=10000000000", f"-scalar={sca}",
                                f"-vector={lab.tmp / 'calcappclient.vec'}", *RSP_LOG])
    first, _ = wait_for("emulab's first ASAP Cookie to calcappclient",
                        lambda: asap_chunks(lab, ASAP_COOKIE), lab)[0]
    serving = next(n for n, i in ids.items() if port_of[i] == first["sport"])
    survivor = next(n for n in ids if n != serving)
    lab.kill(serving)
    echo, msg = wait_for("calcappclient's Cookie Echo to the other emulab PE",
                         lambda: [x for x in asap_chunks(lab, ASAP_COOKIE_ECHO)
                                  if x[0]["dport"] == port_of[ids[survivor]]], lab)[0]
    cookies = [m.cookie for c, m in asap_chunks(lab, ASAP_COOKIE) if c["sport"] == port_of[ids[serving]]]
    assert msg.cookie == cookies[-1], (msg.cookie.hex(), [c.hex() for c in cookies])
    job_id, job_size, completed = decode_cookie(msg.cookie)
    assert job_id == 1 and completed > 0 and job_size > completed, (job_id, job_size, completed)
    wait_for("the survivor to resume the job from the cookie",
             lambda: f"job {job_id} resumed from cookie echo at {completed}/{job_size}" in lab.log(survivor), lab)
    assert lab.wait_exit("calcappclient", 90) == 0, lab.logs()
    client = scalars(sca)
    # RSPLIB's own count: one request, two accepts (the second one for the Cookie Echo).
    assert client.get("CalcAppPU Total CalcAppRequests") == 1, client
    assert client.get("CalcAppPU Total CalcAppAccepts") == 2, client
    assert lab.stop(survivor) == 0, lab.logs()
    pe = json.loads(stats[survivor].read_text())
    assert pe["accepted"] == 1 and pe["used_calculations"] > 0, pe

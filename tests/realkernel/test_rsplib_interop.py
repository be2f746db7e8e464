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

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rserpool import transport as tp
from rserpool.services.calcapp import decode_cookie
from rserpool.wire import CookieEcho, CookieMessage, decode_asap

_RSPLIB = ("rspregistrar", "rspserver", "hsdump", "calcappclient")
_missing = [b for b in _RSPLIB if shutil.which(b) is None]
_SCRIPT = Path(sys.executable).parent / "rserpool"
RSERPOOL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "rserpool"]
SNIFF = [sys.executable, str(Path(__file__).with_name("sctp_sniff.py")), "lo"]

pytestmark = [
    pytest.mark.realkernel,
    pytest.mark.root,
    pytest.mark.skipif(not tp.sctp_available(),
                       reason="needs a kernel with SCTP, sch_netem and the openvswitch datapath "
                              "(RSPLIB speaks ASAP/ENRP over SCTP only)"),
    pytest.mark.skipif(bool(_missing), reason=f"RSPLIB binaries missing: {_missing} (apt-get install "
                                              "rsplib-registrar rsplib-services rsplib-tools)"),
]

# TCG is slow: generous deadlines, RSPLIB's defaults for re-tries are seconds.
DEADLINE = 40.0
RSP_LOG = ["-logcolor=off", "-loglevel=3"]
RSP_LOG_ACTION = ["-logcolor=off", "-loglevel=4"]  # also RSPLIB's actions (takeover, peers)
# RSPLIB's PEs refuse to register with loopback addresses only ("No addresses of at least
# site-local scope found -> No registration possible") and its registrar drops such PE addresses,
# so every namespace gets a dummy interface with a site-local address, used for everything.
LO = "10.77.0.1"
PPID_ASAP = 11
# RSPLIB logs to stdout through stdio: line-buffered, so that a SIGKILLed program's log is complete.
LINEBUF = ["stdbuf", "-oL", "-eL"]
ASAP_COOKIE, ASAP_COOKIE_ECHO = 0x0B, 0x0C


class Lab:
    """One network namespace (loopback + dummy) plus the processes started in it."""

    def __init__(self, tmp: Path, tag: str) -> None:
        self.tmp = tmp
        self.ns = f"rki{os.getpid() % 10000}{tag}"
        self.procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        subprocess.run(["ip", "netns", "add", self.ns], check=True, timeout=30)
        for cmd in (["link", "set", "lo", "up"], ["link", "add", "d0", "type", "dummy"],
                    ["addr", "add", f"{LO}/24", "dev", "d0"], ["link", "set", "d0", "up"]):
            subprocess.run(["ip", "-n", self.ns, *cmd], check=True, timeout=30)

    def _wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as fh:
            p = subprocess.Popen(self._wrap(argv), stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                 cwd=self.tmp, start_new_session=True,
                                 env={**os.environ, **env} if env else None)
        self.procs[name] = (p, log)
        return p

    def run(self, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._wrap(argv), capture_output=True, text=True, timeout=timeout, cwd=self.tmp,
                              stdin=subprocess.DEVNULL)

    def log(self, name: str) -> str:
        log = self.procs[name][1]
        return log.read_text(errors="replace") if log.exists() else ""

    def logs(self) -> str:
        parts = []
        for name, (p, _) in self.procs.items():
            state = "running" if p.poll() is None else f"exited {p.returncode}"
            parts.append(f"--- {name} ({state}) last lines:\n" + "\n".join(self.log(name).splitlines()[-25:]))
        return "\n".join(parts)

    def alive(self, name: str) -> None:
        p, _ = self.procs[name]
        assert p.poll() is None, f"{name} exited with {p.returncode}\n{self.logs()}"

    def kill(self, name: str) -> None:
        """SIGKILL: the process vanishes without a word (its kernel sockets are closed)."""
        p, _ = self.procs[name]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)

    def stop(self, name: str, timeout: float = 30.0) -> int:
        """SIGINT and wait: RSPLIB's programs and emulab's daemons write their statistics on the way out."""
        p, _ = self.procs[name]
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
        return p.wait(timeout=timeout)

    def wait_exit(self, name: str, deadline: float) -> int:
        p, _ = self.procs[name]
        try:
            return p.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still running after {deadline:.0f}s\n{self.logs()}")

    def close(self) -> None:
        for p, _ in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        # One deadline for all (they stop in parallel): an rspserver that could not register
        # spends its time on deregistration trials that cannot succeed.
        deadline = time.monotonic() + 8
        for p, _ in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", self.ns], check=False, timeout=30)


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    lb = Lab(tmp_path, str(abs(hash(request.node.name)) % 1000))
    try:
        yield lb
    finally:
        lb.close()
        # Keep the logs next to the junit file when running in the lane.
        keep = os.environ.get("EMULAB_RK_ARTIFACTS")
        if keep:
            dst = Path(keep) / re.sub(r"[^\w.-]", "_", request.node.name)
            shutil.copytree(tmp_path, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.vec"))


# ---- the programs ---------------------------------------------------------------------------

def sctp_listening(lab: Lab, port: int) -> bool:
    """Whether an SCTP endpoint in the namespace is bound to ``port`` (/proc/net/sctp/eps)."""
    lines = lab.run(["cat", "/proc/net/sctp/eps"]).stdout.splitlines()
    if not lines:
        return False
    col = lines[0].split().index("LPORT")
    return any(len(row.split()) > col and row.split()[col] == str(port) for row in lines[1:])


def emulab_registrar(lab: Lab, name: str, asap_port: int, enrp_port: int, *extra: str) -> None:
    lab.spawn(name, [*RSERPOOL, "registrar", "--listen", f"{LO}:{asap_port}", "--enrp-listen", f"{LO}:{enrp_port}",
                     "--no-announce", "--transport", "sctp", "--log-level", "debug", *extra])
    # RSPLIB's PEs give a registration up when no registrar answers at once ("Registration failed:
    # timeout") and try again only after their re-registration interval (30 s): the registrar
    # (a Python process, seconds to start under TCG) must listen before one is started.
    wait_for(f"{name} to listen on {asap_port}", lambda: sctp_listening(lab, asap_port), lab)


def rsp_registrar(lab: Lab, name: str, asap_port: int, enrp_port: int, *extra: str, log: list[str] = RSP_LOG) -> None:
    lab.spawn(name, [*LINEBUF, "rspregistrar", f"-asap={LO}:{asap_port}", f"-enrp={LO}:{enrp_port}",
                     "-asapannounce=off", "-enrpannounce=off", *log, *extra])
    wait_for(f"{name} to listen on {asap_port}", lambda: sctp_listening(lab, asap_port), lab)


def rsp_server(lab: Lab, name: str, service: str, pool: str, registrar_port: int, identifier: int,
               *extra: str, policy: str | None = None, log: list[str] = RSP_LOG) -> None:
    argv = [*LINEBUF, "rspserver", f"-{service}", f"-poolhandle={pool}", f"-registrar={LO}:{registrar_port}",
            f"-identifier={identifier}", "-asapannounce=off", *log, *extra]
    if policy:
        argv.append(f"-policy={policy}")
    lab.spawn(name, argv)


def rsp_calcapp_server(lab: Lab, name: str, registrar_port: int, identifier: int, *extra: str) -> Path:
    """``rspserver -calcapp``; returns the .sca file it writes on shutdown (SIGINT)."""
    sca = lab.tmp / f"{name}.sca"
    rsp_server(lab, name, "calcapp", "CalcAppPool", registrar_port, identifier, f"-capscalar={sca}",
               f"-capvector={lab.tmp / (name + '.vec')}", f"-capobject={name}", *extra)
    return sca


def emulab_pe(lab: Lab, name: str, pool: str, registrar_port: int, identifier: int, *extra: str,
              env: dict[str, str] | None = None) -> None:
    # An explicit service address: with the default 0.0.0.0 the PE registers the wildcard, which
    # rspregistrar rejects ("No (usable) transport addresses given!").
    lab.spawn(name, [*RSERPOOL, "pe", "--registrar", f"{LO}:{registrar_port}", "--pool", pool,
                     "--identifier", hex(identifier), "--listen", f"{LO}:0", "--transport", "sctp",
                     "--reregistration-interval", "5", *extra], env=env)


def emulab_calcapp_pe(lab: Lab, name: str, registrar_port: int, identifier: int) -> Path:
    """emulab's CalcApp PE; returns its statistics file (written on SIGINT, RSPLIB's CalcAppPE scalars)."""
    stats = lab.tmp / f"{name}.json"
    emulab_pe(lab, name, "CalcAppPool", registrar_port, identifier, "--service", "calcapp",
              "--capacity", "1000000", env={"RSERPOOL_CALCAPP_STATS": str(stats)})
    return stats


def emulab_calcapp_pu(lab: Lab, name: str, registrar_port: int, jobs: int, size: float) -> Path:
    """emulab's CalcApp PU: ``jobs`` requests of ``size`` calculations, one a second, all awaited."""
    out = lab.tmp / f"{name}.jsonl"
    lab.spawn(name, [*RSERPOOL, "calcapp-pu", "--registrar", f"{LO}:{registrar_port}", "--pool", "CalcAppPool",
                     "--pus", "1", "--duration", str(jobs + 0.5), "--interval-dist", "const", "--interval-mean", "1",
                     "--size-dist", "const", "--size-mean", str(size), "--drain", "120", "--transport", "sctp",
                     "--log-level", "info", "-o", str(out)])
    return out


def calcapp_records(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [r for r in lines if "summary" not in r], next(r["summary"] for r in lines if "summary" in r)


def pu(lab: Lab, registrar_port: int, pool: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return lab.run([*RSERPOOL, "pu", "--registrar", f"{LO}:{registrar_port}", "--pool", pool, "--json",
                    "--transport", "sctp", "--timeout", "10", *extra])


def wait_for(what: str, probe: Callable[[], Any], lab: Lab, deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {deadline:.0f}s waiting for {what}\n{lab.logs()}")


def resolved(lab: Lab, registrar_port: int, pool: str, *extra: str) -> list[dict[str, Any]] | None:
    """The PEs a handle resolution at the registrar returns (emulab's PU), or None on an error."""
    r = pu(lab, registrar_port, pool, *extra)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)["elements"]


def resolved_ids(lab: Lab, registrar_port: int, pool: str, *extra: str) -> list[int] | None:
    els = resolved(lab, registrar_port, pool, *extra)
    return None if els is None else [int(e["identifier"]) for e in els]


def resolved_home(lab: Lab, registrar_port: int, pool: str) -> int | None:
    """The home registrar the registrar names for the pool's first PE (None: no PE, or an error)."""
    els = resolved(lab, registrar_port, pool)
    return int(els[0]["home_pr"]) if els else None


def enrp_peers(lab: Lab, enrp_port: int) -> set[int]:
    """The peers a registrar names in its ENRP List Response (``rserpool peers``)."""
    r = lab.run([*RSERPOOL, "peers", "--registrar", f"{LO}:{enrp_port}", "--json", "--transport", "sctp"])
    if r.returncode != 0:
        return set()
    return {int(p["identifier"]) for res in json.loads(r.stdout) for p in res.get("peers", [])}


def rsp_hsdump(lab: Lab, enrp_port: int) -> str:
    """RSPLIB's hsdump of the registrar at ``enrp_port`` (its stdout)."""
    h = lab.run(["timeout", "30", "hsdump", f"{LO}:{enrp_port}", "-logcolor=off"], timeout=60)
    return h.stdout


def scalars(path: Path) -> dict[str, float]:
    """An OMNeT++-style .sca file as {scalar name: value} (RSPLIB's calcappclient / rspserver)."""
    out: dict[str, float] = {}
    for ln in path.read_text(errors="replace").splitlines() if path.exists() else []:
        m = re.match(r'scalar\s+"[^"]*"\s+"([^"]+)"\s+(\S+)', ln)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def sniffed(lab: Lab) -> list[dict[str, Any]]:
    """SCTP DATA chunks the sniffer has printed so far."""
    out = []
    for ln in lab.log("sniff").splitlines():
        with_data = json.loads(ln) if ln.startswith("{") else {}
        if "data" in with_data:
            out.append(with_data)
    return out


def start_sniffer(lab: Lab) -> None:
    lab.spawn("sniff", SNIFF)
    wait_for("the SCTP sniffer", lambda: '"ready": true' in lab.log("sniff"), lab)


def asap_chunks(lab: Lab, mtype: int) -> list[tuple[dict[str, Any], Any]]:
    """(chunk, decoded ASAP message) of every sniffed ASAP message of type ``mtype``."""
    out = []
    for c in sniffed(lab):
        data = bytes.fromhex(c["data"])
        if c["ppid"] == PPID_ASAP and data[:1] == bytes([mtype]):
            out.append((c, decode_asap(data)))
    return out


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


# ---- 3: ENRP peering -------------------------------------------------------------------------

EMULAB_ID, RSPLIB_ID = 0xE1E1E1E1, 0x5A5A5A5A


@pytest.mark.parametrize("static", ["emulab-names-rsplib", "rsplib-names-emulab"])
def test_enrp_peering_emulab_and_rspregistrar(lab: Lab, static: str) -> None:
    """Each registrar's PE is visible and selectable at both, whichever of them knows the other."""
    rsp_peer = [f"-peer={LO}:9902"] if static == "rsplib-names-emulab" else []
    emu_peer = ["--peer", f"{LO}:9901"] if static == "emulab-names-rsplib" else []
    rsp_registrar(lab, "rspregistrar", 3863, 9901, f"-identifier={RSPLIB_ID}", *rsp_peer, log=RSP_LOG_ACTION)
    emulab_registrar(lab, "emulab-registrar", 4863, 9902, "--identifier", hex(EMULAB_ID), *emu_peer)
    rsp_server(lab, "rspserver-echo", "echo", "PeerPool", 3863, 0x5E0002)
    emulab_pe(lab, "emulab-pe", "PeerPool", 4863, 0xE0002)
    homes = {0x5E0002: RSPLIB_ID, 0xE0002: EMULAB_ID}
    # Each one names the other in its peer list (RSPLIB's also names hsdump clients it has heard).
    wait_for("emulab's registrar to list rspregistrar as peer", lambda: RSPLIB_ID in enrp_peers(lab, 9902), lab)
    wait_for("rspregistrar to list emulab's registrar as peer", lambda: EMULAB_ID in enrp_peers(lab, 9901), lab)
    for port in (3863, 4863):
        els = wait_for(f"both PEs via the registrar on port {port}",
                       lambda p=port: (e := resolved(lab, p, "PeerPool")) and len(e) == 2 and e, lab)
        assert {int(e["identifier"]): int(e["home_pr"]) for e in els} == homes, els
    # RSPLIB's own view of both handlespaces.
    for enrp in (9901, 9902):
        dump = rsp_hsdump(lab, enrp).lower()
        assert "$005e0002" in dump and "$000e0002" in dump, f"hsdump of {enrp}:\n{dump}\n{lab.logs()}"
    assert "no usable ENRP endpoint addresses" not in lab.log("rspregistrar"), lab.logs()
    # Selectable: emulab's PU reaches RSPLIB's PE through emulab's registrar, and emulab's PE
    # through RSPLIB's registrar (an echo session to the one PE each round-robin selection names).
    for port in (3863, 4863):
        echoed: set[int] = set()
        for _ in range(4):
            r = pu(lab, port, "PeerPool", "--count", "1", "--echo", "via-enrp")
            assert r.returncode == 0 and json.loads(r.stdout).get("echo") == "via-enrp", f"{r.stdout}{r.stderr}"
            echoed.add(int(json.loads(r.stdout)["elements"][0]["identifier"]))
            if echoed == set(homes):
                break
        assert echoed == set(homes), (port, echoed)


def test_enrp_takeover_when_rspregistrar_is_killed(lab: Lab) -> None:
    """SIGKILL rspregistrar: emulab's registrar notices (RSPLIB's timers: 5 s last heard + 5 s no
    response), takes RSPLIB's PE over with a Home Keep-Alive to the PE's ASAP endpoint, and the PE
    (knowing only the dead registrar) adopts emulab's registrar as its home and stays selectable."""
    rsp_registrar(lab, "rspregistrar", 3863, 9901, f"-identifier={RSPLIB_ID}", f"-peer={LO}:9902",
                  log=RSP_LOG_ACTION)
    emulab_registrar(lab, "emulab-registrar", 4863, 9902, "--identifier", hex(EMULAB_ID))
    rsp_server(lab, "rspserver-echo", "echo", "TakeoverPool", 3863, 0x5E0003, log=RSP_LOG_ACTION)

    home = functools.partial(resolved_home, lab, 4863, "TakeoverPool")
    assert wait_for("RSPLIB's PE mirrored at emulab's registrar", home, lab) == RSPLIB_ID
    # a peer (not only a sender of Handle Updates): its silence will be noticed
    wait_for("emulab's registrar to list rspregistrar as peer", lambda: RSPLIB_ID in enrp_peers(lab, 9902), lab)
    killed = time.monotonic()
    lab.kill("rspregistrar")
    wait_for("emulab's registrar to become the PE's home", lambda: home() == EMULAB_ID, lab, deadline=45)
    taken = time.monotonic() - killed
    # RSPLIB's PE says so itself, and answers emulab's keep-alives (still there after a full
    # keep-alive round of 5 s + 5 s, selectable, serving).
    wait_for("rspserver to adopt emulab's registrar",
             lambda: f"Home registrar is ${EMULAB_ID:08x}" in lab.log("rspserver-echo"), lab)
    assert "taking over 1 PEs" in lab.log("emulab-registrar"), lab.logs()
    # the ack of the Home Keep-Alive and of the next regular one (keep-alive interval 5 s)
    wait_for("two Keep-Alive Acks from RSPLIB's PE to emulab's registrar", lambda: _acks_from_pe(lab) >= 2, lab)
    r = pu(lab, 4863, "TakeoverPool", "--echo", "after-takeover")
    assert r.returncode == 0 and json.loads(r.stdout).get("echo") == "after-takeover", f"{r.stdout}{r.stderr}"
    assert home() == EMULAB_ID
    # within RSPLIB's timers: detection 10 s + takeover + one keep-alive, with slack for TCG
    assert taken < 30, f"takeover took {taken:.1f}s"


def test_enrp_emulab_pe_moves_to_rspregistrar_when_emulab_registrar_is_killed(lab: Lab) -> None:
    """SIGKILL emulab's registrar: its PE, mirrored at rspregistrar, ends up owned by rspregistrar.

    Not by RSPLIB's ENRP takeover: rspregistrar sends its Home Keep-Alive to the PE's ASAP endpoint
    (the registrator transport), and emulab's PEs do not listen there (their registrar connection
    comes from an ephemeral port). The PE itself notices the lost association at once and
    re-registers at the next registrar it knows (ASAP fail-over), which RSPLIB accepts as the
    PE's new home."""
    emulab_registrar(lab, "emulab-registrar", 4863, 9902, "--identifier", hex(EMULAB_ID), "--peer", f"{LO}:9901")
    rsp_registrar(lab, "rspregistrar", 3863, 9901, f"-identifier={RSPLIB_ID}", log=RSP_LOG_ACTION)
    emulab_pe(lab, "emulab-pe", "MovePool", 4863, 0xE0007, "--registrar", f"{LO}:3863")

    home = functools.partial(resolved_home, lab, 3863, "MovePool")
    assert wait_for("emulab's PE mirrored at rspregistrar", home, lab) == EMULAB_ID
    wait_for("rspregistrar to list emulab's registrar as peer", lambda: EMULAB_ID in enrp_peers(lab, 9901), lab)
    killed = time.monotonic()
    lab.kill("emulab-registrar")
    wait_for("rspregistrar to become the PE's home", lambda: home() == RSPLIB_ID, lab)
    moved = time.monotonic() - killed
    r = pu(lab, 3863, "MovePool", "--echo", "after-move")
    assert r.returncode == 0 and json.loads(r.stdout).get("echo") == "after-move", f"{r.stdout}{r.stderr}"
    assert moved < 20, f"the move took {moved:.1f}s"


def _acks_from_pe(lab: Lab) -> int:
    """Keep-Alive Acks emulab's registrar got for RSPLIB's PE after the takeover (from its debug log)."""
    log = lab.log("emulab-registrar")
    after = log.split("taking over", 1)[1] if "taking over" in log else ""
    return after.count("keep-alive ack for $005e0003")


# ---- 4: PriorityLeastUsed pools and control-channel use -------------------------------------

# Element classes, identifiers by class.  PLU picks the least (load + load increment):
#   light  emulab PE, load 0.2, increment 0.1 -> 0.3   <- the choice
#   idle   load 0, increment 0.5 -> 0.5 (plain LeastUsed would pick this); emulab PE or rspserver
#   heavy  emulab PE, load 0.9, increment 0.0 -> 0.9
CLASSES = {"light": 0xA1, "idle": 0xB1, "heavy": 0xC1}


def _class_of(identifier: int) -> str:
    base = identifier & 0xFF
    return next(name for name, b in CLASSES.items() if b == base)


@pytest.mark.parametrize("idle_impl", ["emulab", "rsplib"])
def test_mixed_plu_pool_same_choice(lab: Lab, idle_impl: str) -> None:
    """Same PLU pool at emulab's registrar and at rspregistrar: both pick the same class.

    idle_impl="emulab": all three PEs are emulab's (RSPLIB's selection vs emulab's on one pool).
    idle_impl="rsplib": the idle class is RSPLIB's rspserver (a pool mixing both stacks; it works
    because emulab's PEs register "data plus control" like RSPLIB's).
    """
    chosen: dict[str, list[str]] = {}
    setups = {"emulab": (emulab_registrar, 4863, 9902), "rsplib": (rsp_registrar, 3863, 9901)}
    for who, (start, asap, enrp) in setups.items():
        start(lab, f"{who}-registrar", asap, enrp)
        off = 0x100 if who == "emulab" else 0x200
        emulab_pe(lab, f"{who}-light", "PLUPool", asap, off | CLASSES["light"], "--policy", "PriorityLeastUsed:0.1",
                  "--load", "0.2")
        emulab_pe(lab, f"{who}-heavy", "PLUPool", asap, off | CLASSES["heavy"], "--policy", "PriorityLeastUsed:0.0",
                  "--load", "0.9")
        if idle_impl == "rsplib":
            rsp_server(lab, f"{who}-idle", "echo", "PLUPool", asap, off | CLASSES["idle"],
                       policy="PriorityLeastUsed:0.5")
        else:
            emulab_pe(lab, f"{who}-idle", "PLUPool", asap, off | CLASSES["idle"], "--policy",
                      "PriorityLeastUsed:0.5", "--load", "0")
    for who, (_, asap, _) in setups.items():
        wait_for(f"three PEs at the {who} registrar",
                 lambda a=asap: len(resolved_ids(lab, a, "PLUPool") or []) == 3, lab)
        picks = []
        for _ in range(3):
            ids = resolved_ids(lab, asap, "PLUPool", "--count", "1")
            assert ids, lab.logs()
            picks.append(_class_of(ids[0]))
        chosen[who] = picks
    assert chosen["emulab"] == chosen["rsplib"], f"emulab {chosen['emulab']} vs RSPLIB {chosen['rsplib']}"
    assert set(chosen["rsplib"]) == {"light"}, chosen


def test_control_channel_mismatch_refused_alike(lab: Lab) -> None:
    """A pool's PEs must agree on control-channel use (RSPLIB ``poolNodeCheckPoolElementNodeCompatibility``).

    rspserver always registers "data plus control". Pool A (rspserver first): an emulab PE
    registering "data only" is refused with ASAP error cause 0x8 (inconsistent data/control
    configuration), the default emulab PE (data plus control, as RSPLIB) joins. Pool B (a "data
    only" emulab PE first): rspserver is refused, and RSPLIB names the cause ("wrong control channel
    handling"). The same at emulab's registrar and at rspregistrar (side by side, no peering).
    """
    ports = {"emulab": 4863, "rsplib": 3863}
    emulab_registrar(lab, "emulab-registrar", ports["emulab"], 9902)
    rsp_registrar(lab, "rsplib-registrar", ports["rsplib"], 9901)
    for who, port in ports.items():
        rsp_server(lab, f"{who}-rspserver-a", "echo", "PoolA", port, 0x5E0004)
        emulab_pe(lab, f"{who}-emulab-b-data-only", "PoolB", port, 0xE0006, "--no-control-channel")
        emulab_pe(lab, f"{who}-emulab-a-data-only", "PoolA", port, 0xE0004, "--no-control-channel")
    for who, port in ports.items():
        wait_for(f"rspserver in pool A at {who}", lambda p=port: resolved_ids(lab, p, "PoolA") == [0x5E0004], lab)
        wait_for(f"the data-only emulab PE in pool B at {who}",
                 lambda p=port: resolved_ids(lab, p, "PoolB") == [0xE0006], lab)
        refused = f"{who}-emulab-a-data-only"
        assert lab.wait_exit(refused, 60) != 0, lab.logs()
        assert "registration rejected" in lab.log(refused) and "(cause 0x8)" in lab.log(refused), lab.logs()
    for who, port in ports.items():
        emulab_pe(lab, f"{who}-emulab-a", "PoolA", port, 0xE0005)
        rsp_server(lab, f"{who}-rspserver-b", "echo", "PoolB", port, 0x5E0005)
    for who, port in ports.items():
        wait_for(f"the default emulab PE in rspserver's pool A at {who}",
                 lambda p=port: sorted(resolved_ids(lab, p, "PoolA") or []) == [0xE0005, 0x5E0004], lab)
        wait_for(f"rspserver's report of its refusal in pool B at {who} (RSPLIB's text for cause 0x8)",
                 lambda w=who: "wrong control channel handling" in lab.log(f"{w}-rspserver-b"), lab)
        assert resolved_ids(lab, port, "PoolB") == [0xE0006], lab.logs()

"""Interoperability of emulab's RSerPool stack with RSPLIB 3.4.4 (Debian's rsplib-* packages).

Each test runs RSPLIB's real programs (``rspregistrar``, ``rspserver``, ``hsdump``,
``calcappclient``) next to emulab's ``rserpool`` command in a fresh network namespace with only
loopback, over kernel SCTP (RSPLIB has no TCP mode, so none of this can run on a kernel without
SCTP).  Marked ``realkernel``: the lane ``scripts/realkernel/run.sh`` boots a kernel that has
SCTP; elsewhere the tests skip with the reason.  Processes are stopped and the namespace deleted
in the fixture's teardown, also when an assertion fails; their logs are part of failure messages.

1. RSPLIB PE (``rspserver -echo`` / ``-calcapp``) registers at emulab's registrar; emulab's PU
   resolves it and talks to it; RSPLIB's ``calcappclient`` works through emulab's registrar.
2. emulab's PE registers at ``rspregistrar``; RSPLIB's ``hsdump`` shows it; emulab's PU resolves it.
3. ENRP peering emulab registrar <-> rspregistrar (xfail while emulab's ENRP is not implemented).
4. PriorityLeastUsed pool: emulab's registrar and RSPLIB's choose the same element class (a pool
   mixing rspserver and emulab PEs is xfail: RSPLIB rejects mixed control-channel use).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rserpool import transport as tp

_RSPLIB = ("rspregistrar", "rspserver", "hsdump")
_missing = [b for b in _RSPLIB if shutil.which(b) is None]
_SCRIPT = Path(sys.executable).parent / "rserpool"
RSERPOOL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "rserpool"]

pytestmark = [
    pytest.mark.realkernel,
    pytest.mark.root,
    pytest.mark.skipif(not tp.sctp_available(),
                       reason="needs a kernel with SCTP, sch_netem and the openvswitch datapath "
                              "(RSPLIB speaks ASAP/ENRP over SCTP only)"),
    pytest.mark.skipif(bool(_missing), reason=f"RSPLIB binaries missing: {_missing} "
                                              "(apt-get install rsplib-registrar rsplib-services rsplib-tools)"),
]

# TCG is slow: generous deadlines, RSPLIB's defaults for re-tries are seconds.
DEADLINE = 40.0
RSP_LOG = ["-logcolor=off", "-loglevel=3"]
# RSPLIB's PEs refuse to register with loopback addresses only ("No addresses of at least
# site-local scope found -> No registration possible") and its registrar drops such PE addresses,
# so every namespace gets a dummy interface with a site-local address, used for everything.
LO = "10.77.0.1"


class Lab:
    """One network namespace (loopback only) plus the processes started in it."""

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

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as fh:
            p = subprocess.Popen(self._wrap(argv), stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                 cwd=self.tmp, start_new_session=True)
        self.procs[name] = (p, log)
        return p

    def run(self, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._wrap(argv), capture_output=True, text=True, timeout=timeout, cwd=self.tmp,
                              stdin=subprocess.DEVNULL)

    def logs(self) -> str:
        parts = []
        for name, (p, log) in self.procs.items():
            text = log.read_text(errors="replace") if log.exists() else ""
            state = "running" if p.poll() is None else f"exited {p.returncode}"
            parts.append(f"--- {name} ({state}) last lines:\n" + "\n".join(text.splitlines()[-25:]))
        return "\n".join(parts)

    def alive(self, name: str) -> None:
        p, _ = self.procs[name]
        assert p.poll() is None, f"{name} exited with {p.returncode}\n{self.logs()}"

    def close(self) -> None:
        for p, _ in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        for p, _ in self.procs.values():
            try:
                p.wait(timeout=10)
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
            dst = Path(keep) / request.node.name
            shutil.copytree(tmp_path, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.vec"))


# ---- the programs ---------------------------------------------------------------------------

def emulab_registrar(lab: Lab, name: str, asap_port: int, enrp_port: int, *extra: str) -> None:
    lab.spawn(name, [*RSERPOOL, "registrar", "--listen", f"{LO}:{asap_port}", "--enrp-listen", f"{LO}:{enrp_port}",
                     "--no-announce", "--transport", "sctp", "--log-level", "debug", *extra])


def rsp_registrar(lab: Lab, name: str, asap_port: int, enrp_port: int, *extra: str) -> None:
    lab.spawn(name, ["rspregistrar", f"-asap={LO}:{asap_port}", f"-enrp={LO}:{enrp_port}",
                     "-asapannounce=off", "-enrpannounce=off", *RSP_LOG, *extra])


def rsp_server(lab: Lab, name: str, service: str, pool: str, registrar_port: int, identifier: int,
               policy: str | None = None) -> None:
    argv = ["rspserver", f"-{service}", f"-poolhandle={pool}", f"-registrar={LO}:{registrar_port}",
            f"-identifier={identifier}", "-asapannounce=off", *RSP_LOG]
    if policy:
        argv.append(f"-policy={policy}")
    lab.spawn(name, argv)


def emulab_pe(lab: Lab, name: str, pool: str, registrar_port: int, identifier: int, *extra: str) -> None:
    # An explicit service address: with the default 0.0.0.0 the PE registers the wildcard, which
    # rspregistrar rejects ("No (usable) transport addresses given!").
    lab.spawn(name, [*RSERPOOL, "pe", "--registrar", f"{LO}:{registrar_port}", "--pool", pool,
                     "--identifier", hex(identifier), "--listen", f"{LO}:0", "--transport", "sctp",
                     "--reregistration-interval", "5", *extra])


def pu(lab: Lab, registrar_port: int, pool: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return lab.run([*RSERPOOL, "pu", "--registrar", f"{LO}:{registrar_port}", "--pool", pool, "--json",
                    "--transport", "sctp", "--timeout", "10", *extra])


def wait_for(what: str, probe: Callable[[], object], lab: Lab, deadline: float = DEADLINE) -> object:
    end = time.monotonic() + deadline
    last: object = None
    while time.monotonic() < end:
        last = probe()
        if last:
            return last
        time.sleep(1.0)
    pytest.fail(f"timed out after {deadline:.0f}s waiting for {what}\n{lab.logs()}")


def resolved_ids(lab: Lab, registrar_port: int, pool: str, *extra: str) -> list[int] | None:
    r = pu(lab, registrar_port, pool, *extra)
    if r.returncode != 0:
        return None
    return [int(e["identifier"]) for e in json.loads(r.stdout)["elements"]]


# ---- 1: RSPLIB PE at emulab's registrar ------------------------------------------------------

def test_rsplib_pe_at_emulab_registrar(lab: Lab) -> None:
    emulab_registrar(lab, "emulab-registrar", 3863, 9901)
    rsp_server(lab, "rspserver-echo", "echo", "EchoPool", 3863, 0x5E0001)
    ids = wait_for("emulab's PU to resolve RSPLIB's echo PE",
                   lambda: resolved_ids(lab, 3863, "EchoPool"), lab)
    assert ids == [0x5E0001], lab.logs()
    lab.alive("rspserver-echo")
    # Data path: emulab's PU session to RSPLIB's Echo service (SCTP, PPID as RSPLIB sends it).
    r = pu(lab, 3863, "EchoPool", "--echo", "hello-rsplib")
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{lab.logs()}"
    assert json.loads(r.stdout).get("echo") == "hello-rsplib", r.stdout
    # RSPLIB's hsdump reads emulab's handlespace over ENRP.
    h = lab.run(["timeout", "30", "hsdump", f"{LO}:9901", "-logcolor=off"], timeout=60)
    assert "$005e0001" in h.stdout.lower(), f"{h.stdout}\n{h.stderr}"


def test_rsplib_calcappclient_via_emulab_registrar(lab: Lab) -> None:
    if shutil.which("calcappclient") is None:
        pytest.skip("calcappclient missing (rsplib-services)")
    emulab_registrar(lab, "emulab-registrar", 3863, 9901)
    rsp_server(lab, "rspserver-calcapp", "calcapp", "CalcAppPool", 3863, 0xCA0001)
    wait_for("the RSPLIB CalcApp PE at emulab's registrar", lambda: resolved_ids(lab, 3863, "CalcAppPool"), lab)
    _calcappclient_ok(lab, 3863, "CalcAppPool")


def test_rsplib_calcappclient_with_emulab_calcapp_pe(lab: Lab) -> None:
    if shutil.which("calcappclient") is None:
        pytest.skip("calcappclient missing (rsplib-services)")
    try:
        import rserpool.services.calcapp  # noqa: F401
    except ImportError:
        pytest.skip("emulab's CalcApp service (rserpool/services/calcapp.py) does not exist yet")
    emulab_registrar(lab, "emulab-registrar", 3863, 9901)
    emulab_pe(lab, "emulab-calcapp-pe", "CalcAppPool", 3863, 0xCA0002, "--service", "calcapp",
              "--capacity", "1000000")
    wait_for("emulab's CalcApp PE", lambda: resolved_ids(lab, 3863, "CalcAppPool"), lab)
    _calcappclient_ok(lab, 3863, "CalcAppPool")


def _calcappclient_ok(lab: Lab, registrar_port: int, pool: str) -> None:
    sca = lab.tmp / "calcappclient.sca"
    r = lab.run(["timeout", "60", "calcappclient", f"-poolhandle={pool}", f"-registrar={LO}:{registrar_port}",
                 "-runtime=12", "-jobinterval=1", "-jobsize=100000", f"-scalar={sca}", *RSP_LOG], timeout=90)
    (lab.tmp / "calcappclient.out").write_text(r.stdout + r.stderr)
    scalars = sca.read_text(errors="replace") if sca.exists() else ""
    accepted = [ln for ln in scalars.splitlines() if "Total CalcAppAccepts" in ln or "Total Jobs Completed" in ln
                or "Total CalcAppAccept" in ln]
    tail = "\n".join((r.stdout + r.stderr).splitlines()[-30:])
    assert "Unable to send CalcAppRequest" not in r.stdout + r.stderr, f"{tail}\n{scalars}\n{lab.logs()}"
    assert scalars.strip(), f"calcappclient wrote no scalars\n{tail}\n{lab.logs()}"
    assert accepted and any(float(ln.split()[-1]) > 0 for ln in accepted), f"{scalars}\n{tail}\n{lab.logs()}"


# ---- 2: emulab PE at rspregistrar ------------------------------------------------------------

def test_emulab_pe_at_rspregistrar(lab: Lab) -> None:
    rsp_registrar(lab, "rspregistrar", 3863, 9901)
    emulab_pe(lab, "emulab-pe", "EmuPool", 3863, 0xE0001)
    ids = wait_for("emulab's PE at rspregistrar", lambda: resolved_ids(lab, 3863, "EmuPool"), lab)
    assert ids == [0xE0001], lab.logs()
    r = pu(lab, 3863, "EmuPool", "--echo", "hello-emulab")
    assert r.returncode == 0 and json.loads(r.stdout).get("echo") == "hello-emulab", f"{r.stdout}{r.stderr}"

    def dump() -> str | None:
        h = lab.run(["timeout", "20", "hsdump", f"{LO}:9901", "-logcolor=off"], timeout=40)
        return h.stdout if "$000e0001" in h.stdout.lower() else None

    wait_for("RSPLIB's hsdump to show emulab's PE $000e0001", dump, lab, deadline=45)


# ---- 3: ENRP peering -------------------------------------------------------------------------

def _enrp_missing() -> str | None:
    h = subprocess.run([*RSERPOOL, "registrar", "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(h.stdout.split())
    return "rserpool registrar --peer: ENRP is not implemented yet" if "not implemented" in text else None


def test_enrp_peering_emulab_and_rspregistrar(lab: Lab, request: pytest.FixtureRequest) -> None:
    why = _enrp_missing()
    if why:
        pytest.xfail(why)
    # Observed 2026-11 with emulab's new ENRP: rspregistrar ignores emulab's ENRP Presence
    # ("Presence from peer ... contains no usable ENRP endpoint addresses": RSPLIB wants the
    # sender's concrete, site-local ENRP transport addresses in the Server Information
    # parameter), and emulab rejects RSPLIB's mirrored PEs with INCONSISTENT_DATA_CONTROL.
    # Non-strict xfail until the ENRP helper fixes both; an XPASS then shows it works.
    request_xfail = pytest.mark.xfail(reason="ENRP peering with RSPLIB: Presence without usable ENRP "
                                             "addresses; mirrored PEs rejected (INCONSISTENT_DATA_CONTROL)",
                                      strict=False)
    request.node.add_marker(request_xfail)
    rsp_registrar(lab, "rspregistrar", 3863, 9901, f"-peer={LO}:9902")
    emulab_registrar(lab, "emulab-registrar", 4863, 9902, "--peer", f"{LO}:9901")
    rsp_server(lab, "rspserver-echo", "echo", "PeerPool", 3863, 0x5E0002)
    emulab_pe(lab, "emulab-pe", "PeerPool", 4863, 0xE0002)
    # Each registrar learns the other's PE over ENRP: both PEs resolvable at both registrars.
    for port in (3863, 4863):
        wait_for(f"both PEs via the registrar on port {port}",
                 lambda p=port: set(resolved_ids(lab, p, "PeerPool") or []) == {0x5E0002, 0xE0002}, lab)


# ---- 4: mixed PriorityLeastUsed pool ---------------------------------------------------------

# Element classes, identifiers by class.  PLU picks the least (load + load increment):
#   light  emulab PE, load 0.2, increment 0.1 -> 0.3   <- the choice
#   idle   load 0, increment 0.5 -> 0.5 (plain LeastUsed would pick this); emulab PE or rspserver
#   heavy  emulab PE, load 0.9, increment 0.0 -> 0.9
CLASSES = {"light": 0xA1, "idle": 0xB1, "heavy": 0xC1}


def _class_of(identifier: int) -> str:
    base = identifier & 0xFF
    return next(name for name, b in CLASSES.items() if b == base)


MIXED_WHY = ("RSPLIB requires every PE of a pool to agree on control-channel use: rspserver registers "
             "with one, emulab's PE without, so rspregistrar rejects the second kind ('wrong control "
             "channel handling') and emulab's registrar leaves rspserver's registration unanswered (timeout)")


@pytest.mark.parametrize("idle_impl", [
    "emulab",
    pytest.param("rsplib", marks=pytest.mark.xfail(reason=MIXED_WHY, strict=False)),
])
def test_mixed_plu_pool_same_choice(lab: Lab, idle_impl: str) -> None:
    """Same PLU pool at emulab's registrar and at rspregistrar: both pick the same class.

    idle_impl="emulab": all three PEs are emulab's (RSPLIB's selection vs emulab's on one pool).
    idle_impl="rsplib": the idle class is RSPLIB's rspserver (a pool mixing both stacks).
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

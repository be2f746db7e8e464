"""RSPLIB interoperability lab for the real-kernel tests: RSPLIB 3.4.4's programs and emulab's
``rserpool`` in a fresh network namespace (loopback + a dummy interface) over kernel SCTP, with the
helpers that start them, read their records and sniff ASAP on the wire (sctp_sniff.py).
Used by tests/realkernel/test_rsplib_*.py; the ``lab`` fixture lives in tests/realkernel/conftest.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rserpool import transport as tp
from rserpool.wire import decode_asap

_RSPLIB = ("rspregistrar", "rspserver", "hsdump", "calcappclient")
MISSING_RSPLIB = [b for b in _RSPLIB if shutil.which(b) is None]

RSPLIB_MARKS = [  # every RSPLIB interop test: real kernel, root, SCTP, the programs
    pytest.mark.realkernel,
    pytest.mark.root,
    pytest.mark.skipif(not tp.sctp_available(),
                       reason="needs a kernel with SCTP, sch_netem and the openvswitch datapath "
                              "(RSPLIB speaks ASAP/ENRP over SCTP only)"),
    pytest.mark.skipif(bool(MISSING_RSPLIB), reason=f"RSPLIB binaries missing: {MISSING_RSPLIB} (apt-get install "
                                              "rsplib-registrar rsplib-services rsplib-tools)"),
]
_SCRIPT = Path(sys.executable).parent / "rserpool"
RSERPOOL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "rserpool"]
SNIFF = [sys.executable, str(Path(__file__).resolve().parents[1] / "realkernel" / "sctp_sniff.py"), "lo"]


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

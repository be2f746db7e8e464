"""Starts the RSerPool processes a topology lists per node (registrars, pool elements) in the hosts'
namespaces, and stops them again.

Each service is an `rserpool` command run inside its node with the venv's Python; its output goes
to ``<run dir>/logs/<node>-<kind>.log``. A service that dies at start-up fails the whole start
(and so tears the network down), naming the log to read.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Collection, Mapping
from typing import Any

from emulab import paths
from emulab.errors import EmulabError, StartError

ASAP_PORT = 3863
ENRP_PORT = 9901

# Option names from the topology file that map 1:1 onto `rserpool pe` flags.
_PE_FLAGS = {
    "pool": "--pool",
    "policy": "--policy",
    "load_increment": "--load-increment",
    "weight": "--weight",
    "priority": "--priority",
    "capacity": "--capacity",
    "max_requests": "--max-requests",
    "identifier": "--identifier",
}


class ServiceManager:
    """The service processes of one testbed."""

    def __init__(self, testbed: Any) -> None:
        self.testbed = testbed
        self.procs: list[tuple[str, str, subprocess.Popen[bytes], list[str]]] = []

    def _registrar_of(self, node: str, options: dict[str, Any]) -> str:
        """The registrar a PE/PU on ``node`` uses: the one named in its options, else its own, else the first."""
        spec = self.testbed.spec
        name = options.get("registrar")
        if name is None:
            own = any(s.kind == "registrar" for s in spec.nodes[node].services)
            registrars = [n.name for n in spec.nodes.values() if any(s.kind == "registrar" for s in n.services)]
            if not registrars:
                raise StartError(f"{node}: a pool element needs a registrar, and the topology runs none")
            name = node if own else registrars[0]
        if name not in spec.nodes:
            raise StartError(f"{node}: registrar node {name!r} is not in the topology")
        return f"{spec.primary_address(name)}:{ASAP_PORT}"

    def command(self, node: str, kind: str, options: dict[str, Any]) -> list[str]:
        spec = self.testbed.spec
        base = [sys.executable, "-m", "rserpool"]
        if kind == "registrar":
            cmd = [*base, "registrar", "--listen", f"{spec.primary_address(node)}:{ASAP_PORT}",
                   "--enrp-listen", f"{spec.primary_address(node)}:{options.get('enrp_port', ENRP_PORT)}"]
            if "identifier" in options:
                cmd += ["--identifier", str(options["identifier"])]
            for peer in options.get("peers", ()):
                if peer not in spec.nodes:
                    raise StartError(f"{node}: registrar peer {peer!r} is not in the topology")
                cmd += ["--peer", f"{spec.primary_address(peer)}:{ENRP_PORT}"]
            return cmd
        if kind == "pe":
            cmd = [*base, "pe", "--registrar", self._registrar_of(node, options)]
            for key, flag in _PE_FLAGS.items():
                if key in options:
                    cmd += [flag, str(options[key])]
            cmd += ["--service", str(options.get("application", "echo"))]
            return cmd
        raise StartError(f"{node}: unknown service kind {kind!r} (known: registrar, pe)")

    def spawn(self, node: str, kind: str, cmd: list[str], *, env: Mapping[str, str] | None = None,
              append: bool = True) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in ``node``'s namespace, its output to ``<node>-<kind>.log`` (appended: a
        service restarted between an experiment's runs keeps one log); ``stop`` ends it."""
        paths.log_dir().mkdir(parents=True, exist_ok=True)
        if env:
            cmd = ["env", *(f"{k}={v}" for k, v in env.items()), *cmd]
        with open(paths.log_dir() / f"{node}-{kind}.log", "ab" if append else "wb") as out:
            proc = self.testbed.host(node).popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((node, kind, proc, cmd))
        return proc

    def output(self, node: str, cmd: list[str], timeout: float = 10.0) -> str | None:
        """Run a short query in ``node``'s namespace; its standard output, or None if it hung."""
        proc = self.testbed.host(node).popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None
        return out.decode(errors="replace")

    def start(self, kinds: Collection[str] | None = None) -> int:
        """Start the topology's services (only those of ``kinds`` if given); registrars first."""
        spec = self.testbed.spec
        order = {"registrar": 0, "pe": 1}  # registrars first, so elements find them at once
        todo = sorted(
            ((order.get(s.kind, 9), n.name, s) for n in spec.nodes.values() for s in n.services
             if kinds is None or s.kind in kinds),
            key=lambda t: t[:2],
        )
        started = [self.spawn(node, svc.kind, self.command(node, svc.kind, dict(svc.options)), append=False)
                   for _, node, svc in todo]
        # A service that cannot start (bad option, port taken) exits within its start-up time.
        time.sleep(1.0 if started else 0)
        for node, kind, proc, _ in self.procs:
            if proc in started and proc.poll() is not None:
                raise StartError(
                    f"{node}: the {kind} service exited at start-up (code {proc.returncode}); "
                    f"see {paths.log_dir() / f'{node}-{kind}.log'}"
                )
        return len(started)

    def stop(self, procs: Collection[subprocess.Popen[bytes]] | None = None, timeout: float = 5.0) -> None:
        """SIGTERM the given processes (default: all of them), SIGKILL what is left after ``timeout`` s."""
        mine = [p for _, _, p, _ in self.procs if procs is None or p in procs]
        for proc in mine:
            with contextlib.suppress(ProcessLookupError):
                if proc.poll() is None:
                    proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in mine:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.procs = [t for t in self.procs if t[2] not in mine]

    def kill(self, node: str, kind: str) -> dict[str, Any]:
        """SIGKILL ``node``'s ``kind`` service (a crash: no deregistration); `restart` brings it back."""
        entry = self._find(node, kind)
        if entry[2].poll() is None:
            entry[2].kill()
            entry[2].wait()
        return {"node": node, "kind": kind, "pid": entry[2].pid, "alive": False}

    def restart(self, node: str, kind: str) -> dict[str, Any]:
        """Start ``node``'s ``kind`` service again with its command (ending it first if it still runs)."""
        entry = self._find(node, kind)
        self.stop([entry[2]])
        proc = self.spawn(node, kind, entry[3])
        return {"node": node, "kind": kind, "pid": proc.pid, "alive": proc.poll() is None}

    def _find(self, node: str, kind: str) -> tuple[str, str, subprocess.Popen[bytes], list[str]]:
        for entry in reversed(self.procs):
            if entry[0] == node and entry[1] == kind:
                return entry
        known = ", ".join(sorted({f"{n}/{k}" for n, k, _, _ in self.procs})) or "none"
        raise EmulabError(f"no {kind} service on {node!r} (services: {known})")

    def status(self) -> list[dict[str, Any]]:
        return [
            {"node": node, "kind": kind, "pid": proc.pid, "alive": proc.poll() is None, "command": " ".join(cmd[1:])}
            for node, kind, proc, cmd in self.procs
        ]

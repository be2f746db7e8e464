"""Starts the RSerPool processes a topology lists per node (registrars, pool elements) in the hosts'
namespaces, and stops them again.

Each service is an `rserpool` command run inside its node with the venv's Python; its output goes
to ``<run dir>/logs/<node>-<kind>.log``. A service that dies at start-up fails the whole start
(and so tears the network down), naming the log to read.

With a component status monitor set (``csp_server`` "ADDR:PORT", from ``CSP_SERVER`` by default, and
``csp_interval`` ms, from ``CSP_INTERVAL``), registrars and pool elements send it RSPLIB's Component
Status reports (``rserpool.csp``; RSPLIB's ``cspmonitor`` or the dashboard). The address must be
reachable from the nodes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Mapping
from pathlib import Path
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


#: The log line by which each kind of service says it is up (the registrar listens, the pool element
#: got its Registration Response).
READY_LINES = {"registrar": b" listening on ", "pe": b" registered in pool "}


def _tail(log: Any, lines: int = 3) -> str:
    try:
        tail = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (":\n  " + "\n  ".join(tail)) if tail else ""


class _Adopted(subprocess.Popen):  # type: ignore[type-arg]
    """A Popen handle for a child this process did not fork itself: a service the launcher forked,
    handed to this process by the kernel (this process is a child subreaper). poll, wait,
    terminate, kill and returncode work as for any child."""

    def __init__(self, pid: int, args: list[str]) -> None:  # noqa: D107 - no process is spawned here
        self.args, self.pid, self.returncode = args, pid, None
        self.stdin = self.stdout = self.stderr = None
        self._waitpid_lock = threading.Lock()
        self._child_created = True
        self._sigint_wait_secs = 0.25
        self._communication_started = False
        self._input = None
        self.text_mode = False
        self.encoding = self.errors = None
        self._closed_child_pipe_fds = True


class Launcher:
    """A Python process that imports the `rserpool` command once and forks every service from it
    into its node's namespace: a service then costs a fork, not a Python start-up and the imports
    (0.2-0.5 s of CPU each, most of a testbed's start when ten of them share two cores).

    Each service is forked twice, so that it is re-parented to this process (a child subreaper) and
    is this process's child like any other; the launcher ends with ``close``.
    """

    def __init__(self) -> None:
        _set_child_subreaper()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)  # this very emulab, installed or not
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "emulab.services", "--launcher"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, start_new_session=True)
        self.lock = threading.Lock()

    def spawn(self, netns: str, args: list[str], log: Path, append: bool) -> subprocess.Popen[bytes]:
        """Fork ``rserpool ARGS`` in the namespace at path ``netns``, output to ``log``."""
        request = {"netns": netns, "args": args, "log": str(log), "append": append}
        with self.lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            try:
                self.proc.stdin.write(json.dumps(request).encode() + b"\n")
                self.proc.stdin.flush()
                answer = json.loads(self.proc.stdout.readline() or b"{}")
            except (OSError, ValueError) as exc:
                raise StartError(f"the service launcher failed: {exc}") from exc
        if "pid" not in answer:
            raise StartError(f"the service launcher could not start rserpool {' '.join(args)}: "
                             f"{answer.get('error', f'it exited with code {self.proc.poll()}')}")
        return _Adopted(int(answer["pid"]), [sys.executable, "-m", "rserpool", *args])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _set_child_subreaper() -> None:
    import ctypes

    pr_set_child_subreaper = 36
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        raise StartError(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}")


def launcher_main() -> int:
    """The launcher process: one JSON request a line on stdin, one answer ({"pid"} or {"error"}) on stdout."""
    import ctypes
    import importlib
    import pkgutil
    import random

    import rserpool.cli
    import rserpool.services

    # What the commands import only when they run: imported here once, a service then pays for none.
    for name in ("rserpool.registrar", "rserpool.pe", "rserpool.policytypes",
                 *(f"rserpool.services.{m.name}" for m in pkgutil.iter_modules(rserpool.services.__path__))):
        try:
            importlib.import_module(name)
        except ImportError as exc:  # the service that needs it will say so in its own log
            print(f"launcher: not preloaded: {name}: {exc}", file=sys.stderr)

    libc = ctypes.CDLL(None, use_errno=True)
    clone_newnet = 0x40000000
    for line in sys.stdin.buffer:
        req = json.loads(line)
        try:
            # opened (and truncated) before the answer: a caller reading the log never sees a
            # previous run's lines
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if req["append"] else os.O_TRUNC)
            out = os.open(req["log"], flags, 0o644)
            r, w = os.pipe()
            child = os.fork()
            if child == 0:  # intermediate: fork the service, say its pid, exit (re-parenting it)
                try:
                    os.close(r)
                    grandchild = os.fork()
                    if grandchild:
                        os.write(w, str(grandchild).encode())
                        os._exit(0)
                    os.close(w)
                    os.setsid()
                    null = os.open(os.devnull, os.O_RDONLY)
                    os.dup2(null, 0)
                    os.dup2(out, 1)  # from here on, whatever goes wrong is in the service's log
                    os.dup2(out, 2)
                    os.close(null)
                    os.close(out)
                    fd = os.open(req["netns"], os.O_RDONLY)
                    if libc.setns(fd, clone_newnet) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {req['netns']}")
                    os.close(fd)
                    random.seed()  # forked children would otherwise draw the same identifiers
                    sys.argv = ["rserpool", *req["args"]]
                    rserpool.cli.main(args=req["args"], prog_name="rserpool")
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except BaseException:
                    import traceback

                    traceback.print_exc()
                    code = 1
                finally:
                    with contextlib.suppress(Exception):
                        sys.stdout.flush()
                        sys.stderr.flush()
                os._exit(code)
            os.close(w)
            os.close(out)
            pid = int(os.read(r, 32) or b"0")
            os.close(r)
            os.waitpid(child, 0)
            answer: dict[str, Any] = {"pid": pid} if pid else {"error": "fork failed"}
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


class ServiceManager:
    """The service processes of one testbed."""

    def __init__(self, testbed: Any, launcher: Launcher | None = None) -> None:
        self.testbed = testbed
        self.procs: list[tuple[str, str, subprocess.Popen[bytes], list[str]]] = []
        #: forks `rserpool` commands without a Python start-up each (see Launcher); None: every
        #: service is its own `python -m rserpool` through Mininet
        self.launcher = launcher
        # component status monitor "ADDR:PORT" and report interval [ms] (rserpool checks them)
        self.csp_server: str | None = os.environ.get("CSP_SERVER") or None
        self.csp_interval: int | str | None = os.environ.get("CSP_INTERVAL") or None

    def _csp_flags(self) -> list[str]:
        """``--cspserver``/``--cspinterval`` for a service, when a monitor is set."""
        if not self.csp_server:
            return []
        interval = ["--cspinterval", str(self.csp_interval)] if self.csp_interval else []
        return ["--cspserver", self.csp_server, *interval]

    def _registrar_node(self, node: str, options: Mapping[str, Any]) -> str:
        """The node whose registrar a PE/PU on ``node`` uses: the one named in its options, else its
        own, else the first."""
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
        return str(name)

    def _registrar_of(self, node: str, options: dict[str, Any]) -> str:
        """The registrar address ("ADDR:PORT") a PE/PU on ``node`` uses (see _registrar_node)."""
        return f"{self.testbed.spec.primary_address(self._registrar_node(node, options))}:{ASAP_PORT}"

    def _registration_rtt_ms(self, node: str, svc: Any) -> float:
        """The configured round trip between a pool element and its registrar (0 when unknown)."""
        from emulab.selfcheck_paths import expected_rtt_ms

        try:
            return expected_rtt_ms(self.testbed.spec, node, self._registrar_node(node, svc.options))
        except Exception:  # noqa: BLE001 - an order hint only; `command` reports a bad registrar
            return 0.0

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
            return cmd + self._csp_flags()
        if kind == "pe":
            cmd = [*base, "pe", "--registrar", self._registrar_of(node, options)]
            for key, flag in _PE_FLAGS.items():
                if key in options:
                    cmd += [flag, str(options[key])]
            cmd += ["--service", str(options.get("application", "echo"))]
            return cmd + self._csp_flags()
        raise StartError(f"{node}: unknown service kind {kind!r} (known: registrar, pe)")

    def spawn(self, node: str, kind: str, cmd: list[str], *, env: Mapping[str, str] | None = None,
              append: bool = True) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in ``node``'s namespace, its output to ``<node>-<kind>.log`` (appended: a
        service restarted between an experiment's runs keeps one log); ``stop`` ends it."""
        paths.log_dir().mkdir(parents=True, exist_ok=True)
        rserpool = [sys.executable, "-m", "rserpool"]
        if self.launcher is not None and not env and cmd[:3] == rserpool:
            netns = f"/proc/{self.testbed.host(node).pid}/ns/net"
            proc = self.launcher.spawn(netns, cmd[3:], paths.log_dir() / f"{node}-{kind}.log", append)
            self.procs.append((node, kind, proc, cmd))
            return proc
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

    def _path_ready_early(self, a: str, b: str) -> bool:
        """Whether the round trip between nodes ``a`` and ``b`` crosses neither a switch nor the
        radio, so that it works before the switches are connected and the radio is up."""
        from emulab.selfcheck_paths import round_trip

        spec = self.testbed.spec
        try:
            hops = round_trip(spec, a, b)
        except Exception:  # noqa: BLE001 - not sure: left to start()
            return False
        return not any(lk.radio or lk.a.node in spec.switches or lk.b.node in spec.switches for lk, _ in hops)

    def early_services(self) -> list[tuple[str, Any]]:
        """The (node, service) pairs that can start before the switches are connected and the radio
        is up: registrars whose static ENRP peers are reached that way and start early too (a
        peer's first connect across an unconnected switch would be lost, and peering complete
        only after a retransmission, a second or more later), and the pool elements that reach
        such a registrar that way."""
        spec = self.testbed.spec
        registrars = [(n.name, s) for n in spec.nodes.values() for s in n.services if s.kind == "registrar"]
        early = {node for node, s in registrars
                 if all(self._path_ready_early(node, str(peer)) for peer in s.options.get("peers", ()))}
        while True:  # a peer started later would refuse the early registrar's first connect
            late = {node for node, s in registrars if node in early
                    and not all(str(peer) in early for peer in s.options.get("peers", ()))}
            if not late:
                break
            early -= late

        def pe_early(node: str, svc: Any) -> bool:
            try:
                registrar = self._registrar_node(node, svc.options)
            except StartError:  # reported by start()
                return False
            return registrar in early and self._path_ready_early(node, registrar)

        return [(n.name, s) for n in spec.nodes.values() for s in n.services
                if (s.kind == "registrar" and n.name in early) or (s.kind == "pe" and pe_early(n.name, s))]

    def _spawn_in_order(self, todo: list[tuple[str, Any]]) -> list[tuple[str, Any, subprocess.Popen[bytes]]]:
        """Spawn services: registrars first, then the pool elements farthest from their registrar
        (each spawn takes the launcher a few ms, and their registration takes longest), then the
        rest as listed. Returns (node, service, process) for each."""
        def rank(item: tuple[str, Any]) -> tuple[int, float]:
            node, svc = item
            if svc.kind == "registrar":
                return (0, 0.0)
            return (1, -self._registration_rtt_ms(node, svc)) if svc.kind == "pe" else (2, 0.0)

        return [(node, svc, self.spawn(node, svc.kind, self.command(node, svc.kind, dict(svc.options)),
                                       append=False))
                for node, svc in sorted(todo, key=rank)]

    def start_early(self) -> list[tuple[str, Any, subprocess.Popen[bytes]]]:
        """Spawn ``early_services`` (without waiting for them); ``start(early=...)`` then starts the
        rest and waits for all."""
        return self._spawn_in_order(self.early_services())

    def start(self, kinds: Collection[str] | None = None, timeout: float | None = None,
              early: list[tuple[str, Any, subprocess.Popen[bytes]]] | None = None) -> int:
        """Start the topology's services (only those of ``kinds`` if given) and return once they are
        up: registrars listening and pool elements registered with them, then any other kinds.

        Pool elements are started right after the registrars (those with the longest round trip to
        their registrar first), not once these listen: the registrars
        are listening long before a connection from another node reaches them, and an element refused
        by its own node's registrar tries again after 50 ms, then backing off (rserpool.pe's
        start_retry_delay). Readiness is read from each service's own log line, not guessed with a
        timer. A service that exits or is not up within ``timeout`` s fails the start, naming its log.
        ``early``: what ``start_early`` spawned already (it is waited for with the rest).
        """
        spec = self.testbed.spec
        early = early or []
        done = {id(svc) for _, svc, _ in early}  # the service itself: a node may run two of a kind
        todo = [(n.name, s) for n in spec.nodes.values() for s in n.services
                if (kinds is None or s.kind in kinds) and id(s) not in done]
        if timeout is None:  # a busy machine starts Python slowly: scale with the number of processes
            timeout = 30.0 + 0.5 * (len(todo) + len(early))
        deadline = time.monotonic() + timeout
        started = 0
        others = sorted({s.kind for _, s in todo} - {"registrar", "pe"})
        groups = [[t for t in todo if t[1].kind in ("registrar", "pe")],
                  *([t for t in todo if t[1].kind == kind] for kind in others)]
        for i, group in enumerate(groups):
            procs = [(node, svc.kind, proc) for node, svc, proc in (early if i == 0 else []) + self._spawn_in_order(group)]
            self.wait_up(procs, deadline)
            started += len(procs)
        return started

    def wait_up(self, procs: list[tuple[str, str, subprocess.Popen[bytes]]], deadline: float) -> None:
        """Wait until each (node, kind, process) says it is up in its log (READY_LINES); raise
        StartError naming the first that exited or, at ``deadline``, those still not up."""
        waiting = {(node, kind): proc for node, kind, proc in procs if kind in READY_LINES}
        while True:
            for (node, kind), proc in list(waiting.items()):
                log = paths.log_dir() / f"{node}-{kind}.log"
                if proc.poll() is not None:
                    raise StartError(f"{node}: the {kind} service exited at start-up (code {proc.returncode}); "
                                     f"see {log}{_tail(log)}")
                with contextlib.suppress(OSError):
                    if READY_LINES[kind] in log.read_bytes():
                        del waiting[(node, kind)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(f"{n}/{k}" for n, k in waiting)
                what = "listening" if all(k == "registrar" for _, k in waiting) else "up (registered)"
                raise StartError(f"service(s) not {what} in time: {names}; see {paths.log_dir()}")
            time.sleep(0.005)  # a few small files read: cheap, and readiness is seen within 5 ms

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


if __name__ == "__main__" and sys.argv[1:] == ["--launcher"]:
    sys.exit(launcher_main())

"""The process that holds a running testbed: started in the foreground (Mininet CLI) or detached.

It builds the testbed, records it in ``state.json``, answers the control socket (status, stop, link
changes, radio actions) and tears everything down on `emulab stop`, SIGTERM or CLI exit. A detached
start is this module re-executed as its own session leader; the caller waits until the runner says
``ready`` on a pipe, once its control socket answers (or until it exits, reporting its reason).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from emulab import control, paths
from emulab.errors import EmulabError, StartError
from radio import RadioError

Progress = Callable[[str], None]
#: Set by `start_detached` for its runner: time.monotonic() (CLOCK_MONOTONIC, shared by the processes
#: of one boot) when the runner was launched.
LAUNCHED_ENV = "EMULAB_RUNNER_LAUNCHED"
#: Set by `start_detached` for its runner: the file descriptor of a pipe on which the runner says
#: it is ready (answering on its control socket), so the caller returns at once instead of at its
#: next look at the state file. The pipe closes when the runner exits, ready or not.
READY_FD_ENV = "EMULAB_RUNNER_READY_FD"
#: setuptools' switch between its own distutils and the standard library's, read by the .pth file
#: that installs its shim when the interpreter starts (and only then, unless setuptools is imported).
DISTUTILS_ENV = "SETUPTOOLS_USE_DISTUTILS"
#: Set by `start_detached` when it set DISTUTILS_ENV itself (not the user): the runner then removes both.
DISTUTILS_SET_ENV = "EMULAB_RUNNER_SET_DISTUTILS"


class StartAborted(StartError):
    """The runner was told to stop (SIGTERM/SIGINT) while it was still building."""


@dataclass(frozen=True)
class StartOptions:
    topology: str
    radio: str | None = None
    services: bool = True
    self_check: bool = False


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: ControlServer = self.server  # type: ignore[assignment]
        try:
            request = json.loads(self.rfile.readline())
            answer = server.dispatch(request)
        except (EmulabError, RadioError) as exc:  # e.g. `coverage lose` on a backend without coverage control
            answer = {"error": str(exc)}
        except Exception as exc:  # a bad request must not kill the runner
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


class ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers `emulab status/stop/...` for the testbed held by this process."""

    daemon_threads = True

    def __init__(self, testbed: Any, stop_event: threading.Event) -> None:
        path = paths.control_socket()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        super().__init__(str(path), _Handler)
        os.chmod(path, 0o600)
        self.testbed = testbed
        self.stop_event = stop_event
        self.lock = threading.Lock()  # Mininet objects are not thread-safe: one request acts at a time
        self.thread = threading.Thread(target=self.serve_forever, name="emulab-control", daemon=True)

    def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        with self.lock:
            if cmd == "status":
                return self.testbed.status()
            if cmd == "stop":
                self.stop_event.set()
                return {"ok": True}
            if cmd == "set_link":
                from emulab.linkparams import LinkParams

                self.testbed.set_link_params(request["link"], LinkParams(**request["params"]))
                return {"ok": True, "applied": self.testbed.link(request["link"]).applied()}
            if cmd == "controller":
                return self.testbed.controller_action(request.get("action", "status"))
            if cmd == "service":  # kill (crash) or restart a node's registrar / pool element
                svc = self.testbed.services
                if svc is None:
                    raise EmulabError("this testbed runs no services")
                action = request.get("action")
                if action not in ("kill", "restart"):
                    raise EmulabError(f"unknown service action {action!r} (kill, restart)")
                return getattr(svc, action)(request["node"], request["kind"])
            if cmd == "radio":
                action = request.get("action")
                radio = self.testbed.radio
                if action == "detach":
                    duration = request.get("for_s")
                    radio.detach(None if duration is None else float(duration))
                elif action == "attach":
                    radio.attach()
                elif action != "state":
                    raise EmulabError(f"unknown radio action {action!r}")
                return radio.state()
            if cmd == "self_check":  # the start's --self-check, on the running testbed (`emulab self-check`)
                from emulab.selfcheck import run_self_check

                lines: list[str] = []
                ok = run_self_check(self.testbed, lines.append)
                return {"ok": True, "passed": ok, "lines": lines}
        raise EmulabError(f"unknown request {cmd!r}")

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        with contextlib.suppress(FileNotFoundError):
            paths.control_socket().unlink()


def build(options: StartOptions, progress: Progress, run_id: str | None = None) -> Any:
    """Build the testbed in this process and record it in ``state.json`` (phase starting, then ready).

    ``run_id``: the run marker already in force (an experiment that holds its testbed in a
    longer-lived process, see ``emulab.network.marked``); without one a new marker is set here.
    """
    from emulab.capabilities import probe
    from emulab.network import Testbed, environment_marker
    from emulab.topology import load

    spec = load(options.topology)
    if run_id is None:
        run_id = uuid.uuid4().hex[:12]
        environment_marker(run_id)
    control.write_state(
        {"phase": "starting", "runner_pid": os.getpid(), "run_id": run_id, "instance": paths.instance(),
         "topology": spec.name, "options": asdict(options)}
    )
    try:
        t0 = time.monotonic()
        progress("probing kernel capabilities")
        try:
            caps = probe()
        except Exception as exc:
            raise StartError(f"{spec.name}: start failed in phase probe: {exc}") from exc
        testbed = Testbed(spec, caps, radio=options.radio, services=options.services, progress=progress)
        launched = os.environ.pop(LAUNCHED_ENV, None)
        if launched:  # a detached start: the runner process's own start-up (Python, imports) counts too
            testbed.phases.record("runner", max(0.0, t0 - float(launched)))
        testbed.phases.record("probe", time.monotonic() - t0)
        testbed.start()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            paths.state_file().unlink()
        raise
    control.write_state(
        {"phase": "ready", "runner_pid": os.getpid(), "run_id": run_id, "instance": paths.instance(),
         "options": asdict(options)} | testbed.state()
    )
    return testbed


def teardown(testbed: Any, progress: Progress, server: ControlServer | None = None) -> None:
    """Stop what ``build`` built (and the control server, if one answers for it); forget the state."""
    if server is not None:
        server.close()
    progress("tearing down")
    testbed.stop()
    # the controller writes its final status as it exits; a stopped testbed has none to show
    for path in (paths.state_file(), paths.controller_status()):
        path.unlink(missing_ok=True)


def run_foreground(options: StartOptions, progress: Progress) -> int:
    """Build, then open Mininet's CLI (or run the self-check); tear down on exit. Returns an exit code."""
    testbed = build(options, progress)
    stop_event = threading.Event()
    server = ControlServer(testbed, stop_event)
    server.start()
    try:
        progress(f"{testbed.spec.name} is up in {testbed.ready_s:.1f} s ({testbed.link_backend} links, "
                 f"{testbed.datapath} datapath)")
        if options.self_check:
            from emulab.selfcheck import run_self_check

            return 0 if run_self_check(testbed, progress) else 1
        from mininet.cli import CLI

        CLI(testbed.net)
        return 0
    finally:
        teardown(testbed, progress, server)


def default_timeout(nodes: int) -> float:
    """How long a detached start may take before it is given up: generous and growing with the
    topology, because a busy machine slows every step without anything being wrong."""
    return 60.0 + 0.3 * nodes


def start_detached(options: StartOptions, timeout: float | None, progress: Progress) -> str:
    """Start a runner in the background and wait until the testbed is ready; return a summary line.

    A start that fails raises StartError with the runner's reason (the phase and the cause), after
    making sure nothing of it is left: the runner tears down what it built, and whatever a runner
    that died or hung left behind is removed here.
    """
    if timeout is None:
        from emulab.topology import load

        timeout = default_timeout(len(load(options.topology).nodes))
    paths.log_dir().mkdir(parents=True, exist_ok=True)
    log_path = paths.log_dir() / "runner.log"
    ready_r, ready_w = os.pipe()
    env = dict(os.environ, **{LAUNCHED_ENV: repr(time.monotonic()), READY_FD_ENV: str(ready_w)})
    if sys.version_info < (3, 12) and DISTUTILS_ENV not in env:
        # Mininet imports distutils, which setuptools' shim (on by default in a venv) serves by
        # importing all of setuptools: 0.1 s of the runner's start. Python < 3.12 has its own.
        # The runner removes it again (daemon_main): it is for the runner's interpreter only.
        env[DISTUTILS_ENV] = "stdlib"
        env[DISTUTILS_SET_ENV] = "1"
    try:
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "emulab.runner", json.dumps(asdict(options))],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                pass_fds=(ready_w,),
            )
    finally:
        os.close(ready_w)
    try:
        return _wait_ready(proc, log_path, ready_r, timeout, progress)
    finally:
        with contextlib.suppress(OSError):
            os.close(ready_r)


def _wait_ready(proc: subprocess.Popen[bytes], log_path: Any, ready_r: int,
                timeout: float, progress: Progress) -> str:
    """``start_detached``'s wait: the runner's progress lines shown as they come, until it says
    ``ready`` on the pipe, which it does once its control socket answers (the state file says
    ready a moment before that). End of file without it: the runner exited (or is exiting), and
    its own reason is reported."""
    deadline = time.monotonic() + timeout
    shown = 0
    watching = True
    said = b""
    while time.monotonic() < deadline:
        if watching:  # woken by the runner's ready (or its exit), else every 50 ms for progress
            if select.select([ready_r], [], [], 0.05)[0]:
                chunk = os.read(ready_r, 64)
                said += chunk
                watching = bool(chunk)  # end of file: the runner closed it (ready, or exited)
        else:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            lines = log_path.read_text(errors="replace").splitlines()
            for line in lines[shown:]:
                if line.startswith("emulab: ") and not line.startswith("emulab: error: "):
                    progress(line)
            shown = len(lines)
        state = control.read_state() if b"ready\n" in said else None
        if state and state.get("phase") == "ready" and state.get("runner_pid") == proc.pid:
            return (
                f"{state['topology']} is up in {state['ready_s']:.1f} s: {len(state['nodes'])} nodes, "
                f"{state['link_backend']} links, {state['ovs_datapath']} datapath (runner pid {proc.pid}); "
                f"`{paths.command()} status` shows it, `{paths.command()} stop` ends it"
            )
        if proc.poll() is not None:
            raise StartError(_failure_reason(proc.returncode, log_path) + _left_behind())
    progress(f"emulab: not ready within {timeout:.0f} s: stopping the runner")
    proc.terminate()  # the runner aborts its build at once and removes what it built
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reason = _failure_reason(proc.returncode, log_path, quiet_ok=True)
    raise StartError(f"the testbed was not ready within {timeout:.0f} s (use --timeout to allow more); "
                     f"{reason}{_left_behind()}")


def _failure_reason(code: int | None, log_path: Any, quiet_ok: bool = False) -> str:
    """The runner's own error line (phase and cause), else its exit status and the end of its log."""
    try:
        tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        tail = []
    reason = next((ln.removeprefix("emulab: error: ") for ln in reversed(tail) if ln.startswith("emulab: error: ")),
                  None)
    if reason:
        return reason
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
    if quiet_ok:
        return f"the runner {how} (log: {log_path})"
    last = " | ".join(tail[-3:]) or "no output"
    return f"the runner {how} without saying why: {last} (log: {log_path})"


def _left_behind() -> str:
    """Remove whatever a failed start left (nothing, when the runner tore down cleanly), and say what."""
    from emulab.cleanup import clean, find_leftovers

    try:
        if not find_leftovers() and not paths.state_file().exists():
            return ""
        removed = clean()
    except Exception as exc:  # the start failed already: report both
        return f" (and removing its leftovers failed: {exc}; run `{paths.command()} clean`)"
    return f" (removed what it left behind: {', '.join(removed)})" if removed else ""


def _ready_fd() -> int | None:
    """The pipe ``start_detached`` waits on (READY_FD_ENV), kept from every process the testbed starts."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        os.set_inheritable(int(fd), False)
        return int(fd)
    return None


_READY_FD: list[int | None] = [None]


def _say_ready() -> None:
    fd = _READY_FD[0]
    if fd is not None:
        _READY_FD[0] = None
        with contextlib.suppress(OSError):
            os.write(fd, b"ready\n")
            os.close(fd)


def _forget_distutils_choice() -> None:
    """Remove the distutils choice ``start_detached`` made for this interpreter's start (the shim
    was installed or not when it started), so that no process the testbed starts inherits it."""
    if os.environ.pop(DISTUTILS_SET_ENV, None):
        os.environ.pop(DISTUTILS_ENV, None)


def daemon_main(options: StartOptions) -> int:
    """Entry point of a detached runner."""
    _forget_distutils_choice()
    _READY_FD[0] = _ready_fd()

    def progress(msg: str) -> None:
        print(f"emulab: {msg}", flush=True)

    building = [True]
    runner_pid = os.getpid()

    def on_signal(signum: int, _frame: Any) -> None:
        if os.getpid() != runner_pid:
            # a forked helper (pyroute2 forks to enter namespaces) must die as by default, not unwind
            # the runner's copied stack and tear down the runner's testbed from there
            os._exit(128 + signum)
        if not building[0]:
            stop_event.set()
            return
        # While building, a stop request ends the build: Testbed.start then removes what exists.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not interrupt that teardown
        raise StartAborted(f"stopped by signal {signal.Signals(signum).name} while starting")

    stop_event = threading.Event()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        testbed = build(options, progress)
        building[0] = False
    except EmulabError as exc:
        progress(f"error: {exc}")
        return 2
    except Exception as exc:  # a bug, not a user error: still say what failed, with the traceback
        import traceback

        traceback.print_exc()
        progress(f"error: {type(exc).__name__}: {exc}")
        return 3
    server = ControlServer(testbed, stop_event)
    server.start()
    progress(f"ready in {testbed.ready_s:.1f} s")
    _say_ready()
    try:
        while not stop_event.wait(0.5):  # a timed wait keeps SIGTERM handling prompt
            pass
    finally:
        teardown(testbed, progress, server)
    return 0


if __name__ == "__main__":
    sys.exit(daemon_main(StartOptions(**json.loads(sys.argv[1]))))

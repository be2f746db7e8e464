"""The process that holds a running testbed: started in the foreground (Mininet CLI) or detached.

It builds the testbed, records it in ``state.json``, answers the control socket (status, stop, link
changes, radio actions) and tears everything down on `emulab stop`, SIGTERM or CLI exit. A detached
start is this module re-executed as its own session leader; the caller waits until the state file
says ``ready`` (or ``failed``, with the reason).
"""

from __future__ import annotations

import contextlib
import json
import os
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
        {"phase": "starting", "runner_pid": os.getpid(), "run_id": run_id, "topology": spec.name, "options": asdict(options)}
    )
    try:
        progress("probing kernel capabilities")
        caps = probe()
        testbed = Testbed(spec, caps, radio=options.radio, services=options.services, progress=progress)
        testbed.start()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            paths.state_file().unlink()
        raise
    control.write_state(
        {"phase": "ready", "runner_pid": os.getpid(), "run_id": run_id, "options": asdict(options)} | testbed.state()
    )
    return testbed


def teardown(testbed: Any, progress: Progress, server: ControlServer | None = None) -> None:
    """Stop what ``build`` built (and the control server, if one answers for it); forget the state."""
    if server is not None:
        server.close()
    progress("tearing down")
    testbed.stop()
    with contextlib.suppress(FileNotFoundError):
        paths.state_file().unlink()


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


def start_detached(options: StartOptions, timeout: float, progress: Progress) -> str:
    """Start a runner in the background and wait until the testbed is ready; return a summary line."""
    paths.log_dir().mkdir(parents=True, exist_ok=True)
    log_path = paths.log_dir() / "runner.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "emulab.runner", json.dumps(asdict(options))],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    shown = 0
    while time.monotonic() < deadline:
        time.sleep(0.1)
        with contextlib.suppress(OSError):
            lines = log_path.read_text().splitlines()
            for line in lines[shown:]:
                if line.startswith("emulab: ") and not line.startswith("emulab: error: "):
                    progress(line)
            shown = len(lines)
        state = control.read_state()
        if state and state.get("phase") == "ready" and state.get("runner_pid") == proc.pid:
            return (
                f"{state['topology']} is up in {state['ready_s']:.1f} s: {len(state['nodes'])} nodes, "
                f"{state['link_backend']} links, {state['ovs_datapath']} datapath (runner pid {proc.pid}); "
                "`emulab status` shows it, `emulab stop` ends it"
            )
        if proc.poll() is not None:
            tail = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
            reason = next((ln.removeprefix("emulab: error: ") for ln in reversed(tail) if "error:" in ln), None)
            raise StartError(reason or f"the runner exited with code {proc.returncode}; see {log_path}")
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    raise StartError(f"the testbed was not ready within {timeout:.0f} s; it was stopped (log: {log_path})")


def daemon_main(options: StartOptions) -> int:
    """Entry point of a detached runner."""

    def progress(msg: str) -> None:
        print(f"emulab: {msg}", flush=True)

    stop_event = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: stop_event.set())
    try:
        testbed = build(options, progress)
    except EmulabError as exc:
        progress(f"error: {exc}")
        return 2
    server = ControlServer(testbed, stop_event)
    server.start()
    progress(f"ready in {testbed.ready_s:.1f} s")
    try:
        while not stop_event.wait(0.5):  # a timed wait keeps SIGTERM handling prompt
            pass
    finally:
        teardown(testbed, progress, server)
    return 0


if __name__ == "__main__":
    sys.exit(daemon_main(StartOptions(**json.loads(sys.argv[1]))))

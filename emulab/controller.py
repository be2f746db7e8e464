"""The OpenFlow controller process: launcher (`python -m emulab.controller`) and a handle to it.

emulab runs its os-ken application (emulab.controller_app) in its own process so that it can be
killed and restarted on its own, which is how the testbed shows that installed flows outlive the
controller. This module must stay importable without os-ken side effects: the builder imports
`ControllerProcess` and `read_status`; os-ken is imported only in the child, in `main()`.

Why eventlet: os-ken 4.x defaults to native threads, but in that mode a switch disconnect leaves
the datapath's send thread blocked on its queue (hub.kill is a no-op), so the datapath never
reaches DEAD_DISPATCHER and AppManager.run_apps() ends in an AttributeError (HubThread has no
kill). The eventlet hub is os-ken's (and Ryu's) long-tested path; both problems vanish with it.

Command line:
    python -m emulab.controller --port 6653 [--listen 127.0.0.1] [--log FILE] [--status FILE]
SIGTERM/SIGINT: write a final status (running=false) and exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulab.errors import EmulabError

DEFAULT_PORT = 6653
DEFAULT_LISTEN = "127.0.0.1"
APP_MODULE = "emulab.controller_app"


class ControllerError(EmulabError):
    """The controller process could not be started or stopped."""


# ---------------------------------------------------------------------------------------------
# helpers shared by the parent and the tests


def free_tcp_port(host: str = DEFAULT_LISTEN) -> int:
    """A TCP port that nothing listens on right now (for tests and side-by-side testbeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_listening(port: int) -> bool:
    """Does any socket in this network namespace listen on TCP `port`?

    Reads /proc/net/tcp{,6} instead of connecting: a probe connection would look like a switch
    to os-ken and clutter its log.
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # fields[1] = local "ADDR:PORT" in hex, fields[3] = state; 0A is LISTEN.
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _pid_is_controller(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # Guards against a recycled pid: only an emulab controller counts.
    return b"emulab.controller" in cmdline


def read_status(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The controller's status document, or None if it has not written one.

    Keys: pid, running, listen, started_at, updated_at, connected (dpids, 16 hex digits),
    flows_installed, packet_ins, switches {dpid: {connected, connected_at, connects, packet_ins,
    macs_learned, flows_installed}}; plus "alive", computed here from the pid, because a SIGKILLed
    controller cannot say running=false itself.
    """
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    pid = data.get("pid")
    data["alive"] = isinstance(pid, int) and _pid_is_controller(pid)
    return data


# ---------------------------------------------------------------------------------------------
# the handle


@dataclass
class ControllerProcess:
    """A running controller process. Create it with `ControllerProcess.start(...)`."""

    pid: int
    port: int
    listen: str = DEFAULT_LISTEN
    log_path: Path | None = None
    status_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        port: int = DEFAULT_PORT,
        log_path: str | os.PathLike[str] | None = None,
        *,
        listen: str = DEFAULT_LISTEN,
        status_path: str | os.PathLike[str] | None = None,
        timeout: float = 20.0,
        wait: bool = True,
    ) -> ControllerProcess:
        """Start `python -m emulab.controller` and return once it listens on `port` (at once with
        ``wait=False``: the caller calls `wait_listening` when it needs the controller, so the child's
        imports overlap the caller's work).

        The child gets its own session, so a Ctrl-C meant for the CLI does not kill it behind the
        builder's back; its stdout/stderr go to `log_path` too (start-up tracebacks included).
        """
        if is_listening(port):
            raise ControllerError(f"cannot start the controller: TCP port {port} is already in use")
        log = Path(log_path) if log_path is not None else None
        status = Path(status_path) if status_path is not None else None
        args = [sys.executable, "-m", "emulab.controller", "--port", str(port), "--listen", listen]
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            args += ["--log", str(log)]
        if status is not None:
            status.parent.mkdir(parents=True, exist_ok=True)
            status.unlink(missing_ok=True)  # a stale file would look like the new process
            args += ["--status", str(status)]
        env = dict(os.environ)
        # The child must find this very emulab package even if it is not installed.
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        out = open(log, "ab") if log is not None else None  # noqa: SIM115 - the child keeps it
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out if out is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT if out is not None else None,
                env=env,
                start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()
        handle = cls(pid=proc.pid, port=port, listen=listen, log_path=log, status_path=status, _proc=proc)
        if wait:
            handle.wait_listening(timeout)
        return handle

    def wait_listening(self, timeout: float = 20.0) -> None:
        """Return once the controller listens on its port; ControllerError (and the process stopped)
        if it exits or does not listen within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not is_listening(self.port):
            if not self.alive():
                code = self._proc.poll() if self._proc is not None else "?"
                raise ControllerError(f"the controller exited with status {code} while starting{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ControllerError(f"the controller did not listen on port {self.port} within {timeout:.0f} s"
                                      f"{self._log_tail()}")
            time.sleep(0.02)

    @classmethod
    def attach(cls, pid: int, port: int, **kwargs: Any) -> ControllerProcess:
        """A handle for a controller started by another process (e.g. from a state file)."""
        return cls(pid=pid, port=port, **kwargs)

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return _pid_is_controller(self.pid)

    def status(self) -> dict[str, Any] | None:
        """The controller's status document (see read_status), or None without a status file."""
        return read_status(self.status_path) if self.status_path is not None else None

    def wait_switches(self, dpids: list[str] | list[int], timeout: float = 10.0) -> bool:
        """Wait until the controller reports every datapath in `dpids` connected (features reply
        handled, table-miss flow sent); False on timeout. Needs a status file.

        OVS's Controller.is_connected turns true a little earlier, during the OpenFlow
        handshake, when packet-ins would still be ignored.
        """
        if self.status_path is None:
            raise ControllerError("wait_switches needs a controller started with status_path")
        wanted = {int(d, 16) if isinstance(d, str) else int(d) for d in dpids}
        deadline = time.monotonic() + timeout
        while True:
            status = self.status() or {}
            if wanted <= {int(d, 16) for d in status.get("connected", [])}:
                return True
            if time.monotonic() > deadline or not self.alive():
                return False
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, no goodbye: what a crashed controller looks like to the switches."""
        self._signal(signal.SIGKILL)
        self._wait(5.0)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (clean exit, final status written), then SIGKILL after `timeout` seconds."""
        if not self.alive():
            self._wait(0)
            return
        self._signal(signal.SIGTERM)
        if not self._wait(timeout):
            self.kill()

    def _signal(self, sig: signal.Signals) -> None:
        if not self.alive():
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def _wait(self, timeout: float) -> bool:
        """Wait for the process to end (reaping our child); True if it has."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                    return True
                except subprocess.TimeoutExpired:
                    return False
            if not _pid_is_controller(self.pid):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def _log_tail(self, lines: int = 5) -> str:
        if self.log_path is None:
            return ""
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return ":\n  " + "\n  ".join(tail) if tail else ""


# ---------------------------------------------------------------------------------------------
# the child process


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m emulab.controller", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="OpenFlow TCP listen port (6653)")
    p.add_argument("--listen", default=DEFAULT_LISTEN, help="OpenFlow listen address (127.0.0.1)")
    p.add_argument("--log", type=Path, help="log file (default: stderr)")
    p.add_argument("--status", type=Path, help="JSON status file, rewritten on every change")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        filename=str(args.log) if args.log else None,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("emulab.controller")

    # The hub type is read when os_ken.lib.hub is first imported, and eventlet must patch the
    # standard library before os-ken (or anything using sockets/threads) is imported.
    os.environ["OSKEN_HUB_TYPE"] = "eventlet"
    with warnings.catch_warnings():
        # eventlet announces its own deprecation on import; the reason we still use it is above.
        warnings.simplefilter("ignore")
        import eventlet

    eventlet.monkey_patch()

    # os-ken registers its CLI options when its modules are imported, and oslo.config refuses new
    # CLI options after parsing: import the OpenFlow handler before parsing an empty command line.
    import os_ken.controller.ofp_handler  # noqa: F401
    from os_ken import cfg
    from os_ken.base.app_manager import AppManager

    import emulab.controller_app as app_mod

    cfg.CONF(args=[], project="os_ken", default_config_files=[])
    cfg.CONF.set_override("ofp_listen_host", args.listen)
    cfg.CONF.set_override("ofp_tcp_listen_port", args.port)

    app_mod.SETTINGS.status_path = args.status
    app_mod.SETTINGS.listen = f"{args.listen}:{args.port}"

    def shutdown(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        for app in AppManager.get_instance().applications.values():
            if isinstance(app, app_mod.EmulabL2Switch):
                app.write_status(running=False)
        logging.shutdown()
        # os._exit: os-ken's server and datapath green threads would otherwise keep the process
        # alive; the kernel closes the switch connections, which is all the switches need.
        os._exit(0)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)

    log.info("emulab controller pid %d listening on %s:%d", os.getpid(), args.listen, args.port)
    AppManager.run_apps([APP_MODULE])
    # run_apps returns only when os-ken's threads ended on their own (e.g. the listen socket could
    # not be bound); a controller that stops serving is a failure. Signals exit through shutdown().
    log.error("the OpenFlow server stopped; see the errors above")
    logging.shutdown()
    return 1


if __name__ == "__main__":
    sys.exit(main())

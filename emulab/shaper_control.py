"""Host side of the userspace link shaper (emulab.shaper): its network namespace, the JSON control
client (``ShaperClient``), and ``Shaper``, which starts, finds and stops the shaper process.

The shaper process itself (its data path and control server) is emulab.shaper; this module is all
that the testbed builder (emulab.links) needs to drive it, and what the process reuses to enter its
namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from emulab import paths

#: The default instance's control socket and namespace; the current instance's are
#: paths.shaper_socket() and paths.shaper_netns(), which Shaper.start uses when given none.
DEFAULT_CONTROL = str(paths.default_run_dir(paths.DEFAULT_INSTANCE) / "shaper.sock")
DEFAULT_NETNS = paths.shaper_netns(paths.DEFAULT_INSTANCE)
DEFAULT_LIMIT = 1000


class ShaperError(RuntimeError):
    """The shaper refused a request or could not be reached; the message says why."""


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def ensure_netns(name: str) -> bool:
    """Create the shaper's namespace if missing; True when it was created now.

    IPv6 is disabled for every interface created in it so the middle veth ends never emit
    router solicitations, DAD or MLD into the emulated links; lo is brought up.
    """
    created = False
    if not netns_exists(name):
        _run(["ip", "netns", "add", name])
        created = True
    for key in ("all", "default"):
        _run(["ip", "netns", "exec", name, "sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"])
    _run(["ip", "-n", name, "link", "set", "lo", "up"])
    return created


def delete_netns(name: str) -> None:
    if netns_exists(name):
        _run(["ip", "netns", "del", name])


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ShaperError(f"{' '.join(cmd)} failed: {r.stderr.strip() or r.stdout.strip()}")


def enter_netns(name: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns({name}) failed")
    finally:
        os.close(fd)


def pidfile_for(control_path: str) -> str:
    return str(Path(control_path).with_suffix(".pid"))


def socket_alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def params_to_wire(params: Any) -> dict[str, Any]:
    """LinkParams (or a dict of its fields) -> the shaper's JSON parameter object."""
    d = params.as_dict() if hasattr(params, "as_dict") else dict(params)
    return {
        "delay_ms": float(d.get("delay_ms") or 0.0),
        "jitter_ms": float(d.get("jitter_ms") or 0.0),
        "loss_pct": float(d.get("loss_pct") or 0.0),
        "rate_mbit": None if d.get("rate_mbit") is None else float(d["rate_mbit"]),
    }


class ShaperClient:
    """Talks to a running shaper over its control socket (thread-safe, one connection)."""

    def __init__(self, control_path: str | os.PathLike[str] = DEFAULT_CONTROL, timeout: float = 5.0) -> None:
        self.control_path = os.fspath(control_path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self._lock = threading.Lock()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self.control_path)
            except OSError as e:
                s.close()
                raise ShaperError(f"cannot reach the shaper at {self.control_path}: {e}") from e
            self._sock, self._buf = s, b""
        return self._sock

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Send one request, return the reply; raise ShaperError when it says ok: false."""
        with self._lock:
            s = self._connect()
            try:
                s.sendall(json.dumps(req).encode() + b"\n")
                while b"\n" not in self._buf:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ShaperError("the shaper closed the control connection")
                    self._buf += chunk
            except OSError as e:
                self.close()
                raise ShaperError(f"shaper control I/O failed: {e}") from e
            line, _, self._buf = self._buf.partition(b"\n")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise ShaperError(f"shaper refused {req.get('op')}: {reply.get('error')}")
        return reply

    def ping(self) -> dict[str, Any]:
        return self.request({"op": "ping"})

    def add_link(self, link_id: str, a: str, b: str, params: Any, *, params_ab: Any = None,
                 params_ba: Any = None, limit: int = DEFAULT_LIMIT, seed: int | None = None) -> dict[str, Any]:
        req: dict[str, Any] = {"op": "add", "id": link_id, "a": a, "b": b,
                               "params": params_to_wire(params), "limit": limit, "seed": seed}
        if params_ab is not None:
            req["params_ab"] = params_to_wire(params_ab)
        if params_ba is not None:
            req["params_ba"] = params_to_wire(params_ba)
        return self.request(req)["link"]

    def set_params(self, link_id: str, params: Any, direction: str | None = None,
                   limit: int | None = None) -> dict[str, Any]:
        req: dict[str, Any] = {"op": "set", "id": link_id, "params": params_to_wire(params), "direction": direction}
        if limit is not None:
            req["limit"] = limit
        return self.request(req)["link"]

    def remove_link(self, link_id: str) -> None:
        self.request({"op": "remove", "id": link_id})

    def stats(self, link_id: str | None = None) -> dict[str, Any]:
        r = self.request({"op": "stats", "id": link_id})
        return r["link"] if link_id is not None else r["links"]

    def shutdown(self) -> None:
        self.request({"op": "shutdown"})

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Shaper:
    """Handle on a shaper process started by ``Shaper.start`` (the builder keeps one per testbed)."""

    def __init__(self, proc: subprocess.Popen[bytes] | None, pid: int, control_path: str, netns: str,
                 owns_netns: bool) -> None:
        self.proc = proc
        self.pid = pid
        self.control_path = control_path
        self.netns = netns
        self.owns_netns = owns_netns
        self.client = ShaperClient(control_path)

    @classmethod
    def start(cls, control_path: str | os.PathLike[str] | None = None, netns: str | None = None,
              log_path: str | os.PathLike[str] | None = None, timeout: float = 10.0) -> Shaper:
        """Create the namespace (if needed), start the shaper in it and wait until it answers
        (control socket and namespace default to the current instance's)."""
        handle = cls.launch(control_path, netns, log_path)
        handle.wait_ready(timeout)
        return handle

    @classmethod
    def launch(cls, control_path: str | os.PathLike[str] | None = None, netns: str | None = None,
               log_path: str | os.PathLike[str] | None = None) -> Shaper:
        """``start`` without the wait: the shaper's Python start-up then overlaps the caller's work
        until ``wait_ready``."""
        control_path = os.fspath(paths.shaper_socket() if control_path is None else control_path)
        netns = paths.shaper_netns() if netns is None else netns
        if os.path.exists(control_path) and socket_alive(control_path):
            raise ShaperError(f"a shaper already listens on {control_path}")
        created = ensure_netns(netns)
        env = dict(os.environ)
        pkg_parent = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "emulab.shaper", "--control", control_path, "--netns", netns],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out if log_path else None,
                env=env, start_new_session=True,
            )
        finally:
            if log_path:
                out.close()  # type: ignore[union-attr]
        return cls(proc, proc.pid, control_path, netns, created)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the launched shaper answers; stop it (and raise ShaperError) if it exits or
        does not answer within ``timeout`` s."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                if self.owns_netns:
                    delete_netns(self.netns)
                    self.owns_netns = False  # a later stop() has nothing left to remove
                raise ShaperError(f"shaper exited at start with code {self.proc.returncode}")
            try:
                self.client.ping()
                return
            except ShaperError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ShaperError(f"shaper did not answer on {self.control_path} within {timeout} s") from None
                time.sleep(0.005)

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return _pid_alive(self.pid)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process, wait, SIGKILL if needed; remove the namespace if we created it."""
        self.client.close()
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.alive():
                os.kill(self.pid, signal.SIGKILL)
                if self.proc is not None:
                    self.proc.wait()
        elif self.proc is not None:
            self.proc.wait()
        for path in (self.control_path, pidfile_for(self.control_path)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if self.owns_netns:
            delete_netns(self.netns)
            self.owns_netns = False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

"""Talking to a running testbed: its state file, its control socket, and commands run inside its nodes.

The runner process that holds the Mininet network writes ``state.json`` (what was built, with pids)
and answers JSON requests on a UNIX socket, one request per connection, one JSON line each way.
The state file itself is read and written through ``emulab.runstate`` (its functions are
importable from here too, as callers have always used them).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from typing import Any

from emulab import paths
from emulab.errors import AlreadyRunning, EmulabError, NotRunning, UnknownNode
from emulab.runstate import pid_alive, read_state, write_state

__all__ = ["exec_in_node", "node_namespace", "pid_alive", "read_state", "refuse_if_running", "request",
           "stop", "write_state"]


def refuse_if_running() -> None:
    state = read_state()
    if state is None:
        return
    if pid_alive(state.get("runner_pid")):
        raise AlreadyRunning(
            f"a testbed ({state.get('topology', '?')}) is already running (runner pid {state['runner_pid']}): "
            f"use `{paths.command()} stop` first"
        )
    raise AlreadyRunning(f"a previous testbed did not shut down cleanly: run `{paths.command()} clean` first")


def _running_state() -> dict[str, Any]:
    state = read_state()
    if state is None:
        raise NotRunning(f"no testbed is running (start one with `{paths.command()} start paper-topology --detach`)")
    if not pid_alive(state.get("runner_pid")):
        raise NotRunning(f"the testbed's runner is gone (crashed or killed): run `{paths.command()} clean`")
    return state


def request(message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to the runner and return its answer (raises EmulabError on an error answer)."""
    _running_state()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(paths.control_socket()))
            sock.sendall(json.dumps(message).encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except (OSError, TimeoutError) as exc:
        raise NotRunning(f"cannot reach the testbed's control socket {paths.control_socket()}: {exc}") from None
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise EmulabError("the testbed's runner sent a malformed answer") from None
    if "error" in answer:
        raise EmulabError(answer["error"])
    return answer


def node_namespace(state: dict[str, Any], node: str) -> str:
    nodes = state.get("nodes", {})
    if node not in nodes:
        known = ", ".join(sorted(nodes))
        raise UnknownNode(f"no node {node!r} in the running topology (nodes: {known})")
    return nodes[node]["netns_path"]


def exec_in_node(node: str, command: list[str]) -> int:
    """Run ``command`` in ``node``'s network namespace with the caller's terminal; return its exit code."""
    state = _running_state()
    netns = node_namespace(state, node)
    try:
        return subprocess.call(["nsenter", f"--net={netns}", *command])
    except FileNotFoundError:
        raise EmulabError("nsenter not found (Debian package util-linux)") from None


def stop(timeout: float = 30.0) -> None:
    """Ask the runner to tear down and wait for it; fall back to SIGTERM, then to a clean-up."""
    state = _running_state()
    pid = state["runner_pid"]
    try:
        request({"cmd": "stop"}, timeout=5.0)
    except EmulabError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        from emulab import cleanup

        cleanup.clean()
        raise EmulabError(f"the runner did not stop within {timeout:.0f} s; it was killed and cleaned up")

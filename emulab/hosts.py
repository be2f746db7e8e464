"""Mininet hosts whose shells start side by side.

Mininet's Node.startShell spawns a host's shell and waits for its prompt before the constructor
returns, so a testbed of N hosts waits N times in a row for a process to start in a new network
namespace. ``QuickHost`` only spawns the shell; ``finish_shells`` then waits for the prompts of all
of them and sends each Mininet's set-up line before reading the first answer.
"""

from __future__ import annotations

import os
import pty
import select
import time
from typing import Any

from mininet.node import Host

#: The prompt Mininet gives its shells, which also ends every command's output.
PROMPT = chr(127)


class QuickHost(Host):  # type: ignore[misc]
    """A Mininet Host whose constructor leaves the shell starting; ``finish_shells`` completes it."""

    def startShell(self, mnopts: str | None = None) -> None:  # noqa: N802 - Mininet's name
        # Node.startShell of mininet 2.3 up to its wait for the prompt
        if self.shell:
            raise RuntimeError(f"{self.name}: shell is already running")
        opts = ("-cd" if mnopts is None else mnopts) + ("n" if self.inNamespace else "")
        cmd = ["mnexec", opts, "env", "PS1=" + PROMPT, "bash", "--norc", "--noediting", "-is", "mininet:" + self.name]
        self.master, self.slave = pty.openpty()
        self.shell = self._popen(cmd, stdin=self.slave, stdout=self.slave, stderr=self.slave, close_fds=False)
        self.stdin = os.fdopen(self.master, "r")
        self.stdout = self.stdin
        self.pid = self.shell.pid
        self.pollOut = select.poll()
        self.pollOut.register(self.stdout)
        self.outToNode[self.stdout.fileno()] = self
        self.inToNode[self.stdin.fileno()] = self
        self.execed = False
        self.lastCmd = None
        self.lastPid = None
        self.readbuf = ""
        self.waiting = True  # no command may be sent before finish_shells saw the prompt


def finish_shells(hosts: list[Any], timeout: float = 60.0) -> None:
    """The rest of Node.startShell for hosts built as ``QuickHost``: wait for each shell's prompt,
    then run Mininet's set-up line in all of them at once.

    A shell that exits first (mnexec could not enter or create the namespace) or gives no prompt
    within ``timeout`` s (generous: a busy machine is slow, not broken) raises RuntimeError with
    what it printed, which says why."""
    deadline = time.monotonic() + timeout
    for host in hosts:
        said = ""
        # Mininet's own pollOut also reports the terminal writable, i.e. always: its read would
        # then block for ever on a shell that died without a word
        readable = select.poll()
        readable.register(host.stdout.fileno(), select.POLLIN)
        while True:
            if readable.poll(100):
                try:
                    chunk = host.read(1024)
                except OSError:  # EIO: the shell's side of the terminal is closed, it exited
                    chunk = ""
                said += chunk
                if said.endswith(PROMPT):
                    break
                if chunk:
                    continue
            if host.shell.poll() is not None:  # Mininet would wait for ever
                raise RuntimeError(f"{host.name}: its shell exited at start (code {host.shell.returncode})"
                                   + _said(said))
            if time.monotonic() > deadline:
                raise RuntimeError(f"{host.name}: its shell gave no prompt within {timeout:g} s" + _said(said))
        host.waiting = False
    for host in hosts:
        host.sendCmd("unset HISTFILE; stty -echo; set +m")  # +m: no job control notices
    for host in hosts:
        host.waitOutput()


def _said(output: str) -> str:
    """What a shell printed before it failed (mnexec's reason), for an error message."""
    text = " ".join(output.replace(PROMPT, " ").split())
    return f": {text[-500:]}" if text else ""

"""What OAI's 4G UE says about itself, read from its log as it is written.

The UE softmodem has no query for its RRC state (its telnet server offers ``channelmod`` and the
generic commands, not the UE's RRC), but it logs every transition (openair2/RRC/LTE/rrc_UE.c:
``State = RRC_CONNECTED`` after RRCConnectionSetup, ``State = RRC_RECONFIGURED`` once the default
radio bearer is configured, ``State = RRC_IDLE`` at start) and every downlink control message it
received but could not use (openair1/SCHED_UE: ``Frame F, subframe S: Problem in DCI!``). ``UeLog``
follows the file and keeps the latest of each; the backend polls it.

An address on ``oaitun_ue1`` is *not* a sign of attach: with ``--noS1`` OAI gives the tunnel its
address when the process starts, seconds before the UE is in sync.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

RRC_STATE = re.compile(r"State = (RRC_[A-Z_]+)")
DCI_PROBLEM = re.compile(r"Frame (\d+), subframe (\d+): Problem in DCI!")
SYNC_FOUND = re.compile(r"(Found .*cell|Synchronized|initial sync|MIB.*decoded)", re.IGNORECASE)
FATAL = re.compile(r"(Assertion .* failed|AssertFatal|Segmentation fault|Exiting OAI softmodem|exit_fun)")

#: RRC states in which the UE has a default radio bearer (the user plane can flow)
ATTACHED_STATES = ("RRC_CONNECTED", "RRC_RECONFIGURED")


@dataclass
class UeLog:
    """Follows the UE softmodem's log file: RRC state, DCI problems, a fatal line if any."""

    path: Path
    offset: int = 0
    rrc_state: str | None = None  # latest "State = RRC_…" seen
    rrc_since: float | None = None  # time.time() of that line being read
    attached_at: float | None = None  # first RRC_RECONFIGURED/RRC_CONNECTED since the last reset
    dci_problems: int = 0  # "Problem in DCI!" lines since start
    last_dci_frame: tuple[int, int] | None = None
    fatal: str | None = None
    transitions: list[tuple[float, str]] = field(default_factory=list)
    _partial: str = ""

    def poll(self) -> list[str]:
        """Read what the softmodem wrote since the last call; update the state; return the new lines."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        if not data:
            return []
        self.offset += len(data)
        text = self._partial + data.decode("utf-8", "replace")
        *lines, self._partial = text.split("\n")
        now = time.time()
        for line in lines:
            self._line(line, now)
        return lines

    def _line(self, line: str, now: float) -> None:
        if "Problem in DCI" in line:
            self.dci_problems += 1
            m = DCI_PROBLEM.search(line)
            if m:
                self.last_dci_frame = (int(m.group(1)), int(m.group(2)))
            return
        m = RRC_STATE.search(line)
        if m:
            state = m.group(1)
            self.rrc_state, self.rrc_since = state, now
            self.transitions.append((now, state))
            del self.transitions[:-20]
            if state in ATTACHED_STATES and self.attached_at is None:
                self.attached_at = now
            return
        if self.fatal is None and FATAL.search(line):
            self.fatal = line.strip()[:300]

    @property
    def attached(self) -> bool:
        return self.rrc_state in ATTACHED_STATES

    def restart(self) -> None:
        """The softmodem was restarted with a fresh log: forget its state, read from the top."""
        self.offset, self._partial = 0, ""
        self.rrc_state = self.rrc_since = self.attached_at = None
        self.last_dci_frame, self.fatal = None, None


def fatal_line(path: Path, tail_bytes: int = 16384) -> str | None:
    """The last line of a softmodem's log that says why it died (an assertion, a fatal exit), if any."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - tail_bytes))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    found = [ln.strip() for ln in lines if FATAL.search(ln)]
    return found[-1][:300] if found else None

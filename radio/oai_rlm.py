"""A UE-side radio link monitor for OAI's 4G UE: out-of-sync / in-sync, N310/T310/N311, RLF.

Why one is needed: OAI's lte-uesoftmodem (2024.w12) counts out-of-sync only while it decodes the
PBCH, and it stops that once connected (``Disable SIB MIB decoding``); with the downlink gone
(``channelmod modify 0 ploss 60``) its log simply falls silent, it never starts T310 nor declares
RLF, and after the channel returns it stays in a dead RRC_RECONFIGURED state (the eNB dropped it
after ``UL Failure``). So radio link failure is decided here, the way 36.133 §7.6 / 36.331 §5.3.11
define it for a real UE:

* the UE evaluates its downlink quality every radio frame (10 ms) against Qout (the SNR at which a
  PDCCH would be lost 10 % of the time, about -8 dB) and Qin (2 %, about -6 dB): below Qout is an
  out-of-sync indication, above Qin an in-sync one;
* N310 consecutive out-of-sync indications start T310; N311 consecutive in-sync ones stop it; T310
  running out is the RLF (the topology's ``radio.options`` give n310/t310_ms/n311, as for the
  emulated backend);
* after the RLF the UE is idle: it looks for the cell again and, once the cell is back (in-sync for
  N311 frames), attaches anew. OAI's UE cannot do that from its dead state (and OAI's eNB, with no
  EPC to release it, keeps the lost UE's context), so the backend restarts both softmodems then
  (restart semantics for the re-attach, not for the detection).

The downlink quality is the UE's own: the SNR at its receiver, from the RF simulator's channel
model *inside the UE process* (model 0, ``rfsimu_channel_enB0``: the eNB's signal as the UE receives
it), read from the UE's telnet server (``channelmod show current``: path loss and noise power).
With the rfsimulator's AWGN model the SNR is ``-noise_power_dB - path_loss_dB`` (the transmit
signal is at full scale, 0 dB): 50 dB with the generated configuration, -10 dB at the coverage-loss
path loss of 60 dB. That is what a real UE estimates from the reference signals; it changes the
instant the channel does, whoever changes it (``emulab coverage``, or someone on the telnet port).
The evaluation happens at every reading (``POLL_S``), each standing for the frames since the last.
"""

from __future__ import annotations

from dataclasses import dataclass

FRAME_S = 0.010
QOUT_SNR_DB = -8.0
QIN_SNR_DB = -6.0
POLL_S = 0.1

#: Runs inside a node: one exchange with an OAI telnet server: sends the line, returns what comes
#: back up to the prompt that follows. OAI's server takes one client at a time, so nothing may stay
#: connected: every exchange connects and closes - and closes gently (FIN, then reading until the
#: server has closed too): a client that closes with unread data sends a reset, and OAI's server
#: (common/utils/telnetsrv/telnetsrv.c) adds recv's -1 to its buffer index and writes before its
#: buffer.
TELNET_CLIENT = r"""
import socket, sys, time
def exchange(port, line, timeout=3.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        deadline = time.time() + timeout  # the server greets with nothing: it reads a line first
        sock.sendall(line.encode() + b"\n")
        out = b""
        try:
            while not out.rstrip().endswith(b">") and time.time() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        finally:
            try:
                sock.shutdown(socket.SHUT_WR)
                while time.time() < deadline + timeout and sock.recv(65536):
                    pass
            except OSError:
                pass
        return out.decode("utf-8", "replace")
"""

#: Runs inside the UE's node: every POLL_S, "<unix time> <path loss dB> <noise dB>" of the UE's
#: channel model 0 (or "<time> down" when the UE's telnet server does not answer).
READER = TELNET_CLIENT + r"""
import re
port, period = int(sys.argv[1]), float(sys.argv[2])
pat = re.compile(r"model 0 .*?path loss: *(-?[0-9.]+) +noise: *(-?[0-9.]+)", re.S)
while True:
    t = time.time()
    try:
        m = pat.search(exchange(port, "channelmod show current", timeout=1.0))
        print(f"{t:.3f} {m.group(1)} {m.group(2)}" if m else f"{t:.3f} down", flush=True)
    except OSError:
        print(f"{t:.3f} down", flush=True)
    time.sleep(max(0.0, period - (time.time() - t)))
"""

#: Runs inside a node: ``TELNET_CLIENT`` for one command (argv: port, line); prints the answer.
ONE_COMMAND = TELNET_CLIENT + r"""
print(exchange(int(sys.argv[1]), sys.argv[2]))
"""


def snr_db(path_loss_db: float, noise_db: float) -> float:
    """The UE's downlink SNR under the rfsimulator's AWGN channel (signal at full scale)."""
    return -noise_db - path_loss_db


@dataclass
class RadioLinkMonitor:
    """36.331's RLF rules over out-of-sync / in-sync indications (one per 10 ms frame)."""

    n310: int = 20
    t310_ms: float = 1000.0
    n311: int = 1
    state: str = "in-sync"  # "in-sync", "t310" (running), "rlf"
    oos_since: float | None = None  # first of the current run of out-of-sync frames
    is_since: float | None = None  # first of the current run of in-sync frames
    t310_started: float | None = None
    rlf_at: float | None = None
    cell_back_at: float | None = None  # after an RLF: when the cell was seen again (N311 frames in sync)
    last: float | None = None
    snr: float | None = None

    def indicate(self, now: float, snr: float | None) -> str:
        """The frames from the last reading to ``now`` had downlink SNR ``snr`` (None: the channel
        could not be read, e.g. while the UE softmodem restarts: no indication); returns the state."""
        start = self.last if self.last is not None else now
        self.last, self.snr = now, snr
        out = snr is not None and snr < QOUT_SNR_DB
        ins = snr is not None and snr > QIN_SNR_DB
        if out:
            self.is_since = None
            self.oos_since = start if self.oos_since is None else self.oos_since
            if self.state == "in-sync" and now - self.oos_since >= self.n310 * FRAME_S:
                self.state, self.t310_started = "t310", self.oos_since + self.n310 * FRAME_S
        elif ins:
            self.oos_since = None
            self.is_since = start if self.is_since is None else self.is_since
            if now - self.is_since >= self.n311 * FRAME_S:
                if self.state == "t310":
                    self.state, self.t310_started = "in-sync", None
                elif self.state == "rlf" and self.cell_back_at is None:
                    self.cell_back_at = self.is_since + self.n311 * FRAME_S
        if self.state == "t310" and self.t310_started is not None and now - self.t310_started >= self.t310_ms / 1e3:
            self.state, self.rlf_at, self.cell_back_at = "rlf", self.t310_started + self.t310_ms / 1e3, None
        return self.state

    def reattached(self) -> None:
        """The UE attached again after an RLF: back to monitoring a connected link."""
        self.state, self.oos_since, self.is_since, self.t310_started, self.cell_back_at = "in-sync", None, None, None, None


def parse_reading(line: str) -> tuple[float, float | None] | None:
    """A READER line → (time, SNR dB or None when the UE's channel could not be read)."""
    parts = line.split()
    try:
        if len(parts) == 2 and parts[1] == "down":
            return float(parts[0]), None
        if len(parts) == 3:
            return float(parts[0]), snr_db(float(parts[1]), float(parts[2]))
    except ValueError:
        return None
    return None

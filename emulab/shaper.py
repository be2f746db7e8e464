"""Userspace link shaper: the delay/jitter/loss/rate data path for kernels without sch_netem.

One shaper process serves every shaped link of a testbed. It lives in its own network namespace
(default ``emulab-shaper``) that holds the middle ends of the shaped links::

    node1:intf1 <-veth-> emsh<N>a  [shaper process]  emsh<N>b <-veth-> node2:intf2
                         \\________ namespace emulab-shaper ________/

Per link and direction it reads frames from one middle interface with an AF_PACKET socket, decides
loss, computes a departure time and writes the frame to the other middle interface at that time.

Semantics (chosen to equal the netem backend, see emulab.links):

* delay/jitter: departure = arrival + delay + U(-jitter, +jitter) (netem's default uniform
  jitter), clamped at 0.
* order: always FIFO. A frame never leaves before the one ahead of it (departure =
  max(departure, previous departure)), i.e. jitter does not reorder. netem does the same when a
  rate is set; the netem backend therefore always sets a rate when jitter is used.
* rate: netem's rate model. A frame is serialised after the later of (arrival + delay) and the
  previous frame's departure, taking wire_bytes * 8 / rate.
* loss: independent random loss per frame.
* limit: at most ``limit`` frames waiting per direction (netem's ``limit``); more are tail-dropped.

Big frames: both sockets use PACKET_VNET_HDR, so TSO/GSO super-frames (up to 64 KiB) pass through
intact with their virtio-net header (GSO and checksum offload metadata) instead of being refused by
a plain AF_PACKET send; that is also far cheaper in Python than one syscall per 1500-byte segment.
A GSO frame is one frame for loss and limit, like in netem (which also sees GSO skbs).

Timers: the process waits in epoll on the sockets and one timerfd armed at the earliest departure
(absolute CLOCK_MONOTONIC, nanosecond resolution), so departures are not rounded to epoll's
millisecond timeout. Arrival times are the kernel's receive timestamps, so the time the shaper needs
to wake up and read a frame is not added to its delay.

Wake-up lead: a timer wake-up and the Python work after it take tens of microseconds (more on a
busy machine), which used to be added to every delayed frame on every hop. The shaper measures
that latency on each timer wake-up and tracks its median (``lead``, at most LEAD_MAX), arms the
timer that much earlier, and counts a frame as due when its departure is at most ``lead`` ahead:
the median departure is then on time instead of always late. Frames of a zero-delay direction are sent as soon
as they are read (nothing to compensate against); their cost is the read itself.

Lateness: every release is compared with its scheduled departure (release - schedule; negative
when the lead sent it a little early) and summed per direction (``late_n``, ``late_sum_ms``,
``late_sq_ms2``, ``late_max_ms`` and a histogram ``late_hist`` over LATE_EDGES in ``stats``; the
``ping`` reply carries ``late_edges_ms``). That is the emulation's own measure of how well it
keeps time; the self-check (emulab.selfcheck) reads it to tell a loaded machine from a wrong
configuration.

Control: a UNIX stream socket speaking newline-delimited JSON, one request per line, one reply
line each (see ``ShaperClient``). Operations: ping, add, set, remove, stats, shutdown.

Run: ``python -m emulab.shaper --control /run/emulab/shaper.sock [--netns emulab-shaper]``;
from Python ``Shaper.start(control_path, netns=...)``. SIGTERM/SIGINT end the process cleanly
(control socket and pid file removed).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import ctypes
import ctypes.util
import errno
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONTROL = "/run/emulab/shaper.sock"
DEFAULT_NETNS = "emulab-shaper"
DEFAULT_LIMIT = 1000

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
VNET_HDR_LEN = 10  # struct virtio_net_hdr without num_buffers
_VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
ETH_OVERHEAD = 0  # rate counts L2 frame bytes, like netem (no preamble/IFG)

SOCK_BUF = 8 * 1024 * 1024
RX_BUF = 256 * 1024  # > 64 KiB GSO frames (+ BIG TCP headroom)
RX_BUDGET = 64  # frames read per readiness event before timers are looked at again
LEAD_MAX = 0.0005  # s; the wake-up lead never exceeds this, so no frame leaves more than 0.5 ms early
#: Upper edges (seconds) of the lateness histogram buckets; the last bucket is open.
LATE_EDGES = (-0.0005, -0.0002, -0.0001, -0.00005, -0.00002, 0.0, 0.00002, 0.00005, 0.0001, 0.0002,
              0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
LEAD_STEP = 0.000002  # s; the lead follows the median wake-up latency in steps of 2 us

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = 0o4000
TFD_CLOEXEC = 0o2000000
TFD_TIMER_ABSTIME = 1
PR_SET_TIMERSLACK = 29


class ShaperError(RuntimeError):
    """The shaper refused a request or could not be reached; the message says why."""


# ---------------------------------------------------------------------------------------------
# parameters


@dataclass
class DirParams:
    """Per-direction parameters in the units the data path uses (seconds, fraction, bytes/s)."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0  # probability 0..1
    rate_bps: float | None = None  # bytes per second; None = unlimited
    limit: int = DEFAULT_LIMIT

    @classmethod
    def from_dict(cls, d: dict[str, Any], limit: int = DEFAULT_LIMIT) -> DirParams:
        """From the JSON form {delay_ms, jitter_ms, loss_pct, rate_mbit, limit}; validates."""
        delay = float(d.get("delay_ms", 0.0) or 0.0)
        jitter = float(d.get("jitter_ms", 0.0) or 0.0)
        loss = float(d.get("loss_pct", 0.0) or 0.0)
        rate = d.get("rate_mbit")
        lim = int(d.get("limit", limit) or limit)
        if delay < 0 or jitter < 0:
            raise ValueError("delay and jitter must not be negative")
        if not 0.0 <= loss <= 100.0:
            raise ValueError(f"loss must be between 0 and 100 %, got {loss}")
        if rate is not None and float(rate) <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if lim < 1:
            raise ValueError(f"limit must be at least 1, got {lim}")
        return cls(
            delay_s=delay / 1e3,
            jitter_s=jitter / 1e3,
            loss=loss / 100.0,
            rate_bps=None if rate is None else float(rate) * 1e6 / 8.0,
            limit=lim,
        )

    def as_dict(self) -> dict[str, Any]:
        """Back to the JSON form (what the shaper really applies)."""
        return {
            "delay_ms": round(self.delay_s * 1e3, 6),
            "jitter_ms": round(self.jitter_s * 1e3, 6),
            "loss_pct": round(self.loss * 100.0, 6),
            "rate_mbit": None if self.rate_bps is None else round(self.rate_bps * 8 / 1e6, 6),
            "limit": self.limit,
        }


def wire_len(frame: bytes | bytearray | memoryview) -> int:
    """Bytes a frame (with virtio-net header) occupies on the wire once segmented.

    A GSO super-frame becomes ceil(payload / gso_size) segments, each carrying the headers again.
    """
    n = len(frame) - VNET_HDR_LEN
    gso_type = frame[1]
    if gso_type:
        _flags, _t, hdr_len, gso_size, _cs, _co = _VNET.unpack_from(frame, 0)
        if gso_size and hdr_len and n > hdr_len:
            segs = -(-(n - hdr_len) // gso_size)
            return n + (segs - 1) * hdr_len + ETH_OVERHEAD * segs
    return n + ETH_OVERHEAD


# ---------------------------------------------------------------------------------------------
# data path


SO_TIMESTAMPNS = 35  # SCM_TIMESTAMPNS is the same number
_TIMESPEC = struct.Struct("@qq")


def _arrival(ancdata: list[tuple[int, int, bytes]], fallback: float, offset: float) -> float:
    """Monotonic arrival time of a frame from its kernel timestamp (CLOCK_REALTIME + offset)."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            t = sec + nsec * 1e-9 - offset
            return t if t <= fallback else fallback
    return fallback


def _tune_process() -> None:
    """Wake up on time: 1 ns timer slack and a scheduling boost (best effort, needs root)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except OSError:
        pass


def _packet_socket(ifname: str) -> socket.socket:
    """AF_PACKET socket bound to ifname, with vnet headers, big buffers, not seeing its own sends."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        # Without this every frame we send would come back to us as PACKET_OUTGOING.
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        # The kernel stamps each frame when it arrives, so the time the shaper needs to wake up
        # and read it is not added to the emulated delay (it was ~0.2-0.5 ms per hop under load).
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # SO_RCVBUFFORCE/SNDBUFFORCE
            try:
                s.setsockopt(socket.SOL_SOCKET, force, SOCK_BUF)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
        s.bind((ifname, ETH_P_ALL))
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


class Direction:
    """One direction of one link: a FIFO of (departure time, frame) and its counters."""

    __slots__ = (
        "name", "tx", "p", "rng", "queue", "last", "rx_packets", "rx_bytes", "tx_packets",
        "tx_bytes", "dropped_loss", "dropped_limit", "tx_errors", "late_n", "late_sum", "late_sq", "late_max",
        "late_hist",
    )

    def __init__(self, name: str, tx: socket.socket, params: DirParams, rng: random.Random) -> None:
        self.name = name
        self.tx = tx
        self.p = params
        self.rng = rng
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.last = 0.0  # departure time of the previous frame (FIFO and rate reference)
        self.rx_packets = self.rx_bytes = self.tx_packets = self.tx_bytes = 0
        self.dropped_loss = self.dropped_limit = self.tx_errors = 0
        self.late_n = 0  # releases compared with their schedule
        self.late_sum = self.late_sq = 0.0  # seconds, seconds squared
        self.late_max = 0.0
        self.late_hist = [0] * (len(LATE_EDGES) + 1)  # counts per bucket of LATE_EDGES

    def offer(self, frame: bytes, now: float) -> bool:
        """Take a received frame; True when it was queued (timer may need re-arming)."""
        p = self.p
        self.rx_packets += 1
        self.rx_bytes += len(frame) - VNET_HDR_LEN
        if p.loss and (p.loss >= 1.0 or self.rng.random() < p.loss):
            self.dropped_loss += 1
            return False
        q = self.queue
        if len(q) >= p.limit:
            self.dropped_limit += 1
            return False
        t = now + p.delay_s
        if p.jitter_s:
            t += self.rng.uniform(-p.jitter_s, p.jitter_s)
            if t < now:
                t = now
        if t < self.last:  # FIFO: never overtake the frame ahead
            t = self.last
        if p.rate_bps:
            t += wire_len(frame) / p.rate_bps
        self.last = t
        if not q and t <= now:
            self.send(frame, t)
            return False
        q.append((t, frame))
        return True

    def send(self, frame: bytes, due: float) -> None:
        late = time.monotonic() - due
        self.late_n += 1
        self.late_sum += late
        self.late_sq += late * late
        if late > self.late_max:
            self.late_max = late
        self.late_hist[bisect.bisect_left(LATE_EDGES, late)] += 1
        try:
            self.tx.send(frame)
        except OSError:
            # ENOBUFS/ENETDOWN/EMSGSIZE: the frame is lost, like a full device queue would lose it.
            self.tx_errors += 1
            return
        self.tx_packets += 1
        self.tx_bytes += len(frame) - VNET_HDR_LEN

    def flush(self, now: float, lead: float = 0.0) -> float | None:
        """Send every frame due by ``now + lead``; return the next departure time or None when empty."""
        q = self.queue
        horizon = now + lead
        while q:
            t, frame = q[0]
            if t > horizon:
                return t
            q.popleft()
            self.send(frame, t)
        return None

    def stats(self) -> dict[str, Any]:
        return {
            "rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes,
            "dropped_loss": self.dropped_loss, "dropped_limit": self.dropped_limit,
            "tx_errors": self.tx_errors, "queued": len(self.queue),
            "late_n": self.late_n, "late_sum_ms": self.late_sum * 1e3, "late_sq_ms2": self.late_sq * 1e6,
            "late_max_ms": self.late_max * 1e3, "late_hist": list(self.late_hist),
            "params": self.p.as_dict(),
        }


class ShapedLink:
    """Two middle interfaces a and b; direction ab = frames entering at a, leaving at b."""

    def __init__(self, link_id: str, a: str, b: str, pab: DirParams, pba: DirParams, seed: int | None) -> None:
        self.id, self.a, self.b = link_id, a, b
        self.sa = _packet_socket(a)
        try:
            self.sb = _packet_socket(b)
        except BaseException:
            self.sa.close()
            raise
        rng = random.Random(seed)
        self.ab = Direction("ab", self.sb, pab, rng)
        self.ba = Direction("ba", self.sa, pba, rng)

    def close(self) -> None:
        self.sa.close()
        self.sb.close()

    def stats(self) -> dict[str, Any]:
        return {"id": self.id, "a": self.a, "b": self.b, "ab": self.ab.stats(), "ba": self.ba.stats()}


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _TimerFd:
    """A CLOCK_MONOTONIC timerfd armed at absolute times (ctypes: Python 3.11 has no os.timerfd_*)."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = self.libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        self.armed: float | None = None
        self._spec = _Itimerspec()
        # Default timer slack (50 us) would be added to every wake-up; ask for 1 us.
        self.libc.prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)

    def arm(self, when: float | None) -> None:
        """Arm at monotonic time `when` (seconds); None disarms."""
        if when == self.armed:
            return
        self.armed = when
        spec = self._spec
        if when is None:
            spec.it_value.tv_sec = spec.it_value.tv_nsec = 0
        else:
            ns = max(int(when * 1e9), 1)
            spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(ns, 1_000_000_000)
        if self.libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def clear(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        self.armed = None

    def close(self) -> None:
        os.close(self.fd)


class ShaperServer:
    """The event loop: packet sockets, the timer, the control socket and its clients."""

    def __init__(self, control_path: str) -> None:
        self.control_path = control_path
        self.links: dict[str, ShapedLink] = {}
        self.by_fd: dict[int, tuple[ShapedLink, Direction]] = {}
        self.busy: set[Direction] = set()
        self.lead = 0.0  # s: how much earlier than the next departure the timer is armed
        self._fired_at: float | None = None  # the time the timer was armed for, when it fired
        self.clients: dict[int, tuple[socket.socket, bytearray]] = {}
        self.running = True
        self.ep = select.epoll()
        self.timer = _TimerFd()
        self.ep.register(self.timer.fd, select.EPOLLIN)
        self.rxbuf = bytearray(RX_BUF)
        self.rxview = memoryview(self.rxbuf)
        # Signals: the handler only flips a flag; the wakeup pipe makes epoll return at once.
        self._wr, self._ww = os.pipe()
        os.set_blocking(self._wr, False)
        os.set_blocking(self._ww, False)
        self.ep.register(self._wr, select.EPOLLIN)
        Path(control_path).parent.mkdir(parents=True, exist_ok=True)
        if os.path.exists(control_path):
            if _socket_alive(control_path):
                raise ShaperError(f"another shaper already listens on {control_path}")
            os.unlink(control_path)
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.bind(control_path)
        os.chmod(control_path, 0o600)
        self.ctl.listen(16)
        self.ctl.setblocking(False)
        self.ep.register(self.ctl.fileno(), select.EPOLLIN)
        self.pidfile = _pidfile_for(control_path)
        Path(self.pidfile).write_text(f"{os.getpid()}\n")

    # -- control -------------------------------------------------------------------------------

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        """Execute one control request; raises ValueError/OSError/KeyError on bad requests."""
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "links": len(self.links), "lead_ms": self.lead * 1e3,
                    "late_edges_ms": [e * 1e3 for e in LATE_EDGES]}
        if op == "add":
            link_id = str(req["id"])
            if link_id in self.links:
                raise ValueError(f"link {link_id} already exists")
            limit = int(req.get("limit", DEFAULT_LIMIT))
            both = req.get("params") or {}
            pab = DirParams.from_dict({**both, **(req.get("params_ab") or {})}, limit)
            pba = DirParams.from_dict({**both, **(req.get("params_ba") or {})}, limit)
            link = ShapedLink(link_id, str(req["a"]), str(req["b"]), pab, pba, req.get("seed"))
            self.links[link_id] = link
            self.by_fd[link.sa.fileno()] = (link, link.ab)
            self.by_fd[link.sb.fileno()] = (link, link.ba)
            self.ep.register(link.sa.fileno(), select.EPOLLIN)
            self.ep.register(link.sb.fileno(), select.EPOLLIN)
            return {"ok": True, "link": link.stats()}
        if op == "set":
            link = self._link(req)
            direction = req.get("direction")
            if direction not in (None, "ab", "ba"):
                raise ValueError(f"direction must be 'ab', 'ba' or null, got {direction!r}")
            for d in (link.ab, link.ba):
                if direction in (None, d.name):
                    d.p = DirParams.from_dict(req.get("params") or {}, int(req.get("limit", d.p.limit)))
            return {"ok": True, "link": link.stats()}
        if op == "remove":
            link = self._link(req)
            self._remove(link)
            return {"ok": True}
        if op == "stats":
            if req.get("id") is not None:
                return {"ok": True, "link": self._link(req).stats()}
            return {"ok": True, "links": {k: v.stats() for k, v in self.links.items()}}
        if op == "shutdown":
            self.running = False
            return {"ok": True}
        raise ValueError(f"unknown op {op!r}")

    def _link(self, req: dict[str, Any]) -> ShapedLink:
        link_id = str(req.get("id"))
        if link_id not in self.links:
            raise KeyError(f"no link {link_id}")
        return self.links[link_id]

    def _remove(self, link: ShapedLink) -> None:
        for s in (link.sa, link.sb):
            fd = s.fileno()
            self.by_fd.pop(fd, None)
            try:
                self.ep.unregister(fd)
            except OSError:
                pass
        self.busy.discard(link.ab)
        self.busy.discard(link.ba)
        link.close()
        self.links.pop(link.id, None)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.ctl.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            self.clients[conn.fileno()] = (conn, bytearray())
            self.ep.register(conn.fileno(), select.EPOLLIN)

    def _client_io(self, fd: int) -> None:
        conn, buf = self.clients[fd]
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client(fd)
            return
        buf += data
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            try:
                reply = self.handle(json.loads(line))
            except (ValueError, KeyError, TypeError, OSError) as e:
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            try:
                conn.setblocking(True)
                conn.sendall(json.dumps(reply).encode() + b"\n")
                conn.setblocking(False)
            except OSError:
                self._drop_client(fd)
                return

    def _drop_client(self, fd: int) -> None:
        conn, _ = self.clients.pop(fd)
        try:
            self.ep.unregister(fd)
        except OSError:
            pass
        conn.close()

    # -- data path -----------------------------------------------------------------------------

    def _receive(self, fd: int) -> None:
        link, d = self.by_fd[fd]
        sock = link.sa if d is link.ab else link.sb
        buf = self.rxbuf
        view = self.rxview
        queued = False
        offset = time.time() - time.monotonic()
        anc_size = socket.CMSG_SPACE(_TIMESPEC.size)
        for _ in range(RX_BUDGET):
            try:
                n, ancdata, _flags, _addr = sock.recvmsg_into([buf], anc_size)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.ENETDOWN, errno.EINTR):
                    continue
                # The interface vanished (link deleted under us): forget the link.
                print(f"emulab.shaper: link {link.id}: {e}; removing it", file=sys.stderr, flush=True)
                self._remove(link)
                return
            if n <= VNET_HDR_LEN:
                continue
            if d.offer(bytes(view[:n]), _arrival(ancdata, time.monotonic(), offset)):
                queued = True
        if queued:
            self.busy.add(d)

    def _flush(self) -> None:
        now = time.monotonic()
        if self._fired_at is not None:
            # The timer fired: learn how late this process gets to run after it (the wake-up lead).
            # A median tracker, not a mean: a rare stall of milliseconds must not make every
            # other frame leave early.
            lead = self.lead + (LEAD_STEP if now - self._fired_at > self.lead else -LEAD_STEP)
            self.lead = LEAD_MAX if lead > LEAD_MAX else (0.0 if lead < 0.0 else lead)
            self._fired_at = None
        lead = self.lead
        nxt: float | None = None
        for d in list(self.busy):
            t = d.flush(now, lead)
            if t is None:
                self.busy.discard(d)
            elif nxt is None or t < nxt:
                nxt = t
        self.timer.arm(None if nxt is None else nxt - lead)

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT or a shutdown request."""
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        signal.set_wakeup_fd(self._ww)
        try:
            while self.running:
                for fd, _ev in self.ep.poll(-1):
                    if fd in self.by_fd:
                        self._receive(fd)
                    elif fd == self.timer.fd:
                        self._fired_at = self.timer.armed
                        self.timer.clear()
                    elif fd == self.ctl.fileno():
                        self._accept()
                    elif fd in self.clients:
                        self._client_io(fd)
                    elif fd == self._wr:
                        try:
                            os.read(self._wr, 512)
                        except BlockingIOError:
                            pass
                self._flush()
        finally:
            signal.set_wakeup_fd(-1)
            for s, h in old.items():
                signal.signal(s, h)
            self.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.running = False

    def close(self) -> None:
        for link in list(self.links.values()):
            self._remove(link)
        for fd in list(self.clients):
            self._drop_client(fd)
        self.ctl.close()
        self.timer.close()
        self.ep.close()
        os.close(self._wr)
        os.close(self._ww)
        for path in (self.control_path, self.pidfile):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


# ---------------------------------------------------------------------------------------------
# namespace handling


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


def _enter_netns(name: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), f"setns({name}) failed")
    finally:
        os.close(fd)


def _pidfile_for(control_path: str) -> str:
    return str(Path(control_path).with_suffix(".pid"))


def _socket_alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# client side


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
    def start(cls, control_path: str | os.PathLike[str] = DEFAULT_CONTROL, netns: str = DEFAULT_NETNS,
              log_path: str | os.PathLike[str] | None = None, timeout: float = 10.0) -> Shaper:
        """Create the namespace (if needed), start the shaper in it and wait until it answers."""
        control_path = os.fspath(control_path)
        if os.path.exists(control_path) and _socket_alive(control_path):
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
        handle = cls(proc, proc.pid, control_path, netns, created)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                if created:
                    delete_netns(netns)
                raise ShaperError(f"shaper exited at start with code {proc.returncode}")
            try:
                handle.client.ping()
                return handle
            except ShaperError:
                if time.monotonic() > deadline:
                    handle.stop()
                    raise ShaperError(f"shaper did not answer on {control_path} within {timeout} s") from None
                time.sleep(0.02)

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
        for path in (self.control_path, _pidfile_for(self.control_path)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if self.owns_netns:
            delete_netns(self.netns)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emulab.shaper", description=__doc__.splitlines()[0])
    ap.add_argument("--control", default=DEFAULT_CONTROL, help="UNIX control socket path")
    ap.add_argument("--netns", default=None, help="network namespace to run in (created if missing)")
    args = ap.parse_args(argv)
    if args.netns:
        ensure_netns(args.netns)
        _enter_netns(args.netns)
    _tune_process()
    server = ShaperServer(args.control)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

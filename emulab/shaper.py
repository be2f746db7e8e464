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
line each (see ``emulab.shaper_control.ShaperClient``). Operations: ping, add, set, remove, stats, shutdown.

Run: ``python -m emulab.shaper --control /run/emulab/shaper.sock [--netns emulab-shaper]`` (the
default instance's names; see emulab.paths for another instance's);
from Python ``emulab.shaper_control.Shaper.start(control_path, netns=...)``. SIGTERM/SIGINT end the process cleanly
(control socket and pid file removed).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import errno
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulab import paths
from emulab.shaper_control import (
    DEFAULT_CONTROL,
    DEFAULT_LIMIT,
    ShaperError,
    ensure_netns,
    enter_netns,
    pidfile_for,
    socket_alive,
)
from emulab.shaper_io import (
    TIMESPEC,
    TimerFd,
    arrival,
    packet_socket,
    tune_process,
)

VNET_HDR_LEN = 10  # struct virtio_net_hdr without num_buffers
_VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
ETH_OVERHEAD = 0  # rate counts L2 frame bytes, like netem (no preamble/IFG)

RX_BUF = 256 * 1024  # > 64 KiB GSO frames (+ BIG TCP headroom)
RX_BUDGET = 64  # frames read per readiness event before timers are looked at again
LEAD_MAX = 0.0005  # s; the wake-up lead never exceeds this, so no frame leaves more than 0.5 ms early
#: Upper edges (seconds) of the lateness histogram buckets; the last bucket is open.
LATE_EDGES = (-0.0005, -0.0002, -0.0001, -0.00005, -0.00002, 0.0, 0.00002, 0.00005, 0.0001, 0.0002,
              0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
LEAD_STEP = 0.000002  # s; the lead follows the median wake-up latency in steps of 2 us


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
        self.sa = packet_socket(a)
        try:
            self.sb = packet_socket(b)
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
        self.timer = TimerFd()
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
            if socket_alive(control_path):
                raise ShaperError(f"another shaper already listens on {control_path}")
            os.unlink(control_path)
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl.bind(control_path)
        os.chmod(control_path, 0o600)
        self.ctl.listen(16)
        self.ctl.setblocking(False)
        self.ep.register(self.ctl.fileno(), select.EPOLLIN)
        self.pidfile = pidfile_for(control_path)
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
        anc_size = socket.CMSG_SPACE(TIMESPEC.size)
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
            if d.offer(bytes(view[:n]), arrival(ancdata, time.monotonic(), offset)):
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m emulab.shaper", description=__doc__.splitlines()[0])
    ap.add_argument("--control", default=None,
                    help=f"UNIX control socket path (default: the instance's, {DEFAULT_CONTROL} for the default one)")
    ap.add_argument("--netns", default=None, help="network namespace to run in (created if missing)")
    args = ap.parse_args(argv)
    if args.netns:
        ensure_netns(args.netns)
        enter_netns(args.netns)
    tune_process()
    server = ShaperServer(args.control or str(paths.shaper_socket()))
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

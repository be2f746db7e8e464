"""Kernel interfaces of the userspace link shaper (emulab.shaper): AF_PACKET sockets with virtio-net
headers and kernel receive timestamps, an absolute CLOCK_MONOTONIC timerfd through ctypes, and the
process tuning (timer slack, priority) the shaper applies to itself.

Hand-written on ctypes/socket because the shaper's timing needs nanosecond timers and receive
timestamps that neither asyncio nor a packet library exposes (see emulab.shaper's docstring).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import struct

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
SOCK_BUF = 8 * 1024 * 1024
CLOCK_MONOTONIC = 1
TFD_NONBLOCK = 0o4000
TFD_CLOEXEC = 0o2000000
TFD_TIMER_ABSTIME = 1
PR_SET_TIMERSLACK = 29
SO_TIMESTAMPNS = 35  # SCM_TIMESTAMPNS is the same number
TIMESPEC = struct.Struct("@qq")


def arrival(ancdata: list[tuple[int, int, bytes]], fallback: float, offset: float) -> float:
    """Monotonic arrival time of a frame from its kernel timestamp (CLOCK_REALTIME + offset)."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(data)
            t = sec + nsec * 1e-9 - offset
            return t if t <= fallback else fallback
    return fallback


def tune_process() -> None:
    """Wake up on time: a scheduling boost (best effort, needs root; TimerFd sets the timer slack)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except OSError:
        pass


def packet_socket(ifname: str) -> socket.socket:
    """AF_PACKET socket bound to ifname, with vnet headers, big buffers, not seeing its own sends."""
    # Protocol 0 at creation, ETH_P_ALL at bind: a socket created for ETH_P_ALL is hooked to every
    # interface at once, and bind then unhooks it, which waits for an RCU grace period (~12 ms a
    # socket here; two sockets per shaped link, a testbed start adds them one after the other).
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
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


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class TimerFd:
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

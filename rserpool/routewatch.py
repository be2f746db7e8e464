"""Network changes: ``RouteWatcher`` wakes its waiters when this host's IPv4 routes, addresses or
links change (rtnetlink multicast groups), and ``routable(host)`` asks the kernel whether a route to
a host exists now, so a user of RSerPool connections can react when the host loses its network
(e.g. a UE out of coverage), as mobile applications do on a connectivity change.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket

log = logging.getLogger(__name__)

_RTMGRP_LINK, _RTMGRP_IPV4_IFADDR, _RTMGRP_IPV4_ROUTE = 0x1, 0x10, 0x40


def routable(host: str) -> bool:
    """Whether the kernel has a route to ``host`` now (a UDP connect is a route lookup; nothing is sent)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return True  # a name: nothing to decide from the routing table
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
        except OSError as exc:
            return exc.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH)
    return True


class RouteWatcher:
    """Wakes ``changed()`` waiters whenever IPv4 routes, addresses or links of this host change.

    One rtnetlink socket subscribed to the IPv4 route, address and link groups (IPv6 changes are
    not watched: the testbed's networks are IPv4); the messages are only counted, not parsed: a
    waiter re-checks what it cares about (``routable``). Where rtnetlink is unavailable (not Linux)
    the watcher stays silent and ``active`` is False. ``shared()`` / ``release()`` give every user
    in one event loop the same watcher, so N pool users in a process share one socket.
    """

    _shared: dict[asyncio.AbstractEventLoop, tuple[RouteWatcher, int]] = {}

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        self.changes = 0

    @classmethod
    def shared(cls) -> RouteWatcher:
        """This event loop's watcher, started on first use; hand it back with ``release()``."""
        loop = asyncio.get_running_loop()
        watcher, users = cls._shared.get(loop, (None, 0))
        if watcher is None:
            watcher = cls()
            watcher.start()
        cls._shared[loop] = (watcher, users + 1)
        return watcher

    def release(self) -> None:
        """One user of a ``shared()`` watcher is done; the last one closes it."""
        for loop, (watcher, users) in list(self._shared.items()):
            if watcher is self:
                if users > 1:
                    self._shared[loop] = (watcher, users - 1)
                else:
                    del self._shared[loop]
                    self.close()
                return
        self.close()

    @property
    def active(self) -> bool:
        return self._sock is not None

    def start(self) -> None:
        if self._sock is not None:
            return
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        except (OSError, AttributeError) as exc:
            log.info("no rtnetlink (%s): network changes are noticed by timeouts only", exc)
            return
        try:
            sock.bind((0, _RTMGRP_LINK | _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV4_ROUTE))
            sock.setblocking(False)
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(sock.fileno(), self._readable)
        except OSError as exc:
            sock.close()
            log.info("cannot watch rtnetlink (%s): network changes are noticed by timeouts only", exc)
            return
        self._sock = sock

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                if not self._sock.recv(65536):
                    break
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ENOBUFS: events were dropped; a change happened all the same
                break
        self.changes += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def changed(self) -> None:
        """Return at the next change of routes, addresses or links."""
        await self._event.wait()

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

"""UDP multicast for RSerPool announces: ASAP Server Announces (RSPLIB's default group
239.0.0.50:3863) and ENRP Presences (239.0.0.51:9901) use plain UDP.

A namespace without a multicast route gives ENODEV on join and ENETUNREACH on send: both are
reported once and handled (``interface=`` pins the interface).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from rserpool.transport import ASAP_ANNOUNCE_GROUP, ASAP_PORT, DEFAULT_ANNOUNCE_TTL

log = logging.getLogger(__name__)


def _log_once(cache: set[tuple[str, int]], key: tuple[str, int], msg: str, *args: object) -> None:
    if key not in cache:
        cache.add(key)
        log.warning(msg, *args)


class MulticastSender:
    """Sends datagrams to a multicast group; "no route" is reported once, not raised."""

    def __init__(self, group: str = ASAP_ANNOUNCE_GROUP, port: int = ASAP_PORT,
                 interface: str | None = None, ttl: int = DEFAULT_ANNOUNCE_TTL, loop_back: bool = True) -> None:
        self.group = group
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1 if loop_back else 0)
        if interface:
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        self._warned: set[tuple[str, int]] = set()
        self.sent = 0

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendto(data, (self.group, self.port))
        except OSError as exc:
            # ENETUNREACH: no route for 224.0.0.0/4 (typical in a fresh namespace); set an interface.
            _log_once(self._warned, ("send", exc.errno or 0),
                      "multicast send to %s:%d failed: %s (add a 224.0.0.0/4 route or pass an interface)",
                      self.group, self.port, exc.strerror or exc)
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self.sock.close()


class _DatagramProto(asyncio.DatagramProtocol):
    def __init__(self, callback: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.callback = callback

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            self.callback(data, (addr[0], addr[1]))
        except Exception:  # a bad announce must not kill the listener
            log.exception("error handling datagram from %s", addr)


@dataclass
class MulticastListener:
    """Joins a multicast group and hands every datagram to ``callback(data, (src_ip, src_port))``."""

    transport: asyncio.DatagramTransport
    sock: socket.socket
    joined: bool

    def close(self) -> None:
        self.transport.close()


async def listen_multicast(callback: Callable[[bytes, tuple[str, int]], None],
                           group: str = ASAP_ANNOUNCE_GROUP, port: int = ASAP_PORT,
                           interface: str | None = None) -> MulticastListener:
    """Listen for datagrams to ``group:port``; several listeners per host may share the port.

    Joining on INADDR_ANY fails with ENODEV when there is no multicast route; then loopback is
    tried so that same-host registrars are still found, and the failure is logged once.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with contextlib.suppress(AttributeError, OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("", port))
    joined = False
    tried = [interface] if interface else ["0.0.0.0", "127.0.0.1"]
    for iface in tried:
        try:
            mreq = socket.inet_aton(group) + socket.inet_aton(iface)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            joined = True
            break
        except OSError as exc:
            log.info("cannot join %s on %s: %s", group, iface, exc.strerror or exc)
    if not joined:
        log.warning("could not join multicast group %s: registrar announces will not be heard", group)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _DatagramProto(callback), sock=sock)
    return MulticastListener(transport, sock, joined)

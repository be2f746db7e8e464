"""RSPLIB's Component Status Protocol (CSP): status reports of registrars, pool elements and pool
users sent over UDP to a monitor (RSPLIB's ``cspmonitor``, emulab's dashboard).

Wire format (RSPLIB ``src/componentstatuspackets.h``, ``src/rserpool-csp.h``; Wireshark's
``componentstatusprotocol`` dissector on UDP port 2960), packed, network byte order:

* common header (24 bytes): Type u8 (1 = report), Flags u8 (bit 0 = final: the component is
  leaving), Length u16, Version u32 (0x0200), SenderID u64, SenderTimeStamp u64 (µs since the
  component started reporting);
* report (264 bytes more, 288 in all): ReportInterval u32 (µs), Location char[128] (RSPLIB: "host:
  addr:port, addr", the component's socket), Status char[128] (RSPLIB's PEs and PUs: "3 Sessions", its
  registrar: "5[2] PEs in 1 Pools, 2 Peers", [own PEs]), Workload u16 (fraction × 0xFFFE;
  0xFFFF = none reported), Associations u16, then that many associations of 24 bytes: ReceiverID
  u64, Duration u64 (µs; all ones = unknown), Flags u16, ProtocolID u16 (IPPROTO_SCTP 132, TCP 6),
  PPID u32;
* a component identifier is ``group << 56 | object`` with group 1 = registrar, 2 = pool element,
  3 = pool user and a 56-bit object (a PR's or PE's 32-bit identifier, a PU's random number).

Length is the whole datagram (RSPLIB 3.4.4's ``rspregistrar`` sends 288 with no associations, seen
in the real-kernel lane; some RSPLIB sources store ``htonl(length)`` into the 16-bit field, which
gives 0 on little-endian hosts): ``cspmonitor`` and Wireshark ignore it, so the decoder accepts any
value. ``cspmonitor`` takes a report only if the datagram is exactly 288 + 24 × Associations bytes
long; so does the decoder.

Components report every ``interval`` (RSPLIB's ``-cspinterval``, milliseconds) to ``server``
(``-cspserver=ADDR:PORT``); the environment variables ``CSP_SERVER`` and ``CSP_INTERVAL`` give the
defaults, as for RSPLIB's tools. ``configure()`` sets the process-wide monitor; registrars, pool
elements and pool users started afterwards report on their own (``attach()`` is called from their
``start()``). A final report (flag F, no status) goes out when they stop.

``CSPReceiver`` is the monitor side: it keeps the latest report per component (dropping those
that said goodbye or fell silent, as ``cspmonitor`` does) for the dashboard and for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

CSP_PORT = 2960
CSP_VERSION = 0x0200
CSPT_REPORT = 0x01
CSPF_FINAL = 0x01
LOCATION_SIZE = 128
STATUS_SIZE = 128
WORKLOAD_NONE = 0xFFFF
DURATION_UNKNOWN = 0xFFFFFFFFFFFFFFFF

GROUP_REGISTRAR = 0x0001
GROUP_POOLELEMENT = 0x0002
GROUP_POOLUSER = 0x0003
GROUP_NAMES = {GROUP_REGISTRAR: "registrar", GROUP_POOLELEMENT: "pool element", GROUP_POOLUSER: "pool user"}
OBJECT_MASK = 0x00FFFFFFFFFFFFFF

IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_SCTP = 132
PPID_ASAP = 11
PPID_ENRP = 12

HEADER = struct.Struct("!BBHIQQ")
REPORT = struct.Struct(f"!BBHIQQI{LOCATION_SIZE}s{STATUS_SIZE}sHH")
ASSOCIATION = struct.Struct("!QQHHI")
assert HEADER.size == 24 and REPORT.size == 288 and ASSOCIATION.size == 24

ENV_SERVER = "CSP_SERVER"
ENV_INTERVAL = "CSP_INTERVAL"
DEFAULT_INTERVAL_MS = 1000  # used when a server is given without an interval
PURGE_INTERVAL = 30.0  # cspmonitor's default -purgeinterval [s]


class CSPError(ValueError):
    """A datagram that is not a Component Status report."""


def component_id(group: int, obj: int) -> int:
    """RSPLIB's CID_COMPOUND: the 16-bit group in the top byte(s), the 56-bit object below."""
    return ((group & 0xFFFF) << 56 | (obj & OBJECT_MASK)) & 0xFFFFFFFFFFFFFFFF


def id_group(cid: int) -> int:
    return (cid >> 56) & 0xFFFF


def id_object(cid: int) -> int:
    return cid & OBJECT_MASK


def describe_id(cid: int) -> str:
    """The label ``cspmonitor`` prints for a component: "PR $0000abcd", "PE $...", "PU $..."."""
    group, obj = id_group(cid), id_object(cid)
    if group == GROUP_REGISTRAR:
        return f"PR ${obj:08x}"
    if group == GROUP_POOLELEMENT:
        return f"PE ${obj:08x}"
    if group == GROUP_POOLUSER:
        return f"PU ${obj:014x}"
    return f"ID ${obj:14x}"


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _field(text: str, size: int) -> bytes:
    # at most size-1 bytes, so the receiver always finds a terminating NUL (cspmonitor forces one)
    data = text.encode("utf-8")[: size - 1]
    return data.ljust(size, b"\0")


@dataclass(frozen=True, slots=True)
class Association:
    """One association of a component: to whom (a component id), for how long, over what."""

    receiver_id: int
    duration_us: int | None = None  # None: unknown (all ones on the wire)
    protocol_id: int = IPPROTO_SCTP
    ppid: int = 0
    flags: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"receiver_id": self.receiver_id, "receiver": describe_id(self.receiver_id),
                "duration_us": self.duration_us, "protocol_id": self.protocol_id, "ppid": self.ppid,
                "flags": self.flags}


@dataclass(frozen=True, slots=True)
class ComponentReport:
    """A decoded (or to-be-encoded) Component Status report."""

    sender_id: int
    sender_timestamp_us: int = 0
    report_interval_us: int = DEFAULT_INTERVAL_MS * 1000
    location: str = ""
    status: str = ""
    workload: float | None = None  # 0..1, None: not reported
    associations: tuple[Association, ...] = ()
    final: bool = False
    length_field: int = 0  # as received (RSPLIB's little-endian hosts send 0); ignored on encode

    @property
    def group(self) -> int:
        return id_group(self.sender_id)

    @property
    def kind(self) -> str:
        return GROUP_NAMES.get(self.group, f"group {self.group}")

    @property
    def label(self) -> str:
        return describe_id(self.sender_id)

    def encode(self) -> bytes:
        length = REPORT.size + ASSOCIATION.size * len(self.associations)
        if self.workload is None or self.workload < 0:
            wl = WORKLOAD_NONE
        else:
            wl = min(0xFFFE, round(self.workload * 0xFFFE))  # CSR_SET_WORKLOAD
        out = [REPORT.pack(CSPT_REPORT, CSPF_FINAL if self.final else 0, length & 0xFFFF, CSP_VERSION,
                           self.sender_id, self.sender_timestamp_us & 0xFFFFFFFFFFFFFFFF,
                           min(self.report_interval_us, 0xFFFFFFFF), _field(self.location, LOCATION_SIZE),
                           _field(self.status, STATUS_SIZE), wl, len(self.associations))]
        for a in self.associations:
            dur = DURATION_UNKNOWN if a.duration_us is None else min(a.duration_us, DURATION_UNKNOWN - 1)
            out.append(ASSOCIATION.pack(a.receiver_id, dur, a.flags, a.protocol_id, a.ppid))
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> ComponentReport:
        if len(data) < REPORT.size:
            raise CSPError(f"{len(data)} bytes: a report has at least {REPORT.size}")
        (typ, flags, length, version, sender, stamp, interval, loc, status, wl,
         count) = REPORT.unpack_from(data, 0)
        if typ != CSPT_REPORT:
            raise CSPError(f"type {typ} is not a report (1)")
        if version != CSP_VERSION:
            raise CSPError(f"version 0x{version:08x} is not 0x{CSP_VERSION:04x}")
        if len(data) != REPORT.size + ASSOCIATION.size * count:
            raise CSPError(f"{len(data)} bytes do not hold exactly {count} associations")
        assocs = []
        for i in range(count):
            rid, dur, aflags, proto, ppid = ASSOCIATION.unpack_from(data, REPORT.size + i * ASSOCIATION.size)
            assocs.append(Association(rid, None if dur == DURATION_UNKNOWN else dur, proto, ppid, aflags))
        return cls(sender, stamp, interval, _text(loc), _text(status),
                   None if wl == WORKLOAD_NONE else wl / 0xFFFE, tuple(assocs), bool(flags & CSPF_FINAL), length)

    def to_dict(self) -> dict[str, Any]:
        return {"sender_id": self.sender_id, "label": self.label, "kind": self.kind,
                "object": id_object(self.sender_id), "sender_timestamp_us": self.sender_timestamp_us,
                "report_interval_us": self.report_interval_us, "location": self.location,
                "status": self.status, "workload": self.workload, "final": self.final,
                "associations": [a.to_dict() for a in self.associations]}


# ---------------------------------------------------------------------------------------------
# Sender


def parse_server(text: str) -> tuple[str, int]:
    """``ADDR[:PORT]`` or ``[V6ADDR]:PORT`` of a monitor (port 2960 by default)."""
    from rserpool.transport import parse_endpoint

    return parse_endpoint(text, CSP_PORT)


@dataclass
class CSPConfig:
    """Where and how often to report."""

    server: tuple[str, int]
    interval_ms: int = DEFAULT_INTERVAL_MS

    @classmethod
    def from_options(cls, server: str | None, interval_ms: int | None = None,
                     environ: dict[str, str] | None = None) -> CSPConfig | None:
        """Options first, then ``CSP_SERVER``/``CSP_INTERVAL``; None when no server is named."""
        env = os.environ if environ is None else environ
        server = server or env.get(ENV_SERVER) or None
        if not server:
            return None
        if interval_ms is None:
            raw = env.get(ENV_INTERVAL)
            try:
                interval_ms = int(raw) if raw else DEFAULT_INTERVAL_MS
            except ValueError:
                raise ValueError(f"{ENV_INTERVAL}={raw!r} is not a number of milliseconds") from None
        if interval_ms <= 0:
            raise ValueError(f"CSP interval {interval_ms} ms must be > 0")
        return cls(parse_server(server), interval_ms)


Snapshot = Callable[[], tuple[str, str, float | None, tuple[Association, ...]]]
"""What a reporter asks its component each time: (location, status, workload, associations)."""


class CSPReporter:
    """Sends a component's report every ``interval_ms`` to a monitor, and a final one at ``stop()``."""

    def __init__(self, config: CSPConfig, sender_id: int | Callable[[], int], snapshot: Snapshot) -> None:
        self.config = config
        self._sender_id = sender_id
        self.snapshot = snapshot
        self.sent = 0
        self._started = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._errors_logged = False
        host, _port = config.server
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    @property
    def sender_id(self) -> int:
        return self._sender_id() if callable(self._sender_id) else self._sender_id

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"csp-{self.sender_id:x}")

    async def _loop(self) -> None:
        while True:
            self.send_report()
            await asyncio.sleep(self.config.interval_ms / 1000.0)

    def report(self, final: bool = False) -> ComponentReport:
        stamp = int((time.monotonic() - self._started) * 1e6)
        if final:  # RSPLIB's final report: no status, location or associations, workload 0
            return ComponentReport(self.sender_id, stamp, self.config.interval_ms * 1000, workload=0.0, final=True)
        location, status, workload, assocs = self.snapshot()
        return ComponentReport(self.sender_id, stamp, self.config.interval_ms * 1000, location, status,
                               workload, assocs)

    def send_report(self, final: bool = False) -> None:
        try:
            data = self.report(final).encode()
            self._sock.sendto(data, self.config.server)
            self.sent += 1
        except OSError as exc:  # monitor unreachable: keep running, say so once
            if not self._errors_logged:
                log.warning("CSP report to %s:%d failed: %s", *self.config.server, exc)
                self._errors_logged = True
        except Exception:  # a snapshot that fails must not stop the component
            log.exception("CSP report of %s failed", describe_id(self.sender_id))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self.send_report(final=True)
        self._sock.close()


# ---------------------------------------------------------------------------------------------
# What registrars, pool elements and pool users report


def location_of(addresses: list[str] | tuple[str, ...] = (), port: int | None = None) -> str:
    """RSPLIB's location string: "hostname: addr:port, addr" (the component's socket; the port with
    the first address only, as RSPLIB's getComponentLocation() writes it)."""
    host = socket.gethostname()
    addrs = [a for a in addresses if a and a not in ("0.0.0.0", "::")]
    if not addrs:
        port = None
        with contextlib.suppress(OSError):
            addrs = sorted({i[4][0] for i in socket.getaddrinfo(host, None, socket.AF_INET)} - {"127.0.0.1"})
    if addrs and port:
        addrs[0] = f"[{addrs[0]}]:{port}" if ":" in addrs[0] else f"{addrs[0]}:{port}"
    return f"{host}: {', '.join(addrs)}" if addrs else host


def _local_endpoint(conn: Any) -> tuple[str, int] | None:
    """The local address and port of a message connection (TCP transport or SCTP socket), if any."""
    with contextlib.suppress(Exception):
        if getattr(conn, "transport", None) is not None:
            name = conn.transport.get_extra_info("sockname")
            return str(name[0]), int(name[1])
        if getattr(conn, "sock", None) is not None:
            name = conn.sock.getsockname()
            return str(name[0]), int(name[1])
    return None


def _proto(kind: str) -> int:
    return IPPROTO_SCTP if kind == "sctp" else IPPROTO_TCP


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def registrar_snapshot(reg: Any) -> Snapshot:
    """A registrar: its PEs ([those it is home for]), pools and peers, in RSPLIB's registrar's words;
    one association per connected ENRP peer."""
    started = time.monotonic()

    def snap() -> tuple[str, str, float | None, tuple[Association, ...]]:
        hs = reg.handlespace
        pools = hs.pools()
        entries = [e for p in pools for e in hs.entries(p)]
        own = sum(1 for e in entries if e.home_pr == reg.identifier)
        assocs = []
        enrp = getattr(reg, "enrp", None)
        peers = list((getattr(enrp, "peers", {}) or {}).values())
        for peer in peers:
            if peer.conn() is not None:
                assocs.append(Association(component_id(GROUP_REGISTRAR, peer.identifier),
                                          int((time.monotonic() - started) * 1e6), _proto(reg.kind), PPID_ENRP))
        listen = reg.addresses()
        location = location_of([h for h, _p in listen], listen[0][1] if listen else None)
        status = f"{len(entries)}[{own}] PEs in {len(pools)} Pools, {len(peers)} Peers"
        return location, status, None, tuple(assocs)

    return snap


def pe_snapshot(pe: Any) -> Snapshot:
    """A pool element: its sessions, its home registrar, its load (adaptive policies only, as RSPLIB)."""
    from rserpool.policytypes import ADAPTIVE_POLICIES, MAX_LOAD

    registered_at: list[float] = []

    def snap() -> tuple[str, str, float | None, tuple[Association, ...]]:
        assocs = []
        ch = pe.channel
        if pe.registered.is_set() and ch is not None and ch.is_open:
            # home_registrar stays 0 until the registrar names itself (keep-alive), as in RSPLIB
            if not registered_at:
                registered_at.append(time.monotonic())
            assocs.append(Association(component_id(GROUP_REGISTRAR, pe.home_registrar),
                                      int((time.monotonic() - registered_at[0]) * 1e6), _proto(pe.kind), PPID_ASAP))
        elif registered_at:
            registered_at.clear()
        pol = pe.policy
        workload = pol.load / MAX_LOAD if pol.policy_type in ADAPTIVE_POLICIES else None
        status = _plural(len(pe.sessions), "Session") if pe.registered.is_set() else "Looking for Registrar ..."
        host = pe.config.listen[0] if getattr(pe.config, "listen", None) else ""
        if not host or host in ("0.0.0.0", "::"):  # a wildcard: the address it reaches its registrar from
            host = ((_local_endpoint(ch.conn) if ch is not None else None) or ("", 0))[0]
        try:
            port = pe.port
        except Exception:  # not listening (yet)
            port = None
        return location_of([host], port), status, workload, tuple(assocs)

    return snap


def pu_snapshot(pu: Any, ppid: int = 0, status: Callable[[], str | None] | None = None) -> Snapshot:
    """A pool user: its registrar (when connected) and the PE of each open session."""

    def snap() -> tuple[str, str, float | None, tuple[Association, ...]]:
        assocs = []
        ch = getattr(pu, "_channel", None)
        if ch is not None and getattr(ch, "conn", None) is not None and not ch.closed.is_set():
            # the registrar's identifier is known only from its announces (0 otherwise, as in RSPLIB)
            server_id = next((sid for sid, eps in pu.discovery.announced().items() if ch.endpoint in eps), 0)
            assocs.append(Association(component_id(GROUP_REGISTRAR, server_id), None, _proto(pu.kind), PPID_ASAP))
        sessions = [s for s in list(getattr(pu, "_sessions", ())) if getattr(s, "pe", None) is not None
                    and getattr(s, "channel", None) is not None and not s.channel.closed.is_set()]
        for s in sessions:
            assocs.append(Association(component_id(GROUP_POOLELEMENT, s.pe.identifier), None,
                                      _proto(s.pe.protocol if s.pe.protocol in ("sctp", "tcp") else pu.kind), ppid))
        text = (status() if status is not None else None) or _plural(len(sessions), "Session")
        local = [ep for ep in (_local_endpoint(s.channel.conn) for s in sessions) if ep]
        # where the PU talks from: its session's local endpoint (RSPLIB: the session's socket)
        return (location_of([local[0][0]], local[0][1]) if local else location_of()), text, None, tuple(assocs)

    return snap


# ---------------------------------------------------------------------------------------------
# Process-wide configuration: components started after configure() report on their own

_config: CSPConfig | None = None
_ppid: int = 0  # the application PPID pool users of this process speak (for their associations)


def configure(config: CSPConfig | None, ppid: int | None = None) -> None:
    """Set (or with None clear) the monitor every later registrar, PE and PU of this process reports to."""
    global _config, _ppid
    _config = config
    if ppid is not None:
        _ppid = ppid


def configured() -> CSPConfig | None:
    return _config


def attach(component: Any) -> CSPReporter | None:
    """Start reporting for a Registrar, PoolElement or PoolUser if a monitor is configured (else None).

    Called from their ``start()``; the caller keeps the reporter and ``await``s ``stop()`` on it."""
    cfg = _config
    if cfg is None:
        return None
    name = type(component).__name__
    sender: int | Callable[[], int]
    if name == "Registrar" or hasattr(component, "handlespace"):
        sender, snap = (lambda: component_id(GROUP_REGISTRAR, component.identifier)), registrar_snapshot(component)
    elif hasattr(component, "home_registrar"):
        # a PE may pick a new identifier when its first is taken: ask each time
        sender, snap = (lambda: component_id(GROUP_POOLELEMENT, component.identifier)), pe_snapshot(component)
    else:
        sender = component_id(GROUP_POOLUSER, random.getrandbits(56) or 1)
        snap = pu_snapshot(component, _ppid, getattr(component, "csp_status", None))
    reporter = CSPReporter(cfg, sender, snap)
    reporter.start()
    return reporter


async def detach(reporter: CSPReporter | None) -> None:
    if reporter is not None:
        await reporter.stop()


def click_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--cspserver ADDR:PORT`` and ``--cspinterval MS`` (RSPLIB's names; env CSP_SERVER/CSP_INTERVAL)."""
    import click

    f = click.option("--cspinterval", type=click.IntRange(1), default=None,
                     help=f"Component status report interval [ms] (env {ENV_INTERVAL}; "
                          f"default {DEFAULT_INTERVAL_MS}).")(f)
    f = click.option("--cspserver", default=None,
                     help=f"Send Component Status reports to this monitor ADDR[:PORT] (UDP, port {CSP_PORT} "
                          f"by default; env {ENV_SERVER}), e.g. RSPLIB's cspmonitor.")(f)
    return f


def configure_from_options(cspserver: str | None, cspinterval: int | None, ppid: int | None = None) -> None:
    """For the CLIs: ``configure()`` from the click options and the environment (click errors on bad input)."""
    import click

    try:
        configure(CSPConfig.from_options(cspserver, cspinterval), ppid)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--cspserver/--cspinterval") from None


# ---------------------------------------------------------------------------------------------
# Receiver (monitor side)


@dataclass
class ReceivedReport:
    report: ComponentReport
    received_at: float  # time.monotonic()
    received_wall: float  # time.time()
    source: tuple[str, int]
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "source": f"{self.source[0]}:{self.source[1]}",
                "received": self.received_wall, "age": round(time.monotonic() - self.received_at, 3),
                "reports": self.count}


@dataclass
class CSPReceiver(asyncio.DatagramProtocol):
    """Keeps the latest report of each component heard on a UDP socket.

    ``latest()`` gives them (purged like ``cspmonitor``: a final report removes a component at once;
    silence for min(``purge_after``, 10 × its report interval) removes it too); ``on_report`` is
    called for every valid report. ``await CSPReceiver.listen(host, port)`` binds one.
    """

    purge_after: float = PURGE_INTERVAL
    on_report: Callable[[ComponentReport, tuple[str, int]], None] | None = None
    components: dict[int, ReceivedReport] = field(default_factory=dict)
    invalid: int = 0
    transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def listen(cls, host: str = "0.0.0.0", port: int = CSP_PORT, **kwargs: Any) -> CSPReceiver:
        loop = asyncio.get_running_loop()
        recv = cls(**kwargs)
        await loop.create_datagram_endpoint(lambda: recv, local_addr=(host, port), reuse_port=False)
        return recv

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]  # type: ignore[no-any-return]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.feed(data, (str(addr[0]), int(addr[1])))

    def feed(self, data: bytes, source: tuple[str, int] = ("", 0)) -> ComponentReport | None:
        """Take one datagram (also usable without a socket, e.g. from a capture)."""
        try:
            rep = ComponentReport.decode(data)
        except CSPError:
            self.invalid += 1
            return None
        if rep.final:
            self.components.pop(rep.sender_id, None)
        else:
            old = self.components.get(rep.sender_id)
            self.components[rep.sender_id] = ReceivedReport(rep, time.monotonic(), time.time(), source,
                                                            old.count + 1 if old else 1)
        if self.on_report is not None:
            self.on_report(rep, source)
        return rep

    def purge(self) -> None:
        now = time.monotonic()
        for cid, r in list(self.components.items()):
            if r.received_at + min(self.purge_after, 10 * r.report.report_interval_us / 1e6) < now:
                del self.components[cid]

    def latest(self) -> list[ReceivedReport]:
        """Current components, sorted as ``cspmonitor`` shows them (group, location, identifier)."""
        self.purge()
        return sorted(self.components.values(),
                      key=lambda r: (r.report.group, r.report.location, r.report.sender_id))

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.latest()]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

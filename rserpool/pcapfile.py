"""Read RSerPool traffic out of capture files: libpcap/pcapng → IP → SCTP DATA / TCP / UDP payloads.

Pure Python and dependency-free, meant for test vectors and `rserpool pcap`, not for line-rate capture.
Supported: classic libpcap (both byte orders, µs and ns timestamps) and pcapng (SHB/IDB/EPB/SPB);
link types Ethernet (with 802.1Q tags), Linux cooked v1/v2, raw IP and BSD loopback; IPv4 and IPv6
(extension headers skipped). SCTP: every DATA and I-DATA chunk of a packet (bundling), with its PPID;
fragmented user messages are reassembled per (association, stream, SSN/MID). TCP: per-direction
streams are reassembled by sequence number (in-order segments; retransmitted bytes are dropped) and
split into messages by the ASAP/ENRP/CalcApp/FGP length field, or, for rserpool's PPID-tagged session
channels (``rserpool.transport.Framing.TAGGED``: PPID u32, length u32 before each message), by the
tag, whose PPID then classifies the message as over SCTP. IPv4 fragments are not reassembled (such
packets are skipped and counted).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from rserpool.wire import constants as C


class CaptureError(Exception):
    """The file is not a readable capture (bad magic, truncated header or block)."""


@dataclass(frozen=True, slots=True)
class Payload:
    """One upper-layer message (or UDP datagram) found in the capture."""

    index: int  # frame number, 1-based as in Wireshark
    time: float  # seconds since the epoch
    src: str
    dst: str
    sport: int
    dport: int
    transport: str  # "sctp", "tcp" or "udp"
    ppid: int | None  # SCTP payload protocol identifier (or rserpool's TCP tag), else None
    data: bytes
    protocol: str | None  # "asap", "enrp", "calcapp", "fractal" or None when not RSerPool traffic


@dataclass
class CaptureStats:
    """What the reader saw besides the payloads it returned."""

    frames: int = 0
    skipped_frames: int = 0  # non-IP, truncated or IPv4-fragmented
    sctp_chunks: int = 0
    tcp_segments: int = 0
    udp_datagrams: int = 0
    notes: list[str] = field(default_factory=list)


# Link-layer header types (tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}


def classify(ppid: int | None, sport: int, dport: int) -> str | None:
    """Which RSerPool protocol a payload carries: by SCTP PPID first, then by well-known port."""
    if ppid is not None:
        proto = C.PPID_TO_PROTOCOL.get(ppid)
        if proto is not None:
            return proto
    for port in (dport, sport):
        if port == C.ASAP_PORT:
            return "asap"
        if port == C.ENRP_PORT:
            return "enrp"
    return None


def _frames_pcap(data: bytes) -> Iterator[tuple[float, int, bytes]]:
    endian, scale = _PCAP_MAGICS[data[:4]]
    if len(data) < 24:
        raise CaptureError("truncated pcap file header (need 24 bytes)")
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    rec = struct.Struct(endian + "IIII")
    off = 24
    n = len(data)
    while off < n:
        if off + 16 > n:
            raise CaptureError(f"truncated pcap record header at byte {off}")
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        off += 16
        if off + incl > n:
            raise CaptureError(f"truncated pcap record at byte {off}: needs {incl} bytes, {n - off} left")
        yield sec + frac * scale, linktype, data[off : off + incl]
        off += incl


def _frames_pcapng(data: bytes) -> Iterator[tuple[float, int, bytes]]:
    off = 0
    n = len(data)
    endian = "<"
    interfaces: list[tuple[int, float]] = []
    while off < n:
        if off + 12 > n:
            raise CaptureError(f"truncated pcapng block header at byte {off}")
        if data[off : off + 4] == b"\x0a\x0d\x0d\x0a":
            bom = data[off + 8 : off + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                endian = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                endian = ">"
            else:
                raise CaptureError(f"bad pcapng byte-order magic at byte {off + 8}")
            interfaces = []
        btype, blen = struct.unpack_from(endian + "II", data, off)
        if blen < 12 or blen % 4 or off + blen > n:
            raise CaptureError(f"bad or truncated pcapng block at byte {off} (length {blen})")
        body = data[off + 8 : off + blen - 4]
        if btype == 1:  # Interface Description Block
            if len(body) < 8:
                raise CaptureError(f"short pcapng interface block at byte {off}")
            linktype = struct.unpack_from(endian + "H", body, 0)[0]
            interfaces.append((linktype, _if_tsresol(body[8:], endian)))
        elif btype == 6:  # Enhanced Packet Block
            if len(body) < 20:
                raise CaptureError(f"short pcapng packet block at byte {off}")
            ifid, ts_hi, ts_lo, cap = struct.unpack_from(endian + "IIII", body, 0)
            if ifid >= len(interfaces) or 20 + cap > len(body):
                raise CaptureError(f"bad pcapng packet block at byte {off}")
            linktype, res = interfaces[ifid]
            yield ((ts_hi << 32) | ts_lo) * res, linktype, body[20 : 20 + cap]
        elif btype == 3:  # Simple Packet Block
            if not interfaces or len(body) < 4:
                raise CaptureError(f"bad pcapng simple packet block at byte {off}")
            orig = struct.unpack_from(endian + "I", body, 0)[0]
            yield 0.0, interfaces[0][0], body[4 : 4 + min(orig, len(body) - 4)]
        off += blen


def _if_tsresol(options: bytes, endian: str) -> float:
    off = 0
    while off + 4 <= len(options):
        code, length = struct.unpack_from(endian + "HH", options, off)
        if code == 0:
            break
        if code == 9 and length >= 1 and off + 5 <= len(options):
            v = options[off + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
        off += 4 + ((length + 3) & ~3)
    return 1e-6


def iter_frames(data: bytes) -> Iterator[tuple[float, int, bytes]]:
    """Yield (timestamp, linktype, frame bytes) for every packet of a pcap or pcapng file image."""
    if len(data) < 4:
        raise CaptureError("file too short to be a capture")
    if data[:4] in _PCAP_MAGICS:
        return _frames_pcap(data)
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        return _frames_pcapng(data)
    raise CaptureError(f"not a pcap or pcapng file (magic {data[:4].hex()})")


def _network_layer(linktype: int, frame: bytes) -> tuple[int, bytes] | None:
    """Return (ethertype-like version 4/6, IP packet) or None."""
    if linktype == LINKTYPE_ETHERNET:
        off = 12
        if len(frame) < 14:
            return None
        etype = struct.unpack_from("!H", frame, off)[0]
        off += 2
        while etype in (0x8100, 0x88A8) and len(frame) >= off + 4:
            etype = struct.unpack_from("!H", frame, off + 2)[0]
            off += 4
        payload = frame[off:]
    elif linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return None
        etype = struct.unpack_from("!H", frame, 14)[0]
        payload = frame[16:]
    elif linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            return None
        etype = struct.unpack_from("!H", frame, 0)[0]
        payload = frame[20:]
    elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, 12, 14):
        if not frame:
            return None
        etype = 0x0800 if frame[0] >> 4 == 4 else 0x86DD
        payload = frame
    elif linktype == LINKTYPE_NULL:
        if len(frame) < 4:
            return None
        payload = frame[4:]
        if not payload:
            return None
        etype = 0x0800 if payload[0] >> 4 == 4 else 0x86DD
    else:
        return None
    if etype == 0x0800:
        return 4, payload
    if etype == 0x86DD:
        return 6, payload
    return None


def _ip(version: int, pkt: bytes) -> tuple[str, str, int, bytes] | None:
    """Return (src, dst, protocol number, transport segment) or None when unusable."""
    if version == 4:
        if len(pkt) < 20:
            return None
        ihl = (pkt[0] & 0x0F) * 4
        total = struct.unpack_from("!H", pkt, 2)[0]
        frag = struct.unpack_from("!H", pkt, 6)[0]
        if frag & 0x3FFF:  # MF set or non-zero offset: a fragment
            return None
        if ihl < 20 or total < ihl or len(pkt) < ihl:
            return None
        src = str(ipaddress.IPv4Address(pkt[12:16]))
        dst = str(ipaddress.IPv4Address(pkt[16:20]))
        return src, dst, pkt[9], pkt[ihl : min(total, len(pkt))]
    if len(pkt) < 40:
        return None
    plen = struct.unpack_from("!H", pkt, 4)[0]
    nxt = pkt[6]
    src = str(ipaddress.IPv6Address(pkt[8:24]))
    dst = str(ipaddress.IPv6Address(pkt[24:40]))
    body = pkt[40 : 40 + plen]
    # Skip hop-by-hop, routing, destination-options extension headers; give up on fragments.
    while nxt in (0, 43, 60):
        if len(body) < 8:
            return None
        nxt, hlen = body[0], (body[1] + 1) * 8
        body = body[hlen:]
    if nxt == 44:
        return None
    return src, dst, nxt, body


@dataclass
class _TcpStream:
    next_seq: int | None = None
    buffer: bytearray = field(default_factory=bytearray)
    pending: dict[int, bytes] = field(default_factory=dict)
    tagged: bool | None = None  # rserpool's PPID-tagged framing; None: not decided yet


def _tcp_message_length(buf: bytes | bytearray) -> int:
    # ASAP, ENRP, CalcApp and FGP share a type(1) flags(1) length(2) header.
    return struct.unpack_from("!H", buf, 2)[0]


_TAG = struct.Struct("!II")


def _looks_tagged(buf: bytes | bytearray) -> bool:
    """A stream starting with a tag of a known PPID whose length is the message's own length field."""
    ppid, length = _TAG.unpack_from(buf, 0)
    return ppid in C.PPID_TO_PROTOCOL and 4 <= length <= 65536 and _tcp_message_length(buf[8:12]) == length


def read_payloads(path: str, stats: CaptureStats | None = None) -> list[Payload]:
    """Every SCTP DATA chunk, reassembled TCP message and UDP datagram of the capture, in order.

    Raises CaptureError if the file is unreadable or not a capture.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CaptureError(f"cannot read {path}: {exc.strerror}") from None
    return parse_capture(data, stats)


def parse_capture(data: bytes, stats: CaptureStats | None = None) -> list[Payload]:
    """Like read_payloads, for an in-memory capture image."""
    st = stats if stats is not None else CaptureStats()
    out: list[Payload] = []
    tcp_streams: dict[tuple[str, int, str, int], _TcpStream] = {}
    sctp_frags: dict[tuple, list[bytes]] = {}
    for index, (ts, linktype, frame) in enumerate(iter_frames(data), start=1):
        st.frames += 1
        net = _network_layer(linktype, frame)
        ip = _ip(*net) if net else None
        if ip is None:
            st.skipped_frames += 1
            continue
        src, dst, proto, seg = ip
        if proto == 132:
            _sctp(index, ts, src, dst, seg, st, out, sctp_frags)
        elif proto == 6:
            _tcp(index, ts, src, dst, seg, st, out, tcp_streams)
        elif proto == 17:
            if len(seg) < 8:
                st.skipped_frames += 1
                continue
            sport, dport, ulen = struct.unpack_from("!HHH", seg, 0)
            st.udp_datagrams += 1
            body = seg[8 : max(8, min(ulen, len(seg)))]
            out.append(Payload(index, ts, src, dst, sport, dport, "udp", None, body, classify(None, sport, dport)))
    return out


def _sctp(index: int, ts: float, src: str, dst: str, seg: bytes, st: CaptureStats, out: list[Payload],
          frags: dict[tuple, list[bytes]]) -> None:
    if len(seg) < 12:
        st.skipped_frames += 1
        return
    sport, dport, vtag = struct.unpack_from("!HHI", seg, 0)
    off = 12
    while off + 4 <= len(seg):
        ctype, cflags, clen = struct.unpack_from("!BBH", seg, off)
        if clen < 4 or off + clen > len(seg):
            st.notes.append(f"frame {index}: bad SCTP chunk length {clen} at offset {off}")
            break
        if ctype in (0, 64):  # DATA, I-DATA
            st.sctp_chunks += 1
            if ctype == 0 and clen >= 16:
                _tsn, sid, ssn, ppid = struct.unpack_from("!IHHI", seg, off + 4)
                user = seg[off + 16 : off + clen]
                key: tuple = (src, dst, sport, dport, vtag, sid, ssn)
            elif ctype == 64 and clen >= 20:
                _tsn, sid, _res, mid, ppid_or_fsn = struct.unpack_from("!IHHII", seg, off + 4)
                user = seg[off + 20 : off + clen]
                key = (src, dst, sport, dport, vtag, sid, mid)
                ppid = ppid_or_fsn
            else:
                st.notes.append(f"frame {index}: short SCTP DATA chunk")
                break
            begin, end = cflags & 0x02, cflags & 0x01
            if begin and end:
                out.append(Payload(index, ts, src, dst, sport, dport, "sctp", ppid, bytes(user),
                                   classify(ppid, sport, dport)))
            elif begin:
                frags[key] = [bytes(user)]
                frags[key + ("ppid",)] = [ppid.to_bytes(4, "big")]
            elif key in frags:
                frags[key].append(bytes(user))
                if end:
                    whole = b"".join(frags.pop(key))
                    ppid0 = int.from_bytes(frags.pop(key + ("ppid",))[0], "big")
                    out.append(Payload(index, ts, src, dst, sport, dport, "sctp", ppid0, whole,
                                       classify(ppid0, sport, dport)))
        off += (clen + 3) & ~3


def _tcp(index: int, ts: float, src: str, dst: str, seg: bytes, st: CaptureStats, out: list[Payload],
         streams: dict[tuple[str, int, str, int], _TcpStream]) -> None:
    if len(seg) < 20:
        st.skipped_frames += 1
        return
    sport, dport, seq = struct.unpack_from("!HHI", seg, 0)
    doff = (seg[12] >> 4) * 4
    flags = seg[13]
    body = seg[doff:]
    key = (src, sport, dst, dport)
    stream = streams.setdefault(key, _TcpStream())
    if flags & 0x02:  # SYN consumes one sequence number
        stream.next_seq = (seq + 1) & 0xFFFFFFFF
        stream.buffer.clear()
        stream.pending.clear()
    if not body:
        return
    st.tcp_segments += 1
    if stream.next_seq is None:  # capture started mid-stream
        stream.next_seq = seq
    stream.pending[seq] = body
    # Append every segment that is now contiguous; drop already-seen bytes (retransmissions).
    progressed = True
    while progressed:
        progressed = False
        for s in list(stream.pending):
            delta = (s - stream.next_seq) & 0xFFFFFFFF
            chunk = stream.pending[s]
            if delta == 0 or delta >= 0x80000000:  # at or before next_seq
                back = 0 if delta == 0 else 0x100000000 - delta
                del stream.pending[s]
                if back < len(chunk):
                    stream.buffer += chunk[back:]
                    stream.next_seq = (stream.next_seq + len(chunk) - back) & 0xFFFFFFFF
                    progressed = True
    buf = stream.buffer
    if stream.tagged is None and len(buf) >= 12:
        stream.tagged = _looks_tagged(buf)
    elif stream.tagged is None and len(buf) >= 4 and _TAG.unpack_from(bytes(buf[:4]) + bytes(4))[0] not in C.PPID_TO_PROTOCOL:
        stream.tagged = False  # a tag starts with a known PPID; a short length-framed stream does not
    while stream.tagged and len(buf) >= 8:
        ppid, mlen = _TAG.unpack_from(buf, 0)
        if len(buf) < 8 + mlen:
            break
        msg = bytes(buf[8:8 + mlen])
        del buf[:8 + mlen]
        out.append(Payload(index, ts, src, dst, sport, dport, "tcp", ppid, msg, classify(ppid, sport, dport)))
    while stream.tagged is False and len(buf) >= 4:
        mlen = _tcp_message_length(buf)
        if mlen < 4:
            st.notes.append(f"frame {index}: TCP stream {src}:{sport}->{dst}:{dport} has a message length "
                            f"{mlen} < 4; dropping the rest of the stream")
            buf.clear()
            break
        if len(buf) < mlen:
            break
        msg = bytes(buf[:mlen])
        del buf[:mlen]
        out.append(Payload(index, ts, src, dst, sport, dport, "tcp", None, msg, classify(None, sport, dport)))

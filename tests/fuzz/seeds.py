"""The fuzz corpus's seed files, cut out of the RSPLIB 3.4.4 reference capture.

    PYTHONPATH=.:tests .venv/bin/python -m fuzz.seeds     # (re)write tests/data/fuzz-corpus/*/seed-*
    PYTHONPATH=.:tests .venv/bin/python -m fuzz.seeds --generated DIR 400   # material for -merge=1

Per codec: every distinct ASAP, ENRP and CalcApp payload of tests/data/captures/rsplib-3.4.4-calcapp-
plu-enrp.pcap. For the capture reader: small captures carved from it (one frame per kind of message, a
run of consecutive frames, a fragmented SCTP message rebuilt from a real one, the same frames as pcapng,
big-endian/nanosecond pcap and Linux-cooked framing, and a real ASAP payload carried over TCP in two
segments, which the capture itself has no example of). The capture holds no Fractal Generator traffic,
so the FGP seeds are messages laid out as RSPLIB's fractalgeneratorpackets.h (the codec's encoders).
Seeds are deterministic: a test checks that the committed ones are exactly what this module writes.
Files not named seed-* in the corpus were found by the fuzzer (kept by libFuzzer's -merge=1).
"""

from __future__ import annotations

import re
import struct
import sys
from pathlib import Path

from fuzz.targets import CAPTURE, CORPUS, TARGETS

from rserpool import wire
from rserpool.pcapfile import _PCAP_MAGICS, iter_frames, parse_capture

PCAP_HEADER = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _pcap(frames: list[tuple[float, bytes]], linktype: int = 1, endian: str = "<", nano: bool = False) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for ts, frame in frames:
        sec = int(ts)
        frac = round((ts - sec) * (1e9 if nano else 1e6))
        out.append(struct.pack(endian + "IIII", sec, frac, len(frame), len(frame)) + frame)
    return b"".join(out)


def _pcapng(frames: list[tuple[float, bytes]]) -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    # IDB: Ethernet, snaplen 65535, option if_tsresol (9) = 6 (microseconds), end of options
    idb = block(1, struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HHB3x", 9, 1, 6) + struct.pack("<HH", 0, 0))
    out = [shb, idb]
    for i, (ts, frame) in enumerate(frames):
        if i == len(frames) - 1:  # the last one as a Simple Packet Block
            out.append(block(3, struct.pack("<I", len(frame)) + frame))
            continue
        t = round(ts * 1e6)
        out.append(block(6, struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(frame), len(frame)) + frame))
    return b"".join(out)


def _split_sctp_data(frame: bytes) -> list[bytes] | None:
    """An Ethernet/IPv4/SCTP frame with one DATA chunk as two frames carrying its two fragments."""
    ihl = (frame[14] & 0x0F) * 4
    sctp = 14 + ihl
    chunk = sctp + 12
    if frame[chunk] != 0 or len(frame) < chunk + 24:
        return None
    clen = struct.unpack_from("!H", frame, chunk + 2)[0]
    user = frame[chunk + 16 : chunk + clen]
    half = len(user) // 2
    out = []
    for part, flags in ((user[:half], 0x02), (user[half:], 0x01)):
        c = bytearray(frame[chunk : chunk + 16] + part)
        c[1] = (c[1] & ~0x03) | flags
        struct.pack_into("!H", c, 2, len(c))
        c += b"\0" * (-len(c) % 4)
        ip = bytearray(frame[14:sctp])
        struct.pack_into("!H", ip, 2, ihl + 12 + len(c))
        out.append(frame[:14] + bytes(ip) + frame[sctp:chunk] + bytes(c))
    return out


def _tcp_frames(eth_ip: bytes, payload: bytes) -> list[bytes]:
    """`payload` (one real ASAP message) sent over TCP in two segments, reusing a real Ethernet/IPv4 header."""
    eth, ip = eth_ip[:14], bytearray(eth_ip[14:34])
    ip[0] = 0x45
    ip[9] = 6
    ip[6:8] = b"\0\0"  # no fragment bits
    half = len(payload) // 2
    frames = []
    seq = 1000
    syn = struct.pack("!HHIIBBHHH", 40000, wire.ASAP_PORT, seq, 0, 5 << 4, 0x02, 65535, 0, 0)
    for seg in (syn, *(struct.pack("!HHIIBBHHH", 40000, wire.ASAP_PORT, s, 1, 5 << 4, 0x18, 65535, 0, 0) + body
                       for s, body in ((seq + 1, payload[:half]), (seq + 1 + half, payload[half:])))):
        hdr = bytearray(ip)
        struct.pack_into("!H", hdr, 2, 20 + len(seg))
        frames.append(eth + bytes(hdr) + seg)
    return frames


def codec_seeds() -> dict[str, dict[str, bytes]]:
    """{protocol: {file name: payload}} for the distinct RSerPool payloads of the capture."""
    out: dict[str, dict[str, bytes]] = {"asap": {}, "enrp": {}, "calcapp": {}}
    seen: set[tuple[str, bytes]] = set()
    for p in parse_capture(CAPTURE.read_bytes()):
        if p.protocol not in out or (p.protocol, p.data) in seen:
            continue
        seen.add((p.protocol, p.data))
        name = wire.decode(p.protocol, p.data).NAME
        out[p.protocol][f"seed-capture-f{p.index:03d}-{p.transport}-{_slug(name)}"] = p.data
    return out


def fgp_seeds() -> dict[str, bytes]:
    from rserpool.wire.fractal import FGPCookie, FGPData, FGPParameter

    p1 = FGPParameter(400, 250, 1024, 1, -1.5, 1.5, 1.5, -1.5, 2.0)
    p2 = FGPParameter(80, 60, 256, 2, -2.0, 1.25, 0.75, -1.25, 3.5, flags=0)
    return {
        "seed-fgp-parameter-mandelbrot": p1.encode(),
        "seed-fgp-parameter-mandelbrotn": p2.encode(),
        "seed-fgp-data-3-points": FGPData(5, 7, (1, 0x01020304, 255)).encode(),
        "seed-fgp-data-80-points": FGPData(0, 2, tuple(range(80))).encode(),
        "seed-fgp-data-finalizer": FGPData.finalizer().encode(),
        "seed-fgp-cookie": FGPCookie(p1, 12, 34).encode(),
    }


def pcap_seeds() -> dict[str, bytes]:
    raw = CAPTURE.read_bytes()
    frames = [(ts, frame) for ts, _lt, frame in iter_frames(raw)]
    out: dict[str, bytes] = {}
    kinds: set[tuple] = set()
    asap_frame = asap_payload = None
    for i, (ts, frame) in enumerate(frames, start=1):
        payloads = parse_capture(_pcap([(ts, frame)]))
        kind = tuple(sorted((p.transport, p.protocol or "", wire.decode(p.protocol, p.data).NAME if p.protocol
                             else "") for p in payloads))
        if kind in kinds:
            continue
        kinds.add(kind)
        name = "-".join(_slug(k[2] or k[0]) for k in kind) or "no-payload"
        out[f"seed-pcap-f{i:03d}-{name[:60]}"] = _pcap([(ts, frame)])
        if asap_frame is None and any(p.protocol == "asap" and p.transport == "sctp" for p in payloads):
            asap_frame, asap_payload = frame, next(p.data for p in payloads if p.protocol == "asap")
    out["seed-pcap-first-12-frames"] = _pcap(frames[:12])
    some = frames[8:12]  # frames 9-12: ASAP Registration, ENRP Handle Update, ...
    out["seed-pcapng-frames-9-12"] = _pcapng(some)
    out["seed-pcap-big-endian-ns-frames-9-12"] = _pcap(some, endian=">", nano=True)
    # Linux cooked v1 (16-byte header, ethertype at 14) and raw IP framing of the same frames
    sll = [(ts, struct.pack("!HHH8sH", 0, 1, 6, f[6:12] + b"\0\0", 0x0800) + f[14:]) for ts, f in some]
    out["seed-pcap-linux-sll-frames-9-12"] = _pcap(sll, linktype=113)
    out["seed-pcap-raw-ip-frames-9-12"] = _pcap([(ts, f[14:]) for ts, f in some], linktype=101)
    assert asap_frame is not None and asap_payload is not None
    split = _split_sctp_data(asap_frame)
    if split:
        out["seed-pcap-sctp-fragmented-asap"] = _pcap([(0.0, f) for f in split])
    out["seed-pcap-tcp-asap-2-segments"] = _pcap([(0.0, f) for f in _tcp_frames(asap_frame[:34], asap_payload)])
    return out


def _be(width: int, *values: int) -> list[bytes]:
    return [v.to_bytes(width, "big") for v in values]


def dictionaries() -> dict[str, list[bytes]]:
    """libFuzzer dictionaries (-dict=): the protocols' type codes, which mutations rarely hit on their own
    because the decoders look them up in tables (no comparison for the fuzzer to follow)."""
    from rserpool.policytypes import PolicyType

    tlvs = [t + b"\x00\x04" for t in _be(2, *wire.ParamType)] + _be(2, *wire.ParamType)
    common = tlvs + _be(4, *PolicyType) + _be(2, *wire.CauseCode) + _be(2, *wire.TransportUse)
    out = {
        "asap": _be(1, *wire.AsapType) + common,
        "enrp": _be(1, *wire.EnrpType) + common,
        "calcapp": _be(1, *wire.CalcAppType) + [b"\x00\x18"],
        "pcap": [
            *_PCAP_MAGICS, b"\x0a\x0d\x0d\x0a", b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d",
            *(v.to_bytes(4, "little") for v in (1, 3, 6)),  # pcapng IDB, SPB, EPB
            *(v.to_bytes(4, "little") for v in (0, 1, 101, 113, 228, 229, 276)),  # link types
            b"\x09\x00\x01\x00", b"\x08\x00", b"\x86\xdd", b"\x81\x00", b"\x88\xa8",  # if_tsresol, ethertypes
            bytes([132]), bytes([6]), bytes([17]), bytes([0]), bytes([43]), bytes([44]), bytes([60]),  # IP protocols
            *_be(2, wire.ASAP_PORT, wire.ENRP_PORT), *_be(4, wire.ASAP_PPID, wire.ENRP_PPID, wire.CALCAPP_PPID),
        ],
    }
    if TARGETS["fgp"].available():
        from rserpool.wire.fractal import COOKIE_ID

        out["fgp"] = [b"\x01", b"\x02", b"\x00\x3c", b"\x00\x10", b"\xff\xff\xff\xff", COOKIE_ID]
    return out


def dictionary_text(tokens: list[bytes]) -> str:
    escaped = ["".join(f"\\x{b:02x}" for b in tok) for tok in tokens]
    return "".join(f'kw{i}="{tok}"\n' for i, tok in enumerate(escaped))


def all_seeds() -> dict[str, dict[str, bytes]]:
    """{target name: {file name: bytes}} for every target whose decoder exists."""
    seeds = codec_seeds()
    seeds["pcap"] = pcap_seeds()
    if TARGETS["fgp"].available():
        seeds["fgp"] = fgp_seeds()
    return seeds


def write(root: Path = CORPUS) -> int:
    """Write the seeds (replacing old seed-* files, keeping fuzzer-found ones); returns the count."""
    n = 0
    for target, files in all_seeds().items():
        d = root / target
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("seed-*"):
            if old.name not in files:
                old.unlink()
        for name, data in files.items():
            (d / name).write_bytes(data)
            n += 1
    for target, tokens in dictionaries().items():
        (root / f"{target}.dict").write_text(dictionary_text(tokens))
    return n


def write_generated(root: Path, count: int) -> None:
    """`count` random valid ASAP and ENRP messages of every type (tests/helpers/wire_strategies.py) into
    root/asap and root/enrp: material for libFuzzer's -merge=1, which keeps the ones that add coverage
    (the capture lacks e.g. ASAP Error, Cookie, Business Card, ENRP Handle Table Response, Takeover)."""
    import warnings

    from hypothesis.errors import NonInteractiveExampleWarning

    from helpers import wire_strategies as S

    for name, strategy in (("asap", S.asap_messages), ("enrp", S.enrp_messages)):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonInteractiveExampleWarning)
            for i in range(count):
                (d / f"gen-{i:04d}").write_bytes(strategy.example().encode())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--generated"]:  # --generated DIR COUNT
        write_generated(Path(sys.argv[2]), int(sys.argv[3]))
        sys.exit(0)
    print(f"{write()} seed files under {CORPUS}", file=sys.stderr)

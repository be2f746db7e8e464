"""RFC 5354 TLV framing: 16-bit type (upper two bits = action for unrecognised parameters),
16-bit length (header + value, without padding), value, zero padding to a multiple of 4 bytes."""

from __future__ import annotations

import struct
from enum import IntEnum

from rserpool.wire.errors import CodecError

TLV_HEADER = struct.Struct("!HH")
_pack_header = TLV_HEADER.pack
_unpack_header = TLV_HEADER.unpack_from

ACTION_MASK = 0xC000
_PADDING = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")


class Action(IntEnum):
    """What a receiver does with a parameter type it does not recognise (RFC 5354 section 2.1)."""

    STOP = 0x0000
    STOP_AND_REPORT = 0x4000
    SKIP = 0x8000
    SKIP_AND_REPORT = 0xC000


def action_of(tlv_type: int) -> Action:
    """The unrecognised-parameter action encoded in a TLV type's two upper bits."""
    return Action(tlv_type & ACTION_MASK)


def padding(length: int) -> bytes:
    """Zero bytes that pad `length` up to a multiple of four."""
    return _PADDING[length & 3]


def encode_tlv(tlv_type: int, value: bytes) -> bytes:
    """One TLV with its padding; the length field excludes the padding."""
    length = 4 + len(value)
    if length > 0xFFFF:
        raise CodecError(f"TLV type 0x{tlv_type:04x}: value of {len(value)} bytes exceeds the 16-bit length field")
    return _pack_header(tlv_type, length) + value + _PADDING[length & 3]


def iter_tlvs(buf: bytes, off: int, end: int, where: str):
    """Yield (type, value_start, value_end) for each TLV in buf[off:end].

    The final TLV may omit its padding when the enclosing length stops right after it; all other
    padding must be present and zero. Raises CodecError naming `where` and the offset otherwise.
    """
    while off < end:
        if end - off < 4:
            raise CodecError(f"{where}: {end - off} stray byte(s) at offset {off}, expected a 4-byte TLV header")
        t, length = _unpack_header(buf, off)
        if length < 4:
            raise CodecError(f"{where}: TLV type 0x{t:04x} at offset {off} has length {length}, expected >= 4")
        vend = off + length
        if vend > end:
            raise CodecError(
                f"{where}: TLV type 0x{t:04x} at offset {off} has length {length}, "
                f"but only {end - off} byte(s) remain in the enclosing item"
            )
        nxt = vend + ((-length) & 3)
        if nxt > end:
            if vend != end:
                raise CodecError(f"{where}: TLV type 0x{t:04x} at offset {off}: padding runs past the enclosing item")
            nxt = end
        elif nxt != vend and buf[vend:nxt] != _PADDING[length & 3]:
            raise CodecError(f"{where}: TLV type 0x{t:04x} at offset {off}: non-zero padding bytes {buf[vend:nxt].hex()}")
        yield t, off + 4, vend
        off = nxt

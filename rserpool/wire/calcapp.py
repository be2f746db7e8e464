"""RSPLIB's CalcApp protocol (src/calcapppackets.h): a fixed 24-byte message
type(1) flags(1) length(2) job ID(4) job size(8) completed(8), all big-endian."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from rserpool.wire.errors import CodecError

CALCAPP = struct.Struct("!BBHIQQ")
CALCAPP_LENGTH = CALCAPP.size  # 24


class CalcAppType(IntEnum):
    """CalcApp message types."""

    REQUEST = 1
    ACCEPT = 2
    REJECT = 3
    ABORT = 4
    COMPLETE = 5
    KEEPALIVE = 6
    KEEPALIVE_ACK = 7


_NAMES = {
    CalcAppType.REQUEST: "CalcApp Request",
    CalcAppType.ACCEPT: "CalcApp Accept",
    CalcAppType.REJECT: "CalcApp Reject",
    CalcAppType.ABORT: "CalcApp Abort",
    CalcAppType.COMPLETE: "CalcApp Complete",
    CalcAppType.KEEPALIVE: "CalcApp Keep-Alive",
    CalcAppType.KEEPALIVE_ACK: "CalcApp Keep-Alive Ack",
}
_TYPES = {int(t): t for t in CalcAppType}


@dataclass(frozen=True, slots=True)
class CalcAppMessage:
    """One CalcApp message: `job_size` and `completed` count calculations."""

    PROTOCOL = "calcapp"
    type: CalcAppType
    job_id: int
    job_size: int = 0
    completed: int = 0
    flags: int = 0

    @property
    def NAME(self) -> str:  # noqa: N802 - same spelling as the ASAP/ENRP class attribute
        return _NAMES[self.type]

    def encode(self) -> bytes:
        try:
            return CALCAPP.pack(self.type, self.flags, CALCAPP_LENGTH, self.job_id, self.job_size, self.completed)
        except struct.error:
            raise CodecError(f"CalcApp message field out of range: {self!r}") from None


def decode_calcapp(data: bytes) -> CalcAppMessage:
    """Decode one CalcApp message occupying all of `data`. Raises CodecError on anything malformed."""
    try:
        n = len(data)
    except TypeError:
        raise CodecError(f"CalcApp: expected bytes, got {type(data).__name__}") from None
    if n != CALCAPP_LENGTH:
        raise CodecError(f"CalcApp: {n} byte(s), expected {CALCAPP_LENGTH}")
    mtype, flags, length, job_id, job_size, completed = CALCAPP.unpack_from(data, 0)
    t = _TYPES.get(mtype)
    if t is None:
        raise CodecError(f"CalcApp: unknown message type {mtype}")
    if length != CALCAPP_LENGTH:
        raise CodecError(f"{_NAMES[t]}: length field says {length}, expected {CALCAPP_LENGTH}")
    return CalcAppMessage(t, job_id, job_size, completed, flags)

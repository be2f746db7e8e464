"""Common ground of the RFC 5354 parameter classes (``rserpool.wire.params``,
``rserpool.wire.transports``): type codes, the ``Parameter`` base, fixed-size field helpers and
``UnknownParameter``, which keeps a parameter this codec does not interpret byte for byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from rserpool.wire.errors import CodecError
from rserpool.wire.tlv import encode_tlv

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U16U16 = struct.Struct("!HH")


class ParamType(IntEnum):
    """TLV type codes (RFC 5354 section 3; 0x803f is RSPLIB's Handle Resolution Option)."""

    IPV4_ADDRESS = 0x0001
    IPV6_ADDRESS = 0x0002
    DCCP_TRANSPORT = 0x0003
    SCTP_TRANSPORT = 0x0004
    TCP_TRANSPORT = 0x0005
    UDP_TRANSPORT = 0x0006
    UDP_LITE_TRANSPORT = 0x0007
    POOL_POLICY = 0x0008
    POOL_HANDLE = 0x0009
    POOL_ELEMENT = 0x000A
    SERVER_INFORMATION = 0x000B
    OPERATION_ERROR = 0x000C
    COOKIE = 0x000D
    PE_IDENTIFIER = 0x000E
    PE_CHECKSUM = 0x000F
    HANDLE_RESOLUTION_OPTION = 0x803F


class TransportUse(IntEnum):
    """Transport Use field of the SCTP and TCP transport parameters."""

    DATA_ONLY = 0
    DATA_PLUS_CONTROL = 1


class CauseCode(IntEnum):
    """Operation Error cause codes (RFC 5354 section 3.10.1).

    0x0 "Unspecified Error" is in the RFC's table but neither RSPLIB 3.4.4 (where 0 means
    RSPERR_OKAY) nor Wireshark's dissector name it; it is here so that a peer's cause 0 decodes
    to a named value rather than a bare int.
    """

    UNSPECIFIED_ERROR = 0x0
    UNRECOGNIZED_PARAMETER = 0x1
    UNRECOGNIZED_MESSAGE = 0x2
    INVALID_VALUES = 0x3
    NON_UNIQUE_PE_IDENTIFIER = 0x4
    INCONSISTENT_POOLING_POLICY = 0x5
    LACK_OF_RESOURCES = 0x6
    INCONSISTENT_TRANSPORT_TYPE = 0x7
    INCONSISTENT_DATA_CONTROL_CONFIGURATION = 0x8
    UNKNOWN_POOL_HANDLE = 0x9
    REJECTED_SECURITY = 0xA


class Parameter:
    """Base of all parameter classes."""

    __slots__ = ()
    TYPE: ClassVar[int]

    def encode(self) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError


def _u32(name: str, value: int) -> bytes:
    try:
        return _U32.pack(value)
    except struct.error:
        raise CodecError(f"{name} = {value!r} does not fit an unsigned 32-bit field") from None


def _u16(name: str, value: int) -> bytes:
    try:
        return _U16.pack(value)
    except struct.error:
        raise CodecError(f"{name} = {value!r} does not fit an unsigned 16-bit field") from None


def _exact(where: str, start: int, end: int, expected: int) -> None:
    if end - start != expected:
        raise CodecError(f"{where} at offset {start - 4}: value is {end - start} byte(s), expected {expected}")


def _at_least(where: str, start: int, end: int, expected: int) -> None:
    if end - start < expected:
        raise CodecError(f"{where} at offset {start - 4}: value is {end - start} byte(s), expected at least {expected}")


@dataclass(frozen=True, slots=True)
class UnknownParameter(Parameter):
    """A parameter this codec does not interpret; kept verbatim (`type` includes the action bits)."""

    type: int
    value: bytes

    @property
    def TYPE(self) -> int:  # type: ignore[override]
        return self.type

    def encode(self) -> bytes:
        return encode_tlv(self.type, self.value)

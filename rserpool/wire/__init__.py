"""Pure wire codec for ASAP (RFC 5352), ENRP (RFC 5353), their RFC 5354 parameters, RSPLIB's CalcApp
and (``rserpool.wire.fractal``) RSPLIB's Fractal Generator Protocol.

Bytes in, typed frozen dataclasses out; `encode(msg)` gives the bytes back (byte-identical for
RSPLIB 3.4.4 traffic). Every malformed input raises `CodecError` (a ValueError) and nothing else.

Framing: each decoder takes exactly one message. On a byte stream (TCP) read the 4-byte header
first and call `message_length(header)`: ASAP, ENRP and CalcApp all carry type(1) flags(1)
length(2), the length covering the whole message (CalcApp: always 24), and so does FGP.
"""

from __future__ import annotations

import struct

from rserpool.wire.asap import (
    ASAP_MESSAGES,
    AsapError,
    AsapMessage,
    AsapType,
    BusinessCard,
    CookieEcho,
    CookieMessage,
    Deregistration,
    DeregistrationResponse,
    EndpointKeepAlive,
    EndpointKeepAliveAck,
    EndpointUnreachable,
    HandleResolution,
    HandleResolutionResponse,
    Registration,
    RegistrationResponse,
    ServerAnnounce,
    decode_asap,
)
from rserpool.wire.calcapp import CALCAPP_LENGTH, CalcAppMessage, CalcAppType, decode_calcapp
from rserpool.wire.constants import (
    ASAP_ANNOUNCE_ADDRESS,
    ASAP_ANNOUNCE_PORT,
    ASAP_PORT,
    ASAP_PPID,
    CALCAPP_PPID,
    CALCAPP_PPID_LEGACY,
    ENRP_ANNOUNCE_ADDRESS,
    ENRP_ANNOUNCE_PORT,
    ENRP_PORT,
    ENRP_PPID,
    PPID_TO_PROTOCOL,
)
from rserpool.wire.enrp import (
    ENRP_MESSAGES,
    EnrpError,
    EnrpMessage,
    EnrpType,
    HandleTableEntry,
    HandleTableRequest,
    HandleTableResponse,
    HandleUpdate,
    InitTakeover,
    InitTakeoverAck,
    ListRequest,
    ListResponse,
    Presence,
    TakeoverServer,
    UpdateAction,
    decode_enrp,
)
from rserpool.wire.errors import CodecError
from rserpool.wire.fractal import FGPMessage, decode_fgp
from rserpool.wire.message import Message
from rserpool.wire.params import (
    CauseCode,
    Cookie,
    DccpTransport,
    ErrorCause,
    HandleResolutionOption,
    IPv4Address,
    IPv6Address,
    OperationError,
    Parameter,
    ParamType,
    PoolElement,
    PoolElementChecksum,
    PoolElementIdentifier,
    PoolHandle,
    PoolPolicy,
    SctpTransport,
    ServerInformation,
    TcpTransport,
    Transport,
    TransportUse,
    UdpLiteTransport,
    UdpTransport,
    UnknownParameter,
    decode_parameter,
)
from rserpool.wire.tlv import Action

AnyMessage = AsapMessage | EnrpMessage | CalcAppMessage | FGPMessage

_DECODERS = {"asap": decode_asap, "enrp": decode_enrp, "calcapp": decode_calcapp, "fractal": decode_fgp}


def encode(msg: AnyMessage) -> bytes:
    """The wire bytes of an ASAP, ENRP or CalcApp message. Raises CodecError if a field is out of range."""
    return msg.encode()


def decode(protocol: str, data: bytes) -> AnyMessage:
    """Decode `data` as `protocol` ("asap", "enrp", "calcapp" or "fractal")."""
    try:
        dec = _DECODERS[protocol]
    except (KeyError, TypeError):
        raise CodecError(f"unknown protocol {protocol!r}, expected asap, enrp, calcapp or fractal") from None
    return dec(data)


def decode_by_ppid(ppid: int, data: bytes) -> AnyMessage:
    """Decode an SCTP user message by its payload protocol identifier."""
    proto = PPID_TO_PROTOCOL.get(ppid)
    if proto is None:
        raise CodecError(f"PPID {ppid} is not ASAP (11), ENRP (12), Fractal Generator (32) or CalcApp (34)")
    return _DECODERS[proto](data)


def message_length(header: bytes) -> int:
    """Total length of the message that starts with `header` (at least 4 bytes): the big-endian
    16-bit field at offset 2, for ASAP, ENRP and CalcApp alike. Raises CodecError if < 4."""
    if len(header) < 4:
        raise CodecError(f"message header needs 4 bytes, got {len(header)}")
    (length,) = struct.unpack_from("!H", header, 2)
    if length < 4:
        raise CodecError(f"message length field {length} is smaller than the 4-byte header")
    return length


__all__ = [
    "ASAP_ANNOUNCE_ADDRESS", "ASAP_ANNOUNCE_PORT", "ASAP_MESSAGES", "ASAP_PORT", "ASAP_PPID", "CALCAPP_LENGTH",
    "CALCAPP_PPID", "CALCAPP_PPID_LEGACY", "ENRP_ANNOUNCE_ADDRESS", "ENRP_ANNOUNCE_PORT", "ENRP_MESSAGES",
    "ENRP_PORT", "ENRP_PPID", "FGPMessage", "PPID_TO_PROTOCOL", "Action", "AnyMessage", "AsapError", "AsapMessage", "AsapType",
    "BusinessCard", "CalcAppMessage", "CalcAppType", "CauseCode", "CodecError", "Cookie", "CookieEcho",
    "CookieMessage", "DccpTransport", "Deregistration", "DeregistrationResponse", "EndpointKeepAlive",
    "EndpointKeepAliveAck", "EndpointUnreachable", "EnrpError", "EnrpMessage", "EnrpType", "ErrorCause",
    "HandleResolution", "HandleResolutionOption", "HandleResolutionResponse", "HandleTableEntry",
    "HandleTableRequest", "HandleTableResponse", "HandleUpdate", "IPv4Address", "IPv6Address", "InitTakeover",
    "InitTakeoverAck", "ListRequest", "ListResponse", "Message", "OperationError", "ParamType", "Parameter",
    "PoolElement", "PoolElementChecksum", "PoolElementIdentifier", "PoolHandle", "PoolPolicy", "Presence",
    "Registration", "RegistrationResponse", "SctpTransport", "ServerAnnounce", "ServerInformation",
    "TakeoverServer", "TcpTransport", "Transport", "TransportUse", "UdpLiteTransport", "UdpTransport",
    "UnknownParameter", "UpdateAction", "decode", "decode_asap", "decode_by_ppid", "decode_calcapp", "decode_fgp",
    "decode_enrp", "decode_parameter", "encode", "message_length",
]

"""ASAP messages (RFC 5352, as RSPLIB 3.4.4 sends them): typed, frozen dataclasses, byte-exact codec.

Field conventions: `pool_handle` is the raw handle bytes, `identifier` the 32-bit PE ID, `error` an
OperationError parameter, `extra` any parameters that fit no field, `reserved_flags` unnamed flag bits.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from rserpool.wire.message import MANY, ONE, OPT, Message, decode_with
from rserpool.wire.params import (
    TRANSPORT_CLASSES,
    Cookie,
    HandleResolutionOption,
    OperationError,
    Parameter,
    PoolElement,
    PoolElementIdentifier,
    PoolHandle,
    PoolPolicy,
    Transport,
)


class AsapType(IntEnum):
    """ASAP message type codes (RFC 5352 section 2.2)."""

    REGISTRATION = 0x01
    DEREGISTRATION = 0x02
    REGISTRATION_RESPONSE = 0x03
    DEREGISTRATION_RESPONSE = 0x04
    HANDLE_RESOLUTION = 0x05
    HANDLE_RESOLUTION_RESPONSE = 0x06
    ENDPOINT_KEEP_ALIVE = 0x07
    ENDPOINT_KEEP_ALIVE_ACK = 0x08
    ENDPOINT_UNREACHABLE = 0x09
    SERVER_ANNOUNCE = 0x0A
    COOKIE = 0x0B
    COOKIE_ECHO = 0x0C
    BUSINESS_CARD = 0x0D
    ERROR = 0x0E


REJECT_FLAG = 0x01  # R bit of Registration Response and (RSPLIB) Handle Resolution Response
HOME_FLAG = 0x01  # H bit of Endpoint Keep-Alive

_SERVER_ID = struct.Struct("!I")

_HANDLE = ("pool_handle", (PoolHandle,), ONE, "handle")
_PEID = ("identifier", (PoolElementIdentifier,), ONE, "identifier")
_ERROR_OPT = ("error", (OperationError,), OPT, None)


class AsapMessage(Message):
    """Base of all ASAP messages."""

    __slots__ = ()
    PROTOCOL = "asap"


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration(AsapMessage):
    """PE → registrar: register (or re-register/update) `pool_element` in pool `pool_handle`."""

    TYPE = AsapType.REGISTRATION
    NAME = "ASAP Registration"
    _SLOTS = (_HANDLE, ("pool_element", (PoolElement,), ONE, None), _ERROR_OPT)
    pool_handle: bytes
    pool_element: PoolElement
    error: OperationError | None = None
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Deregistration(AsapMessage):
    """PE → registrar: remove PE `identifier` from pool `pool_handle`."""

    TYPE = AsapType.DEREGISTRATION
    NAME = "ASAP Deregistration"
    _SLOTS = (_HANDLE, _PEID)
    pool_handle: bytes
    identifier: int
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationResponse(AsapMessage):
    """Registrar → PE: registration accepted, or rejected (`reject`, with `error`)."""

    TYPE = AsapType.REGISTRATION_RESPONSE
    NAME = "ASAP Registration Response"
    _FLAGS = (("reject", REJECT_FLAG),)
    _SLOTS = (_HANDLE, _PEID, _ERROR_OPT)
    pool_handle: bytes
    identifier: int
    reject: bool = False
    error: OperationError | None = None
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeregistrationResponse(AsapMessage):
    """Registrar → PE: deregistration done (or failed, with `error`)."""

    TYPE = AsapType.DEREGISTRATION_RESPONSE
    NAME = "ASAP Deregistration Response"
    _SLOTS = (_HANDLE, _PEID, _ERROR_OPT)
    pool_handle: bytes
    identifier: int
    error: OperationError | None = None
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HandleResolution(AsapMessage):
    """PU → registrar: which PEs serve `pool_handle`? `items` is RSPLIB's Handle Resolution Option."""

    TYPE = AsapType.HANDLE_RESOLUTION
    NAME = "ASAP Handle Resolution"
    _SLOTS = (_HANDLE, ("items", (HandleResolutionOption,), OPT, "items"))
    pool_handle: bytes
    items: int | None = None
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HandleResolutionResponse(AsapMessage):
    """Registrar → PU: the pool's overall `policy` and selected `pool_elements`, or `error`."""

    TYPE = AsapType.HANDLE_RESOLUTION_RESPONSE
    NAME = "ASAP Handle Resolution Response"
    _FLAGS = (("reject", REJECT_FLAG),)
    _SLOTS = (_HANDLE, ("policy", (PoolPolicy,), OPT, None), ("pool_elements", (PoolElement,), MANY, None),
              _ERROR_OPT)
    pool_handle: bytes
    policy: PoolPolicy | None = None
    pool_elements: tuple[PoolElement, ...] = ()
    error: OperationError | None = None
    reject: bool = False
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointKeepAlive(AsapMessage):
    """Registrar → PE: are you alive? `home` asks the PE to adopt this registrar as its home.
    RSPLIB adds the PE's `identifier` (custom)."""

    TYPE = AsapType.ENDPOINT_KEEP_ALIVE
    NAME = "ASAP Endpoint Keep-Alive"
    _FLAGS = (("home", HOME_FLAG),)
    _FIXED = _SERVER_ID
    _FIXED_FIELDS = ("server_id",)
    _SLOTS = (_HANDLE, ("identifier", (PoolElementIdentifier,), OPT, "identifier"))
    server_id: int
    pool_handle: bytes
    identifier: int | None = None
    home: bool = False
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointKeepAliveAck(AsapMessage):
    """PE → registrar: alive."""

    TYPE = AsapType.ENDPOINT_KEEP_ALIVE_ACK
    NAME = "ASAP Endpoint Keep-Alive Ack"
    _SLOTS = (_HANDLE, _PEID)
    pool_handle: bytes
    identifier: int
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointUnreachable(AsapMessage):
    """PU → registrar: PE `identifier` of `pool_handle` did not answer."""

    TYPE = AsapType.ENDPOINT_UNREACHABLE
    NAME = "ASAP Endpoint Unreachable"
    _SLOTS = (_HANDLE, _PEID)
    pool_handle: bytes
    identifier: int
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerAnnounce(AsapMessage):
    """Registrar → multicast: I am registrar `server_id` (reachable over `transports`, if given)."""

    TYPE = AsapType.SERVER_ANNOUNCE
    NAME = "ASAP Server Announce"
    _FIXED = _SERVER_ID
    _FIXED_FIELDS = ("server_id",)
    _SLOTS = (("transports", TRANSPORT_CLASSES, MANY, None),)
    server_id: int
    transports: tuple[Transport, ...] = ()
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CookieMessage(AsapMessage):
    """PE → PU: session state to echo back on fail-over."""

    TYPE = AsapType.COOKIE
    NAME = "ASAP Cookie"
    _SLOTS = (("cookie", (Cookie,), ONE, "data"),)
    cookie: bytes
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CookieEcho(AsapMessage):
    """PU → new PE: the last cookie of the failed PE."""

    TYPE = AsapType.COOKIE_ECHO
    NAME = "ASAP Cookie Echo"
    _SLOTS = (("cookie", (Cookie,), ONE, "data"),)
    cookie: bytes
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class BusinessCard(AsapMessage):
    """PE ↔ PU (RFC 5352 section 2.2.13): the sender's pool handle and the PEs it would have the
    receiver fail over to, most preferred first. RSPLIB 3.4.4's creator always adds the Pool Policy
    parameter and at least one PE (its parser refuses a card without one); it never sends a card
    itself (the send in ``rsp_forcefailover`` is ``#if 0``) and ignores received ones."""

    TYPE = AsapType.BUSINESS_CARD
    NAME = "ASAP Business Card"
    _SLOTS = (_HANDLE, ("policy", (PoolPolicy,), OPT, None), ("pool_elements", (PoolElement,), MANY, None))
    pool_handle: bytes
    policy: PoolPolicy | None = None
    pool_elements: tuple[PoolElement, ...] = ()
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AsapError(AsapMessage):
    """Any ASAP endpoint: an Operation Error (e.g. unrecognised message or parameter)."""

    TYPE = AsapType.ERROR
    NAME = "ASAP Error"
    _SLOTS = (("error", (OperationError,), ONE, None),)
    error: OperationError
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


ASAP_MESSAGES: dict[int, type[AsapMessage]] = {
    int(c.TYPE): c
    for c in (Registration, Deregistration, RegistrationResponse, DeregistrationResponse, HandleResolution,
              HandleResolutionResponse, EndpointKeepAlive, EndpointKeepAliveAck, EndpointUnreachable,
              ServerAnnounce, CookieMessage, CookieEcho, BusinessCard, AsapError)
}


def decode_asap(data: bytes) -> AsapMessage:
    """Decode one ASAP message occupying all of `data`. Raises CodecError on anything malformed."""
    return decode_with(ASAP_MESSAGES, "ASAP", data)  # type: ignore[arg-type,return-value]

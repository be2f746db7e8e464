"""ENRP messages (RFC 5353, as RSPLIB 3.4.4 sends them): typed, frozen dataclasses, byte-exact codec.

Every ENRP message starts with the sender's and receiver's server IDs (receiver 0 = "any"/multicast).
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from rserpool.wire.message import MANY, ONE, OPT, Message, decode_with
from rserpool.wire.params import (
    OperationError,
    Parameter,
    PoolElement,
    PoolElementChecksum,
    PoolHandle,
    ServerInformation,
    UnknownParameter,
)


class EnrpType(IntEnum):
    """ENRP message type codes (RFC 5353 section 2)."""

    PRESENCE = 0x01
    HANDLE_TABLE_REQUEST = 0x02
    HANDLE_TABLE_RESPONSE = 0x03
    HANDLE_UPDATE = 0x04
    LIST_REQUEST = 0x05
    LIST_RESPONSE = 0x06
    INIT_TAKEOVER = 0x07
    INIT_TAKEOVER_ACK = 0x08
    TAKEOVER_SERVER = 0x09
    ERROR = 0x0A


class UpdateAction(IntEnum):
    """Handle Update's update action."""

    ADD_PE = 0
    DEL_PE = 1


REPLY_REQUIRED_FLAG = 0x01  # Presence
OWN_CHILDREN_ONLY_FLAG = 0x01  # Handle Table Request
REJECT_FLAG = 0x01  # Handle Table Response, List Response
MORE_TO_SEND_FLAG = 0x02  # Handle Table Response
TAKEOVER_SUGGESTED_FLAG = 0x01  # Handle Update (draft-dreibholz-rserpool-enrpupdate)

_IDS = struct.Struct("!II")
_IDS_TARGET = struct.Struct("!III")
_IDS_ACTION = struct.Struct("!IIHH")


class EnrpMessage(Message):
    """Base of all ENRP messages."""

    __slots__ = ()
    PROTOCOL = "enrp"
    _FIXED = _IDS
    _FIXED_FIELDS = ("sender_id", "receiver_id")


@dataclass(frozen=True, slots=True, kw_only=True)
class Presence(EnrpMessage):
    """Registrar heartbeat: handlespace `checksum` of own PEs and own `server_info`."""

    TYPE = EnrpType.PRESENCE
    NAME = "ENRP Presence"
    _FLAGS = (("reply_required", REPLY_REQUIRED_FLAG),)
    _SLOTS = (("checksum", (PoolElementChecksum,), ONE, "checksum"),
              ("server_info", (ServerInformation,), OPT, None))
    sender_id: int
    receiver_id: int = 0
    checksum: int
    server_info: ServerInformation | None = None
    reply_required: bool = False
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HandleTableRequest(EnrpMessage):
    """Ask a peer for its handle table (`own_children_only`: only PEs it is home registrar of)."""

    TYPE = EnrpType.HANDLE_TABLE_REQUEST
    NAME = "ENRP Handle Table Request"
    _FLAGS = (("own_children_only", OWN_CHILDREN_ONLY_FLAG),)
    sender_id: int
    receiver_id: int = 0
    own_children_only: bool = False
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True)
class HandleTableEntry:
    """One pool inside a Handle Table Response: its handle and the PEs that follow it."""

    pool_handle: bytes
    pool_elements: tuple[PoolElement, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class HandleTableResponse(EnrpMessage):
    """Handle table (part): a sequence of Pool Handle, PE, PE, ... groups; `more_to_send` if partial."""

    TYPE = EnrpType.HANDLE_TABLE_RESPONSE
    NAME = "ENRP Handle Table Response"
    _FLAGS = (("reject", REJECT_FLAG), ("more_to_send", MORE_TO_SEND_FLAG))
    sender_id: int
    receiver_id: int = 0
    pools: tuple[HandleTableEntry, ...] = ()
    reject: bool = False
    more_to_send: bool = False
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0

    def _encode_params(self) -> list[bytes]:
        parts: list[bytes] = []
        for entry in self.pools:
            parts.append(PoolHandle(entry.pool_handle).encode())
            parts.extend(pe.encode() for pe in entry.pool_elements)
        parts.extend(p.encode() for p in self.extra)
        return parts

    @classmethod
    def _assign(cls, params: list[Parameter], kwargs: dict[str, Any]) -> None:
        pools: list[HandleTableEntry] = []
        extra: list[Parameter] = []
        handle: bytes | None = None
        pes: list[PoolElement] = []
        for p in params:
            if type(p) is PoolHandle and not extra:
                if handle is not None:
                    pools.append(HandleTableEntry(handle, tuple(pes)))
                handle, pes = p.handle, []
            elif type(p) is PoolElement and handle is not None and not extra:
                pes.append(p)
            else:
                extra.append(p)
        if handle is not None:
            pools.append(HandleTableEntry(handle, tuple(pes)))
        kwargs["pools"] = tuple(pools)
        kwargs["extra"] = tuple(extra)


@dataclass(frozen=True, slots=True, kw_only=True)
class HandleUpdate(EnrpMessage):
    """Tell peers that `pool_element` was added to / removed from `pool_handle`."""

    TYPE = EnrpType.HANDLE_UPDATE
    NAME = "ENRP Handle Update"
    _FLAGS = (("takeover_suggested", TAKEOVER_SUGGESTED_FLAG),)
    _FIXED = _IDS_ACTION
    _FIXED_FIELDS = ("sender_id", "receiver_id", "update_action", "reserved")
    _SLOTS = (("pool_handle", (PoolHandle,), ONE, "handle"), ("pool_element", (PoolElement,), ONE, None))
    sender_id: int
    receiver_id: int = 0
    update_action: int = UpdateAction.ADD_PE
    reserved: int = 0
    pool_handle: bytes
    pool_element: PoolElement
    takeover_suggested: bool = False
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ListRequest(EnrpMessage):
    """Ask a peer for its list of known registrars."""

    TYPE = EnrpType.LIST_REQUEST
    NAME = "ENRP List Request"
    sender_id: int
    receiver_id: int = 0
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ListResponse(EnrpMessage):
    """The peer list: one Server Information per known registrar."""

    TYPE = EnrpType.LIST_RESPONSE
    NAME = "ENRP List Response"
    _FLAGS = (("reject", REJECT_FLAG),)
    _SLOTS = (("servers", (ServerInformation,), MANY, None),)
    sender_id: int
    receiver_id: int = 0
    servers: tuple[ServerInformation, ...] = ()
    reject: bool = False
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class InitTakeover(EnrpMessage):
    """Start taking over the PEs of the silent registrar `target_id`."""

    TYPE = EnrpType.INIT_TAKEOVER
    NAME = "ENRP Init Takeover"
    _FIXED = _IDS_TARGET
    _FIXED_FIELDS = ("sender_id", "receiver_id", "target_id")
    sender_id: int
    receiver_id: int = 0
    target_id: int
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class InitTakeoverAck(EnrpMessage):
    """Agree that the sender of the Init Takeover may take over `target_id`."""

    TYPE = EnrpType.INIT_TAKEOVER_ACK
    NAME = "ENRP Init Takeover Ack"
    _FIXED = _IDS_TARGET
    _FIXED_FIELDS = ("sender_id", "receiver_id", "target_id")
    sender_id: int
    receiver_id: int = 0
    target_id: int
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TakeoverServer(EnrpMessage):
    """The takeover of `target_id` is done: the sender is now home registrar of its PEs."""

    TYPE = EnrpType.TAKEOVER_SERVER
    NAME = "ENRP Takeover Server"
    _FIXED = _IDS_TARGET
    _FIXED_FIELDS = ("sender_id", "receiver_id", "target_id")
    sender_id: int
    receiver_id: int = 0
    target_id: int
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrpError(EnrpMessage):
    """An Operation Error between registrars."""

    TYPE = EnrpType.ERROR
    NAME = "ENRP Error"
    _SLOTS = (("error", (OperationError,), ONE, None),)
    sender_id: int
    receiver_id: int = 0
    error: OperationError
    extra: tuple[Parameter, ...] = ()
    reserved_flags: int = 0


ENRP_MESSAGES: dict[int, type[EnrpMessage]] = {
    int(c.TYPE): c
    for c in (Presence, HandleTableRequest, HandleTableResponse, HandleUpdate, ListRequest, ListResponse,
              InitTakeover, InitTakeoverAck, TakeoverServer, EnrpError)
}


def decode_enrp(data: bytes) -> EnrpMessage:
    """Decode one ENRP message occupying all of `data`. Raises CodecError on anything malformed."""
    return decode_with(ENRP_MESSAGES, "ENRP", data)  # type: ignore[arg-type,return-value]


def peek_ids(data: bytes) -> tuple[int, int] | None:
    """(sender ID, receiver ID) of raw ENRP bytes, without decoding the rest.

    Every ENRP message starts its body with these two IDs, so they can be read even from a message
    of an unknown type (to address the ENRP Error that reports it)."""
    if len(data) < 4 + _IDS.size:
        return None
    return _IDS.unpack_from(data, 4)  # type: ignore[return-value]


def unrecognized_parameters(msg: EnrpMessage) -> list[UnknownParameter]:
    """Every parameter of `msg` the codec did not recognise, in message order.

    Unknown parameters end up in the ``extra`` of the message or of a container parameter (Pool
    Element, Server Information, transport parameters), at any depth; the receiver applies their
    action bits (RFC 5354 section 2.1) to all of them, so they are collected from everywhere."""
    out: list[UnknownParameter] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, UnknownParameter):
            out.append(obj)
        elif isinstance(obj, tuple):
            for item in obj:
                walk(item)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                if isinstance(value, (tuple, Parameter, HandleTableEntry)):
                    walk(value)

    walk(msg)
    return out

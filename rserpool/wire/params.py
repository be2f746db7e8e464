"""RFC 5354 parameters used by ASAP and ENRP (plus RSPLIB's Handle Resolution Option), as frozen dataclasses.

Each parameter class has `TYPE` (the full 16-bit TLV type, action bits included), `encode() -> bytes`
(the complete TLV with padding) and a decoder registered in `DECODERS`. Parameters of an unknown
type (or a known type number carrying different action bits) decode to `UnknownParameter`, which
re-encodes byte for byte. Container parameters keep children they do not expect in `extra`;
re-encoding is byte-identical when children come in RFC order (as RSPLIB sends them), `extra` ones
are re-emitted after the expected children.

The address and transport parameters live in ``rserpool.wire.transports``, the common base in
``rserpool.wire.parambase``; both are re-exported here (``__all__``), so that this module stays
the one place to import parameters from.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from rserpool.policytypes import PolicyType
from rserpool.wire.errors import CodecError
from rserpool.wire.parambase import (
    _U16,
    _U32,
    CauseCode,
    Parameter,
    ParamType,
    TransportUse,
    UnknownParameter,
    _at_least,
    _exact,
    _u16,
    _u32,
)
from rserpool.wire.tlv import encode_tlv, iter_tlvs, padding
from rserpool.wire.transports import DECODERS as TRANSPORT_DECODERS
from rserpool.wire.transports import (
    TRANSPORT_CLASSES,
    DccpTransport,
    IPv4Address,
    IPv6Address,
    SctpTransport,
    TcpTransport,
    Transport,
    UdpLiteTransport,
    UdpTransport,
    encode_address,
)

_U32X3 = struct.Struct("!III")
_HDR = struct.Struct("!HH")

# ---------------------------------------------------------------------------------------------- policy

# Which 32-bit values follow the policy type, in wire order (RSPLIB rserpoolmessage.h, RFC 5356,
# the reference capture for PLU). Unknown policy types keep their value bytes in `extra_bytes`.
POLICY_FIELDS: dict[int, tuple[str, ...]] = {
    PolicyType.UNDEFINED: (),
    PolicyType.ROUND_ROBIN: (),
    PolicyType.RANDOM: (),
    PolicyType.WEIGHTED_ROUND_ROBIN: ("weight",),
    PolicyType.WEIGHTED_RANDOM: ("weight",),
    PolicyType.PRIORITY: ("priority",),
    PolicyType.LEAST_USED: ("load",),
    PolicyType.RANDOMIZED_LEAST_USED: ("load",),
    PolicyType.LEAST_USED_DEGRADATION: ("load", "load_degradation"),
    PolicyType.PRIORITY_LEAST_USED: ("load", "load_degradation"),
    PolicyType.RANDOMIZED_PRIORITY_LEAST_USED: ("load", "load_degradation"),
    PolicyType.RANDOMIZED_LEAST_USED_DEGRADATION: ("load", "load_degradation"),
    PolicyType.PRIORITY_LEAST_USED_DEGRADATION: ("load", "load_degradation"),
    PolicyType.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION: ("load", "load_degradation"),
    PolicyType.WEIGHTED_RANDOM_DPF: ("weight", "weight_dpf", "distance"),
    PolicyType.LEAST_USED_DPF: ("load", "load_dpf", "distance"),
    PolicyType.LEAST_USED_DEGRADATION_DPF: ("load", "load_degradation", "load_dpf", "distance"),
    PolicyType.PRIORITY_LEAST_USED_DPF: ("load", "load_degradation", "load_dpf", "distance"),
    PolicyType.PRIORITY_LEAST_USED_DEGRADATION_DPF: ("load", "load_degradation", "load_dpf", "distance"),
}
_POLICY_VALUE_NAMES = ("weight", "priority", "load", "load_degradation", "load_dpf", "weight_dpf", "distance")
_POLICY_STRUCTS = {n: struct.Struct("!" + "I" * (n + 1)) for n in range(5)}
_POLICY_TYPES = {int(p): p for p in PolicyType}


@dataclass(frozen=True, slots=True)
class PoolPolicy(Parameter):
    """Pool Member Selection Policy parameter (0x8).

    Only the values that `POLICY_FIELDS[policy_type]` lists go on the wire; the others must stay 0.
    `extra_bytes` holds value bytes beyond the known layout (or all of them for unknown types).
    """

    TYPE: ClassVar[int] = ParamType.POOL_POLICY
    policy_type: int
    weight: int = 0
    priority: int = 0
    load: int = 0
    load_degradation: int = 0
    load_dpf: int = 0
    weight_dpf: int = 0
    distance: int = 0
    extra_bytes: bytes = b""

    def encode(self) -> bytes:
        names = POLICY_FIELDS.get(self.policy_type)
        if names is None:
            if any(getattr(self, n) for n in _POLICY_VALUE_NAMES):
                raise CodecError(f"policy type 0x{self.policy_type:08x} is unknown: its values must go in extra_bytes")
            return encode_tlv(self.TYPE, _u32("policy type", self.policy_type) + self.extra_bytes)
        for n in _POLICY_VALUE_NAMES:
            if n not in names and getattr(self, n):
                raise CodecError(f"policy {PolicyType(self.policy_type).name} has no {n} field (got {getattr(self, n)})")
        try:
            value = _POLICY_STRUCTS[len(names)].pack(self.policy_type, *[getattr(self, n) for n in names])
        except struct.error:
            raise CodecError(f"policy value out of the unsigned 32-bit range: {self!r}") from None
        return encode_tlv(self.TYPE, value + self.extra_bytes)


def _dec_policy(buf: bytes, s: int, e: int) -> PoolPolicy:
    _at_least("Pool Member Selection Policy parameter", s, e, 4)
    (ptype,) = _U32.unpack_from(buf, s)
    names = POLICY_FIELDS.get(ptype)
    if names is None:
        return PoolPolicy(ptype, extra_bytes=buf[s + 4 : e])
    need = 4 + 4 * len(names)
    if e - s < need:
        raise CodecError(
            f"Pool Member Selection Policy parameter at offset {s - 4}: policy {PolicyType(ptype).name} "
            f"needs {need} value bytes, got {e - s}"
        )
    values = _POLICY_STRUCTS[len(names)].unpack_from(buf, s)
    kwargs = dict(zip(names, values[1:], strict=True))
    return PoolPolicy(_POLICY_TYPES[ptype], extra_bytes=buf[s + need : e], **kwargs)


# ---------------------------------------------------------------------------------------------- simple ones


@dataclass(frozen=True, slots=True)
class PoolHandle(Parameter):
    """Pool Handle parameter (0x9): an opaque byte string naming the pool."""

    TYPE: ClassVar[int] = ParamType.POOL_HANDLE
    handle: bytes

    def encode(self) -> bytes:
        return encode_tlv(self.TYPE, self.handle)


def _dec_handle(buf: bytes, s: int, e: int) -> PoolHandle:
    return PoolHandle(buf[s:e])


@dataclass(frozen=True, slots=True)
class Cookie(Parameter):
    """Cookie parameter (0xd): opaque state a PE hands its PUs."""

    TYPE: ClassVar[int] = ParamType.COOKIE
    data: bytes

    def encode(self) -> bytes:
        return encode_tlv(self.TYPE, self.data)


def _dec_cookie(buf: bytes, s: int, e: int) -> Cookie:
    return Cookie(buf[s:e])


@dataclass(frozen=True, slots=True)
class PoolElementIdentifier(Parameter):
    """Pool Element Identifier parameter (0xe): the 32-bit PE ID."""

    TYPE: ClassVar[int] = ParamType.PE_IDENTIFIER
    identifier: int

    def encode(self) -> bytes:
        return b"\x00\x0e\x00\x08" + _u32("PE identifier", self.identifier)


def _dec_peid(buf: bytes, s: int, e: int) -> PoolElementIdentifier:
    _exact("PE Identifier parameter", s, e, 4)
    return PoolElementIdentifier(_U32.unpack_from(buf, s)[0])


@dataclass(frozen=True, slots=True)
class PoolElementChecksum(Parameter):
    """PE Checksum parameter (0xf): RSPLIB's 16-bit handlespace checksum (length 6, 2 padding bytes)."""

    TYPE: ClassVar[int] = ParamType.PE_CHECKSUM
    checksum: int

    def encode(self) -> bytes:
        return b"\x00\x0f\x00\x06" + _u16("PE checksum", self.checksum) + b"\x00\x00"


def _dec_checksum(buf: bytes, s: int, e: int) -> PoolElementChecksum:
    _exact("PE Checksum parameter", s, e, 2)
    return PoolElementChecksum(_U16.unpack_from(buf, s)[0])


@dataclass(frozen=True, slots=True)
class HandleResolutionOption(Parameter):
    """RSPLIB's Handle Resolution Option (0x803f, "skip" action bits): how many PEs the PU wants
    (0xFFFFFFFF = as many as possible)."""

    TYPE: ClassVar[int] = ParamType.HANDLE_RESOLUTION_OPTION
    items: int

    def encode(self) -> bytes:
        return b"\x80\x3f\x00\x08" + _u32("handle resolution items", self.items)


def _dec_hropt(buf: bytes, s: int, e: int) -> HandleResolutionOption:
    _exact("Handle Resolution Option parameter", s, e, 4)
    return HandleResolutionOption(_U32.unpack_from(buf, s)[0])


# ---------------------------------------------------------------------------------------------- containers


@dataclass(frozen=True, slots=True)
class PoolElement(Parameter):
    """Pool Element parameter (0xa): identity, home registrar, registration life (ms), user transport,
    selection policy and, inside ENRP, the transport the PE registered over (`registrator_transport`)."""

    TYPE: ClassVar[int] = ParamType.POOL_ELEMENT
    identifier: int
    home_registrar: int
    registration_life: int
    user_transport: Transport
    policy: PoolPolicy
    registrator_transport: Transport | None = None
    extra: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        try:
            head = _U32X3.pack(self.identifier, self.home_registrar, self.registration_life)
        except struct.error:
            raise CodecError(f"Pool Element parameter: a field does not fit 32 bits: {self!r}") from None
        parts = [head, self.user_transport.encode(), self.policy.encode()]
        if self.registrator_transport is not None:
            parts.append(self.registrator_transport.encode())
        parts.extend(p.encode() for p in self.extra)
        return encode_tlv(self.TYPE, b"".join(parts))


def _dec_pe(buf: bytes, s: int, e: int) -> PoolElement:
    _at_least("Pool Element parameter", s, e, 12)
    ident, home, life = _U32X3.unpack_from(buf, s)
    user = policy = reg = None
    extra: list[Parameter] = []
    for t, vs, ve in iter_tlvs(buf, s + 12, e, "Pool Element parameter"):
        p = _decode_child(t, buf, vs, ve, _PE_CHILD_TYPES)
        if user is None and policy is None and isinstance(p, TRANSPORT_CLASSES):
            user = p
        elif policy is None and user is not None and type(p) is PoolPolicy:
            policy = p
        elif reg is None and policy is not None and not extra and isinstance(p, TRANSPORT_CLASSES):
            reg = p
        else:
            extra.append(p)
    if user is None or policy is None:
        raise CodecError(
            f"Pool Element parameter at offset {s - 4} (PE 0x{ident:08x}): missing "
            + ("user transport parameter" if user is None else "pool member selection policy parameter")
        )
    return PoolElement(ident, home, life, user, policy, reg, tuple(extra))


@dataclass(frozen=True, slots=True)
class ServerInformation(Parameter):
    """Server Information parameter (0xb): a registrar's ID and its ENRP transport."""

    TYPE: ClassVar[int] = ParamType.SERVER_INFORMATION
    server_id: int
    transport: Transport | None = None
    extra: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        parts = [_u32("server ID", self.server_id)]
        if self.transport is not None:
            parts.append(self.transport.encode())
        parts.extend(p.encode() for p in self.extra)
        return encode_tlv(self.TYPE, b"".join(parts))


def _dec_serverinfo(buf: bytes, s: int, e: int) -> ServerInformation:
    _at_least("Server Information parameter", s, e, 4)
    (sid,) = _U32.unpack_from(buf, s)
    transport = None
    extra: list[Parameter] = []
    for t, vs, ve in iter_tlvs(buf, s + 4, e, "Server Information parameter"):
        p = _decode_child(t, buf, vs, ve, _TRANSPORT_TYPES)
        if transport is None and not extra and isinstance(p, TRANSPORT_CLASSES):
            transport = p
        else:
            extra.append(p)
    return ServerInformation(sid, transport, tuple(extra))


@dataclass(frozen=True, slots=True)
class ErrorCause:
    """One cause inside an Operation Error parameter: code and raw cause-specific information
    (an offending parameter TLV or message for some codes; see `offending_parameter()`)."""

    code: int
    info: bytes = b""

    def offending_parameter(self) -> Parameter:
        """Decode `info` as the parameter TLV it carries (codes 1, 3, 5, 7). Raises CodecError."""
        if len(self.info) < 4:
            raise CodecError(f"error cause {self.code}: {len(self.info)} info bytes, no parameter TLV")
        params = decode_parameters(self.info, 0, len(self.info), f"error cause {self.code} info")
        if len(params) != 1:
            raise CodecError(f"error cause {self.code}: info holds {len(params)} TLVs, expected 1")
        return params[0]


@dataclass(frozen=True, slots=True)
class OperationError(Parameter):
    """Operation Error parameter (0xc): one or more error causes.

    Every cause but the last is padded to 4 bytes inside the value; the last one's padding is the
    parameter's own padding (RSPLIB's layout)."""

    TYPE: ClassVar[int] = ParamType.OPERATION_ERROR
    causes: tuple[ErrorCause, ...] = ()

    def encode(self) -> bytes:
        parts = []
        last = len(self.causes) - 1
        for i, c in enumerate(self.causes):
            length = 4 + len(c.info)
            if length > 0xFFFF:
                raise CodecError(f"error cause {c.code}: {len(c.info)} info bytes exceed the length field")
            parts.append(_HDR.pack(c.code, length) + c.info)
            if i != last:
                parts.append(padding(length))
        return encode_tlv(self.TYPE, b"".join(parts))


def _dec_operror(buf: bytes, s: int, e: int) -> OperationError:
    causes = [ErrorCause(code, buf[vs:ve]) for code, vs, ve in iter_tlvs(buf, s, e, "Operation Error parameter")]
    return OperationError(tuple(causes))


# ---------------------------------------------------------------------------------------------- dispatch

DECODERS: dict[int, Any] = {
    **TRANSPORT_DECODERS,
    ParamType.POOL_POLICY: _dec_policy,
    ParamType.POOL_HANDLE: _dec_handle,
    ParamType.POOL_ELEMENT: _dec_pe,
    ParamType.SERVER_INFORMATION: _dec_serverinfo,
    ParamType.OPERATION_ERROR: _dec_operror,
    ParamType.COOKIE: _dec_cookie,
    ParamType.PE_IDENTIFIER: _dec_peid,
    ParamType.PE_CHECKSUM: _dec_checksum,
    ParamType.HANDLE_RESOLUTION_OPTION: _dec_hropt,
}
DECODERS = {int(k): v for k, v in DECODERS.items()}


def decode_parameter_value(tlv_type: int, buf: bytes, start: int, end: int) -> Parameter:
    """Decode one parameter whose value is buf[start:end]."""
    dec = DECODERS.get(tlv_type)
    if dec is None:
        return UnknownParameter(tlv_type, buf[start:end])
    return dec(buf, start, end)


def _decode_child(tlv_type: int, buf: bytes, start: int, end: int, allowed: frozenset[int]) -> Parameter:
    # Containers only interpret the child types they define; anything else stays raw. This bounds
    # the nesting depth (message > PE > transport > address) whatever the input.
    if tlv_type in allowed:
        return DECODERS[tlv_type](buf, start, end)
    return UnknownParameter(tlv_type, buf[start:end])


_TRANSPORT_TYPES = frozenset({ParamType.SCTP_TRANSPORT, ParamType.TCP_TRANSPORT, ParamType.UDP_TRANSPORT,
                              ParamType.UDP_LITE_TRANSPORT, ParamType.DCCP_TRANSPORT})
_PE_CHILD_TYPES = _TRANSPORT_TYPES | {ParamType.POOL_POLICY}


def decode_parameters(buf: bytes, start: int, end: int, where: str) -> list[Parameter]:
    """Decode the sequence of parameters in buf[start:end]; `where` names the container in errors."""
    return [decode_parameter_value(t, buf, vs, ve) for t, vs, ve in iter_tlvs(buf, start, end, where)]


def decode_parameter(data: bytes) -> Parameter:
    """Decode exactly one parameter TLV (padding optional). Raises CodecError."""
    params = decode_parameters(bytes(data), 0, len(data), "parameter")
    if len(params) != 1:
        raise CodecError(f"expected exactly one parameter, found {len(params)}")
    return params[0]


__all__ = [
    "CauseCode", "Cookie", "DccpTransport", "ErrorCause", "HandleResolutionOption", "IPv4Address", "IPv6Address",
    "OperationError", "POLICY_FIELDS", "ParamType", "Parameter", "PoolElement", "PoolElementChecksum",
    "PoolElementIdentifier", "PoolHandle", "PoolPolicy", "SctpTransport", "ServerInformation", "TRANSPORT_CLASSES",
    "TcpTransport", "Transport", "TransportUse", "UdpLiteTransport", "UdpTransport", "UnknownParameter",
    "decode_parameter", "decode_parameters", "encode_address",
]

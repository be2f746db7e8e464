"""RFC 5354 address and transport parameters (IPv4/IPv6 Address; SCTP, TCP, UDP, UDP-Lite and DCCP
Transport), part of the parameter codec (``rserpool.wire.params``, which dispatches to ``DECODERS``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, ClassVar

from rserpool.wire.errors import CodecError
from rserpool.wire.parambase import (
    _U16U16,
    _U32,
    Parameter,
    ParamType,
    TransportUse,
    UnknownParameter,
    _at_least,
    _exact,
    _u16,
    _u32,
)
from rserpool.wire.tlv import encode_tlv, iter_tlvs

# ---------------------------------------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True)
class IPv4Address(Parameter):
    """IPv4 Address parameter (type 0x1): one address in dotted-quad text form."""

    TYPE: ClassVar[int] = ParamType.IPV4_ADDRESS
    address: str

    def encode(self) -> bytes:
        return b"\x00\x01\x00\x08" + _pton(socket.AF_INET, self.address)


@dataclass(frozen=True, slots=True)
class IPv6Address(Parameter):
    """IPv6 Address parameter (type 0x2): one address in canonical text form."""

    TYPE: ClassVar[int] = ParamType.IPV6_ADDRESS
    address: str

    def encode(self) -> bytes:
        return b"\x00\x02\x00\x14" + _pton(socket.AF_INET6, self.address)


def _pton(family: int, text: str) -> bytes:
    try:
        return socket.inet_pton(family, text)
    except (OSError, TypeError, ValueError):
        raise CodecError(f"invalid IP address {text!r}") from None


def encode_address(text: str) -> bytes:
    """IPv4 or IPv6 Address TLV for an address in text form (IPv6 if it contains ':')."""
    if ":" in text:
        return b"\x00\x02\x00\x14" + _pton(socket.AF_INET6, text)
    return b"\x00\x01\x00\x08" + _pton(socket.AF_INET, text)


def _dec_ipv4(buf: bytes, s: int, e: int) -> IPv4Address:
    _exact("IPv4 Address parameter", s, e, 4)
    return IPv4Address(socket.inet_ntop(socket.AF_INET, buf[s:e]))


def _dec_ipv6(buf: bytes, s: int, e: int) -> IPv6Address:
    _exact("IPv6 Address parameter", s, e, 16)
    return IPv6Address(socket.inet_ntop(socket.AF_INET6, buf[s:e]))


_ADDRESS_DECODERS: dict[int, Any] = {int(ParamType.IPV4_ADDRESS): _dec_ipv4, int(ParamType.IPV6_ADDRESS): _dec_ipv6}


# ---------------------------------------------------------------------------------------------- transports


def _split_addresses(buf: bytes, s: int, e: int, where: str) -> tuple[tuple[str, ...], tuple[Parameter, ...]]:
    addrs: list[str] = []
    extra: list[Parameter] = []
    for t, vs, ve in iter_tlvs(buf, s, e, where):
        # Only address children are interpreted; anything else stays raw (as in every container).
        dec = _ADDRESS_DECODERS.get(t)
        p = dec(buf, vs, ve) if dec is not None else UnknownParameter(t, buf[vs:ve])
        if type(p) is IPv4Address or type(p) is IPv6Address:
            addrs.append(p.address)
        else:
            extra.append(p)
    return tuple(addrs), tuple(extra)


def _join_addresses(addresses: tuple[str, ...], extra: tuple[Parameter, ...]) -> bytes:
    out = b"".join([encode_address(a) for a in addresses])
    if extra:
        out += b"".join([p.encode() for p in extra])
    return out


@dataclass(frozen=True, slots=True)
class SctpTransport(Parameter):
    """SCTP Transport parameter (0x4): port, transport use, one or more addresses (multi-homing)."""

    TYPE: ClassVar[int] = ParamType.SCTP_TRANSPORT
    port: int
    addresses: tuple[str, ...] = ()
    transport_use: int = TransportUse.DATA_ONLY
    extra: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return encode_tlv(self.TYPE, _u16("port", self.port) + _u16("transport use", self.transport_use)
                          + _join_addresses(self.addresses, self.extra))


@dataclass(frozen=True, slots=True)
class TcpTransport(Parameter):
    """TCP Transport parameter (0x5): port, transport use, address."""

    TYPE: ClassVar[int] = ParamType.TCP_TRANSPORT
    port: int
    addresses: tuple[str, ...] = ()
    transport_use: int = TransportUse.DATA_ONLY
    extra: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return encode_tlv(self.TYPE, _u16("port", self.port) + _u16("transport use", self.transport_use)
                          + _join_addresses(self.addresses, self.extra))


@dataclass(frozen=True, slots=True)
class UdpTransport(Parameter):
    """UDP Transport parameter (0x6): port, reserved, address."""

    TYPE: ClassVar[int] = ParamType.UDP_TRANSPORT
    port: int
    addresses: tuple[str, ...] = ()
    reserved: int = 0
    extra: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return encode_tlv(self.TYPE, _u16("port", self.port) + _u16("reserved", self.reserved)
                          + _join_addresses(self.addresses, self.extra))


@dataclass(frozen=True, slots=True)
class UdpLiteTransport(Parameter):
    """UDP-Lite Transport parameter (0x7): port, reserved, address."""

    TYPE: ClassVar[int] = ParamType.UDP_LITE_TRANSPORT
    port: int
    addresses: tuple[str, ...] = ()
    reserved: int = 0
    extra: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return encode_tlv(self.TYPE, _u16("port", self.port) + _u16("reserved", self.reserved)
                          + _join_addresses(self.addresses, self.extra))


@dataclass(frozen=True, slots=True)
class DccpTransport(Parameter):
    """DCCP Transport parameter (0x3): port, reserved, service code (32 bit), address."""

    TYPE: ClassVar[int] = ParamType.DCCP_TRANSPORT
    port: int
    addresses: tuple[str, ...] = ()
    service_code: int = 0
    reserved: int = 0
    extra: tuple[Parameter, ...] = ()

    def encode(self) -> bytes:
        return encode_tlv(self.TYPE, _u16("port", self.port) + _u16("reserved", self.reserved)
                          + _u32("service code", self.service_code) + _join_addresses(self.addresses, self.extra))


Transport = SctpTransport | TcpTransport | UdpTransport | UdpLiteTransport | DccpTransport
TRANSPORT_CLASSES = (SctpTransport, TcpTransport, UdpTransport, UdpLiteTransport, DccpTransport)


def _dec_sctp(buf: bytes, s: int, e: int) -> SctpTransport:
    _at_least("SCTP Transport parameter", s, e, 4)
    port, use = _U16U16.unpack_from(buf, s)
    addrs, extra = _split_addresses(buf, s + 4, e, "SCTP Transport parameter")
    return SctpTransport(port, addrs, use, extra)


def _dec_tcp(buf: bytes, s: int, e: int) -> TcpTransport:
    _at_least("TCP Transport parameter", s, e, 4)
    port, use = _U16U16.unpack_from(buf, s)
    addrs, extra = _split_addresses(buf, s + 4, e, "TCP Transport parameter")
    return TcpTransport(port, addrs, use, extra)


def _dec_udp(buf: bytes, s: int, e: int) -> UdpTransport:
    _at_least("UDP Transport parameter", s, e, 4)
    port, res = _U16U16.unpack_from(buf, s)
    addrs, extra = _split_addresses(buf, s + 4, e, "UDP Transport parameter")
    return UdpTransport(port, addrs, res, extra)


def _dec_udplite(buf: bytes, s: int, e: int) -> UdpLiteTransport:
    _at_least("UDP-Lite Transport parameter", s, e, 4)
    port, res = _U16U16.unpack_from(buf, s)
    addrs, extra = _split_addresses(buf, s + 4, e, "UDP-Lite Transport parameter")
    return UdpLiteTransport(port, addrs, res, extra)


def _dec_dccp(buf: bytes, s: int, e: int) -> DccpTransport:
    _at_least("DCCP Transport parameter", s, e, 8)
    port, res = _U16U16.unpack_from(buf, s)
    (code,) = _U32.unpack_from(buf, s + 4)
    addrs, extra = _split_addresses(buf, s + 8, e, "DCCP Transport parameter")
    return DccpTransport(port, addrs, code, res, extra)


DECODERS: dict[int, Any] = {
    ParamType.IPV4_ADDRESS: _dec_ipv4,
    ParamType.IPV6_ADDRESS: _dec_ipv6,
    ParamType.DCCP_TRANSPORT: _dec_dccp,
    ParamType.SCTP_TRANSPORT: _dec_sctp,
    ParamType.TCP_TRANSPORT: _dec_tcp,
    ParamType.UDP_TRANSPORT: _dec_udp,
    ParamType.UDP_LITE_TRANSPORT: _dec_udplite,
}
"""Decoders of this module's parameters by TLV type."""

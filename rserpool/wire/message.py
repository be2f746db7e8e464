"""Shared machinery of ASAP and ENRP messages: the type(1) flags(1) length(2) header, flag bits,
fixed fields after the header, and the mapping of the parameter list onto named fields ("slots").

A message class declares:
  _FLAGS  ((field name, bit), ...)             booleans taken from the flags byte
  _FIXED  struct + field names                 fixed-size fields right after the header
  _SLOTS  ((field, classes, kind, unwrap), ...) expected parameters in RFC order;
          kind is ONE (mandatory), OPT (0 or 1) or MANY (0..n); unwrap names the attribute stored
          instead of the parameter object (e.g. PoolHandle.handle -> bytes), or None.
Parameters that fit no slot (unknown ones, duplicates, out-of-order ones) go to `extra` and are
re-encoded after the slotted ones. Flag bits without a name are kept in `reserved_flags`.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar

from rserpool.wire.errors import CodecError
from rserpool.wire.params import Parameter, decode_parameter_value
from rserpool.wire.tlv import iter_tlvs

HEADER = struct.Struct("!BBH")
_pack_header = HEADER.pack

ONE, OPT, MANY = "one", "opt", "many"


class Message:
    """Base of ASAP and ENRP messages (frozen, slotted dataclasses in asap.py / enrp.py)."""

    __slots__ = ()
    PROTOCOL: ClassVar[str]
    TYPE: ClassVar[int]
    NAME: ClassVar[str]
    _FLAGS: ClassVar[tuple[tuple[str, int], ...]] = ()
    _FIXED: ClassVar[struct.Struct | None] = None
    _FIXED_FIELDS: ClassVar[tuple[str, ...]] = ()
    _SLOTS: ClassVar[tuple[tuple[str, tuple[type, ...], str, str | None], ...]] = ()

    # -- encoding -------------------------------------------------------------------------------

    def flags_byte(self) -> int:
        """The flags octet as it goes on the wire."""
        f = getattr(self, "reserved_flags", 0)
        for name, bit in self._FLAGS:
            if getattr(self, name):
                f |= bit
        return f

    def _encode_fixed(self) -> bytes:
        if self._FIXED is None:
            return b""
        try:
            return self._FIXED.pack(*[getattr(self, n) for n in self._FIXED_FIELDS])
        except struct.error:
            raise CodecError(f"{self.NAME}: a fixed field is out of range: {self!r}") from None

    def _encode_params(self) -> list[bytes]:
        parts: list[bytes] = []
        for name, classes, kind, unwrap in self._SLOTS:
            value = getattr(self, name)
            if kind == MANY:
                items = value
            elif value is None:
                if kind == ONE:
                    raise CodecError(f"{self.NAME}: mandatory field {name} is None")
                continue
            else:
                items = (value,)
            for item in items:
                parts.append((classes[0](item) if unwrap else item).encode())
        for p in self.extra:  # type: ignore[attr-defined]
            parts.append(p.encode())
        return parts

    def encode(self) -> bytes:
        """The complete message; its length field covers all parameters including the last padding."""
        body = self._encode_fixed() + b"".join(self._encode_params())
        length = 4 + len(body)
        if length > 0xFFFF:
            raise CodecError(f"{self.NAME}: {length} bytes exceed the 16-bit message length field")
        flags = self.flags_byte()
        if not 0 <= flags <= 0xFF:
            raise CodecError(f"{self.NAME}: flags 0x{flags:x} do not fit one byte")
        return _pack_header(self.TYPE, flags, length) + body

    # -- decoding -------------------------------------------------------------------------------

    @classmethod
    def _decode(cls, buf: bytes, flags: int, end: int) -> Message:
        kwargs: dict[str, Any] = {}
        for name, bit in cls._FLAGS:
            kwargs[name] = bool(flags & bit)
            flags &= ~bit
        kwargs["reserved_flags"] = flags
        off = 4
        if cls._FIXED is not None:
            size = cls._FIXED.size
            if end - off < size:
                raise CodecError(f"{cls.NAME}: {end} byte(s), expected at least {off + size} (header and fixed fields)")
            kwargs.update(zip(cls._FIXED_FIELDS, cls._FIXED.unpack_from(buf, off), strict=True))
            off += size
        params = [decode_parameter_value(t, buf, vs, ve) for t, vs, ve in iter_tlvs(buf, off, end, cls.NAME)]
        cls._assign(params, kwargs)
        return cls(**kwargs)

    @classmethod
    def _assign(cls, params: list[Parameter], kwargs: dict[str, Any]) -> None:
        slots = cls._SLOTS
        n = len(slots)
        values: list[Any] = [[] if kind == MANY else None for _, _, kind, _ in slots]
        extra: list[Parameter] = []
        i = 0
        for p in params:
            j = i
            while j < n:
                _, classes, kind, _ = slots[j]
                if isinstance(p, classes) and (kind == MANY or values[j] is None):
                    break
                j += 1
            if j == n:
                extra.append(p)
                continue
            name, classes, kind, unwrap = slots[j]
            v = getattr(p, unwrap) if unwrap else p
            if kind == MANY:
                values[j].append(v)
                i = j
            else:
                values[j] = v
                i = j + 1
        for (name, classes, kind, _), v in zip(slots, values, strict=True):
            if kind == MANY:
                kwargs[name] = tuple(v)
            elif v is None and kind == ONE:
                raise CodecError(f"{cls.NAME}: mandatory {classes[0].__name__} parameter missing")
            else:
                kwargs[name] = v
        kwargs["extra"] = tuple(extra)


def decode_with(table: dict[int, type[Message]], protocol: str, data: bytes) -> Message:
    """Decode one message of `protocol` from exactly `data` (the length field must match)."""
    try:
        n = len(data)
    except TypeError:
        raise CodecError(f"{protocol}: expected bytes, got {type(data).__name__}") from None
    if n < 4:
        raise CodecError(f"{protocol}: {n} byte(s), expected at least the 4-byte message header")
    if not isinstance(data, bytes):
        data = bytes(data)
    mtype, flags, length = HEADER.unpack_from(data, 0)
    cls = table.get(mtype)
    if cls is None:
        raise CodecError(f"{protocol}: unknown message type 0x{mtype:02x}")
    if length != n:
        raise CodecError(f"{cls.NAME}: length field says {length} byte(s), got {n}")
    return cls._decode(data, flags, n)

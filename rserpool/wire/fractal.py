"""RSPLIB's Fractal Generator Protocol (FGP): the messages of ``rspserver -fractal`` and ``fractalpooluser``.

Follows RSPLIB's ``src/fractalgeneratorpackets.h`` (structures), ``src/fractalgeneratorservice.cc``
(how the pool element fills them) and ``src/fractalpooluser.cc`` (how the pool user fills and checks
them), and Wireshark's ``epan/dissectors/packet-fractalgeneratorprotocol.c`` (the dissector
``fractalgeneratorprotocol``). Everything is packed and in network byte order:

* common header: type(1) flags(1) length(2); type 1 = Parameter, 2 = Data;
* Parameter (PU -> PE, 60 bytes): header, Width u32, Height u32, MaxIterations u32, AlgorithmID u32
  (1 Mandelbrot z = z^2 - c, 2 MandelbrotN z = z^N - c; any other: a test pattern), C1Real, C1Imag,
  C2Real, C2Imag, N as IEEE-754 doubles in network byte order (RSPLIB's ``network_double_t``:
  ``hton64`` of the double's bits); length = 60;
* Data (PE -> PU, 16 + 4 x Points bytes): header, StartX u32, StartY u32, Points u32, then Points
  32-bit values (the iteration count per point, colour index) in row-major order from (StartX,
  StartY), wrapping to the next row; at most ``FGD_MAX_POINTS`` = 324 points; length = 16 + 4 x
  Points. The image's end is a Data message with StartX = StartY = 0xFFFFFFFF and no points;
* Cookie (``struct FGPCookie``, 76 bytes, carried in an ASAP Cookie / Cookie Echo, never on the FGP
  PPID): ID "<FG-TD1>", the Parameter (RSPLIB writes its length field as 4, the header's size, and
  never checks it), CurrentX u32, CurrentY u32 (where the computation stands).

PPID: 32 (IANA "Fractal Generator Protocol"; RSPLIB's ``PPID_FGP``); Wireshark also dissects the
legacy 0x29097601 on SCTP. FGP has no well-known port: a PE registers whatever port it listens on.

Decoders raise ``CodecError`` for anything malformed and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from rserpool.wire.errors import CodecError

PPID_FGP = 32
PPID_FGP_LEGACY = 0x29097601  # RSPLIB's old value, still dissected by Wireshark
FGD_MAX_POINTS = 324
FINALIZER_POSITION = 0xFFFFFFFF
COOKIE_ID = b"<FG-TD1>"

HEADER = struct.Struct("!BBH")
PARAMETER = struct.Struct("!BBHIIIIddddd")
PARAMETER_LENGTH = PARAMETER.size  # 60
DATA_HEADER = struct.Struct("!BBHIII")
DATA_HEADER_LENGTH = DATA_HEADER.size  # 16
COOKIE_TAIL = struct.Struct("!II")
COOKIE_LENGTH = len(COOKIE_ID) + PARAMETER_LENGTH + COOKIE_TAIL.size  # 76
COOKIE_PARAMETER_LENGTH = HEADER.size  # what RSPLIB's sendCookie() writes into the embedded length


class FGPType(IntEnum):
    """FGP message types (FGPT_*)."""

    PARAMETER = 1
    DATA = 2


class Algorithm(IntEnum):
    """FGPA_* algorithm identifiers; other values make RSPLIB's PE send its test pattern."""

    MANDELBROT = 1
    MANDELBROTN = 2


def _u32(value: int, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise CodecError(f"FGP {what} out of range: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class FGPParameter:
    """FractalGenerator Parameter: the image size, the complex plane's corners and the algorithm."""

    PROTOCOL = "fgp"
    NAME = "FractalGenerator Parameter"
    width: int
    height: int
    max_iterations: int
    algorithm: int
    c1real: float
    c1imag: float
    c2real: float
    c2imag: float
    n: float = 2.0
    flags: int = 0

    def _pack(self, length: int) -> bytes:
        try:
            return PARAMETER.pack(FGPType.PARAMETER, self.flags, length, _u32(self.width, "width"),
                                  _u32(self.height, "height"), _u32(self.max_iterations, "max iterations"),
                                  _u32(self.algorithm, "algorithm ID"), self.c1real, self.c1imag, self.c2real,
                                  self.c2imag, self.n)
        except (struct.error, TypeError):
            raise CodecError(f"FGP Parameter field out of range: {self!r}") from None

    def encode(self) -> bytes:
        return self._pack(PARAMETER_LENGTH)


@dataclass(frozen=True, slots=True)
class FGPData:
    """FractalGenerator Data: ``values`` of consecutive points from (``start_x``, ``start_y``)."""

    PROTOCOL = "fgp"
    NAME = "FractalGenerator Data"
    start_x: int
    start_y: int
    values: tuple[int, ...] = ()
    flags: int = 0

    @classmethod
    def finalizer(cls) -> FGPData:
        """The Data message that ends an image (StartX = StartY = 0xFFFFFFFF, no points)."""
        return cls(FINALIZER_POSITION, FINALIZER_POSITION)

    @property
    def is_finalizer(self) -> bool:
        return not self.values and self.start_x == FINALIZER_POSITION and self.start_y == FINALIZER_POSITION

    @property
    def points(self) -> int:
        return len(self.values)

    def encode(self) -> bytes:
        n = len(self.values)
        if n > FGD_MAX_POINTS:
            raise CodecError(f"FGP Data: {n} points, at most {FGD_MAX_POINTS}")
        try:
            return (DATA_HEADER.pack(FGPType.DATA, self.flags, DATA_HEADER_LENGTH + 4 * n,
                                     _u32(self.start_x, "StartX"), _u32(self.start_y, "StartY"), n)
                    + struct.pack(f"!{n}I", *self.values))
        except (struct.error, TypeError):
            raise CodecError(f"FGP Data field out of range: {self!r}") from None


FGPMessage = FGPParameter | FGPData


@dataclass(frozen=True, slots=True)
class FGPCookie:
    """``struct FGPCookie``: the parameters and the position reached, for a new PE to resume from."""

    parameter: FGPParameter
    current_x: int
    current_y: int
    parameter_length: int = COOKIE_PARAMETER_LENGTH  # RSPLIB writes 4 here

    def encode(self) -> bytes:
        try:
            return (COOKIE_ID + self.parameter._pack(self.parameter_length)
                    + COOKIE_TAIL.pack(_u32(self.current_x, "CurrentX"), _u32(self.current_y, "CurrentY")))
        except struct.error:
            raise CodecError(f"FGP cookie field out of range: {self!r}") from None


def _bytes(data: object, what: str) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise CodecError(f"{what}: expected bytes, got {type(data).__name__}")


def _parameter(data: bytes, offset: int) -> tuple[FGPParameter, int]:
    """The Parameter at ``offset`` (the length field is returned, not checked: RSPLIB never checks it)."""
    (mtype, flags, length, width, height, max_iter, algorithm,
     c1r, c1i, c2r, c2i, n) = PARAMETER.unpack_from(data, offset)
    if mtype != FGPType.PARAMETER:
        raise CodecError(f"FGP: type {mtype} at offset {offset}, expected Parameter (1)")
    return FGPParameter(width, height, max_iter, algorithm, c1r, c1i, c2r, c2i, n, flags), length


def decode_fgp(data: bytes) -> FGPMessage:
    """Decode one FGP message occupying all of ``data``. Raises CodecError on anything malformed."""
    data = _bytes(data, "FGP")
    if len(data) < HEADER.size:
        raise CodecError(f"FGP: {len(data)} byte(s), shorter than the 4-byte header")
    mtype, flags, length = HEADER.unpack_from(data, 0)
    if length != len(data):
        raise CodecError(f"FGP: length field says {length}, message has {len(data)} byte(s)")
    if mtype == FGPType.PARAMETER:
        if length != PARAMETER_LENGTH:
            raise CodecError(f"FGP Parameter: {length} byte(s), expected {PARAMETER_LENGTH}")
        return _parameter(data, 0)[0]
    if mtype == FGPType.DATA:
        if length < DATA_HEADER_LENGTH:
            raise CodecError(f"FGP Data: {length} byte(s), shorter than its {DATA_HEADER_LENGTH}-byte header")
        _, _, _, start_x, start_y, points = DATA_HEADER.unpack_from(data, 0)
        if points > FGD_MAX_POINTS:
            raise CodecError(f"FGP Data: {points} points, at most {FGD_MAX_POINTS}")
        if length != DATA_HEADER_LENGTH + 4 * points:
            raise CodecError(f"FGP Data: {length} byte(s) for {points} points, expected "
                             f"{DATA_HEADER_LENGTH + 4 * points}")
        return FGPData(start_x, start_y, struct.unpack_from(f"!{points}I", data, DATA_HEADER_LENGTH), flags)
    raise CodecError(f"FGP: unknown message type {mtype}")


def decode_cookie(data: bytes) -> FGPCookie:
    """Decode a ``struct FGPCookie`` (RSPLIB's checks: exactly 76 bytes, ID "<FG-TD1>", a Parameter)."""
    data = _bytes(data, "FGP cookie")
    if len(data) != COOKIE_LENGTH:
        raise CodecError(f"FGP cookie: {len(data)} byte(s), expected {COOKIE_LENGTH}")
    if data[:len(COOKIE_ID)] != COOKIE_ID:
        raise CodecError(f"FGP cookie: ID {data[:len(COOKIE_ID)]!r}, expected {COOKIE_ID!r}")
    parameter, length = _parameter(data, len(COOKIE_ID))
    x, y = COOKIE_TAIL.unpack_from(data, len(COOKIE_ID) + PARAMETER_LENGTH)
    return FGPCookie(parameter, x, y, length)

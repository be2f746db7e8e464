"""Fractal Generator Protocol codec: RSPLIB's byte layout, round trips and malformed input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rserpool.wire.errors import CodecError
from rserpool.wire.fractal import (
    COOKIE_LENGTH,
    FGD_MAX_POINTS,
    PARAMETER_LENGTH,
    FGPCookie,
    FGPData,
    FGPParameter,
    decode_cookie,
    decode_fgp,
)

u32 = st.integers(0, 0xFFFFFFFF)
doubles = st.floats(allow_nan=True, allow_infinity=True, width=64)

parameters = st.builds(FGPParameter, u32, u32, u32, u32, doubles, doubles, doubles, doubles, doubles,
                       st.integers(0, 255))
data_messages = st.builds(FGPData, u32, u32, st.lists(u32, max_size=FGD_MAX_POINTS).map(tuple), st.integers(0, 255))
cookies = st.builds(FGPCookie, parameters, u32, u32, st.integers(0, 0xFFFF))


def test_parameter_layout_is_rsplibs_struct() -> None:
    # struct FGPParameter: header, Width, Height, MaxIterations, AlgorithmID (u32), then C1Real, C1Imag,
    # C2Real, C2Imag, N as network_double_t (hton64 of the IEEE-754 bits); packed, 60 bytes
    p = FGPParameter(400, 250, 1024, 1, -1.5, 1.5, 1.5, -1.5, 2.0)
    raw = p.encode()
    assert len(raw) == PARAMETER_LENGTH == 60
    assert raw == bytes.fromhex("0100003c" "00000190" "000000fa" "00000400" "00000001"
                                "bff8000000000000" "3ff8000000000000" "3ff8000000000000" "bff8000000000000"
                                "4000000000000000")
    assert decode_fgp(raw) == p


def test_data_layout_and_finalizer() -> None:
    d = FGPData(5, 7, (1, 0x01020304))
    assert d.encode() == bytes.fromhex("02000018" "00000005" "00000007" "00000002" "00000001" "01020304")
    full = FGPData(0, 0, tuple(range(FGD_MAX_POINTS)))
    assert len(full.encode()) == 16 + 4 * 324
    fin = FGPData.finalizer()
    assert fin.encode() == bytes.fromhex("02000010" "ffffffff" "ffffffff" "00000000")
    assert decode_fgp(fin.encode()).is_finalizer
    assert not FGPData(0xFFFFFFFF, 0xFFFFFFFF, (1,)).is_finalizer


def test_cookie_layout_as_rsplib_sends_it() -> None:
    # struct FGPCookie { char ID[8] = "<FG-TD1>"; FGPParameter; uint32 CurrentX, CurrentY }: 76 bytes,
    # and sendCookie() writes the embedded parameter's Length as sizeof(header) = 4
    p = FGPParameter(400, 250, 1024, 2, -1.5, 1.5, 1.5, -1.5, 3.0)
    raw = FGPCookie(p, 12, 34).encode()
    assert len(raw) == COOKIE_LENGTH == 76
    assert raw[:8] == b"<FG-TD1>"
    assert raw[8:12] == bytes.fromhex("01000004")
    assert raw[12:68] == p.encode()[4:]
    assert raw[68:] == struct.pack("!II", 12, 34)
    c = decode_cookie(raw)
    assert (c.parameter, c.current_x, c.current_y, c.parameter_length) == (p, 12, 34, 4)


@settings(max_examples=300, deadline=None)
@given(st.one_of(parameters, data_messages))
def test_message_roundtrip(msg: FGPParameter | FGPData) -> None:
    raw = msg.encode()
    back = decode_fgp(raw)
    assert type(back) is type(msg)
    assert back.encode() == raw  # byte-exact (NaN doubles keep their bits)
    if isinstance(msg, FGPData):
        assert back == msg


@settings(max_examples=200, deadline=None)
@given(cookies)
def test_cookie_roundtrip(cookie: FGPCookie) -> None:
    raw = cookie.encode()
    assert len(raw) == COOKIE_LENGTH
    assert decode_cookie(raw).encode() == raw


@pytest.mark.parametrize("raw, why", [
    (b"", "shorter than the 4-byte header"),
    (b"\x01\x00", "shorter than the 4-byte header"),
    (bytes.fromhex("0100003c") + bytes(55), "length field"),
    (bytes.fromhex("01000010") + bytes(12), "expected 60"),
    (bytes.fromhex("0200000c") + bytes(12), "length field"),
    (bytes.fromhex("0200000c") + bytes(8), "shorter than its 16-byte header"),
    (bytes.fromhex("02000014" "00000000" "00000000" "00000002" "00000000"), "expected 24"),
    (bytes.fromhex("02000010" "00000000" "00000000" "00000145"), "at most 324"),
    (bytes.fromhex("03000004"), "unknown message type 3"),
])
def test_malformed_messages(raw: bytes, why: str) -> None:
    with pytest.raises(CodecError, match=why):
        decode_fgp(raw)


def test_malformed_cookies_and_values() -> None:
    good = FGPCookie(FGPParameter(1, 1, 1, 1, 0.0, 0.0, 1.0, 1.0), 0, 0).encode()
    for raw, why in [(good[:-1], "expected 76"), (good + b"\0", "expected 76"),
                     (b"<FG-TD2>" + good[8:], "ID"), (good[:8] + b"\x02" + good[9:], "expected Parameter")]:
        with pytest.raises(CodecError, match=why):
            decode_cookie(raw)
    for bad in (None, "text", 5):
        with pytest.raises(CodecError):
            decode_fgp(bad)  # type: ignore[arg-type]
        with pytest.raises(CodecError):
            decode_cookie(bad)  # type: ignore[arg-type]
    for msg in (FGPParameter(-1, 1, 1, 1, 0.0, 0.0, 1.0, 1.0), FGPParameter(1, 1, 1, 1, "x", 0.0, 1.0, 1.0),  # type: ignore[arg-type]
                FGPData(0, 0, tuple(range(FGD_MAX_POINTS + 1))), FGPData(0, 0, (1 << 32,)), FGPData(-1, 0),
                FGPCookie(FGPParameter(1, 1, 1, 1, 0.0, 0.0, 1.0, 1.0), 1 << 32, 0)):
        with pytest.raises(CodecError):
            msg.encode()


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=120))
def test_arbitrary_bytes_decode_or_raise_codec_error(raw: bytes) -> None:
    for decoder in (decode_fgp, decode_cookie):
        try:
            msg = decoder(raw)
        except CodecError:
            continue
        assert msg.encode() == raw


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(parameters, data_messages), st.data())
def test_mutated_messages_decode_or_raise_codec_error(msg: FGPParameter | FGPData, data: st.DataObject) -> None:
    raw = bytearray(msg.encode())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for blob in (bytes(raw), bytes(raw[:cut])):
        try:
            decode_fgp(blob)
        except CodecError:
            pass

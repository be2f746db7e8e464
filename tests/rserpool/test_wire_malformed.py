"""Malformed input: decoders raise CodecError (a ValueError) with a useful message, and nothing else."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rserpool import wire

import helpers.wire_strategies as S

DECODERS = (wire.decode_asap, wire.decode_enrp, wire.decode_calcapp)

REGISTRATION = wire.Registration(
    pool_handle=b"CalcAppPool",
    pool_element=wire.PoolElement(
        identifier=1001, home_registrar=0, registration_life=90000,
        user_transport=wire.SctpTransport(port=45924, addresses=("10.77.0.5",), transport_use=1),
        policy=wire.PoolPolicy(wire.params.PolicyType.PRIORITY_LEAST_USED, load=0, load_degradation=429496730),
    ),
).encode()


def _only_codec_error(decoder, data: bytes) -> str | None:
    try:
        decoder(data)
    except wire.CodecError as exc:
        assert str(exc), "CodecError without a message"
        return str(exc)
    return None


def test_every_truncation_is_rejected() -> None:
    for n in range(len(REGISTRATION)):
        msg = _only_codec_error(wire.decode_asap, REGISTRATION[:n])
        assert msg is not None, f"prefix of {n} bytes decoded"


def test_length_field_mismatch_named() -> None:
    data = bytearray(REGISTRATION)
    struct.pack_into("!H", data, 2, len(data) - 4)
    msg = _only_codec_error(wire.decode_asap, bytes(data))
    assert msg and "length field says" in msg and "ASAP Registration" in msg


def test_bad_padding_named() -> None:
    data = bytearray(REGISTRATION)
    # Pool handle "CalcAppPool" (11 bytes) has one padding byte at offset 4 + 15.
    data[19] = 0xAA
    msg = _only_codec_error(wire.decode_asap, bytes(data))
    assert msg and "padding" in msg and "0x0009" in msg


def test_nested_length_exceeding_parent_named() -> None:
    data = bytearray(REGISTRATION)
    # The SCTP transport inside the PE parameter starts at 4 + 16 (handle) + 4 + 12.
    off = 4 + 16 + 4 + 12
    assert struct.unpack_from("!H", data, off)[0] == 0x0004
    struct.pack_into("!H", data, off + 2, 200)
    msg = _only_codec_error(wire.decode_asap, bytes(data))
    assert msg and "Pool Element parameter" in msg and "only" in msg


def test_missing_mandatory_parameter_named() -> None:
    data = wire.Deregistration(pool_handle=b"x", identifier=5).encode()
    without_id = data[:4 + 8]
    without_id = without_id[:2] + struct.pack("!H", len(without_id)) + without_id[4:]
    msg = _only_codec_error(wire.decode_asap, without_id)
    assert msg and "PoolElementIdentifier" in msg


def test_short_parameter_values_named() -> None:
    pe_id = bytes.fromhex("000e0006") + b"\x00\x01\x00\x00"
    msg = b"\x02\x00\x00\x14" + bytes.fromhex("00090005") + b"x\x00\x00\x00" + pe_id
    err = _only_codec_error(wire.decode_asap, msg)
    assert err and "PE Identifier" in err and "expected 4" in err


def test_unknown_types_and_bad_calcapp() -> None:
    assert "unknown message type" in _only_codec_error(wire.decode_asap, b"\x7f\x00\x00\x04")
    assert "unknown message type" in _only_codec_error(wire.decode_enrp, b"\x00\x00\x00\x04")
    calc = wire.CalcAppMessage(wire.CalcAppType.REQUEST, 1, 2, 3).encode()
    assert "expected 24" in _only_codec_error(wire.decode_calcapp, calc[:-1])
    assert "unknown message type" in _only_codec_error(wire.decode_calcapp, b"\x09" + calc[1:])


def test_deeply_nested_transports_are_bounded() -> None:
    inner = b""
    for _ in range(2000):  # transports inside transports: must not recurse
        inner = struct.pack("!HHHH", 4, 8 + len(inner), 1, 0) + inner
        if len(inner) > 60000:
            break
    msg = wire.ServerAnnounce(server_id=1).encode()
    data = msg[:2] + struct.pack("!H", 8 + len(inner)) + msg[4:] + inner
    m = wire.decode_asap(data)
    assert isinstance(m.transports[0].extra[0], wire.UnknownParameter)
    assert m.encode() == data


def test_encode_out_of_range_raises_codec_error() -> None:
    with pytest.raises(wire.CodecError):
        wire.Deregistration(pool_handle=b"x", identifier=2**32).encode()
    with pytest.raises(wire.CodecError):
        wire.PoolPolicy(wire.params.PolicyType.ROUND_ROBIN, load=5).encode()
    with pytest.raises(wire.CodecError):
        wire.Registration(pool_handle=b"x" * 70000, pool_element=None).encode()  # type: ignore[arg-type]


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200))
def test_random_bytes_only_codec_error(data: bytes) -> None:
    for dec in DECODERS:
        _only_codec_error(dec, data)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(S.any_message, st.data())
def test_mutated_messages_only_codec_error(msg, data) -> None:
    raw = bytearray(msg.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "cut", "len"]))
        if kind == "flip" and raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
        elif kind == "cut" and raw:
            del raw[data.draw(st.integers(0, len(raw) - 1)):]
        elif kind == "len" and len(raw) >= 4:
            struct.pack_into("!H", raw, 2 + 4 * data.draw(st.integers(0, (len(raw) - 4) // 4)), data.draw(st.integers(0, 0xFFFF)))
    for dec in DECODERS:
        _only_codec_error(dec, bytes(raw))

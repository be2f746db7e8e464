"""Round trips: every generated message encodes, decodes to an equal object and re-encodes identically."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from rserpool import wire
from rserpool.wire.params import decode_parameter

import helpers.wire_strategies as S


def _decode(msg: wire.AnyMessage, data: bytes) -> wire.AnyMessage:
    return wire.decode(msg.PROTOCOL, data)


_MESSAGE_STRATEGIES = [*S.ASAP_STRATEGIES, *S.ENRP_STRATEGIES, S.calcapp_messages]


@pytest.mark.parametrize("strategy", _MESSAGE_STRATEGIES, ids=lambda s: repr(s)[:60])
def test_message_roundtrip(strategy) -> None:
    @settings(max_examples=60, deadline=None)
    @given(strategy)
    def check(msg: wire.AnyMessage) -> None:
        data = wire.encode(msg)
        assert len(data) % 4 == 0
        assert wire.message_length(data[:4]) == len(data)
        back = _decode(msg, data)
        assert back == msg
        assert back.encode() == data

    check()


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_every_message_class_has_a_strategy() -> None:
    built = set()
    for strategy in _MESSAGE_STRATEGIES:
        built.add(type(strategy.example()))
    assert set(wire.ASAP_MESSAGES.values()) | set(wire.ENRP_MESSAGES.values()) | {wire.CalcAppMessage} == built


@settings(max_examples=300, deadline=None)
@given(S.pool_element | S.transport | S.policy() | S.operation_error | S.server_info | S.unknown_param)
def test_parameter_roundtrip(param: wire.Parameter) -> None:
    data = param.encode()
    assert len(data) % 4 == 0
    back = decode_parameter(data)
    assert back == param
    assert back.encode() == data


def test_pe_checksum_and_pool_handle_padding_layout() -> None:
    # Facts from the RSPLIB capture: PE checksum has length 6 + 2 padding bytes; an 11-byte handle
    # has length 15 + 1 padding byte, and message length includes the padding.
    assert wire.PoolElementChecksum(0xBF20).encode() == bytes.fromhex("000f0006bf200000")
    assert wire.PoolHandle(b"CalcAppPool").encode() == bytes.fromhex("0009000f") + b"CalcAppPool" + b"\x00"
    msg = wire.HandleResolution(pool_handle=b"CalcAppPool", items=3)
    assert msg.encode() == bytes.fromhex("0500001c0009000f") + b"CalcAppPool\x00" + bytes.fromhex("803f000800000003")


def test_unknown_parameter_preserved_with_action_bits() -> None:
    unk = wire.UnknownParameter(0xC123, b"\x01\x02\x03")
    msg = wire.HandleResolution(pool_handle=b"p", extra=(unk,))
    back = wire.decode_asap(msg.encode())
    assert back.extra == (unk,)
    assert wire.Action(unk.type & 0xC000) is wire.Action.SKIP_AND_REPORT


def test_message_length_rejects_short_headers() -> None:
    for bad in (b"", b"\x01\x00\x00", b"\x01\x00\x00\x03"):
        try:
            wire.message_length(bad)
        except wire.CodecError as exc:
            assert "header" in str(exc) or "length" in str(exc)
        else:
            raise AssertionError(f"message_length accepted {bad!r}")


def test_unspecified_error_cause_roundtrip() -> None:
    # RFC 5354 section 3.10.1: cause code 0x0 is "Unspecified Error". Encoded as cause header
    # (code 0, length 4) inside an Operation Error parameter (type 0xc, length 8).
    assert wire.CauseCode(0) is wire.CauseCode.UNSPECIFIED_ERROR
    err = wire.OperationError((wire.ErrorCause(wire.CauseCode.UNSPECIFIED_ERROR),))
    assert err.encode() == bytes.fromhex("000c0008" "00000004")
    msg = wire.RegistrationResponse(pool_handle=b"pool", identifier=0x1234, reject=True, error=err)
    data = msg.encode()
    back = wire.decode_asap(data)
    assert back == msg
    assert back.encode() == data
    assert isinstance(back, wire.RegistrationResponse)
    assert back.error is not None
    assert wire.CauseCode(back.error.causes[0].code) is wire.CauseCode.UNSPECIFIED_ERROR
    # also next to other causes, with information, inside an ASAP Error
    both = wire.AsapError(error=wire.OperationError((wire.ErrorCause(0, b"\x01\x02\x03"),
                                                     wire.ErrorCause(wire.CauseCode.UNKNOWN_POOL_HANDLE))))
    assert wire.decode_asap(both.encode()) == both
    assert wire.decode_asap(both.encode()).encode() == both.encode()

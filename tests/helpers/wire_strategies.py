"""Hypothesis strategies producing valid ASAP/ENRP/CalcApp messages (shared by the wire tests and
benchmarks/fuzz_codec.py)."""

from __future__ import annotations

import socket

from hypothesis import strategies as st

from rserpool import wire
from rserpool.wire.params import POLICY_FIELDS

u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)
# Addresses in the text form the decoder produces (inet_ntop), so objects compare equal after a round trip.
ipv4 = st.builds(lambda n: socket.inet_ntop(socket.AF_INET, n.to_bytes(4, "big")), u32)
ipv6 = st.builds(lambda n: socket.inet_ntop(socket.AF_INET6, n.to_bytes(16, "big")), st.integers(0, 2**128 - 1))
address = st.one_of(ipv4, ipv6)
addresses = st.lists(address, min_size=1, max_size=3).map(tuple)
handle = st.binary(min_size=1, max_size=40)

# Unknown parameter types: not one of the codec's known full 16-bit types.
_known = {int(t) for t in wire.ParamType}
unknown_param = st.builds(
    wire.UnknownParameter,
    st.integers(0, 0xFFFF).filter(lambda t: t not in _known),
    st.binary(max_size=12),
)
extras = st.lists(unknown_param, max_size=2).map(tuple)

transport = st.one_of(
    st.builds(wire.SctpTransport, port=u16, addresses=addresses, transport_use=st.sampled_from([0, 1])),
    st.builds(wire.TcpTransport, port=u16, addresses=addresses.map(lambda a: a[:1]), transport_use=st.sampled_from([0, 1])),
    st.builds(wire.UdpTransport, port=u16, addresses=addresses.map(lambda a: a[:1])),
    st.builds(wire.UdpLiteTransport, port=u16, addresses=addresses.map(lambda a: a[:1])),
    st.builds(wire.DccpTransport, port=u16, addresses=addresses.map(lambda a: a[:1]), service_code=u32),
)


@st.composite
def policy(draw: st.DrawFn) -> wire.PoolPolicy:
    ptype = draw(st.sampled_from(sorted(POLICY_FIELDS)))
    values = {name: draw(u32) for name in POLICY_FIELDS[ptype]}
    return wire.PoolPolicy(ptype, **values)


pool_element = st.builds(
    wire.PoolElement,
    identifier=u32,
    home_registrar=u32,
    registration_life=u32,
    user_transport=transport,
    policy=policy(),
    registrator_transport=st.none() | transport,
    extra=extras,
)
cause = st.builds(wire.ErrorCause, code=st.sampled_from(list(wire.CauseCode)) | u16, info=st.binary(max_size=13))
operation_error = st.builds(wire.OperationError, causes=st.lists(cause, min_size=1, max_size=3).map(tuple))
server_info = st.builds(wire.ServerInformation, server_id=u32, transport=st.none() | transport)
flags_rest = st.sampled_from([0, 0x80, 0x40])
pes = st.lists(pool_element, max_size=3).map(tuple)

ASAP_STRATEGIES = [
    st.builds(wire.Registration, pool_handle=handle, pool_element=pool_element, error=st.none() | operation_error,
              extra=extras, reserved_flags=flags_rest),
    st.builds(wire.Deregistration, pool_handle=handle, identifier=u32, extra=extras),
    st.builds(wire.RegistrationResponse, pool_handle=handle, identifier=u32, reject=st.booleans(),
              error=st.none() | operation_error, reserved_flags=flags_rest),
    st.builds(wire.DeregistrationResponse, pool_handle=handle, identifier=u32, error=st.none() | operation_error),
    st.builds(wire.HandleResolution, pool_handle=handle, items=st.none() | u32, extra=extras),
    st.builds(wire.HandleResolutionResponse, pool_handle=handle, policy=st.none() | policy(), pool_elements=pes,
              error=st.none() | operation_error, reject=st.booleans()),
    st.builds(wire.EndpointKeepAlive, server_id=u32, pool_handle=handle, identifier=st.none() | u32,
              home=st.booleans()),
    st.builds(wire.EndpointKeepAliveAck, pool_handle=handle, identifier=u32),
    st.builds(wire.EndpointUnreachable, pool_handle=handle, identifier=u32),
    st.builds(wire.ServerAnnounce, server_id=u32, transports=st.lists(transport, max_size=2).map(tuple)),
    st.builds(wire.CookieMessage, cookie=st.binary(max_size=64)),
    st.builds(wire.CookieEcho, cookie=st.binary(max_size=64)),
    st.builds(wire.BusinessCard, pool_handle=handle, policy=st.none() | policy(), pool_elements=pes),
    st.builds(wire.AsapError, error=operation_error),
]
asap_messages = st.one_of(ASAP_STRATEGIES)

_entry = st.builds(wire.HandleTableEntry, pool_handle=handle, pool_elements=st.lists(pool_element, min_size=1, max_size=2).map(tuple))
ENRP_STRATEGIES = [
    st.builds(wire.Presence, sender_id=u32, receiver_id=u32, checksum=u16, server_info=st.none() | server_info,
              reply_required=st.booleans()),
    st.builds(wire.HandleTableRequest, sender_id=u32, receiver_id=u32, own_children_only=st.booleans()),
    st.builds(wire.HandleTableResponse, sender_id=u32, receiver_id=u32, pools=st.lists(_entry, max_size=3).map(tuple),
              reject=st.booleans(), more_to_send=st.booleans()),
    st.builds(wire.HandleUpdate, sender_id=u32, receiver_id=u32, update_action=st.sampled_from([0, 1]),
              pool_handle=handle, pool_element=pool_element, takeover_suggested=st.booleans()),
    st.builds(wire.ListRequest, sender_id=u32, receiver_id=u32),
    st.builds(wire.ListResponse, sender_id=u32, receiver_id=u32, servers=st.lists(server_info, max_size=3).map(tuple),
              reject=st.booleans()),
    st.builds(wire.InitTakeover, sender_id=u32, receiver_id=u32, target_id=u32),
    st.builds(wire.InitTakeoverAck, sender_id=u32, receiver_id=u32, target_id=u32),
    st.builds(wire.TakeoverServer, sender_id=u32, receiver_id=u32, target_id=u32),
    st.builds(wire.EnrpError, sender_id=u32, receiver_id=u32, error=operation_error),
]
enrp_messages = st.one_of(ENRP_STRATEGIES)

calcapp_messages = st.builds(wire.CalcAppMessage, type=st.sampled_from(list(wire.CalcAppType)), job_id=u32,
                             job_size=st.integers(0, 2**64 - 1), completed=st.integers(0, 2**64 - 1),
                             flags=st.integers(0, 255))

any_message = st.one_of(asap_messages, enrp_messages, calcapp_messages)

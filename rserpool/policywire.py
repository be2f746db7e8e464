"""Conversions between the wire parameters (``rserpool.wire``) and the policy and transport
information the handlespace, PEs and PUs work with.

The wire carries a policy as a Pool Member Selection Policy parameter (``PoolPolicy``) whose
values depend on the policy type (``rserpool.wire.params.POLICY_FIELDS``); the rest of the
package works with ``PolicyInfo`` (``rserpool.policy``). Transport parameters stay wire objects in
the handlespace (it keeps them opaque); what it needs of them is the transport protocol number.
"""

from __future__ import annotations

from typing import Any

from rserpool.handlespace import IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP
from rserpool.policy import PolicyInfo
from rserpool.policytypes import PolicyType
from rserpool.wire import PoolPolicy, SctpTransport, TcpTransport, UdpTransport
from rserpool.wire.params import POLICY_FIELDS


def policy_from_wire(p: PoolPolicy) -> PolicyInfo:
    """The policy information a Pool Policy parameter carries (PRIO's priority is kept as the weight)."""
    weight = p.priority if p.policy_type == PolicyType.PRIORITY else p.weight
    return PolicyInfo(int(p.policy_type), weight=weight, load=p.load, load_degradation=p.load_degradation,
                      load_dpf=p.load_dpf, weight_dpf=p.weight_dpf, distance=p.distance)


def policy_to_wire(info: PolicyInfo) -> PoolPolicy:
    """The Pool Policy parameter of ``info``: only the values its policy type carries on the wire."""
    names = POLICY_FIELDS.get(int(info.policy_type), ())
    values = {
        "weight": info.weight, "priority": info.weight, "load": info.load,
        "load_degradation": info.load_degradation, "load_dpf": info.load_dpf,
        "weight_dpf": info.weight_dpf, "distance": info.distance,
    }
    return PoolPolicy(int(info.policy_type), **{n: values[n] for n in names})


def transport_protocol(t: object) -> int:
    """IP protocol number of a user transport parameter (the handlespace's per-pool check); 0 if unknown."""
    if isinstance(t, SctpTransport):
        return IPPROTO_SCTP
    if isinstance(t, TcpTransport):
        return IPPROTO_TCP
    if isinstance(t, UdpTransport):
        return IPPROTO_UDP
    return 0


def transport_tail(t: Any) -> tuple[Any, ...]:
    """Positional fields after (port, addresses) of a transport parameter, to rebuild it."""
    if isinstance(t, (SctpTransport, TcpTransport)):
        return (t.transport_use, t.extra)
    if isinstance(t, UdpTransport):
        return (t.reserved, t.extra)
    return ()

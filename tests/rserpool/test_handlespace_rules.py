"""Handlespace rules: registration checks, updates, ownership, checksums, export/import, dump."""

from __future__ import annotations

import json

import pytest

from rserpool.handlespace import (
    IPPROTO_TCP,
    ErrorCause,
    Handlespace,
    checksum_finish,
    element_checksum,
)
from rserpool.policy import PolicyInfo
from rserpool.policytypes import PolicyType

T = PolicyType
POOL = b"CalcAppPool"
LU = PolicyInfo.make(T.LEAST_USED, load=0.2)
TRANSPORT = ("sctp:10.77.0.3:4711",)


@pytest.fixture(params=[False, True], ids=["c", "python"])
def hs(request: pytest.FixtureRequest) -> Handlespace:
    return Handlespace(own_pr=0x660916D2, force_python=request.param, seed=5)


def test_register_new_and_get(hs: Handlespace) -> None:
    cause, entry = hs.register(POOL, 1001, LU, TRANSPORT, registration_life=30000, now=100.0)
    assert cause is ErrorCause.OKAY and entry is not None
    assert hs.get(POOL, 1001) is entry
    assert entry.transports == TRANSPORT and entry.home_pr == hs.own_pr
    assert len(hs) == 1 and hs.pools() == [POOL] and (POOL, 1001) in hs


def test_incompatible_policy_rejected(hs: Handlespace) -> None:
    hs.register(POOL, 1, LU, TRANSPORT)
    cause, entry = hs.register(POOL, 2, PolicyInfo(T.ROUND_ROBIN), TRANSPORT)
    assert cause is ErrorCause.INCONSISTENT_POLICY and entry is None
    # also for an update of an existing identifier
    assert hs.register(POOL, 1, PolicyInfo(T.LEAST_USED_DEGRADATION), TRANSPORT)[0] is ErrorCause.INCONSISTENT_POLICY
    assert hs.get(POOL, 1).policy == LU  # type: ignore[union-attr]
    assert hs.update_policy(POOL, 1, PolicyInfo(T.RANDOM)) is ErrorCause.INCONSISTENT_POLICY
    assert len(hs) == 1


def test_transport_and_control_channel_consistency(hs: Handlespace) -> None:
    hs.register(POOL, 1, LU, TRANSPORT)
    assert hs.register(POOL, 2, LU, TRANSPORT, protocol=IPPROTO_TCP)[0] is ErrorCause.INCONSISTENT_TRANSPORT_TYPE
    assert hs.register(POOL, 2, LU, TRANSPORT, control_channel=True)[0] is ErrorCause.INCONSISTENT_DATA_CONTROL


@pytest.mark.parametrize(
    "handle, ident, info, transports",
    [
        (b"", 1, LU, TRANSPORT),
        (b"x" * 33, 1, LU, TRANSPORT),
        (POOL, 0, LU, TRANSPORT),
        (POOL, 1 << 32, LU, TRANSPORT),
        (POOL, 1, PolicyInfo(0x12345678), TRANSPORT),
        (POOL, 1, LU, ()),
    ],
    ids=["empty-handle", "long-handle", "id-0", "id-too-big", "unknown-policy", "no-transport"],
)
def test_invalid_values(hs: Handlespace, handle: bytes, ident: int, info: PolicyInfo, transports: tuple) -> None:
    assert hs.register(handle, ident, info, transports) == (ErrorCause.INVALID_VALUES, None)
    assert len(hs) == 0 and hs.pools() == []


def test_identifier_uniqueness(hs: Handlespace) -> None:
    assert hs.register(POOL, 7, LU, TRANSPORT, registrator="assoc-1")[0] is ErrorCause.OKAY
    cause, _ = hs.register(POOL, 7, LU, ("sctp:10.77.0.9:1",), registrator="assoc-2")
    assert cause is ErrorCause.NON_UNIQUE_PE_ID
    assert hs.get(POOL, 7).transports == TRANSPORT  # type: ignore[union-attr]
    # the same registrator may re-register (update); same id in another pool is a different PE
    assert hs.register(POOL, 7, LU, ("sctp:10.77.0.3:4712",), registrator="assoc-1")[0] is ErrorCause.OKAY
    assert hs.register(b"OtherPool", 7, LU, TRANSPORT, registrator="assoc-2")[0] is ErrorCause.OKAY
    assert len(hs) == 2


def test_update_changes_policy_info_and_order(hs: Handlespace) -> None:
    hs.register(POOL, 1, PolicyInfo.make(T.LEAST_USED, load=0.1), TRANSPORT, now=1.0)
    hs.register(POOL, 2, PolicyInfo.make(T.LEAST_USED, load=0.5), TRANSPORT, now=1.0)
    assert [e.identifier for e in hs.select(POOL, 1)] == [1]
    cause, entry = hs.register(POOL, 1, PolicyInfo.make(T.LEAST_USED, load=0.9), ("new",), now=5.0, registration_life=9)
    assert cause is ErrorCause.OKAY and entry is hs.get(POOL, 1)
    assert entry.policy.load_fraction == pytest.approx(0.9)
    assert entry.transports == ("new",) and entry.updated_at == 5.0 and entry.registered_at == 1.0
    assert entry.registration_life == 9
    assert [e.identifier for e in hs.select(POOL, 2)] == [2, 1]
    assert hs.update_policy(POOL, 2, PolicyInfo.make(T.LEAST_USED, load=1.0)) is ErrorCause.OKAY
    assert [e.identifier for e in hs.select(POOL, 2)] == [1, 2]
    assert hs.update_policy(b"nope", 2, LU) is ErrorCause.UNKNOWN_POOL_HANDLE


def test_lud_degradation_reset_on_reregistration(hs: Handlespace) -> None:
    info = PolicyInfo.make(T.LEAST_USED_DEGRADATION, load=0.0, load_degradation=0.05)
    _, entry = hs.register(POOL, 1, info, TRANSPORT)
    hs.select(POOL, 1)
    hs.select(POOL, 1)
    assert entry is not None and entry.degradation == 5 * info.load_degradation
    hs.register(POOL, 1, info, TRANSPORT)
    assert entry.degradation == info.load_degradation


def test_deregistration(hs: Handlespace) -> None:
    hs.register(POOL, 1, LU, TRANSPORT)
    hs.register(POOL, 2, LU, TRANSPORT)
    removed = hs.deregister(POOL, 1)
    assert removed is not None and removed.identifier == 1
    assert hs.get(POOL, 1) is None and len(hs) == 1
    assert hs.deregister(POOL, 1) is None
    assert hs.deregister(b"nope", 2) is None
    hs.deregister(POOL, 2)
    assert hs.pools() == [] and hs.select(POOL) == []


def test_owner_iteration_and_takeover(hs: Handlespace) -> None:
    other = 0xA236E4F6
    hs.register(POOL, 1001, LU, TRANSPORT)
    hs.register(POOL, 1002, LU, TRANSPORT, home_pr=other)
    hs.register(POOL, 1003, LU, TRANSPORT)
    assert [e.identifier for e in hs.owned_by(hs.own_pr)] == [1001, 1003]
    assert [e.identifier for e in hs.owned_by(other)] == [1002]
    assert hs.owned_count() == 2
    assert hs.set_owner(POOL, 1002, hs.own_pr)
    assert list(hs.owned_by(other)) == [] and hs.owned_count() == 3
    assert not hs.set_owner(POOL, 4711, other)


def test_checksums_match_rsplib_capture() -> None:
    # ENRP Presence in captures/rsplib-3.4.4-calcapp-plu-enrp.pcap: pr1 (0x660916d2) owns PEs
    # 1001 and 1003 -> PE checksum 0x7e41; pr2 (0xa236e4f6) owns 1002 -> 0xbf20.
    pr1, pr2 = 0x660916D2, 0xA236E4F6
    hs = Handlespace(own_pr=pr1)
    plu = PolicyInfo.make(T.PRIORITY_LEAST_USED, load_degradation=0.1)
    hs.register(POOL, 1001, plu, TRANSPORT)
    hs.register(POOL, 1002, plu, TRANSPORT, home_pr=pr2)
    hs.register(POOL, 1003, plu, TRANSPORT)
    assert hs.ownership_checksum() == 0x7E41
    assert hs.checksum_of(pr1) == 0x7E41
    assert hs.checksum_of(pr2) == 0xBF20
    assert hs.checksum() == checksum_finish(sum(element_checksum(POOL, i) for i in (1001, 1002, 1003)))


def test_checksum_changes_and_returns(hs: Handlespace) -> None:
    empty = hs.checksum()
    hs.register(POOL, 1, LU, TRANSPORT)
    one = hs.checksum()
    assert one != empty
    hs.register(POOL, 2, LU, TRANSPORT)
    two = hs.checksum()
    assert two not in (empty, one)
    hs.register(POOL, 2, PolicyInfo.make(T.LEAST_USED, load=0.7), TRANSPORT)
    assert hs.checksum() == two  # policy updates do not change the checksum (RSPLIB sums handle + id)
    hs.deregister(POOL, 2)
    assert hs.checksum() == one
    hs.register(POOL, 2, LU, TRANSPORT)
    assert hs.checksum() == two
    hs.set_owner(POOL, 2, 99)
    assert hs.checksum() == two and hs.ownership_checksum() == one


def test_export_import_roundtrip(hs: Handlespace) -> None:
    hs.register(POOL, 1, LU, TRANSPORT, registration_life=5000)
    hs.register(POOL, 2, LU, TRANSPORT, home_pr=42)
    hs.register(b"EchoPool", 3, PolicyInfo(T.ROUND_ROBIN), ("udp:1",))
    copy = Handlespace(own_pr=hs.own_pr)
    assert copy.import_entries(hs.export()) == [ErrorCause.OKAY] * 3
    assert copy.checksum() == hs.checksum() and copy.ownership_checksum() == hs.ownership_checksum()
    assert [(e.pool_handle, e.identifier, e.home_pr, e.transports) for e in copy] == [
        (e.pool_handle, e.identifier, e.home_pr, e.transports) for e in hs
    ]
    assert [r["identifier"] for r in hs.export(owner=42)] == [2]


def test_expired(hs: Handlespace) -> None:
    hs.register(POOL, 1, LU, TRANSPORT, registration_life=1000, now=0.0)
    hs.register(POOL, 2, LU, TRANSPORT, registration_life=5000, now=0.0)
    hs.register(POOL, 3, LU, TRANSPORT, registration_life=0, now=0.0)
    assert [e.identifier for e in hs.expired(999.0)] == []
    assert [e.identifier for e in hs.expired(1000.0)] == [1]
    hs.register(POOL, 1, LU, TRANSPORT, registration_life=1000, now=4500.0)  # re-registration refreshes
    assert [e.identifier for e in hs.expired(5000.0)] == [2]


def test_dump_is_plain_json(hs: Handlespace) -> None:
    hs.register(POOL, 1001, PolicyInfo.make(T.PRIORITY_LEAST_USED, load_degradation=0.1), (object(),))
    hs.select(POOL)
    data = json.loads(json.dumps(hs.dump()))
    assert data["element_count"] == 1 and data["own_pr"] == hs.own_pr
    pool = data["pools"][0]
    assert pool["handle"] == "CalcAppPool" and pool["policy"] == "PriorityLeastUsed"
    elem = pool["elements"][0]
    assert elem["identifier"] == 1001 and elem["state"]["selection_counter"] == 1
    assert elem["policy"]["name"] == "PriorityLeastUsed"
    assert data["handlespace_checksum"] == hs.checksum()

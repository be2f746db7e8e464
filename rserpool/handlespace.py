"""The registrar's handlespace: pools by pool handle, their pool elements, ownership and checksums.

Semantics follow RSPLIB 3.4.4 (``poolhandlespacenode-template_impl.h``,
``poolhandlespacemanagement-template_impl.h``, ``poolnode-template_impl.h``): a registration of an
existing identifier is an update; a pool's policy type, transport protocol and control-channel
usage are fixed by its first element; the handlespace checksum is RSPLIB's 16-bit sum over
(pool handle, PE identifier) pairs. Timers are the registrar's business; ``expired(now)`` helps.

Transport parameters are kept opaque: whatever objects the caller passes are stored and
returned unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from rserpool.policy import (
    DEFAULT_MAX_HANDLE_RESOLUTION_ITEMS,
    PolicyElement,
    PolicyInfo,
    SelectionPool,
    get_policy,
    policies_compatible,
)

MAX_POOL_HANDLE_SIZE = 32
"""RSPLIB's MAX_POOLHANDLESIZE."""

IPPROTO_SCTP = 132
IPPROTO_TCP = 6
IPPROTO_UDP = 17


class ErrorCause(IntEnum):
    """Operation error causes of RFC 5354 §3.10 (the values RSPLIB sends on the wire).

    ``OKAY`` (0) is RSPLIB's RSPERR_OKAY; on the wire, success carries no error cause at all.
    """

    OKAY = 0x0
    UNRECOGNIZED_PARAMETER = 0x1
    UNRECOGNIZED_MESSAGE = 0x2
    INVALID_VALUES = 0x3
    NON_UNIQUE_PE_ID = 0x4
    INCONSISTENT_POLICY = 0x5
    LACK_OF_RESOURCES = 0x6
    INCONSISTENT_TRANSPORT_TYPE = 0x7
    INCONSISTENT_DATA_CONTROL = 0x8
    UNKNOWN_POOL_HANDLE = 0x9
    REJECTED_SECURITY = 0xA


@dataclass(slots=True, eq=False)
class PoolEntry(PolicyElement):
    """One registered PE as the handlespace keeps it (the selection state comes from ``PolicyElement``).

    Not to be confused with the Pool Element wire parameter (``rserpool.wire.PoolElement``) or the
    PE application (``rserpool.pe.PoolElement``)."""

    pool_handle: bytes = b""
    transports: tuple[object, ...] = ()
    """The PE's user transport parameters, as the caller (codec) gave them."""
    user_transport: object | None = None
    """Optional raw user-transport information (opaque)."""
    registrator_transport: object | None = None
    """The PE's ASAP transport as seen by the registrar (opaque)."""
    registrator: object | None = None
    """Opaque identity of the registering association; a different one means "non-unique id"."""
    home_pr: int = 0
    """Identifier of the owning (home) registrar; 0 = none."""
    registration_life: int = 0
    """Registration life in milliseconds (0 = does not expire)."""
    registered_at: float = 0.0
    updated_at: float = 0.0
    unreachability_reports: int = 0
    checksum_sum: int = 0
    """This PE's un-finished checksum contribution (RSPLIB PoolElementNode.Checksum)."""

    def expires_at(self) -> float | None:
        """Time (caller's clock, ms) after which the entry expires, or None if it never does."""
        return None if self.registration_life == 0 else self.updated_at + self.registration_life

    def to_dict(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "identifier_hex": f"0x{self.identifier:08x}",
            "home_pr": self.home_pr,
            "registration_life_ms": self.registration_life,
            "registered_at": self.registered_at,
            "updated_at": self.updated_at,
            "policy": self.policy.to_dict(),
            "state": {
                "seq": self.seq,
                "selection_counter": self.selection_counter,
                "degradation": self.degradation,
                "round_counter": self.round_counter,
                "virtual_counter": self.virtual_counter,
                "unreachability_reports": self.unreachability_reports,
            },
            "transports": [_jsonable(t) for t in self.transports],
            "user_transport": _jsonable(self.user_transport),
            "registrator_transport": _jsonable(self.registrator_transport),
        }


def _jsonable(obj: object) -> object:
    if obj is None or isinstance(obj, (int, float, str, bool)):
        return obj
    if isinstance(obj, bytes):
        return obj.hex()
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return str(obj)


@dataclass(slots=True, eq=False)
class Pool:
    """A pool: its handle, the properties fixed by its first PE, and its selection state."""

    handle: bytes
    protocol: int
    control_channel: bool
    selection: SelectionPool = field(repr=False)

    @property
    def policy_type(self) -> int:
        return self.selection.policy.policy_type

    @property
    def elements(self) -> dict[int, PoolEntry]:
        return self.selection.elements  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.selection)


# --------------------------------------------------------------------------- checksum


def checksum_accumulate(acc: int, data: bytes) -> int:
    """RSPLIB handlespaceChecksumCompute: add 16-bit words to a 32-bit accumulator.

    Words are taken in network (big-endian) order, an odd trailing byte padded with zero. That
    reproduces the PE Checksum values RSPLIB 3.4.4 puts into ENRP Presence messages (checked
    against captures/rsplib-3.4.4-calcapp-plu-enrp.pcap: PE 1002 alone -> 0xbf20, PEs 1001 +
    1003 -> 0x7e41, pool handle "CalcAppPool").
    """
    if len(data) % 2:
        data = data + b"\x00"
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    return (acc + total) & 0xFFFFFFFF


def checksum_finish(acc: int) -> int:
    """RSPLIB handlespaceChecksumFinish: fold carries into 16 bits and complement."""
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return (~acc) & 0xFFFF


def element_checksum(pool_handle: bytes, identifier: int) -> int:
    """RSPLIB poolElementNodeComputeChecksum: pool handle bytes, then the identifier (network order)."""
    acc = checksum_accumulate(0, pool_handle)
    return checksum_accumulate(acc, identifier.to_bytes(4, "big"))


# --------------------------------------------------------------------------- handlespace


class Handlespace:
    """Pools and pool elements of one registrar (or of a PU cache / the simulator).

    ``own_pr`` is this registrar's identifier: entries whose ``home_pr`` equals it are "owned"
    and feed the ownership checksum. ``force_python`` selects the pure-Python selector for
    every pool; ``seed`` seeds the random draws of the randomised policies.
    """

    def __init__(
        self,
        own_pr: int = 0,
        *,
        max_increment: int = 0,
        force_python: bool | None = None,
        seed: int | None = None,
    ) -> None:
        self.own_pr = own_pr
        self.max_increment = max_increment
        self.force_python = force_python
        self.rng = random.Random(seed)
        self._pools: dict[bytes, Pool] = {}
        self._count = 0
        self._checksum = 0
        self._own_checksum = 0
        self._own_count = 0

    # ------------------------------------------------------------------ registration

    def register(
        self,
        pool_handle: bytes,
        identifier: int,
        policy: PolicyInfo,
        transports: Iterable[object] = (),
        *,
        home_pr: int | None = None,
        registration_life: int = 0,
        now: float = 0.0,
        registrator: object | None = None,
        user_transport: object | None = None,
        registrator_transport: object | None = None,
        protocol: int = IPPROTO_SCTP,
        control_channel: bool = False,
    ) -> tuple[ErrorCause, PoolEntry | None]:
        """Add a PE or update an existing one (same handle + identifier).

        Returns ``(ErrorCause.OKAY, entry)`` or ``(cause, None)``. Causes: INVALID_VALUES (bad
        handle length, identifier 0 or out of range, unsupported policy type, no transports),
        INCONSISTENT_POLICY (type differs from the pool's), INCONSISTENT_TRANSPORT_TYPE (protocol
        differs), INCONSISTENT_DATA_CONTROL (control-channel use differs), NON_UNIQUE_PE_ID (the
        identifier is held by a different ``registrator``).
        """
        handle = bytes(pool_handle)
        if not 1 <= len(handle) <= MAX_POOL_HANDLE_SIZE:
            return ErrorCause.INVALID_VALUES, None
        if not 0 < identifier <= 0xFFFFFFFF:
            return ErrorCause.INVALID_VALUES, None
        if get_policy(policy.policy_type) is None:
            return ErrorCause.INVALID_VALUES, None
        transports = tuple(transports)
        if not transports:
            return ErrorCause.INVALID_VALUES, None
        home = self.own_pr if home_pr is None else home_pr

        pool = self._pools.get(handle)
        if pool is not None:
            if not policies_compatible(pool.policy_type, policy.policy_type):
                return ErrorCause.INCONSISTENT_POLICY, None
            if pool.protocol != protocol:
                return ErrorCause.INCONSISTENT_TRANSPORT_TYPE, None
            if pool.control_channel != control_channel:
                return ErrorCause.INCONSISTENT_DATA_CONTROL, None
            existing = pool.elements.get(identifier)
            if existing is not None:
                if (
                    existing.registrator is not None
                    and registrator is not None
                    and existing.registrator != registrator
                ):
                    return ErrorCause.NON_UNIQUE_PE_ID, None
                pool.selection.update_policy(existing, policy)
                existing.transports = transports
                existing.user_transport = user_transport
                existing.registrator_transport = registrator_transport
                if registrator is not None:
                    existing.registrator = registrator
                existing.registration_life = registration_life
                existing.updated_at = now
                self._set_owner(existing, home)
                return ErrorCause.OKAY, existing
        else:
            pool = Pool(
                handle,
                protocol,
                control_channel,
                SelectionPool(policy.policy_type, force_python=self.force_python, rng=self.rng),
            )
            self._pools[handle] = pool

        entry = PoolEntry(
            identifier,
            policy,
            pool_handle=handle,
            transports=transports,
            user_transport=user_transport,
            registrator_transport=registrator_transport,
            registrator=registrator,
            home_pr=home,
            registration_life=registration_life,
            registered_at=now,
            updated_at=now,
        )
        pool.selection.add(entry)
        self._count += 1
        entry.checksum_sum = element_checksum(handle, identifier)
        self._checksum = (self._checksum + entry.checksum_sum) & 0xFFFFFFFF
        if home == self.own_pr:
            self._own_count += 1
            self._own_checksum = (self._own_checksum + entry.checksum_sum) & 0xFFFFFFFF
        return ErrorCause.OKAY, entry

    def _set_owner(self, entry: PoolEntry, home: int) -> None:
        if entry.home_pr == home:
            return
        if entry.home_pr == self.own_pr:
            self._own_count -= 1
            self._own_checksum = (self._own_checksum - entry.checksum_sum) & 0xFFFFFFFF
        entry.home_pr = home
        if home == self.own_pr:
            self._own_count += 1
            self._own_checksum = (self._own_checksum + entry.checksum_sum) & 0xFFFFFFFF

    def set_owner(self, pool_handle: bytes, identifier: int, home_pr: int) -> bool:
        """Change an entry's home registrar (takeover, ENRP handle update); False if unknown."""
        entry = self.get(pool_handle, identifier)
        if entry is None:
            return False
        self._set_owner(entry, home_pr)
        return True

    def update_policy(self, pool_handle: bytes, identifier: int, policy: PolicyInfo, now: float | None = None) -> ErrorCause:
        """Change just the policy information (e.g. a load report), as a re-registration would."""
        pool = self._pools.get(bytes(pool_handle))
        entry = pool.elements.get(identifier) if pool is not None else None
        if pool is None or entry is None:
            return ErrorCause.UNKNOWN_POOL_HANDLE
        if not policies_compatible(pool.policy_type, policy.policy_type):
            return ErrorCause.INCONSISTENT_POLICY
        pool.selection.update_policy(entry, policy)
        if now is not None:
            entry.updated_at = now
        return ErrorCause.OKAY

    def deregister(self, pool_handle: bytes, identifier: int) -> PoolEntry | None:
        """Remove a PE; an emptied pool disappears. Returns the removed entry or None."""
        handle = bytes(pool_handle)
        pool = self._pools.get(handle)
        if pool is None or identifier not in pool.elements:
            return None
        entry: PoolEntry = pool.selection.remove(identifier)  # type: ignore[assignment]
        self._count -= 1
        self._checksum = (self._checksum - entry.checksum_sum) & 0xFFFFFFFF
        if entry.home_pr == self.own_pr:
            self._own_count -= 1
            self._own_checksum = (self._own_checksum - entry.checksum_sum) & 0xFFFFFFFF
        if not pool.elements:
            del self._pools[handle]
        return entry

    def clear(self) -> None:
        self._pools.clear()
        self._count = self._own_count = 0
        self._checksum = self._own_checksum = 0

    # ------------------------------------------------------------------ queries

    def get(self, pool_handle: bytes, identifier: int) -> PoolEntry | None:
        pool = self._pools.get(bytes(pool_handle))
        return pool.elements.get(identifier) if pool is not None else None

    def pool(self, pool_handle: bytes) -> Pool | None:
        return self._pools.get(bytes(pool_handle))

    def pools(self) -> list[bytes]:
        """Pool handles in RSPLIB's order (byte-wise)."""
        return sorted(self._pools)

    def entries(self, pool_handle: bytes) -> list[PoolEntry]:
        """A pool's PEs by identifier (RSPLIB's index order); empty if the pool is unknown."""
        pool = self._pools.get(bytes(pool_handle))
        if pool is None:
            return []
        return [pool.elements[i] for i in sorted(pool.elements)]

    def select(
        self, pool_handle: bytes, n: int = DEFAULT_MAX_HANDLE_RESOLUTION_ITEMS, max_increment: int | None = None
    ) -> list[PoolEntry]:
        """Handle resolution: up to ``n`` PEs chosen by the pool's policy (with its side effects).

        An unknown pool gives an empty list (the registrar answers UNKNOWN_POOL_HANDLE).
        """
        pool = self._pools.get(bytes(pool_handle))
        if pool is None:
            return []
        inc = self.max_increment if max_increment is None else max_increment
        return pool.selection.select(n, inc)  # type: ignore[return-value]

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[PoolEntry]:
        for handle in self.pools():
            yield from self.entries(handle)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        return self.get(key[0], key[1]) is not None

    def owned_by(self, pr_id: int) -> Iterator[PoolEntry]:
        """Entries whose home registrar is ``pr_id``, in (handle, identifier) order."""
        for entry in self:
            if entry.home_pr == pr_id:
                yield entry

    def expired(self, now: float) -> list[PoolEntry]:
        """Entries whose registration life has run out at ``now`` (same clock as ``now=`` above)."""
        out = []
        for entry in self:
            t = entry.expires_at()
            if t is not None and t <= now:
                out.append(entry)
        return out

    # ------------------------------------------------------------------ checksums

    def checksum(self) -> int:
        """16-bit handlespace checksum over all entries (RSPLIB handlespace checksum)."""
        return checksum_finish(self._checksum)

    def ownership_checksum(self) -> int:
        """16-bit checksum over the entries this registrar owns (sent in ENRP presence)."""
        return checksum_finish(self._own_checksum)

    def checksum_of(self, pr_id: int) -> int:
        """16-bit checksum over the entries owned by ``pr_id`` (recomputed; O(entries))."""
        acc = 0
        for entry in self.owned_by(pr_id):
            acc = (acc + entry.checksum_sum) & 0xFFFFFFFF
        return checksum_finish(acc)

    def owned_count(self) -> int:
        return self._own_count

    # ------------------------------------------------------------------ bulk transfer

    def export(self, owner: int | None = None) -> list[dict[str, Any]]:
        """Entries as ``register()`` keyword dicts (transports unchanged), optionally by owner."""
        source = self if owner is None else self.owned_by(owner)
        return [
            {
                "pool_handle": e.pool_handle,
                "identifier": e.identifier,
                "policy": e.policy,
                "transports": e.transports,
                "home_pr": e.home_pr,
                "registration_life": e.registration_life,
                "user_transport": e.user_transport,
                "registrator_transport": e.registrator_transport,
                "protocol": self._pools[e.pool_handle].protocol,
                "control_channel": self._pools[e.pool_handle].control_channel,
            }
            for e in source
        ]

    def import_entries(self, records: Iterable[dict[str, Any]], now: float = 0.0) -> list[ErrorCause]:
        """Register every record from ``export()`` (e.g. an ENRP handle table); one cause per record."""
        return [self.register(now=now, **rec)[0] for rec in records]

    # ------------------------------------------------------------------ dump

    def dump(self) -> dict[str, Any]:
        """Plain, JSON-serialisable view for ``hsdump --json``."""
        pools = []
        for handle in self.pools():
            pool = self._pools[handle]
            pol = pool.selection.policy
            pools.append(
                {
                    "handle": handle.decode("utf-8", "replace"),
                    "handle_hex": handle.hex(),
                    "policy": pol.name,
                    "policy_type": int(pol.policy_type),
                    "protocol": pool.protocol,
                    "control_channel": pool.control_channel,
                    "elements": [e.to_dict() for e in self.entries(handle)],
                    "selection_order": [e.identifier for e in pool.selection.ordered()],
                }
            )
        return {
            "own_pr": self.own_pr,
            "pools": pools,
            "pool_count": len(self._pools),
            "element_count": self._count,
            "owned_count": self._own_count,
            "handlespace_checksum": self.checksum(),
            "ownership_checksum": self.ownership_checksum(),
        }

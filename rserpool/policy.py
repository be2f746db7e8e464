"""Pool member selection policies (RFC 5356 + RSPLIB extensions) with RSPLIB 3.4.4's exact semantics.

Shared by the registrar's handlespace and the discrete-event simulator, so both select the same
pool elements for the same inputs. Facts from RSPLIB ``src/poolpolicy-template_impl.h``,
``poolnode-template_impl.h``, ``poolelementnode-template_impl.h`` and ``poolpolicysettings.c``:

* Every pool keeps a *selection* order. "Sorting-order" policies (RR, WRR, PRIO, LU, LUD, PLU,
  PLUD, LU-DPF, LUD-DPF, ...) return the first N elements of that order; ties are broken by a
  per-pool sequence number (``seq``), which a selection renews, so equal keys rotate.
  "Value-tree" policies (RAND, WRAND, WRAND-DPF, RLU, RLUD, RPLU, RPLUD) draw
  ``random64() % sum_of_values`` N times without replacement.
* After a selection the first ``max_increment`` chosen elements (policy default: 1 for the
  sorting-order policies and the randomised LU family, 0 for RAND/WRAND/WRAND-DPF) get a new
  sequence number, ``selection_counter += 1`` and the policy's update hook (LUD: degradation +=
  load degradation; WRR: virtual counter / round counter step).
* RSPLIB's "link into selection" step *also* runs the update hook. Hence the hook runs once
  when an element is added or its policy information changes, and twice per selection for a
  sorting-order policy. For LUD this means: after (re-)registration degradation = 1 × increment,
  and every handle resolution that picks the PE adds 2 × increment. We mirror this so that
  emulated and simulated (RSPSIM uses the same code) runs agree number for number.
* A re-registration resets the degradation to 0 (then the link hook applies once), but only if
  the policy information changed or the degradation was non-zero; otherwise nothing moves.
* Pools are homogeneous: an element may join only if its policy type equals the pool's
  (``poolPolicySettingsAdapt`` is a plain equality test). That is what "compatible" means here.

PLU-DPF and PLUD-DPF have type codes in RSPLIB but no selection code in 3.4.4; their keys here
are derived from PLU/PLUD plus the LU-DPF distance term (documented at ``_key_plu_dpf``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from rserpool.policytypes import (
    MAX_LOAD,
    MAX_LOAD_DPF,
    MAX_WEIGHT,
    MAX_WEIGHT_DPF,
    SHORT_NAMES,
    PolicyType,
    fraction_to_u32,
    u32_to_fraction,
)
from rserpool.selector import SelectorAPI, make_selector

__all__ = [
    "DEFAULT_MAX_HANDLE_RESOLUTION_ITEMS",
    "POLICIES",
    "Policy",
    "PolicyElement",
    "PolicyInfo",
    "SelectionPool",
    "fraction_to_u32",
    "get_policy",
    "policies_compatible",
    "u32_to_fraction",
]

DEFAULT_MAX_HANDLE_RESOLUTION_ITEMS = 3
"""RSPLIB registrar default for how many PEs a handle resolution returns."""

_U32 = 0xFFFFFFFF


# --------------------------------------------------------------------------- policy information


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """A PE's policy parameters, all as RSPLIB's unsigned 32-bit values.

    ``load``, ``load_degradation``, ``load_dpf`` and ``weight_dpf`` are fixed-point fractions
    (0xFFFFFFFF = 100 %; DPFs are per millisecond of ``distance``). PRIO carries its priority in
    ``weight`` (higher is preferred); PLU carries its per-PE load increment in
    ``load_degradation`` (RSPLIB prints it as "Load Degradation").
    """

    policy_type: int
    weight: int = 0
    load: int = 0
    load_degradation: int = 0
    load_dpf: int = 0
    weight_dpf: int = 0
    distance: int = 0

    def __post_init__(self) -> None:
        pt = self.policy_type
        if type(pt) is not PolicyType:
            try:
                object.__setattr__(self, "policy_type", PolicyType(pt))
            except ValueError:
                pass  # unknown codes are kept so the handlespace can reject them with a cause
        # one OR over all fields: negative if any is negative, > 2**32-1 if any is too big,
        # TypeError if any is not an int (this runs for every load report, so keep it cheap)
        try:
            merged = pt | self.weight | self.load | self.load_degradation | self.load_dpf | self.weight_dpf | self.distance
        except TypeError:
            merged = -1
        if merged < 0 or merged > _U32:
            raise ValueError(f"PolicyInfo fields must be unsigned 32-bit ints: {self!r}")

    @classmethod
    def make(
        cls,
        policy_type: int,
        *,
        weight: int = 0,
        load: float = 0.0,
        load_degradation: float = 0.0,
        load_dpf: float = 0.0,
        weight_dpf: float = 0.0,
        distance: int = 0,
    ) -> PolicyInfo:
        """Build from fractions (load 0.25 = 25 %), converting them to the u32 scale."""
        return cls(
            policy_type,
            weight=weight,
            load=fraction_to_u32(load),
            load_degradation=fraction_to_u32(load_degradation),
            load_dpf=fraction_to_u32(load_dpf),
            weight_dpf=fraction_to_u32(weight_dpf),
            distance=distance,
        )

    @property
    def load_fraction(self) -> float:
        return u32_to_fraction(self.load)

    @property
    def load_degradation_fraction(self) -> float:
        return u32_to_fraction(self.load_degradation)

    def with_load(self, load: float) -> PolicyInfo:
        """Same settings with a new load given as a fraction."""
        return replace(self, load=fraction_to_u32(load))

    def same_settings(self, other: PolicyInfo) -> bool:
        """RSPLIB's poolPolicySettingsComparison == 0 (the type is not compared)."""
        return (
            self.weight == other.weight
            and self.load == other.load
            and self.load_degradation == other.load_degradation
            and self.load_dpf == other.load_dpf
            and self.weight_dpf == other.weight_dpf
            and self.distance == other.distance
        )

    def to_dict(self) -> dict[str, object]:
        t = self.policy_type
        return {
            "type": int(t),
            "name": POLICIES[t].name if t in POLICIES else f"0x{int(t):08x}",
            "weight": self.weight,
            "load": self.load,
            "load_fraction": self.load_fraction,
            "load_degradation": self.load_degradation,
            "load_dpf": self.load_dpf,
            "weight_dpf": self.weight_dpf,
            "distance": self.distance,
        }

    @classmethod
    def parse(cls, spec: str) -> PolicyInfo:
        """Parse RSPLIB's ``-policy=`` syntax: ``Name[:param]`` (long or short name).

        The parameter is the weight for WRR/WRAND/PRIO and the load degradation (fraction) for
        the degradation/priority families, e.g. ``PriorityLeastUsed:0.1``.
        """
        name, _, param = spec.partition(":")
        ptype = _NAME_TO_TYPE.get(name.strip().lower())
        if ptype is None:
            raise ValueError(f"unknown policy {name!r}")
        if not param:
            return cls(ptype)
        if ptype in _WEIGHT_PARAM:
            return cls(ptype, weight=int(param))
        if ptype in _DEGRADATION_PARAM:
            return cls.make(ptype, load_degradation=float(param))
        raise ValueError(f"policy {name!r} takes no parameter")


# --------------------------------------------------------------------------- element state


@dataclass(slots=True, eq=False)
class PolicyElement:
    """Selection state RSPLIB keeps per pool element; the handlespace's entries extend this."""

    identifier: int
    policy: PolicyInfo
    seq: int = 0
    selection_counter: int = 0
    degradation: int = 0
    round_counter: int = 0
    virtual_counter: int = 0


# --------------------------------------------------------------------------- per-policy functions


def _sat(v: int) -> int:
    """RSPLIB getSum: clamp to [0, MAX_LOAD]."""
    return 0 if v < 0 else (MAX_LOAD if v > MAX_LOAD else v)


def _value_fraction(v1: int, v2: int = 0, v3: int = 0) -> int:
    """RSPLIB getValueFraction(MAX_LOAD, ...): remaining capacity, at least 1 so a PE stays selectable."""
    v = MAX_LOAD - v1 - v2 - v3
    return 1 if v < 1 else (MAX_WEIGHT if v > MAX_WEIGHT else v)


def _load_dpf(p: PolicyInfo) -> float:
    return float(p.distance) * (float(p.load_dpf) / float(MAX_LOAD_DPF))


def _rint_clamp(x: float) -> int:
    # C: (unsigned long long)rint(x), then clamp to MAX_LOAD; round() is half-even like rint
    v = int(round(x))
    return MAX_LOAD if v > MAX_LOAD else v


Key = tuple[int, int]


def _key_zero(e: PolicyElement) -> Key:
    return (0, 0)


def _key_wrr(e: PolicyElement) -> Key:
    return (e.round_counter, e.virtual_counter)


def _key_priority(e: PolicyElement) -> Key:
    # RSPLIB sorts PRIO by weight descending; invert so the selector can sort ascending
    return (MAX_WEIGHT - e.policy.weight, 0)


def _key_identifier(e: PolicyElement) -> Key:
    return (e.identifier, 0)


def _key_lu(e: PolicyElement) -> Key:
    return (e.policy.load, 0)


def _key_lud(e: PolicyElement) -> Key:
    return (_sat(e.policy.load + e.degradation), 0)


def _key_plu(e: PolicyElement) -> Key:
    return (_sat(e.policy.load + e.policy.load_degradation), 0)


def _key_plud(e: PolicyElement) -> Key:
    p = e.policy
    return (_sat(p.load + p.load_degradation + e.degradation), 0)


def _key_lu_dpf(e: PolicyElement) -> Key:
    p = e.policy
    return (_rint_clamp(float(p.load) + (_load_dpf(p) * float(MAX_LOAD))), 0)


def _key_lud_dpf(e: PolicyElement) -> Key:
    p = e.policy
    return (_rint_clamp(float(p.load) + float(e.degradation) + (_load_dpf(p) * float(MAX_LOAD_DPF))), 0)


def _key_plu_dpf(e: PolicyElement) -> Key:
    # Derived (no RSPLIB 3.4.4 code): PLU's key plus LU-DPF's distance penalty.
    p = e.policy
    return (_rint_clamp(float(p.load) + float(p.load_degradation) + (_load_dpf(p) * float(MAX_LOAD))), 0)


def _key_plud_dpf(e: PolicyElement) -> Key:
    # Derived (no RSPLIB 3.4.4 code): PLUD's key plus LU-DPF's distance penalty.
    p = e.policy
    return (
        _rint_clamp(
            float(p.load) + float(p.load_degradation) + float(e.degradation) + (_load_dpf(p) * float(MAX_LOAD))
        ),
        0,
    )


def _value_zero(e: PolicyElement) -> int:
    return 0


def _value_one(e: PolicyElement) -> int:
    return 1


def _value_weight(e: PolicyElement) -> int:
    return e.policy.weight


def _value_wrand_dpf(e: PolicyElement) -> int:
    p = e.policy
    dpf = float(p.distance) * (float(p.weight_dpf) / float(MAX_WEIGHT_DPF))
    v = p.weight - int(round(float(p.weight) * dpf))
    return 1 if v < 0 else (MAX_WEIGHT if v > MAX_WEIGHT else v)


def _value_rlu(e: PolicyElement) -> int:
    return _value_fraction(e.policy.load)


def _value_rlud(e: PolicyElement) -> int:
    return _value_fraction(e.policy.load, e.degradation)


def _value_rplu(e: PolicyElement) -> int:
    return _value_fraction(e.policy.load, e.policy.load_degradation)


def _value_rplud(e: PolicyElement) -> int:
    return _value_fraction(e.policy.load, e.policy.load_degradation, e.degradation)


def _update_wrr(e: PolicyElement) -> None:
    if e.virtual_counter > 1:
        e.virtual_counter -= 1
    else:
        e.round_counter += 1
        e.virtual_counter = e.policy.weight


def _update_degradation(e: PolicyElement) -> None:
    e.degradation = _sat(e.degradation + e.policy.load_degradation)


@dataclass(frozen=True, slots=True)
class Policy:
    """One selection policy: how to order/weight elements and what a selection does to them."""

    policy_type: PolicyType
    name: str
    """RSPLIB's long name (``-policy=`` syntax)."""
    default_max_increment: int
    by_value: bool
    """True: weighted random draw over ``value``; False: first N in ``key`` order."""
    key: Callable[[PolicyElement], Key]
    value: Callable[[PolicyElement], int] = _value_zero
    update: Callable[[PolicyElement], None] | None = None
    initialize_wrr: bool = False

    @property
    def short_name(self) -> str:
        return SHORT_NAMES.get(self.policy_type, self.name)


T = PolicyType
POLICIES: dict[int, Policy] = {
    p.policy_type: p
    for p in (
        Policy(T.ROUND_ROBIN, "RoundRobin", 1, False, _key_zero),
        Policy(T.WEIGHTED_ROUND_ROBIN, "WeightedRoundRobin", 1, False, _key_wrr, update=_update_wrr, initialize_wrr=True),
        Policy(T.RANDOM, "Random", 0, True, _key_identifier, _value_one),
        Policy(T.WEIGHTED_RANDOM, "WeightedRandom", 0, True, _key_identifier, _value_weight),
        Policy(T.WEIGHTED_RANDOM_DPF, "WeightedRandomDPF", 0, True, _key_identifier, _value_wrand_dpf),
        Policy(T.PRIORITY, "Priority", 1, False, _key_priority),
        Policy(T.LEAST_USED, "LeastUsed", 1, False, _key_lu),
        Policy(T.LEAST_USED_DPF, "LeastUsedDPF", 1, False, _key_lu_dpf),
        Policy(T.LEAST_USED_DEGRADATION, "LeastUsedDegradation", 1, False, _key_lud, update=_update_degradation),
        Policy(T.LEAST_USED_DEGRADATION_DPF, "LeastUsedDegradationDPF", 1, False, _key_lud_dpf, update=_update_degradation),
        Policy(T.PRIORITY_LEAST_USED, "PriorityLeastUsed", 1, False, _key_plu),
        Policy(T.PRIORITY_LEAST_USED_DEGRADATION, "PriorityLeastUsedDegradation", 1, False, _key_plud, update=_update_degradation),
        Policy(T.PRIORITY_LEAST_USED_DPF, "PriorityLeastUsedDPF", 1, False, _key_plu_dpf),
        Policy(T.PRIORITY_LEAST_USED_DEGRADATION_DPF, "PriorityLeastUsedDegradationDPF", 1, False, _key_plud_dpf, update=_update_degradation),
        # RSPLIB's randomised LU family only (re)computes the value in its update hook; the
        # degradation is never raised for RLUD/RPLUD, so it stays 0 there (as in RSPLIB).
        Policy(T.RANDOMIZED_LEAST_USED, "RandomizedLeastUsed", 1, True, _key_identifier, _value_rlu),
        Policy(T.RANDOMIZED_LEAST_USED_DEGRADATION, "RandomizedLeastUsedDegradation", 1, True, _key_identifier, _value_rlud),
        Policy(T.RANDOMIZED_PRIORITY_LEAST_USED, "RandomizedPriorityLeastUsed", 1, True, _key_identifier, _value_rplu),
        Policy(
            T.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION,
            "RandomizedPriorityLeastUsedDegradation",
            1,
            True,
            _key_identifier,
            _value_rplud,
        ),
    )
}
"""Every supported policy by type code."""

_NAME_TO_TYPE: dict[str, PolicyType] = {}
for _p in POLICIES.values():
    _NAME_TO_TYPE[_p.name.lower()] = _p.policy_type
    _NAME_TO_TYPE[_p.short_name.lower()] = _p.policy_type
_WEIGHT_PARAM = {T.WEIGHTED_ROUND_ROBIN, T.WEIGHTED_RANDOM, T.PRIORITY, T.WEIGHTED_RANDOM_DPF}
_DEGRADATION_PARAM = {
    T.LEAST_USED_DEGRADATION,
    T.LEAST_USED_DEGRADATION_DPF,
    T.PRIORITY_LEAST_USED,
    T.PRIORITY_LEAST_USED_DEGRADATION,
    T.PRIORITY_LEAST_USED_DPF,
    T.PRIORITY_LEAST_USED_DEGRADATION_DPF,
    T.RANDOMIZED_LEAST_USED_DEGRADATION,
    T.RANDOMIZED_PRIORITY_LEAST_USED,
    T.RANDOMIZED_PRIORITY_LEAST_USED_DEGRADATION,
}


def get_policy(policy_type: int) -> Policy | None:
    """The policy for a type code, or None if unsupported."""
    return POLICIES.get(policy_type)


def policies_compatible(pool_type: int, element_type: int) -> bool:
    """RFC 5356 §3 consistency rule as RSPLIB applies it: the types must be identical."""
    return pool_type == element_type


# --------------------------------------------------------------------------- a pool's selection


class SelectionPool:
    """The selection side of one pool: elements by identifier, their order and the policy's effects.

    ``force_python`` picks the pure-Python selector (see ``rserpool.selector.make_selector``).
    ``rng`` supplies the 64-bit draws of the value-tree policies; pass a seeded
    ``random.Random`` for reproducible runs.
    """

    __slots__ = ("policy", "elements", "selector", "global_seq", "rng")

    def __init__(
        self,
        policy_type: int,
        *,
        force_python: bool | None = None,
        rng: random.Random | None = None,
    ) -> None:
        policy = POLICIES.get(policy_type)
        if policy is None:
            raise ValueError(f"unsupported policy type 0x{int(policy_type):08x}")
        self.policy: Policy = policy
        self.elements: dict[int, PolicyElement] = {}
        self.selector: SelectorAPI = make_selector(force_python)
        self.global_seq = 0
        self.rng = rng if rng is not None else random.Random()

    def __len__(self) -> int:
        return len(self.elements)

    def __contains__(self, identifier: object) -> bool:
        return identifier in self.elements

    def _link(self, e: PolicyElement) -> None:
        pol = self.policy
        if pol.update is not None:
            pol.update(e)  # RSPLIB's link step runs the update hook (see module docstring)
        k0, k1 = pol.key(e)
        self.selector.insert(e.identifier, k0, k1, e.seq, pol.value(e))

    def _relink(self, e: PolicyElement) -> None:
        pol = self.policy
        if pol.update is not None:
            pol.update(e)
        k0, k1 = pol.key(e)
        self.selector.update(e.identifier, k0, k1, e.seq, pol.value(e))

    def add(self, e: PolicyElement) -> None:
        """Insert a new element (its policy type must already be known to be compatible)."""
        if e.identifier in self.elements:
            raise ValueError(f"identifier {e.identifier} already in pool")
        e.seq = self.global_seq
        self.global_seq += 1
        e.virtual_counter = e.round_counter = e.selection_counter = e.degradation = 0
        if self.policy.initialize_wrr:
            first = self.selector.first(1)
            e.round_counter = self.elements[first[0]].round_counter if first else 0
            e.virtual_counter = e.policy.weight
        self.elements[e.identifier] = e
        self._link(e)

    def remove(self, identifier: int) -> PolicyElement:
        e = self.elements.pop(identifier)
        self.selector.remove(identifier)
        return e

    def update_policy(self, e: PolicyElement, info: PolicyInfo) -> bool:
        """Apply re-registered policy information; True if the element was re-ordered.

        Mirrors RSPLIB poolElementNodeUpdate: only a change of settings or a non-zero degradation
        triggers the reset (degradation 0, virtual counter capped at the weight) and re-link.
        """
        if e.policy.same_settings(info) and e.degradation == 0:
            e.policy = info  # identical values; keep the caller's object
            return False
        e.policy = info
        e.degradation = 0
        if e.virtual_counter > info.weight:
            e.virtual_counter = info.weight
        self._relink(e)
        return True

    def ordered(self) -> list[PolicyElement]:
        """All elements in current selection order (value-tree policies: by identifier)."""
        return [self.elements[i] for i in self.selector.ordered()]

    def select(self, n: int = DEFAULT_MAX_HANDLE_RESOLUTION_ITEMS, max_increment: int = 0) -> list[PolicyElement]:
        """Handle resolution: up to ``n`` elements, applying the policy's side effects.

        ``max_increment`` 0 means the policy default (RSPLIB registrar default).
        """
        if n < 1 or not self.elements:
            return []
        pol = self.policy
        if max_increment == 0:
            max_increment = pol.default_max_increment
        if pol.by_value:
            return self._select_by_value(n, max_increment)
        elements = self.elements
        chosen = [elements[i] for i in self.selector.first(n)]
        update = pol.update
        key = pol.key
        value = pol.value
        selector = self.selector
        for e in chosen[:max_increment]:
            e.seq = self.global_seq
            self.global_seq += 1
            e.selection_counter += 1
            if update is not None:
                update(e)  # the selection's own update ...
                update(e)  # ... and the one inside RSPLIB's re-link
            k0, k1 = key(e)
            selector.update(e.identifier, k0, k1, e.seq, value(e))
        return chosen

    def _select_by_value(self, n: int, max_increment: int) -> list[PolicyElement]:
        selector = self.selector
        elements = self.elements
        pol = self.policy
        chosen: list[PolicyElement] = []
        for i in range(min(n, len(elements))):
            total = selector.total_value()
            if total < 1:
                break
            e = elements[selector.find_by_value(self.rng.getrandbits(64) % total)]
            e.seq = self.global_seq
            self.global_seq += 1
            e.selection_counter += 1
            if i < max_increment and pol.update is not None:
                pol.update(e)
            # unlinked until all picks are made so no element is drawn twice
            selector.remove(e.identifier)
            chosen.append(e)
        for e in chosen:
            self._link(e)
        return chosen

    def check_invariants(self) -> None:
        """Raise AssertionError if the selector disagrees with the elements (for tests)."""
        assert len(self.selector) == len(self.elements)
        total = 0
        for e in self.elements.values():
            k0, k1 = self.policy.key(e)
            v = self.policy.value(e)
            assert self.selector.key(e.identifier) == (k0, k1, e.seq, v), e.identifier
            total += v
        assert self.selector.total_value() == total


def selection_counts(elements: Iterable[PolicyElement]) -> dict[int, int]:
    """identifier -> how often it was selected (handy for proportion checks)."""
    return {e.identifier: e.selection_counter for e in elements}

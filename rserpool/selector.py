"""Per-pool selection structures: the pure-Python reference and the C one, behind one API.

A selector holds items (PE identifiers) ordered by ``(k0, k1, seq, item)`` and carries a
non-negative ``value`` per item for the weighted/randomised policies. ``rserpool.policy``
computes the keys and values; the selector only orders and sums them.

``PySelector`` (bisect over a sorted list) and ``rserpool._selector.Selector`` have the same
methods and must make identical choices; ``make_selector()`` picks the C one unless told
otherwise or unless the extension is missing, which it logs once (``accelerated()`` and
``acceleration_reason()`` say which one is in use; ``emulab doctor`` prints the reason, and the
test suite fails without the extension unless ``RSERPOOL_ALLOW_PURE_PYTHON=1``).

The C selector is a B+-tree of 32-entry nodes ordered by that key, whose inner nodes carry each
child's value sum (so ``find_by_value`` descends by sums), plus an open-addressing hash table
from item to key so that ``update``/``remove`` reach the entry without a search: O(log n) per
insert, update, remove and value lookup; ``first(n)`` walks the leaf chain. RSPLIB keeps a
red-black tree per pool instead; ``_selector.c`` explains why a B+-tree.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left, insort
from typing import Protocol

try:
    from rserpool._selector import Selector as CSelector

    HAVE_C_SELECTOR = True
    _C_MISSING_BECAUSE = ""
except ImportError as _exc:  # pragma: no cover - the extension is built by `pip install -e .`
    CSelector = None  # type: ignore[assignment,misc]
    HAVE_C_SELECTOR = False
    _C_MISSING_BECAUSE = str(_exc)

log = logging.getLogger(__name__)

_U64 = (1 << 64) - 1

FORCE_PYTHON_ENV = "RSERPOOL_PURE_PYTHON_SELECTOR"
"""Set this environment variable to a non-empty value to make ``make_selector`` use ``PySelector``."""

ALLOW_PURE_PYTHON_ENV = "RSERPOOL_ALLOW_PURE_PYTHON"
"""``1`` says that running without the C extension is intended (the test suite fails otherwise)."""

_warned_fallback = False


class SelectorAPI(Protocol):
    """What both selector implementations provide."""

    def insert(self, item: int, k0: int, k1: int, seq: int, value: int = 0) -> None: ...
    def update(self, item: int, k0: int, k1: int, seq: int, value: int = 0) -> None: ...
    def remove(self, item: int) -> None: ...
    def clear(self) -> None: ...
    def first(self, n: int) -> list[int]: ...
    def ordered(self) -> list[int]: ...
    def total_value(self) -> int: ...
    def find_by_value(self, v: int) -> int: ...
    def key(self, item: int) -> tuple[int, int, int, int]: ...
    def __len__(self) -> int: ...
    def __contains__(self, item: object) -> bool: ...


def _check_u64(name: str, v: int) -> None:
    if not isinstance(v, int):
        raise TypeError(f"{name} must be an int")
    if v < 0 or v > _U64:
        raise OverflowError(f"{name} out of range for an unsigned 64-bit value")


class PySelector:
    """Reference selector: a sorted list of ``(k0, k1, seq, item)`` tuples plus a dict per item.

    Insert/remove/update cost O(log n) comparisons plus an O(n) list shift; value lookups walk
    the list (O(n)), like RSPLIB's linear-list storage back-end.
    """

    __slots__ = ("_sorted", "_entries", "_total")

    def __init__(self, seed: int = 0) -> None:
        # seed is unused by both implementations (it shaped an earlier randomised C tree); still
        # accepted so that the two classes, and old callers, stay interchangeable
        self._sorted: list[tuple[int, int, int, int]] = []
        self._entries: dict[int, tuple[tuple[int, int, int, int], int]] = {}
        self._total = 0

    def insert(self, item: int, k0: int, k1: int, seq: int, value: int = 0) -> None:
        for name, v in (("item", item), ("k0", k0), ("k1", k1), ("seq", seq), ("value", value)):
            _check_u64(name, v)
        if item in self._entries:
            raise ValueError(f"item {item} already present")
        key = (k0, k1, seq, item)
        insort(self._sorted, key)
        self._entries[item] = (key, value)
        self._total += value

    def update(self, item: int, k0: int, k1: int, seq: int, value: int = 0) -> None:
        for name, v in (("k0", k0), ("k1", k1), ("seq", seq), ("value", value)):
            _check_u64(name, v)
        old_key, old_value = self._entries[item]
        del self._sorted[bisect_left(self._sorted, old_key)]
        key = (k0, k1, seq, item)
        insort(self._sorted, key)
        self._entries[item] = (key, value)
        self._total += value - old_value

    def remove(self, item: int) -> None:
        key, value = self._entries.pop(item)
        del self._sorted[bisect_left(self._sorted, key)]
        self._total -= value

    def clear(self) -> None:
        self._sorted.clear()
        self._entries.clear()
        self._total = 0

    def first(self, n: int) -> list[int]:
        return [key[3] for key in self._sorted[: max(n, 0)]]

    def ordered(self) -> list[int]:
        return [key[3] for key in self._sorted]

    def total_value(self) -> int:
        return self._total

    def find_by_value(self, v: int) -> int:
        if v < 0 or v >= self._total:
            raise ValueError("value must be below total_value()")
        entries = self._entries
        for key in self._sorted:
            value = entries[key[3]][1]
            if v < value:
                return key[3]
            v -= value
        raise RuntimeError("selector value sums are inconsistent")  # pragma: no cover

    def key(self, item: int) -> tuple[int, int, int, int]:
        key, value = self._entries[item]
        return (key[0], key[1], key[2], value)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item: object) -> bool:
        return item in self._entries


def make_selector(force_python: bool | None = None, seed: int = 0x2545F491) -> SelectorAPI:
    """A new empty selector: the C one by default, ``PySelector`` when forced or when C is missing.

    ``force_python=None`` consults the ``RSERPOOL_PURE_PYTHON_SELECTOR`` environment variable.
    """
    global _warned_fallback
    if force_python is None:
        force_python = bool(os.environ.get(FORCE_PYTHON_ENV))
    if force_python:
        return PySelector(seed)
    if not HAVE_C_SELECTOR:
        if not _warned_fallback:  # said once, not silently: selection is much slower this way
            _warned_fallback = True
            log.warning("%s", acceleration_reason())
        return PySelector(seed)
    return CSelector(seed)


def accelerated() -> bool:
    """Whether ``make_selector()`` hands out the C selector (the extension is built and not overridden)."""
    return HAVE_C_SELECTOR and not os.environ.get(FORCE_PYTHON_ENV)


def acceleration_reason() -> str:
    """One line saying which selector ``make_selector()`` uses and why (``emulab doctor`` prints it)."""
    if not HAVE_C_SELECTOR:
        return (f"pure Python: the C extension rserpool._selector is not built ({_C_MISSING_BECAUSE}); "
                "build it with `pip install -e .` (make setup)")
    if os.environ.get(FORCE_PYTHON_ENV):
        return f"pure Python: {FORCE_PYTHON_ENV} is set"
    return "C extension rserpool._selector"


def pure_python_allowed() -> bool:
    """Whether the environment says that running without the C extension is intended."""
    return os.environ.get(ALLOW_PURE_PYTHON_ENV, "") not in ("", "0")

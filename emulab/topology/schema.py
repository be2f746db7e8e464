"""Reading a topology file and checking raw YAML values, with one-line errors naming the field.

``read_yaml`` turns YAML syntax errors (and duplicate keys, which PyYAML would silently merge) into
``TopologyError`` with the line; ``Checker`` validates values found under a field path and raises
``TopologyError("<file>", "<field path>", "<expected>", "<got>")`` on the first problem.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import re
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml

from emulab.topology.model import TopologyError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (two nodes called 'ue' must not merge)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:  # type: ignore[override]
        first: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable) or isinstance(key, list | dict):
                continue  # SafeConstructor reports unhashable keys itself
            if key in first:
                raise _DuplicateKey(
                    f"while reading a mapping (first {key!r} on line {first[key].line + 1})",
                    first[key], f"{key!r} twice", key_node.start_mark,
                )
            first[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, shown: str) -> Any:
    """Parse ``path``; every failure becomes a TopologyError naming ``shown`` (the file as the user gave it)."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise TopologyError(shown, "(file)", "an existing topology file", "no such file") from None
    except IsADirectoryError:
        raise TopologyError(shown, "(file)", "a topology file", "a directory") from None
    except OSError as exc:
        raise TopologyError(shown, "(file)", "a readable topology file", exc.strerror or str(exc)) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        mark = exc.problem_mark
        assert mark is not None and exc.context_mark is not None
        raise TopologyError(
            shown, f"line {mark.line + 1}, column {mark.column + 1}", "unique mapping keys",
            f"{exc.problem} (first on line {exc.context_mark.line + 1})",
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = " ".join(str(exc.problem or "a syntax error").split())
        context = f" ({' '.join(exc.context.split())})" if exc.context else ""
        raise TopologyError(shown, where, "valid YAML", f"{problem}{context}") from None
    except yaml.YAMLError as exc:  # reader errors (bad bytes) and the like
        raise TopologyError(shown, "(file)", "valid UTF-8 YAML", " ".join(str(exc).split())) from None
    except RecursionError:
        raise TopologyError(shown, "(file)", "valid YAML", "structures nested too deeply") from None


def show(value: object) -> str:
    """How a bad value appears after 'got': scalars quoted as written, containers by kind."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        # Short lists of plain scalars read best as written ("[h2, s1, h1]").
        if 0 < len(value) <= 4 and all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value):
            return "[" + ", ".join(str(v) for v in value) + "]"
        return "a list"
    if isinstance(value, datetime.date):
        return f"a date ({value.isoformat()})"
    return f"a {type(value).__name__}"


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when ``word`` is close to one of ``choices``, else ''."""
    if not isinstance(word, str):
        return ""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def join_path(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class Checker:
    """Validates raw values of one file; every method raises TopologyError on the first problem."""

    def __init__(self, shown: str) -> None:
        self.file = shown

    def fail(self, path: str, expected: str, got: str) -> NoReturn:
        raise TopologyError(self.file, path or "(top level)", expected, got)

    def mapping(
        self, value: object, path: str, required: Iterable[str] = (), optional: Iterable[str] = (),
        what: str = "a mapping",
    ) -> dict[str, Any]:
        """A mapping with string keys, all of them known, none of the required ones missing."""
        if not isinstance(value, dict):
            self.fail(path, what, show(value))
        required, optional = list(required), list(optional)
        known = required + optional
        for key in value:
            if not isinstance(key, str):
                self.fail(path, "keys that are names", show(key))
            if known and key not in known:
                self.fail(
                    join_path(path, key), f"one of the keys {', '.join(known)}",
                    f"unknown key {key!r}{did_you_mean(key, known)}",
                )
        for key in required:
            if key not in value:
                self.fail(join_path(path, key), f"a value (the key {key!r} is required)", "nothing")
        return value

    def names(self, value: object, path: str, pattern: re.Pattern[str], what: str) -> dict[str, Any]:
        """A mapping whose keys are names matching ``pattern``; null means empty."""
        if value is None:
            return {}
        mapping = self.mapping(value, path, what=f"a mapping of {what} names to their settings")
        for key in mapping:
            if not pattern.fullmatch(key):
                self.fail(join_path(path, key), f"a {what} name matching {pattern.pattern}", repr(key))
        return mapping

    def string(self, value: object, path: str, what: str = "a string", allow_empty: bool = True) -> str:
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            self.fail(path, what, show(value))
        return value

    def optional_string(self, value: object, path: str, what: str = "a string") -> str | None:
        return None if value is None else self.string(value, path, what)

    def boolean(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, "true or false", show(value))
        return value

    def choice(self, value: object, path: str, choices: Iterable[str], what: str) -> str:
        choices = list(choices)
        if not isinstance(value, str) or value not in choices:
            self.fail(path, f"{what} ({', '.join(choices)})", f"{show(value)}{did_you_mean(value, choices)}")
        return value

    def network(self, value: object, path: str, max_prefix: int, example: str) -> ipaddress.IPv4Network:
        """An IPv4 subnet written with its prefix length, no host bits set, room for the hosts."""
        if not isinstance(value, str) or "/" not in value:
            self.fail(path, f"an IPv4 subnet like {example}", show(value))
        try:
            net = ipaddress.IPv4Network(value.strip())
        except ValueError:
            try:
                ipaddress.IPv4Interface(value.strip())
            except ValueError:
                self.fail(path, f"an IPv4 subnet like {example}", show(value))
            self.fail(path, "an IPv4 subnet with no host bits set", show(value))
        if net.prefixlen > max_prefix:
            self.fail(path, f"an IPv4 subnet of prefix length /{max_prefix} or shorter", show(value))
        return net

    def interface(self, value: object, path: str) -> ipaddress.IPv4Interface | ipaddress.IPv4Address:
        """'10.0.0.1/24' (an interface) or '10.0.0.1' (an address; the subnet gives the prefix)."""
        if isinstance(value, str):
            try:
                if "/" in value:
                    return ipaddress.IPv4Interface(value.strip())
                return ipaddress.IPv4Address(value.strip())
            except ValueError:
                pass
        self.fail(path, "an IPv4 address like '10.0.0.1' or '10.0.0.1/24'", show(value))

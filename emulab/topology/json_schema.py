"""The topology file format as a JSON Schema (draft 2020-12), generated from the loader's own tables.

The key lists, name patterns, roles, service kinds and radio backends come from
``emulab.topology.loader`` / ``radio``, so the schema cannot drift from what the loader accepts; the
value formats (durations, rates, percentages, addresses) mirror ``emulab.linkparams`` and
``emulab.topology.schema.Checker``. What a schema cannot say — cross-references (a node's site, a
link's ends), subnets that overlap, addresses outside their subnet, reachability, the radio
backend's own options — only the loader checks. ``docs/topology.schema.json`` is this module's
output (``python -m emulab.topology.json_schema > docs/topology.schema.json``); a test keeps the two
equal and proves that schema and loader agree on every topology and test file.
"""

from __future__ import annotations

import json
from typing import Any

from emulab.topology import loader
from radio import DEFAULT_BACKEND, backend_names

_NUMBER = r"([0-9]*\.?[0-9]+)"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"


def _anycase(word: str) -> str:
    """A regex for ``word`` in any letter case (JSON Schema regexes have no flags)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


def _anchored(pattern: str) -> str:
    return f"^{pattern}$"


def _text() -> dict[str, Any]:
    return {"type": ["string", "null"]}


def _keys(required: tuple[str, ...], optional: tuple[str, ...], properties: dict[str, Any]) -> dict[str, Any]:
    """An object with exactly the loader's keys: a key the loader knows and this module does not
    describe (or the reverse) stops the generation instead of giving a schema that disagrees."""
    if set(properties) != set(required) | set(optional):
        raise RuntimeError(f"schema keys {sorted(properties)} differ from the loader's {[*required, *optional]}")
    out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = list(required)
    return out


def _quantity(unit_pattern: str, example: str, minimum: dict[str, float]) -> dict[str, Any]:
    """A bare number or a string with an optional unit, as ``emulab.linkparams`` parses it."""
    return {
        "description": f"a number or a string like {example!r}",
        "oneOf": [
            {"type": "number", **minimum},
            {"type": "string", "pattern": _anchored(rf"\s*{_NUMBER}\s*{unit_pattern}?\s*")},
        ],
    }


def topology_schema() -> dict[str, Any]:
    """The JSON Schema of a topology file."""
    name = {"type": "string", "pattern": _anchored(loader.NAME.pattern)}
    # the loader checks the length apart from the pattern; the schema folds it in
    switch_name = {"type": "string",
                   "pattern": _anchored(f"{loader.SWITCH_NAME.pattern[:-1]}{{0,{loader.SWITCH_NAME_MAX - 1}}}")}
    subnet = {"type": "string", "pattern": _anchored(rf"\s*{_IPV4}/([0-9]|[12][0-9]|3[0-2])\s*"),
              "description": "an IPv4 subnet with its prefix length, like '10.0.0.0/24' (no host bits set)"}
    address = {"type": "string", "pattern": _anchored(rf"\s*{_IPV4}(/([0-9]|[12][0-9]|3[0-2]))?\s*"),
               "description": "an IPv4 address, optionally with its prefix length: '10.0.0.1' or '10.0.0.1/30'"}
    duration = _quantity("(us|µs|ms|s)", "20ms", {"minimum": 0})
    rate = _quantity(f"({'|'.join(_anycase(u) for u in ('bit', 'kbit', 'mbit', 'gbit', 'bps', 'kbps', 'mbps', 'gbps'))})",
                     "100Mbit", {"exclusiveMinimum": 0})
    percent = {
        "description": "a percentage from 0 to 100: a number or a string like '1%'",
        "oneOf": [
            {"type": "number", "minimum": 0, "maximum": 100},
            {"type": "string",
             "pattern": _anchored(r"\s*(100(\.0*)?|[0-9]?[0-9](\.[0-9]*)?|\.[0-9]+)\s*%?\s*")},
        ],
    }
    options = {"type": ["object", "null"], "description": "passed untouched to the service / radio backend"}

    site = _keys((), loader.SITE_KEYS, {"description": _text(), "location": _text(), "source": _text()})
    site = {**site, "type": ["object", "null"]}
    service = _keys(loader.SERVICE_REQUIRED, loader.SERVICE_OPTIONAL, {
        "kind": {"enum": list(loader.SERVICE_KINDS)},
        "options": options,
    })
    node = _keys(loader.NODE_REQUIRED, loader.NODE_OPTIONAL, {
        "role": {"enum": list(loader.ROLES)},
        "site": {"type": "string", "description": "one of the sites"},
        "forwarding": {"type": "boolean", "description": "default: true for roles "
                       + ", ".join(sorted(loader.FORWARDING_ROLES)) + ", false otherwise"},
        "services": {"type": ["array", "null"], "items": service},
        "description": _text(),
    })
    switch = _keys(loader.SWITCH_REQUIRED, loader.SWITCH_OPTIONAL, {
        "site": {"type": "string", "description": "one of the sites"},
        "subnet": {"oneOf": [subnet, {"type": "null"}]},
        "description": _text(),
    })
    link = _keys(loader.LINK_REQUIRED, loader.LINK_OPTIONAL, {
        "ends": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2,
                 "description": "two different node or switch names"},
        "subnet": {"oneOf": [subnet, {"type": "null"}]},
        "addresses": {"type": ["object", "null"], "additionalProperties": address,
                      "description": "host end -> its address"},
        "delay": {"oneOf": [*duration["oneOf"], {"type": "null"}],
                  "description": "one-way delay, applied in both directions: " + duration["description"]},
        "jitter": {"oneOf": [*duration["oneOf"], {"type": "null"}],
                   "description": "per direction: " + duration["description"]},
        "loss": {"oneOf": [*percent["oneOf"], {"type": "null"}], "description": "per direction: " + percent["description"]},
        "rate": {"oneOf": [*rate["oneOf"], {"type": "null"}],
                 "description": "per direction, omitted = unlimited: " + rate["description"]},
        "segment": _text(),
        "radio": {"type": "boolean", "description": "the radio link (at most one, between a ue and an enb)"},
        "description": _text(),
    })
    radio = _keys((), loader.RADIO_OPTIONAL, {
        "backend": {"enum": list(backend_names()), "default": DEFAULT_BACKEND},
        "link": {"type": "string", "description": "the radio link's name '<X>--<Y>' (default: the radio link)"},
        "options": {**options, "description": "the backend's options (each backend checks its own)"},
    })
    radio = {**radio, "type": ["object", "null"]}
    top = _keys(loader.TOP_REQUIRED, loader.TOP_OPTIONAL, {
        "name": {"type": "string", "pattern": _anchored(loader.TOPOLOGY_NAME.pattern)},
        "description": {"type": "string"},
        "sites": {"type": ["object", "null"], "propertyNames": name, "additionalProperties": site},
        "nodes": {"type": "object", "minProperties": 1, "propertyNames": name, "additionalProperties": node},
        "switches": {"type": ["object", "null"], "propertyNames": switch_name, "additionalProperties": switch},
        "links": {"type": "array", "minItems": 1, "items": link},
        "radio": radio,
    })
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "emulab topology file",
        "description": "Generated by `python -m emulab.topology.json_schema` from the loader's tables; see "
                       "docs/topology-format.md. Cross-references, subnets, addresses and reachability are "
                       "checked by the loader only.",
        **top,
    }


def render() -> str:
    """The schema as the text of docs/topology.schema.json."""
    return json.dumps(topology_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")

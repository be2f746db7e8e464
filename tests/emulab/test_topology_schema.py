"""docs/topology.schema.json and the topology loader agree.

The schema is generated from the loader's tables (``emulab.topology.json_schema``); here it must
equal the file in docs/, accept every topology the loader accepts (topologies/*.yaml and the
good-*.yaml test files) and reject every bad-*.yaml test file, except those whose error the loader
finds by relating values to each other (listed below with the reason) or that are not YAML at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from emulab.topology import TopologyError, load
from emulab.topology.json_schema import render, topology_schema
from emulab.topology.schema import read_yaml

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
SCHEMA_FILE = ROOT / "docs" / "topology.schema.json"

GOOD = sorted((ROOT / "topologies").glob("*.yaml")) + sorted(DATA.glob("good-*.yaml"))
BAD = sorted(DATA.glob("bad-*.yaml"))

#: Files that are no YAML (or no YAML mapping keys) at all: the schema never sees them.
NOT_YAML = {
    "bad-syntax": "a YAML syntax error",
    "bad-indent": "a YAML indentation error",
    "bad-binary": "bytes that are not UTF-8",
    "bad-duplicate-key": "a key twice in one mapping (PyYAML would merge them; the loader refuses)",
}

#: Errors that only the loader can find: each relates a value to others in the file.
SEMANTIC_ONLY = {
    "bad-address-broadcast": "an address must be a host address of its link's subnet",
    "bad-address-out-of-subnet": "an address must lie in its link's subnet",
    "bad-address-prefix": "an address's prefix length must be its subnet's",
    "bad-address-wrong-end": "addresses are only for the link's host ends",
    "bad-duplicate-address": "no address on two interfaces",
    "bad-duplicate-link": "no pair of ends linked twice",
    "bad-isolated-node": "every node needs a link",
    "bad-overlapping-subnets": "subnets must not overlap",
    "bad-p2p-addresses-differ": "both addresses of a point-to-point link in one subnet",
    "bad-p2p-no-subnet": "a host-host link needs a subnet or both addresses (whether an end is a host or a "
                         "switch is known only from the other sections)",
    "bad-radio-link-name": "radio.link must name the radio link",
    "bad-radio-option-holes": "radio.options are checked by the radio backend",
    "bad-radio-option-typo": "radio.options are checked by the radio backend",
    "bad-radio-option-value": "radio.options are checked by the radio backend",
    "bad-radio-roles": "the radio link must join a ue and an enb node",
    "bad-radio-two-links": "at most one link with radio: true",
    "bad-radio-without-link": "a radio section needs a radio link",
    "bad-self-link": "a link's two ends must differ",
    "bad-site-ref": "a node's site must be defined under sites",
    "bad-subnet-full": "a subnet must have a free address for every host on it",
    "bad-subnet-host-bits": "a subnet must have no host bits set",
    "bad-subnet-on-switch-link": "a link to a switch takes the switch's subnet",
    "bad-switch-name-clash": "a switch must not be named like a node",
    "bad-switch-no-subnet": "one switch of a segment must name its subnet",
    "bad-switch-segment-two-subnets": "only one switch of a segment names its subnet",
    "bad-two-interfaces-one-segment": "a node has at most one interface on a subnet",
    "bad-unknown-end": "a link's ends must be defined nodes or switches",
    "bad-unreachable-node": "every node must be reachable through forwarding nodes",
    "bad-zero-rate": "a rate string must be positive (the number is only known once its unit is applied)",
}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _field(error: jsonschema.ValidationError) -> str:
    """The schema error's place written as the loader writes field paths (``links[3].delay``)."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in error.absolute_path).lstrip(".")


def _errors(validator: jsonschema.Draft202012Validator, path: Path) -> list[jsonschema.ValidationError]:
    return list(validator.iter_errors(read_yaml(path, str(path))))


def test_schema_file_is_generated_from_the_loader() -> None:
    assert SCHEMA_FILE.read_text() == render(), "regenerate: python -m emulab.topology.json_schema > docs/topology.schema.json"
    assert json.loads(SCHEMA_FILE.read_text()) == topology_schema()


def test_every_data_file_is_classified() -> None:
    names = {p.stem for p in BAD}
    assert set(NOT_YAML) <= names and set(SEMANTIC_ONLY) <= names, "a listed file no longer exists"
    assert len(GOOD) >= 5 and len(BAD) >= 50


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_schema_accepts_what_the_loader_accepts(validator: jsonschema.Draft202012Validator, path: Path) -> None:
    load(path)
    assert [f"{_field(e)}: {e.message}" for e in _errors(validator, path)] == []


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_schema_rejects_what_the_loader_rejects(validator: jsonschema.Draft202012Validator, path: Path) -> None:
    with pytest.raises(TopologyError) as loader_error:
        load(path)
    if path.stem in NOT_YAML:
        with pytest.raises(TopologyError):
            read_yaml(path, str(path))
        return
    errors = _errors(validator, path)
    if path.stem in SEMANTIC_ONLY:
        # still valid as far as the schema can tell; if the schema learns to catch it, unlist it
        assert errors == [], f"{path.stem} is caught by the schema now: remove it from SEMANTIC_ONLY"
        return
    assert errors, f"the schema accepts {path.name}, which the loader rejects"
    # ... at the same place: the loader names the field itself, the schema that field or its parent
    # (a missing or unknown key, a bad name)
    field = _field(jsonschema.exceptions.best_match(errors))
    assert loader_error.value.path.startswith(field), (field, str(loader_error.value))

"""Two testbed instances of the paper topology on one machine: both up at once, each passing the
self-check, then one stopped and cleaned while the other keeps running — its processes, namespaces,
bridges and links untouched, and its self-check still passing.

Instances 97 and 98 are used (numbers a user is unlikely to pick); the test refuses to start over
anything already in them, and stops and cleans both however it ends.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator

import pytest

from emulab import paths
from emulab.cleanup import find_leftovers
from emulab.instances import footprint, on_host
from emulab.runstate import read_state

from helpers.testbed import run_emulab

pytestmark = [pytest.mark.root, pytest.mark.timeout(1800)]

A, B = "97", "98"
TOPOLOGY = "paper-topology"


def emulab_in(instance: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_emulab("--instance", instance, *args, timeout=timeout)


def self_check(instance: str) -> str:
    r = emulab_in(instance, "self-check", timeout=900)
    assert r.returncode == 0 and "self-check: passed" in r.stdout, f"instance {instance}: {r.stdout[-3000:]}{r.stderr}"
    m = re.search(r"largest error ([-+0-9.]+) ms", r.stdout)
    assert m, r.stdout[-2000:]
    return m.group(1)


@pytest.fixture
def two_instances() -> Iterator[None]:
    for name in (A, B):
        if read_state(name) is not None or find_leftovers(name):
            pytest.fail(f"instance {name} is in use (`emulab --instance {name} stop/clean` first): "
                        f"{find_leftovers(name)}")
    try:
        yield
    finally:
        for name in (A, B):
            emulab_in(name, "stop", timeout=120)
            emulab_in(name, "clean", timeout=120)
    for name in (A, B):
        assert find_leftovers(name) == [], f"instance {name} left behind: {find_leftovers(name)}"


def test_two_instances_side_by_side(two_instances: None) -> None:
    default_before = find_leftovers(paths.DEFAULT_INSTANCE)
    for name in (A, B):
        r = emulab_in(name, "start", TOPOLOGY, "--detach", timeout=600)
        assert r.returncode == 0, f"instance {name}: {r.stdout[-2000:]}{r.stderr}"
    assert {A, B} <= set(on_host())
    listed = emulab_in(A, "instances", timeout=60)
    assert re.search(rf"^\s*{A}\s+prefix e{A}\s.*ready", listed.stdout, re.M), listed.stdout
    assert re.search(rf"^\s*{B}\s+prefix e{B}\s.*ready", listed.stdout, re.M), listed.stdout

    # each testbed has its own names, and the default instance's are untouched
    fa, fb = footprint(A), footprint(B)
    for name, f in ((A, fa), (B, fb)):
        assert f["processes"] and f["bridges"] and f["links"], f
        assert f"e{name}ue" in f["namespaces"], f
        assert all(b.startswith(f"e{name}") for b in f["bridges"]), f
    assert not set(fa["processes"]) & set(fb["processes"])
    assert find_leftovers(paths.DEFAULT_INSTANCE) == default_before
    for name in (A, B):  # each status is its own testbed's: its namespaces carry its prefix
        st = json.loads(emulab_in(name, "status", "--json", timeout=60).stdout)
        assert {n["namespace"] for n in st["nodes"]} == {f"e{name}{n['name']}" for n in st["nodes"]}
        haikou = next(n for n in st["nodes"] if n["name"] == "pmc-haikou")
        address = haikou["addresses"][0].split("/")[0]
        ping = emulab_in(name, "exec", "ue", "--", "ping", "-c", "1", "-W", "5", address, timeout=60)
        assert ping.returncode == 0, ping.stdout + ping.stderr

    # both up at once, each passes its self-check
    self_check(A)
    self_check(B)

    # stop and clean A; B keeps running
    assert emulab_in(A, "stop", timeout=120).returncode == 0
    cleaned = emulab_in(A, "clean", timeout=120)
    assert cleaned.returncode == 0, cleaned.stderr
    assert find_leftovers(A) == []
    assert read_state(A) is None
    assert footprint(B) == fb, "cleaning instance A changed instance B"
    assert (read_state(B) or {}).get("phase") == "ready"
    self_check(B)
    assert footprint(B) == fb

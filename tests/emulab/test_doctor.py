"""`emulab doctor`: every capability the brief names is probed and reported with its fallback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emulab.capabilities import PROBES, probe

NAMED = {"sch_netem", "sctp", "ovs_kernel_datapath", "ovs_userspace", "mininet", "os_ken", "tshark", "uhd", "oai",
         "usrp_b210"}


def test_every_named_capability_is_probed():
    assert NAMED <= set(PROBES)


def test_optional_capabilities_name_their_fallback():
    for name, (_, required, fallback) in PROBES.items():
        assert required or fallback, f"{name} is optional but names no fallback"


@pytest.mark.root
def test_doctor_json_reports_choices_and_exits_zero_here():
    run = subprocess.run([sys.executable, "-m", "emulab", "doctor", "--json"], capture_output=True, text=True,
                         timeout=120)
    data = json.loads(run.stdout)
    assert run.returncode == (0 if data["can_run"] else 1)
    assert data["can_run"], data
    caps = data["capabilities"]
    assert NAMED <= set(caps)
    # the choices follow the probe: fallback exactly where the real path is missing
    assert data["choices"]["link_backend"] == ("netem" if caps["sch_netem"]["present"] else "shaper")
    assert data["choices"]["ovs_datapath"] == ("kernel" if caps["ovs_kernel_datapath"]["present"] else "user")
    assert data["choices"]["rserpool_transport"] == ("sctp" if caps["sctp"]["present"] else "tcp")
    for cap in caps.values():
        if not cap["present"] and not cap["required"]:
            assert cap["fallback"] in cap["verdict"]


@pytest.mark.root
def test_probe_is_cached_per_boot():
    first = probe(fresh=True)
    again = probe()
    assert {k: v.present for k, v in first.items.items()} == {k: v.present for k, v in again.items.items()}

"""`emulab doctor --json` inside a kernel that has SCTP, sch_netem and the OVS kernel datapath.

Runs in the real-kernel lane (``scripts/realkernel/run.sh``, which sets ``EMULAB_REALKERNEL=1``
and loads the modules) or on any host where the three modules are already loaded; skipped
elsewhere.  There the testbed must pick netem, SCTP and the kernel datapath instead of the
fallbacks (userspace shaper, TCP, datapath_type=netdev).
"""

from __future__ import annotations

import json

import pytest

from helpers.testbed import REAL_KERNEL_NEEDS, real_kernel, run_emulab

pytestmark = [
    pytest.mark.realkernel,
    pytest.mark.root,
    pytest.mark.skipif(not real_kernel(), reason=REAL_KERNEL_NEEDS),
]

def test_doctor_reports_kernel_features_present() -> None:
    # --json may be cached per boot; the VM is a fresh boot, so this is a real probe there.
    r = run_emulab("doctor", "--json")
    report = json.loads(r.stdout)
    caps = report["capabilities"]
    missing = {n: caps[n]["detail"] for n in ("sch_netem", "sctp", "ovs_kernel_datapath") if not caps[n]["present"]}
    assert not missing, f"doctor says missing: {missing}"
    assert report["choices"] == {"link_backend": "netem", "ovs_datapath": "kernel", "rserpool_transport": "sctp"}
    assert r.returncode == 0 and report["can_run"], \
        {n: c["detail"] for n, c in report["capabilities"].items() if c["required"] and not c["present"]}

"""`emulab doctor --json` inside a kernel that has SCTP, sch_netem and the OVS kernel datapath.

Runs in the real-kernel lane (``scripts/realkernel/run.sh``, which sets ``EMULAB_REALKERNEL=1``
and loads the modules) or on any host where the three modules are already loaded; skipped
elsewhere.  There the testbed must pick netem, SCTP and the kernel datapath instead of the
fallbacks (userspace shaper, TCP, datapath_type=netdev).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NEEDS = "needs a kernel with SCTP, sch_netem and the openvswitch datapath"


def in_real_kernel() -> bool:
    """True inside the real-kernel VM, or where sctp, sch_netem and openvswitch are loaded."""
    if os.environ.get("EMULAB_REALKERNEL") == "1":
        return True
    return all(Path("/sys/module", m).exists() for m in ("sctp", "sch_netem", "openvswitch"))


pytestmark = [
    pytest.mark.realkernel,
    pytest.mark.root,
    pytest.mark.skipif(not in_real_kernel(), reason=NEEDS),
]

_EMULAB = Path(sys.executable).parent / "emulab"


def test_doctor_reports_kernel_features_present() -> None:
    cmd = [str(_EMULAB)] if _EMULAB.exists() else [sys.executable, "-m", "emulab"]
    # --json may be cached per boot; the VM is a fresh boot, so this is a real probe there.
    r = subprocess.run([*cmd, "doctor", "--json"], capture_output=True, text=True, timeout=120)
    report = json.loads(r.stdout)
    caps = report["capabilities"]
    missing = {n: caps[n]["detail"] for n in ("sch_netem", "sctp", "ovs_kernel_datapath") if not caps[n]["present"]}
    assert not missing, f"doctor says missing: {missing}"
    assert report["choices"] == {"link_backend": "netem", "ovs_datapath": "kernel", "rserpool_transport": "sctp"}
    assert r.returncode == 0 and report["can_run"], \
        {n: c["detail"] for n, c in report["capabilities"].items() if c["required"] and not c["present"]}

"""emulab's registrar side by side with RSPLIB's ``rspregistrar`` over kernel SCTP.

Runs ``benchmarks/registrar.py --vs-rsplib --transport sctp --quick``: both registrars in turn
(rounds alternating who goes first), the same 1,000-PE pool, PE farm and client, plus an ENRP peer
of each kind for the propagation time. RSPLIB speaks ASAP over SCTP only, so this needs the
real-kernel lane (``scripts/realkernel/run.sh``). The test checks that the comparison is a result:
every reply of both registrars decoded as a resolution with pool elements (no error answers, no
refused registration), every figure and ratio present. The ratios themselves are reported (the
JSON goes to the lane's artifacts), not asserted: they are what the comparison is for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rserpool import transport as tp

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.realkernel,
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(not tp.sctp_available(),
                       reason="needs a kernel with SCTP (RSPLIB speaks ASAP over SCTP only): run it in the "
                              "real-kernel lane, scripts/realkernel/run.sh"),
    pytest.mark.skipif(shutil.which("rspregistrar") is None,
                       reason="rspregistrar missing (apt-get install rsplib-registrar)"),
    pytest.mark.timeout(1200),
]


def test_registrar_side_by_side_with_rspregistrar(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "registrar.py"), "--vs-rsplib", "--transport", "sctp",
           "--quick", "--enrp-samples", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1100, cwd=ROOT)
    keep = os.environ.get("EMULAB_RK_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "registrar_vs_rsplib.log").write_text(r.stdout + r.stderr)
    assert r.returncode == 0, f"benchmark failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["valid"] is True
    assert len(res["rounds"]) >= 2
    for row in res["rounds"]:
        for impl in ("emulab", "rsplib"):
            one = row[impl]
            assert one["valid"] and not one["errors"], (impl, one)
            assert one["resolutions"] > 0 and one["full_decodes_checked"] > 0, (impl, one)
            assert len(one["enrp_propagation_ms"]) == 3, (impl, one)
    for key in ("ratio_throughput", "ratio_p99", "ratio_registration", "ratio_enrp_propagation",
                "ratio_cpu_per_resolution"):
        assert isinstance(res[key], float) and res[key] > 0, (key, res[key])
    print(json.dumps({k: v for k, v in res.items() if k != "rounds"}, indent=1))

"""emulab's registrar over kernel SCTP fed malformed, truncated, oversized, out-of-order and unknown
ASAP and ENRP messages from many associations (`python -m rserpool.attack --transport sctp`), while
a legitimate PE and PU keep using it; the TCP twin runs on every host (tests/rserpool/
test_registrar_malformed.py).

Over SCTP the kernel frames the messages, so there is no unframeable stream; its counterparts are a
message beyond the registrar's 64 KiB buffer and well-formed ASAP under a foreign PPID, and both
must end the association. The registrar runs in a namespace of its own (the lab), on 127.0.0.1
(the tool attacks loopback only); under qemu TCG every Python process needs seconds to start, so
the flood is short and the legitimate PU's bound is about being served at all, not a latency goal.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from rserpool import transport as tp

from helpers.rsplib_lab import RSERPOOL, Lab, sctp_listening, wait_for

pytestmark = [
    pytest.mark.realkernel,
    pytest.mark.root,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not tp.sctp_available(), reason="needs a kernel with SCTP (the real-kernel lane)"),
]

HOST, ASAP, ENRP = "127.0.0.1", 3863, 9901
MAX_BAD = 32


def _attack(lab: Lab, name: str, *args: str) -> dict:
    res = lab.run([sys.executable, "-m", "rserpool.attack", "--registrar", f"{HOST}:{ASAP}", "--enrp",
                   f"{HOST}:{ENRP}", "--transport", "sctp", "--max-bad-messages", str(MAX_BAD), *args], timeout=400)
    (lab.tmp / f"{name}.out").write_text(res.stdout + res.stderr)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{lab.logs()}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_registrar_over_sctp_survives_malformed_input_and_keeps_serving(lab: Lab) -> None:
    lab.spawn("registrar", [*RSERPOOL, "registrar", "--listen", f"{HOST}:{ASAP}", "--enrp-listen", f"{HOST}:{ENRP}",
                            "--no-announce", "--transport", "sctp", "--max-bad-messages", str(MAX_BAD)],
              env={"PYTHONUNBUFFERED": "1"})
    wait_for("the registrar to listen", lambda: sctp_listening(lab, ASAP) and sctp_listening(lab, ENRP), lab, deadline=90)

    report = _attack(lab, "attack", "--connections", "8", "--messages", "600", "--duration", "15", "--seed", "5")
    keep = os.environ.get("EMULAB_RK_ARTIFACTS")
    if keep:  # the figures of the run, also when a later assertion fails
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "attack-sctp.json").write_text(json.dumps(report, indent=1))
    assert report["transport"] == "sctp"
    answers = report["answers"]
    # answered as the RFCs say, over SCTP as over TCP
    assert answers["asap_unknown_type"] == [2], answers  # Unrecognized Message
    assert answers["asap_unknown_param"] == [1], answers  # Unrecognized Parameter ("stop and report")
    assert answers["asap_oversized_handle"] == [3], answers  # Invalid Values
    assert answers["enrp_unknown_type"] == [2], answers
    # what SCTP cannot carry to the registrar and what keeps being junk ends the association
    assert answers["overlong_message_closed"] is True, answers
    assert answers["wrong_ppid_closed"] is True, answers
    assert answers["abusive_closed"] is True, answers
    flood = report["flood"]
    assert flood["sent"] >= 500 and flood["connections"] >= 8, flood
    assert flood["closed_by_registrar"] >= 1 and flood["errors_received"], flood
    # the legitimate PU was answered throughout, every answer naming the legitimate PE
    assert report["legit_failures"] == {}, report
    assert report["legit_resolutions"] >= 50 and report["legit_resolutions"] == report["legit_attempts"], report
    lab.alive("registrar")
    # and it is still the same registrar afterwards: a fresh PE and PU are served on new associations
    after = _attack(lab, "after", "--connections", "1", "--messages", "1", "--duration", "1", "--seed", "6")
    assert after["legit_failures"] == {} and after["legit_resolutions"] >= 10, after
    lab.alive("registrar")
    assert "aborting the association" in lab.log("registrar"), lab.log("registrar")[-3000:]

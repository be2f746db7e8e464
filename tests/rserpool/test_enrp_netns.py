"""Three ``rserpool registrar`` processes in three network namespaces on a bridge (root only).

Each registrar has one PE (in its own namespace) that knows only that registrar. The tests:

* SIGKILL one registrar: the other two declare it dead, the first to initiate (ties: lower ID) takes
  over its PE (Keep-Alive with the Home flag to the PE's port) and both survivors keep all three PEs,
  checked with ``rserpool hsdump`` and ``rserpool pu``.
* SIGKILL one and start it again (same identifier and addresses): it takes the handlespace from a
  mentor and all three registrars converge, every PE present once, with one agreed home.
* Partition and heal: the bridge end of the UE registrar's veth goes down (a coverage loss; the
  UE registrar knows only one peer statically and the other from that peer's list). Within the
  configured timers each side stops handing out the PEs it can no longer reach (the UE side only
  its own PE); after the heal all converge to the full handlespace again.

Timers are short (``TIMERS``). Everything created is removed in ``finally`` (``lab_session``), also
when an assertion fails; the registrars log to files under pytest's ``tmp_path`` (shown on failure).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.netns_lab import Lab, lab_session

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

HEARTBEAT, LAST_HEARD, NO_RESPONSE, TAKEOVER, KA_INTERVAL, KA_TIMEOUT = 0.5, 1.0, 1.0, 1.0, 1.0, 1.0
TIMERS = ["--peer-heartbeat-cycle", str(HEARTBEAT), "--peer-max-time-last-heard", str(LAST_HEARD),
          "--peer-max-time-no-response", str(NO_RESPONSE), "--takeover-expiry", str(TAKEOVER),
          "--keepalive-interval", str(KA_INTERVAL), "--keepalive-timeout", str(KA_TIMEOUT),
          "--mentor-hunt-timeout", "2", "--no-announce", "--transport", "tcp"]
# A registrar cut off (or dead) is declared dead after last-heard + no-response; its PEs are taken
# over (at most takeover expiry waiting for acks) and, if unreachable, dropped one keep-alive
# timeout later. hsdump/pu start a Python process per poll (~0.5 s each), hence the slack.
GONE_WITHIN = LAST_HEARD + NO_RESPONSE + TAKEOVER + KA_TIMEOUT + 4.0
POOL = "EnrpPool"
REG_IDS = (0x11, 0x12, 0x13)
PE_IDS = (0xA1, 0xA2, 0xA3)


@pytest.fixture
def lab() -> Iterator[Lab]:
    with lab_session(Lab("enrp", 214, 7)) as the_lab:
        yield the_lab


class Trio:
    """Three namespaces r1..r3 on the lab's bridge, a registrar and a PE in each."""

    def __init__(self, lab: Lab, logs: Path) -> None:
        self.lab = lab
        self.logs = logs
        lab.build_hub()
        self.nss = [lab.add_ns(f"r{i}") for i in (1, 2, 3)]
        self.ips = [lab.attach(ns, i + 1, multicast_route=False) for i, ns in enumerate(self.nss)]
        self.regs: list[subprocess.Popen[str]] = []
        self.args: list[list[str]] = []
        self.starts = [0, 0, 0]

    def enrp(self, i: int) -> str:
        return f"{self.ips[i]}:9901"

    def start_registrars(self, peers: dict[int, list[int]]) -> None:
        for i, ip in enumerate(self.ips):
            args = ["registrar", "--identifier", f"0x{REG_IDS[i]:x}", "--listen", f"{ip}:3863",
                    "--enrp-listen", f"{ip}:9901", "--log-level", "info", *TIMERS]
            for j in peers[i]:
                args += ["--peer", self.enrp(j)]
            self.args.append(args)
            self.regs.append(self.spawn_registrar(i))

    def spawn_registrar(self, i: int) -> subprocess.Popen[str]:
        self.starts[i] += 1
        log = self.logs / f"registrar{i + 1}-{self.starts[i]}.log"
        return self.lab.spawn(self.nss[i], *self.args[i], log=log)

    def start_pes(self) -> None:
        for i, (ns, ip) in enumerate(zip(self.nss, self.ips, strict=True)):
            self.lab.spawn(ns, "pe", "--pool", POOL, "--identifier", f"0x{PE_IDS[i]:x}", "--listen", f"{ip}:7000",
                           "--registrar", f"{ip}:3863", "--transport", "tcp", log=self.logs / f"pe{i + 1}.log")

    def homes(self, i: int) -> dict[int, int] | None:
        """PE identifier -> home registrar, as registrar i's handlespace has it (hsdump from its own
        namespace, so it works during a cut)."""
        out = self.lab.run(self.nss[i], "hsdump", "--registrar", self.enrp(i), "--json", "--transport", "tcp",
                           "--timeout", "2")
        if out.returncode != 0:
            return None
        doc = json.loads(out.stdout)
        return {e["identifier"]: e["home_pr"] for p in doc["pools"] for e in p["elements"]}

    def resolve(self, i: int) -> list[int]:
        """The PEs a PU next to registrar i gets (asking for more than exist: each at most once)."""
        out = self.lab.run(self.nss[i], "pu", "--pool", POOL, "--registrar", f"{self.ips[i]}:3863", "--count", "10",
                           "--json", "--transport", "tcp")
        assert out.returncode == 0, out.stderr
        return sorted(e["identifier"] for e in json.loads(out.stdout)["elements"])

    def peers(self, i: int) -> list[int]:
        out = self.lab.run(self.nss[i], "peers", "--registrar", self.enrp(i), "--json", "--transport", "tcp")
        assert out.returncode == 0, out.stderr
        return sorted(p["identifier"] for p in json.loads(out.stdout)[0]["peers"])

    def wait(self, what: str, pred: object, timeout: float) -> float:
        """Poll ``pred()`` (views of the registrars) until true; the seconds it took."""
        assert callable(pred)
        t0 = time.monotonic()
        last = None
        while time.monotonic() - t0 < timeout:
            last = pred()
            if last is True:
                return time.monotonic() - t0
            time.sleep(0.2)
        raise AssertionError(f"{what}: not within {timeout} s; last views {self.views()}\n{self.log_tails()}")

    def views(self) -> list[dict[int, int] | None]:
        return [self.homes(i) for i in range(3)]

    def log_tails(self) -> str:
        out = []
        for f in sorted(self.logs.glob("registrar*.log")):
            lines = f.read_text(errors="replace").splitlines()[-15:]
            out.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(out)


def all_mirrored(tb: Trio) -> bool:
    want = dict(zip(PE_IDS, REG_IDS, strict=True))
    return all(v == want for v in tb.views())


def test_three_registrars_sigkill_one_takeover(lab: Lab, tmp_path: Path) -> None:
    tb = Trio(lab, tmp_path)
    tb.start_registrars({0: [1, 2], 1: [0, 2], 2: [0, 1]})
    tb.start_pes()
    tb.wait("all PEs mirrored", lambda: all_mirrored(tb), 30)

    tb.regs[0].send_signal(signal.SIGKILL)
    tb.regs[0].wait(10)
    seen: dict[str, dict[int, int]] = {}

    # The survivor that initiates first takes over PE 0xa1 (a tie goes to the lower ID); both agree.
    def taken_over() -> bool:
        h2, h3 = tb.homes(1), tb.homes(2)
        if h2 is not None and h2 == h3 and h2.get(0xA1) in (0x12, 0x13) and set(h2) == set(PE_IDS):
            seen["after"] = h2
            return True
        return False

    took = tb.wait("agreed takeover", taken_over, 20)
    assert took < 15, f"takeover took {took:.1f} s"
    after = seen["after"]
    assert after[0xA2] == 0x12 and after[0xA3] == 0x13
    # a PU asking either survivor sees every PE, each once
    assert tb.resolve(1) == tb.resolve(2) == sorted(PE_IDS)
    # the taken-over PE stays (it answers the new home's keep-alives): after a few keep-alive
    # rounds the takeover registrar still lists it
    time.sleep(3 * (KA_INTERVAL + KA_TIMEOUT) / 2)
    assert tb.homes(2) == after
    assert tb.regs[1].poll() is None and tb.regs[2].poll() is None


def test_sigkill_restart_resynchronises(lab: Lab, tmp_path: Path) -> None:
    tb = Trio(lab, tmp_path)
    tb.start_registrars({0: [1, 2], 1: [0, 2], 2: [0, 1]})
    tb.start_pes()
    tb.wait("all PEs mirrored", lambda: all_mirrored(tb), 30)

    tb.regs[0].send_signal(signal.SIGKILL)
    tb.regs[0].wait(10)

    def survivors_took_over() -> bool:
        h2, h3 = tb.homes(1), tb.homes(2)
        return h2 is not None and h2 == h3 and set(h2) == set(PE_IDS) and h2[0xA1] in (0x12, 0x13)

    tb.wait("takeover of PE 0xa1", survivors_took_over, 20)

    # Registrar 1 comes back: same identifier, addresses and peers, empty handlespace.
    tb.regs[0] = tb.spawn_registrar(0)

    def converged() -> bool:
        views = tb.views()
        # one agreed home per PE, every PE present at every registrar (a dict cannot hold a PE twice;
        # "twice" would be two registrars each claiming to be its home: the views would differ)
        return views[0] is not None and views[0] == views[1] == views[2] and set(views[0]) == set(PE_IDS)

    tb.wait("resynchronisation after the restart", converged, 30)
    assert tb.resolve(0) == sorted(PE_IDS)
    assert sorted(tb.peers(0)) == [0x12, 0x13]
    # It started from a mentor's copy of the handlespace (the full table), not from nothing.
    tb.regs[0].send_signal(signal.SIGTERM)
    tb.regs[0].wait(10)
    log = (tmp_path / "registrar1-2.log").read_text()
    assert "handlespace obtained from mentor" in log, log[-2000:]


def test_partition_and_heal(lab: Lab, tmp_path: Path) -> None:
    tb = Trio(lab, tmp_path)
    # Registrar 3 (the UE's) knows only registrar 1; registrar 2 it learns from 1's peer list.
    tb.start_registrars({0: [1], 1: [0], 2: [0]})
    tb.start_pes()
    tb.wait("all PEs mirrored", lambda: all_mirrored(tb), 30)
    tb.wait("registrar 3 meshed through the peer list", lambda: tb.peers(2) == [0x11, 0x12], 10)

    ue = tb.nss[2]
    lab.cut(ue)
    # The UE side keeps only its own PE, the far side only theirs: nobody hands out what it cannot
    # reach, within the configured timers.
    took = tb.wait("both sides drop what they cannot reach",
                   lambda: tb.homes(2) == {0xA3: 0x13} and tb.homes(0) == tb.homes(1) == {0xA1: 0x11, 0xA2: 0x12},
                   GONE_WITHIN + 10)
    assert took < GONE_WITHIN, f"took {took:.1f} s, timers allow {GONE_WITHIN:.1f} s"
    assert tb.resolve(2) == [0xA3]
    assert tb.resolve(0) == tb.resolve(1) == [0xA1, 0xA2]

    lab.heal(ue)
    tb.wait("convergence after the heal", lambda: all_mirrored(tb), 30)
    assert tb.resolve(2) == sorted(PE_IDS)
    assert tb.peers(2) == [0x11, 0x12]
    assert all(r.poll() is None for r in tb.regs)

"""Interoperability with RSPLIB 3.4.4 (see test_rsplib_interop.py for the set-up): ENRP peering and
takeover between emulab's registrar and ``rspregistrar``, PriorityLeastUsed pools mixing both
implementations, and control-channel use refused alike."""

from __future__ import annotations

import functools
import json
import time

import pytest

from helpers.rsplib_lab import (
    LO,
    RSP_LOG_ACTION,
    RSPLIB_MARKS,
    Lab,
    emulab_pe,
    emulab_registrar,
    enrp_peers,
    pu,
    resolved,
    resolved_home,
    resolved_ids,
    rsp_hsdump,
    rsp_registrar,
    rsp_server,
    wait_for,
)

pytestmark = RSPLIB_MARKS


# ---- 3: ENRP peering -------------------------------------------------------------------------

EMULAB_ID, RSPLIB_ID = 0xE1E1E1E1, 0x5A5A5A5A


@pytest.mark.parametrize("static", ["emulab-names-rsplib", "rsplib-names-emulab"])
def test_enrp_peering_emulab_and_rspregistrar(lab: Lab, static: str) -> None:
    """Each registrar's PE is visible and selectable at both, whichever of them knows the other."""
    rsp_peer = [f"-peer={LO}:9902"] if static == "rsplib-names-emulab" else []
    emu_peer = ["--peer", f"{LO}:9901"] if static == "emulab-names-rsplib" else []
    rsp_registrar(lab, "rspregistrar", 3863, 9901, f"-identifier={RSPLIB_ID}", *rsp_peer, log=RSP_LOG_ACTION)
    emulab_registrar(lab, "emulab-registrar", 4863, 9902, "--identifier", hex(EMULAB_ID), *emu_peer)
    rsp_server(lab, "rspserver-echo", "echo", "PeerPool", 3863, 0x5E0002)
    emulab_pe(lab, "emulab-pe", "PeerPool", 4863, 0xE0002)
    homes = {0x5E0002: RSPLIB_ID, 0xE0002: EMULAB_ID}
    # Each one names the other in its peer list (RSPLIB's also names hsdump clients it has heard).
    wait_for("emulab's registrar to list rspregistrar as peer", lambda: RSPLIB_ID in enrp_peers(lab, 9902), lab)
    wait_for("rspregistrar to list emulab's registrar as peer", lambda: EMULAB_ID in enrp_peers(lab, 9901), lab)
    for port in (3863, 4863):
        els = wait_for(f"both PEs via the registrar on port {port}",
                       lambda p=port: (e := resolved(lab, p, "PeerPool")) and len(e) == 2 and e, lab)
        assert {int(e["identifier"]): int(e["home_pr"]) for e in els} == homes, els
    # RSPLIB's own view of both handlespaces.
    for enrp in (9901, 9902):
        dump = rsp_hsdump(lab, enrp).lower()
        assert "$005e0002" in dump and "$000e0002" in dump, f"hsdump of {enrp}:\n{dump}\n{lab.logs()}"
    assert "no usable ENRP endpoint addresses" not in lab.log("rspregistrar"), lab.logs()
    # Selectable: emulab's PU reaches RSPLIB's PE through emulab's registrar, and emulab's PE
    # through RSPLIB's registrar (an echo session to the one PE each round-robin selection names).
    for port in (3863, 4863):
        echoed: set[int] = set()
        for _ in range(4):
            r = pu(lab, port, "PeerPool", "--count", "1", "--echo", "via-enrp")
            assert r.returncode == 0 and json.loads(r.stdout).get("echo") == "via-enrp", f"{r.stdout}{r.stderr}"
            echoed.add(int(json.loads(r.stdout)["elements"][0]["identifier"]))
            if echoed == set(homes):
                break
        assert echoed == set(homes), (port, echoed)


def test_enrp_takeover_when_rspregistrar_is_killed(lab: Lab) -> None:
    """SIGKILL rspregistrar: emulab's registrar notices (RSPLIB's timers: 5 s last heard + 5 s no
    response), takes RSPLIB's PE over with a Home Keep-Alive to the PE's ASAP endpoint, and the PE
    (knowing only the dead registrar) adopts emulab's registrar as its home and stays selectable."""
    rsp_registrar(lab, "rspregistrar", 3863, 9901, f"-identifier={RSPLIB_ID}", f"-peer={LO}:9902",
                  log=RSP_LOG_ACTION)
    emulab_registrar(lab, "emulab-registrar", 4863, 9902, "--identifier", hex(EMULAB_ID))
    rsp_server(lab, "rspserver-echo", "echo", "TakeoverPool", 3863, 0x5E0003, log=RSP_LOG_ACTION)

    home = functools.partial(resolved_home, lab, 4863, "TakeoverPool")
    assert wait_for("RSPLIB's PE mirrored at emulab's registrar", home, lab) == RSPLIB_ID
    # a peer (not only a sender of Handle Updates): its silence will be noticed
    wait_for("emulab's registrar to list rspregistrar as peer", lambda: RSPLIB_ID in enrp_peers(lab, 9902), lab)
    killed = time.monotonic()
    lab.kill("rspregistrar")
    wait_for("emulab's registrar to become the PE's home", lambda: home() == EMULAB_ID, lab, deadline=45)
    taken = time.monotonic() - killed
    # RSPLIB's PE says so itself, and answers emulab's keep-alives (still there after a full
    # keep-alive round of 5 s + 5 s, selectable, serving).
    wait_for("rspserver to adopt emulab's registrar",
             lambda: f"Home registrar is ${EMULAB_ID:08x}" in lab.log("rspserver-echo"), lab)
    assert "taking over 1 PEs" in lab.log("emulab-registrar"), lab.logs()
    # the ack of the Home Keep-Alive and of the next regular one (keep-alive interval 5 s)
    wait_for("two Keep-Alive Acks from RSPLIB's PE to emulab's registrar", lambda: _acks_from_pe(lab) >= 2, lab)
    r = pu(lab, 4863, "TakeoverPool", "--echo", "after-takeover")
    assert r.returncode == 0 and json.loads(r.stdout).get("echo") == "after-takeover", f"{r.stdout}{r.stderr}"
    assert home() == EMULAB_ID
    # within RSPLIB's timers: detection 10 s + takeover + one keep-alive, with slack for TCG
    assert taken < 30, f"takeover took {taken:.1f}s"


def test_enrp_emulab_pe_moves_to_rspregistrar_when_emulab_registrar_is_killed(lab: Lab) -> None:
    """SIGKILL emulab's registrar: its PE, mirrored at rspregistrar, ends up owned by rspregistrar.

    Not by RSPLIB's ENRP takeover: rspregistrar sends its Home Keep-Alive to the PE's ASAP endpoint
    (the registrator transport), and emulab's PEs do not listen there (their registrar connection
    comes from an ephemeral port). The PE itself notices the lost association at once and
    re-registers at the next registrar it knows (ASAP fail-over), which RSPLIB accepts as the
    PE's new home."""
    emulab_registrar(lab, "emulab-registrar", 4863, 9902, "--identifier", hex(EMULAB_ID), "--peer", f"{LO}:9901")
    rsp_registrar(lab, "rspregistrar", 3863, 9901, f"-identifier={RSPLIB_ID}", log=RSP_LOG_ACTION)
    emulab_pe(lab, "emulab-pe", "MovePool", 4863, 0xE0007, "--registrar", f"{LO}:3863")

    home = functools.partial(resolved_home, lab, 3863, "MovePool")
    assert wait_for("emulab's PE mirrored at rspregistrar", home, lab) == EMULAB_ID
    wait_for("rspregistrar to list emulab's registrar as peer", lambda: EMULAB_ID in enrp_peers(lab, 9901), lab)
    killed = time.monotonic()
    lab.kill("emulab-registrar")
    wait_for("rspregistrar to become the PE's home", lambda: home() == RSPLIB_ID, lab)
    moved = time.monotonic() - killed
    r = pu(lab, 3863, "MovePool", "--echo", "after-move")
    assert r.returncode == 0 and json.loads(r.stdout).get("echo") == "after-move", f"{r.stdout}{r.stderr}"
    assert moved < 20, f"the move took {moved:.1f}s"


def _acks_from_pe(lab: Lab) -> int:
    """Keep-Alive Acks emulab's registrar got for RSPLIB's PE after the takeover (from its debug log)."""
    log = lab.log("emulab-registrar")
    after = log.split("taking over", 1)[1] if "taking over" in log else ""
    return after.count("keep-alive ack for $005e0003")


# ---- 4: PriorityLeastUsed pools and control-channel use -------------------------------------

# Element classes, identifiers by class.  PLU picks the least (load + load increment):
#   light  emulab PE, load 0.2, increment 0.1 -> 0.3   <- the choice
#   idle   load 0, increment 0.5 -> 0.5 (plain LeastUsed would pick this); emulab PE or rspserver
#   heavy  emulab PE, load 0.9, increment 0.0 -> 0.9
CLASSES = {"light": 0xA1, "idle": 0xB1, "heavy": 0xC1}


def _class_of(identifier: int) -> str:
    base = identifier & 0xFF
    return next(name for name, b in CLASSES.items() if b == base)


@pytest.mark.parametrize("idle_impl", ["emulab", "rsplib"])
def test_mixed_plu_pool_same_choice(lab: Lab, idle_impl: str) -> None:
    """Same PLU pool at emulab's registrar and at rspregistrar: both pick the same class.

    idle_impl="emulab": all three PEs are emulab's (RSPLIB's selection vs emulab's on one pool).
    idle_impl="rsplib": the idle class is RSPLIB's rspserver (a pool mixing both stacks; it works
    because emulab's PEs register "data plus control" like RSPLIB's).
    """
    chosen: dict[str, list[str]] = {}
    setups = {"emulab": (emulab_registrar, 4863, 9902), "rsplib": (rsp_registrar, 3863, 9901)}
    for who, (start, asap, enrp) in setups.items():
        start(lab, f"{who}-registrar", asap, enrp)
        off = 0x100 if who == "emulab" else 0x200
        emulab_pe(lab, f"{who}-light", "PLUPool", asap, off | CLASSES["light"], "--policy", "PriorityLeastUsed:0.1",
                  "--load", "0.2")
        emulab_pe(lab, f"{who}-heavy", "PLUPool", asap, off | CLASSES["heavy"], "--policy", "PriorityLeastUsed:0.0",
                  "--load", "0.9")
        if idle_impl == "rsplib":
            rsp_server(lab, f"{who}-idle", "echo", "PLUPool", asap, off | CLASSES["idle"],
                       policy="PriorityLeastUsed:0.5")
        else:
            emulab_pe(lab, f"{who}-idle", "PLUPool", asap, off | CLASSES["idle"], "--policy",
                      "PriorityLeastUsed:0.5", "--load", "0")
    for who, (_, asap, _) in setups.items():
        wait_for(f"three PEs at the {who} registrar",
                 lambda a=asap: len(resolved_ids(lab, a, "PLUPool") or []) == 3, lab)
        picks = []
        for _ in range(3):
            ids = resolved_ids(lab, asap, "PLUPool", "--count", "1")
            assert ids, lab.logs()
            picks.append(_class_of(ids[0]))
        chosen[who] = picks
    assert chosen["emulab"] == chosen["rsplib"], f"emulab {chosen['emulab']} vs RSPLIB {chosen['rsplib']}"
    assert set(chosen["rsplib"]) == {"light"}, chosen


def test_control_channel_mismatch_refused_alike(lab: Lab) -> None:
    """A pool's PEs must agree on control-channel use (RSPLIB ``poolNodeCheckPoolElementNodeCompatibility``).

    rspserver always registers "data plus control". Pool A (rspserver first): an emulab PE
    registering "data only" is refused with ASAP error cause 0x8 (inconsistent data/control
    configuration), the default emulab PE (data plus control, as RSPLIB) joins. Pool B (a "data
    only" emulab PE first): rspserver is refused, and RSPLIB names the cause ("wrong control channel
    handling"). The same at emulab's registrar and at rspregistrar (side by side, no peering).
    """
    ports = {"emulab": 4863, "rsplib": 3863}
    emulab_registrar(lab, "emulab-registrar", ports["emulab"], 9902)
    rsp_registrar(lab, "rsplib-registrar", ports["rsplib"], 9901)
    for who, port in ports.items():
        rsp_server(lab, f"{who}-rspserver-a", "echo", "PoolA", port, 0x5E0004)
        emulab_pe(lab, f"{who}-emulab-b-data-only", "PoolB", port, 0xE0006, "--no-control-channel")
        emulab_pe(lab, f"{who}-emulab-a-data-only", "PoolA", port, 0xE0004, "--no-control-channel")
    for who, port in ports.items():
        wait_for(f"rspserver in pool A at {who}", lambda p=port: resolved_ids(lab, p, "PoolA") == [0x5E0004], lab)
        wait_for(f"the data-only emulab PE in pool B at {who}",
                 lambda p=port: resolved_ids(lab, p, "PoolB") == [0xE0006], lab)
        refused = f"{who}-emulab-a-data-only"
        assert lab.wait_exit(refused, 60) != 0, lab.logs()
        assert "registration rejected" in lab.log(refused) and "(cause 0x8)" in lab.log(refused), lab.logs()
    for who, port in ports.items():
        emulab_pe(lab, f"{who}-emulab-a", "PoolA", port, 0xE0005)
        rsp_server(lab, f"{who}-rspserver-b", "echo", "PoolB", port, 0x5E0005)
    for who, port in ports.items():
        wait_for(f"the default emulab PE in rspserver's pool A at {who}",
                 lambda p=port: sorted(resolved_ids(lab, p, "PoolA") or []) == [0xE0005, 0x5E0004], lab)
        wait_for(f"rspserver's report of its refusal in pool B at {who} (RSPLIB's text for cause 0x8)",
                 lambda w=who: "wrong control channel handling" in lab.log(f"{w}-rspserver-b"), lab)
        assert resolved_ids(lab, port, "PoolB") == [0xE0006], lab.logs()

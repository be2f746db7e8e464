"""The dashboard without a testbed: counters and link rates, pools merged from registrars, the
experiment feed, the fractal's bookkeeping, and the server (state when nothing runs, the controls'
token, the page and its static files)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from emulab.dashboard.agent import strip_parameters
from emulab.dashboard.feed import EventFeed, read_progress
from emulab.dashboard.fractal import FractalJob
from emulab.dashboard.server import Dashboard, is_loopback
from emulab.dashboard.state import LiveState, read_counters


@pytest.fixture(autouse=True)
def private_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMULAB_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


def test_counters_of_this_process_namespace() -> None:
    import os

    counters = read_counters(os.getpid())
    assert "lo" in counters
    rx, tx = counters["lo"]
    assert rx >= 0 and tx >= 0


def test_link_rates_each_direction_from_either_end() -> None:
    st = LiveState()
    link = {"name": "a--b", "ends": ["a:a-eth0", "b:b-eth0"]}
    st.counters = {"a": (0.0, {"a-eth0": (1000, 5000)})}
    fresh = {"a": (2.0, {"a-eth0": (1000 + 250, 5000 + 1000)})}
    # a sends 1000 B in 2 s (4000 bit/s) towards b: that is 1to2
    assert st._link_rate(link, fresh) == {"1to2": 4000.0, "2to1": 1000.0}
    # a switch end has no counters: the node at the other end answers, directions swapped
    sw_link = {"name": "s--b", "ends": ["sgi:sgi-eth1", "b:b-eth0"]}
    st.counters = {"b": (0.0, {"b-eth0": (0, 0)})}
    assert st._link_rate(sw_link, {"b": (1.0, {"b-eth0": (100, 300)})}) == {"1to2": 800.0, "2to1": 2400.0}


def _registry(ident: int, elements: list[dict[str, Any]], peers: list[int]) -> dict[str, Any]:
    return {"t": time.time(), "ok": True,
            "peers": {"identifier": ident, "identifier_hex": f"0x{ident:08x}", "element_count": len(elements),
                      "pool_count": 1, "peers": [{"identifier": p, "identifier_hex": f"0x{p:08x}", "address": None}
                                                 for p in peers]},
            "handlespace": {"pools": [{"handle": "Fractal Generator Pool", "elements": elements}]}}


def _pe(ident: int, addr: str, home: int, load: float) -> dict[str, Any]:
    return {"identifier": ident, "identifier_hex": f"0x{ident:08x}", "addresses": [addr], "endpoint": f"{addr}:1",
            "protocol": "tcp", "policy": {"name": "PriorityLeastUsed", "load_fraction": load, "weight": 0},
            "home_pr": home}


def test_pools_merge_registrars_and_name_home_registrars() -> None:
    st = LiveState()
    st.running = True
    st.status = {
        "nodes": [{"name": "ue", "role": "ue", "site": "ue", "addresses": ["10.0.0.1/30"], "pid": 1},
                  {"name": "mec-pr", "role": "registrar", "site": "mec", "addresses": ["10.2.0.2/24"], "pid": 2},
                  {"name": "mec-pe1", "role": "pe", "site": "mec", "addresses": ["10.2.0.3/24"], "pid": 3}],
        "services": [{"node": "ue", "kind": "registrar", "alive": True}, {"node": "mec-pr", "kind": "registrar",
                                                                           "alive": True},
                     {"node": "mec-pe1", "kind": "pe", "alive": True}, {"node": "ue", "kind": "pe", "alive": True}],
    }
    ue_pe, mec_pe = _pe(11, "10.0.0.1", 1, 0.0), _pe(22, "10.2.0.3", 2, 0.25)
    st.registry = {"ue": _registry(1, [ue_pe, mec_pe], [2]), "mec-pr": _registry(2, [mec_pe], [1])}
    [pool] = st.pools()
    by_node = {e["node"]: e for e in pool["elements"]}
    assert set(by_node) == {"ue", "mec-pe1"}
    assert by_node["mec-pe1"]["home_registrar"] == "mec-pr" and by_node["mec-pe1"]["load"] == 0.25
    assert by_node["mec-pe1"]["known_to"] == ["mec-pr", "ue"] and by_node["ue"]["known_to"] == ["ue"]
    regs = {r["node"]: r for r in st.registrars()}
    assert regs["ue"]["peers"][0]["node"] == "mec-pr" and regs["ue"]["reachable"]
    assert st.pe_names == {11: "ue", 22: "mec-pe1"}
    # a registrar that stopped answering drops out of the merge and is shown unreachable
    st.registry["mec-pr"] = {"t": time.time(), "ok": False, "error": "timeout"}
    assert {r["node"]: r["reachable"] for r in st.registrars()} == {"mec-pr": False, "ue": True}


def test_experiment_feed_progress(private_run_dir: Path) -> None:
    assert read_progress() is None
    feed = EventFeed()

    def ev(kind: str, **data: Any) -> SimpleNamespace:
        return SimpleNamespace(kind=kind, experiment="paper", data=data, at=time.time())

    feed(ev("sweep_started", runs=2, total_s=120.0, results="/r"))
    feed(ev("run_started", tag="8pus-run1"))
    feed(ev("run_progress", tag="8pus-run1", elapsed=30.0, duration=60.0))
    feed(ev("run_finished", tag="8pus-run1"))
    p = read_progress()
    assert p is not None and p["experiment"] == "paper" and p["runs"] == 2 and p["done_runs"] == 1
    assert p["run_elapsed"] == 30.0 and not p["ended"]
    feed(ev("testbed_stopped"))
    assert read_progress() is None


def test_strips_cover_the_image_on_one_pixel_grid() -> None:
    strips = strip_parameters(400, 250, 1024, 4)
    assert [top for top, _ in strips] == [0, 62, 125, 187]
    assert sum(p.height for _, p in strips) == 250
    dy = (-1.5 - 1.5) / 250
    for top, p in strips:
        assert p.c1imag == pytest.approx(1.5 + top * dy) and p.c2imag == pytest.approx(1.5 + (top + p.height) * dy)


def test_fractal_job_bookkeeping() -> None:
    published: list[tuple[str, dict[str, Any]]] = []
    job = FractalJob(LiveState(), lambda e, d: published.append((e, d)))
    job.on_line("ue", {"image": 1, "event": "image", "width": 4, "height": 2, "strips": [[0, 1], [1, 1]], "at": 0})
    job.on_line("ue", {"image": 1, "strip": 0, "event": "connect", "t": 0.01, "pe": 7})
    job.on_line("ue", {"image": 1, "strip": 0, "update": [7, 0, 0, 4, 0.1]})
    job.on_line("ue", {"image": 1, "strip": 1, "event": "failover", "t": 0.2, "from_pe": 7, "pe": 9, "cookie": True})
    job.on_line("ue", {"image": 1, "strip": 1, "update": [9, 0, 1, 4, 0.3]})
    job.on_line("ue", {"image": 2, "strip": 1, "update": [9, 0, 1, 4, 0.3]})  # not the current image: dropped
    job.on_line("ue", {"image": 1, "event": "image_done", "ok": True, "elapsed": 0.4})
    out = job.to_json({7: "mec-pe1", 9: "ue"}, regions=True)
    assert out["images_done"] == 1 and out["last"]["points"] == {"7": 4, "9": 4}
    assert out["elements"] == {"7": {"identifier_hex": "0x00000007", "node": "mec-pe1"},
                               "9": {"identifier_hex": "0x00000009", "node": "ue"}}
    assert [e["kind"] for e in out["image"]["timeline"]] == ["resolve", "fail-over"]
    assert out["image"]["regions"] == [[7, 0, 0, 4, ""], [9, 0, 1, 4, ""]]
    assert [e for e, _ in published] == ["fractal_image", "fractal_event", "fractal_update", "fractal_event",
                                        "fractal_update", "fractal_done"]


def test_loopback_binds() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def _with_client(dash: Dashboard, body: Any) -> None:
    async def main() -> None:
        async with TestClient(TestServer(dash.app())) as client:
            await body(client)

    asyncio.run(main())


def test_server_says_when_no_testbed_runs() -> None:
    async def body(client: TestClient) -> None:
        for _ in range(50):
            if dash.refreshes:
                break
            await asyncio.sleep(0.05)
        r = await client.get("/api/state")
        data = await r.json()
        assert r.status == 200 and data["running"] is False and "no testbed is running" in data["message"]
        for key in ("nodes", "links", "pools", "registrars", "radio"):
            assert key in data
        page = await client.get("/")
        assert "emulab dashboard" in await page.text()
        js = await client.get("/static/dashboard.js")
        assert js.status == 200 and "EventSource" in await js.text()
        # a control with no testbed: the runner's error, not a crash
        r = await client.post("/api/control", json={"action": "coverage_lose"})
        assert r.status == 409 and "no testbed" in (await r.json())["error"]
        r = await client.post("/api/control", json={"action": "nonsense"})
        assert r.status == 400

    dash = Dashboard(interval=0.1)
    _with_client(dash, body)


def test_controls_need_the_token_when_one_is_set() -> None:
    async def body(client: TestClient) -> None:
        r = await client.post("/api/control", json={"action": "coverage_lose"})
        assert r.status == 403
        r = await client.post("/api/control", json={"action": "coverage_lose"}, headers={"X-Dashboard-Token": "nope"})
        assert r.status == 403
        r = await client.post("/api/control?token=s3cret", json={"action": "coverage_lose"})
        assert r.status == 409  # authorised; fails only because no testbed runs
        r = await client.get("/api/state")  # reading stays open
        assert r.status == 200 and json.loads(await r.text())["running"] is False

    _with_client(Dashboard(interval=0.1, token="s3cret"), body)


def test_a_testbed_without_control_socket_is_shown_from_its_state_file(private_run_dir: Path) -> None:
    """An experiment holds its testbed in its own process, with no control socket: the dashboard shows
    the topology from the state file (nodes with pids, links as configured) and says what is missing."""
    import os

    from emulab import paths, runstate

    topo = paths.topologies_dir() / "demo-topology.yaml"
    runstate.write_state({"phase": "ready", "runner_pid": os.getpid(), "topology": "demo-topology",
                          "topology_file": str(topo), "started_at": time.time() - 5,
                          "nodes": {"ue": {"pid": os.getpid()}}})
    st = LiveState()
    try:
        asyncio.run(_refresh_without_agents(st))
        data = st.to_json()
        assert data["running"] and "answers no control requests" in data["message"]
        assert {n["name"] for n in data["nodes"]} >= {"ue", "mec-pe1", "pmc-haikou"}
        uu = next(lk for lk in data["links"] if lk["radio"])
        assert uu["configured"]["delay_ms"] == 8.0 and uu["applied"] == {}
        assert data["radio"] is None
    finally:
        runstate.write_state({})
        (private_run_dir / "state.json").unlink()


async def _refresh_without_agents(st: LiveState) -> None:
    async def no_agents() -> None:  # the registrar helpers need the testbed's namespaces
        return None

    st._ensure_agents = no_agents  # type: ignore[method-assign]
    await st.refresh()


def test_shades_are_fractalpoolusers_colour_index() -> None:
    import base64

    from emulab.dashboard.agent import shades

    assert base64.b64decode(shades((0, 71, 72, 1023, 1024), 1024)) == bytes([0, 71, 0, 1023 % 72, 255])


def test_link_set_keeps_what_is_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """`emulab link set` and the page's apply button: one set_link request, unnamed parameters as applied."""
    from emulab import control
    from emulab.dashboard import actions

    sent: list[dict[str, Any]] = []

    def request(message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        sent.append(message)
        if message["cmd"] == "status":
            return {"links": [{"name": "a--b", "configured": {"delay_ms": 20.0},
                               "applied": {"1to2": {"delay_ms": 20.0, "jitter_ms": 1.0, "loss_pct": 0.0,
                                                    "rate_mbit": 100.0}}}]}
        return {"ok": True, "applied": {}}

    monkeypatch.setattr(control, "request", request)
    actions.set_link("a--b", loss_pct=2.5)
    assert sent[-1] == {"cmd": "set_link", "link": "a--b",
                        "params": {"delay_ms": 20.0, "jitter_ms": 1.0, "loss_pct": 2.5, "rate_mbit": 100.0}}
    actions.service("kill", "mec-pe1", "pe")
    assert sent[-1] == {"cmd": "service", "action": "kill", "node": "mec-pe1", "kind": "pe"}
    actions.coverage(True)
    assert sent[-1] == {"cmd": "radio", "action": "detach"}
    with pytest.raises(Exception, match="no link"):
        actions.set_link("x--y", delay_ms=1.0)


def test_cli_has_the_dashboard_and_its_controls() -> None:
    from click.testing import CliRunner

    from emulab.cli import main

    runner = CliRunner()
    for args in (["dashboard", "--help"], ["service", "kill", "--help"], ["service", "restart", "--help"],
                 ["link", "set", "--help"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
    assert "--dashboard" in runner.invoke(main, ["start", "--help"]).output


def test_fractal_points_belong_to_the_element_that_sent_them_last() -> None:
    """After a fail-over without a cookie the new element recomputes what the old one sent: the
    legend counts every point once, for the new element."""
    job = FractalJob(LiveState(), lambda e, d: None)
    job.on_line("ue", {"image": 1, "event": "image", "width": 4, "height": 2, "strips": [[0, 2]], "at": 0})
    job.on_line("ue", {"image": 1, "strip": 0, "update": [7, 0, 0, 6, 0.1]})
    job.on_line("ue", {"image": 1, "strip": 0, "update": [9, 0, 0, 8, 0.5]})
    job.on_line("ue", {"image": 1, "event": "image_done", "ok": True, "elapsed": 0.6})
    assert job.to_json({})["last"]["points"] == {"9": 8}

"""The dashboard in a real browser: Debian's chromium driven by Playwright, on the demo topology.

One testbed (demo-topology, emulated radio) and one dashboard for the module; the steps run in
order in one test because each builds on the state the previous one left (the demo as a presenter
runs it): the page shows every node and pool element; the fractal completes with more than one
element's colour; "lose coverage" mid-image makes the timeline show a fail-over and the UE's own
element compute; "restore coverage" brings the MEC's elements back. A screenshot of every step is
saved to results/screenshots/dashboard/ (and pytest's tmp dir); README.md shows one of them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulab import paths
from emulab.runstate import pid_alive
from emulab.topology import load

from helpers.testbed import run_emulab

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = paths.repo_root() / "results" / "screenshots" / "dashboard"
TOPOLOGY = "demo-topology"
ITERATIONS = 2048  # 2 x the default: a few seconds on the MEC (long enough to cut), ~35 s on the UE alone

pytestmark = [
    pytest.mark.root, pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard_url() -> Iterator[str]:
    """`emulab start demo-topology --detach --dashboard PORT`; afterwards, `emulab stop` must end the dashboard."""
    from helpers.testbed import BusyTestbedError, testbed_guard

    port = _free_port()
    pid: int | None = None
    try:
        with testbed_guard():
            started = run_emulab("start", TOPOLOGY, "--detach", "--timeout", "120", "--dashboard", str(port),
                                 timeout=180)
            assert started.returncode == 0, started.stderr + started.stdout
            found = re.search(rf"dashboard on http://127\.0\.0\.1:{port}/ \(pid (\d+);", started.stdout)
            assert found, started.stdout
            pid = int(found.group(1))
            yield f"http://127.0.0.1:{port}/"
            run_emulab("stop", timeout=60)
            deadline = time.monotonic() + 15
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not pid_alive(pid), "the dashboard outlived the testbed"
            pid = None
    except BusyTestbedError as exc:
        pytest.fail(str(exc))
    finally:
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)


def _shot(page: Any, tmp: Path, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(tmp / name), full_page=True)
    shutil.copy(tmp / name, SHOTS / name)


def _wait(page: Any, js: str, timeout_s: float, what: str) -> Any:
    """Poll ``js`` in the page until it is truthy; fail naming ``what`` (and the page's log) otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = page.evaluate(js)
        if value:
            return value
        time.sleep(0.25)
    log = page.evaluate("document.getElementById('timeline-log').innerText")
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}; timeline log:\n{log}")


def test_dashboard_demo_in_chromium(dashboard_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    spec = load(TOPOLOGY)
    pe_nodes = sorted(n for n, s in spec.nodes.items() if any(svc.kind == "pe" for svc in s.services))
    mec = {n for n in pe_nodes if spec.nodes[n].site == "mec"}
    ue = next(n for n, s in spec.nodes.items() if s.role == "ue")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(dashboard_url)

            # 1. every node in the topology drawing, every pool element in the pool table
            for node in spec.nodes:
                page.wait_for_selector(f'#topo g.node[data-node="{node}"]', timeout=30_000)
            for node in pe_nodes:
                page.wait_for_selector(f'#pools tr.element[data-node="{node}"]', timeout=30_000)
            assert page.locator("#registrars tr.registrar").count() == 3
            _shot(page, tmp_path, "01-loaded.png")

            # 2. the fractal completes, computed by more than one element (colours in the picture too)
            # the dashboard's pool user started with the testbed; restart it with longer images
            for body in ("{action: 'fractal_stop'}", f"{{action: 'fractal_start', iterations: {ITERATIONS}}}"):
                page.evaluate(f"""fetch('/api/control', {{method: 'POST', headers: {{'Content-Type': 'application/json'}},
                    body: JSON.stringify({body})}}).then(r => r.json())""")
            first = page.evaluate("window.dashboard.image ? window.dashboard.image.n : 0")
            done = _wait(page, f"window.dashboard.lastComplete && window.dashboard.lastComplete.n > {first} && "
                               "window.dashboard.lastComplete.ok && "
                               "Object.keys(window.dashboard.lastComplete.points).length", 90, "a complete image")
            assert done > 1, "the image was computed by one element only"
            colours = page.evaluate("""(() => { const c = document.getElementById('fractal');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; const s = new Set();
                for (let i = 0; i < d.length; i += 4 * 97) s.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);
                return s.size; })()""")
            assert colours > 1
            assert page.locator("#legend .legend-entry").count() > 1
            _shot(page, tmp_path, "02-fractal.png")

            # 3. lose coverage while an image is being computed: fail-over, then the UE's element computes
            # early in an image, so that it is still being computed at radio link failure (1.2 s on)
            _wait(page, "(im => im && !im.complete && Object.values(im.points).reduce((a, b) => a + b, 0) > 0 && "
                        "Object.values(im.points).reduce((a, b) => a + b, 0) < 0.3 * im.width * im.height)"
                        "(window.dashboard.image)", 60, "an image in progress")
            cut = page.evaluate("window.dashboard.image.n")
            page.click("#coverage-lose")
            _wait(page, "document.getElementById('radio-attach') && "
                        "document.getElementById('radio-attach').textContent !== 'ATTACHED'", 15, "the radio to detach")
            _wait(page, f"window.dashboard.image.n === {cut} && "
                        "window.dashboard.image.timeline.some(e => e.kind === 'fail-over')", 30,
                  "a fail-over in the cut image's timeline")
            assert page.locator("#timeline-log li.tl-failover").count() > 0
            assert page.locator("#timeline .tl-failover").count() > 0
            ue_done = _wait(page, f"""(() => {{ const l = window.dashboard.lastComplete;
                if (!l || l.n < {cut}) return false;
                return Object.keys(l.points).filter(id => window.dashboard.names[id] === '{ue}').length; }})()""",
                            120, "an image the UE's element computed")
            assert ue_done >= 1
            page.wait_for_selector(f'#legend .legend-entry[data-node="{ue}"]', timeout=10_000)
            _shot(page, tmp_path, "03-coverage-lost.png")

            # 4. restore: the MEC's elements compute again
            lost_at = page.evaluate("window.dashboard.image.n")  # may still be computed by the UE alone
            page.click("#coverage-restore")
            back = _wait(page, f"""(() => {{ const l = window.dashboard.lastComplete;
                if (!l || l.n <= {lost_at}) return false;
                return Object.keys(l.points).filter(id => {sorted(mec)!r}.includes(window.dashboard.names[id])).length; }})()""",
                         120, "an image computed by the MEC again")
            assert back >= 1
            _shot(page, tmp_path, "04-restored.png")
        finally:
            browser.close()

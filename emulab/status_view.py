"""Renders `emulab status` for people: nodes, links (configured vs applied), switches, controller, radio."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt_params(p: dict[str, Any] | None) -> str:
    if not p:
        return "-"
    parts = []
    if p.get("delay_ms"):
        parts.append(f"{p['delay_ms']:g}ms")
    if p.get("jitter_ms"):
        parts.append(f"±{p['jitter_ms']:g}ms")
    if p.get("loss_pct"):
        parts.append(f"{p['loss_pct']:g}% loss")
    if p.get("rate_mbit"):
        parts.append(f"{p['rate_mbit']:g}Mbit/s")
    return " ".join(parts) or "none"


def render(data: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(
        f"[bold]{data['topology']}[/bold] ({data['topology_file']}) up {data['uptime_s']:.0f} s, "
        f"ready in {data['ready_s']:.1f} s — links: {data['link_backend']}, OVS datapath: {data['ovs_datapath']}, "
        f"RSerPool transport: {data.get('rserpool_transport', '?')}"
    )
    nodes = Table(title="nodes")
    for col in ("node", "role", "site", "addresses", "namespace", "services"):
        nodes.add_column(col)
    for n in data["nodes"]:
        nodes.add_row(n["name"], n["role"], n["site"], " ".join(n["addresses"]), n["namespace"] or "-",
                      ", ".join(n["services"]) or "-")
    console.print(nodes)
    links = Table(title="links (one-way delay, applied in each direction)")
    for col in ("link", "ends", "segment", "configured", "applied", "how"):
        links.add_column(col)
    for lk in data["links"]:
        applied = lk.get("applied") or {}
        links.add_row(lk["name"], " — ".join(lk["ends"]), lk.get("segment") or "-", _fmt_params(lk["configured"]),
                      _fmt_params(applied.get("params", applied)), applied.get("backend", "-"))
    console.print(links)
    switches = Table(title="switches")
    for col in ("switch", "bridge", "site", "subnet", "datapath", "controller"):
        switches.add_column(col)
    for sw in data["switches"]:
        switches.add_row(sw["name"], sw["bridge"], sw["site"], sw["subnet"], sw["datapath"],
                         "connected" if sw["controller_connected"] else "[red]disconnected[/red]")
    console.print(switches)
    ctl = data["controller"]
    app = ctl.get("app") or {}
    console.print(
        f"controller: os-ken pid {ctl['pid']} on 127.0.0.1:{ctl['port']} "
        f"{'[green]alive[/green]' if ctl['alive'] else '[red]dead[/red]'}"
        + (f", {len(app.get('datapaths', []))} switch(es), {app.get('flows_installed', 0)} flows installed" if app else "")
    )
    if data.get("radio"):
        r = data["radio"]
        console.print(f"radio: {r.get('backend')} — {'attached' if r.get('attached') else 'DETACHED'}")
    for svc in data.get("services") or []:
        console.print(f"service: {svc}")

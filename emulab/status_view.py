"""Renders `emulab status` for people: nodes, links (configured vs applied), switches, controller, radio,
the start-up phases and the services."""

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


def _params_only(p: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if p is None else {k: p.get(k) for k in ("delay_ms", "jitter_ms", "loss_pct", "rate_mbit")}


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
        there, back = (_params_only(applied.get(d)) for d in ("1to2", "2to1"))
        shown = _fmt_params(there) if there == back or back is None else f"{_fmt_params(there)} / {_fmt_params(back)}"
        how = applied.get("backend", "-") if applied.get("hop", True) else "plain veth"
        links.add_row(lk["name"], " — ".join(lk["ends"]), lk.get("segment") or "-", _fmt_params(lk["configured"]),
                      shown if there is not None else "none", how)
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
        + (f", {len(app.get('connected', []))} switch(es) connected, {app.get('flows_installed', 0)} flows installed, "
           f"{app.get('packet_ins', 0)} packet-ins" if app else "")
    )
    if data.get("radio") and data["radio"].get("link"):
        r = data["radio"]
        console.print(f"radio: {r.get('backend')} — {'attached' if r.get('attached') else 'DETACHED'}")
    phases = data.get("phases") or []
    if phases:
        table = Table(title="start-up phases")
        table.add_column("phase")
        table.add_column("s", justify="right")
        for ph in phases:
            table.add_row(ph["phase"], f"{ph['s']:.3f}")
        table.add_row("[bold]total[/bold]", f"[bold]{sum(ph['s'] for ph in phases):.3f}[/bold]")
        console.print(table)
    services = data.get("services") or []
    if services:
        table = Table(title="services")
        for col in ("node", "service", "pid", "state", "command"):
            table.add_column(col)
        for svc in services:
            table.add_row(svc["node"], svc["kind"], str(svc["pid"]), "running" if svc["alive"] else "[red]exited[/red]",
                          svc["command"])
        console.print(table)

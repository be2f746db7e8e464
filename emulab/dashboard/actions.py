"""Actions on the running testbed shared by the command line and the dashboard's controls.

Each is one request on the runner's control socket (``emulab.control.request``), exactly what
`emulab coverage lose|restore`, `emulab service kill|restart` and `emulab link set` send, so a button
on the page and the command do the same thing.
"""

from __future__ import annotations

from typing import Any

from emulab import control
from emulab.errors import EmulabError

SERVICE_KINDS = ("registrar", "pe")


def coverage(lose: bool, for_s: float | None = None) -> dict[str, Any]:
    """Lose (radio detach) or restore (attach) the UE's coverage; the radio's state after it."""
    if lose:
        return control.request({"cmd": "radio", "action": "detach", **({"for_s": for_s} if for_s else {})})
    return control.request({"cmd": "radio", "action": "attach"})


def service(action: str, node: str, kind: str) -> dict[str, Any]:
    """Kill (SIGKILL, as a crash) or restart ``node``'s registrar or pool element."""
    if action not in ("kill", "restart"):
        raise EmulabError(f"unknown service action {action!r} (kill, restart)")
    if kind not in SERVICE_KINDS:
        raise EmulabError(f"unknown service kind {kind!r} ({', '.join(SERVICE_KINDS)})")
    return control.request({"cmd": "service", "action": action, "node": node, "kind": kind})


def set_link(link: str, *, delay_ms: float | None = None, jitter_ms: float | None = None,
             loss_pct: float | None = None, rate_mbit: float | None = None) -> dict[str, Any]:
    """Change a link's delay/jitter/loss/rate at run time (both directions); what is not given stays as
    the link now applies it. Returns what is applied afterwards."""
    status = control.request({"cmd": "status"})
    current = next((lk for lk in status["links"] if lk["name"] == link), None)
    if current is None:
        raise EmulabError(f"no link {link!r} (links: {', '.join(lk['name'] for lk in status['links'])})")
    now = dict((current.get("applied") or {}).get("1to2") or current.get("configured") or {})
    params = {"delay_ms": now.get("delay_ms") or 0.0, "jitter_ms": now.get("jitter_ms") or 0.0,
              "loss_pct": now.get("loss_pct") or 0.0, "rate_mbit": now.get("rate_mbit")}
    for key, value in (("delay_ms", delay_ms), ("jitter_ms", jitter_ms), ("loss_pct", loss_pct),
                       ("rate_mbit", rate_mbit)):
        if value is not None:
            params[key] = value
    return control.request({"cmd": "set_link", "link": link, "params": params})

"""`emulab dashboard`, and the commands behind its controls: `emulab service kill|restart`, `emulab link set`.

Registered in emulab.cli. `emulab coverage lose|restore` (emulab.cli_radio) is the fourth control.
"""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--port", default=8050, show_default=True, help="TCP port of the web page.")
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address to listen on; other than loopback, the controls need the token printed at start.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between refreshes of the state.")
@click.option("--fractal/--no-fractal", default=True, show_default=True,
              help="Start the Fractal Generator pool user on the UE at once (the page can start/stop it).")
def dashboard(port: int, bind: str, interval: float, fractal: bool) -> None:
    """Serve a live web page of the running testbed (and `GET /api/state` as JSON); see docs/dashboard.md.

    It ends when the testbed stops; started without a testbed, the page says so until one runs.
    """
    from emulab import control
    from emulab.dashboard.server import serve

    if control.read_state() is None:
        click.echo("emulab: no testbed is running: the page says so until one starts", err=True)
    serve(bind=bind, port=port, interval=interval, fractal_autostart=fractal, announce=click.echo)


@click.group()
def service() -> None:
    """Kill or restart a registrar or pool element of the running testbed."""


@service.command(name="kill")
@click.argument("node")
@click.argument("kind", type=click.Choice(["pe", "registrar"]))
def service_kill(node: str, kind: str) -> None:
    """SIGKILL NODE's KIND service, as a crash (no deregistration)."""
    from emulab.dashboard import actions

    st = actions.service("kill", node, kind)
    click.echo(f"{node} {kind} (pid {st['pid']}) killed")


@service.command(name="restart")
@click.argument("node")
@click.argument("kind", type=click.Choice(["pe", "registrar"]))
def service_restart(node: str, kind: str) -> None:
    """Start NODE's KIND service again (ending it first if it runs)."""
    from emulab.dashboard import actions

    st = actions.service("restart", node, kind)
    click.echo(f"{node} {kind} restarted (pid {st['pid']})")


@click.group()
def link() -> None:
    """Change a link of the running testbed."""


@link.command(name="set")
@click.argument("name")
@click.option("--delay", "delay_ms", type=click.FloatRange(min=0), default=None, help="One-way delay [ms].")
@click.option("--jitter", "jitter_ms", type=click.FloatRange(min=0), default=None, help="Jitter [ms].")
@click.option("--loss", "loss_pct", type=click.FloatRange(0, 100), default=None, help="Loss [%].")
@click.option("--rate", "rate_mbit", type=click.FloatRange(min=0, min_open=True), default=None, help="Rate [Mbit/s].")
def link_set(name: str, delay_ms: float | None, jitter_ms: float | None, loss_pct: float | None,
             rate_mbit: float | None) -> None:
    """Change link NAME (e.g. nornet-oslo--pmc-haikou) in both directions; unnamed parameters stay."""
    from emulab.dashboard import actions

    out = actions.set_link(name, delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct, rate_mbit=rate_mbit)
    click.echo(json.dumps(out.get("applied"), indent=1))

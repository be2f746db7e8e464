"""The `emulab` command line: doctor, start, status, exec, stop, clean (and the hooks later issues extend)."""

from __future__ import annotations

import json
import sys

import click

from emulab.errors import EmulabError
from radio import RadioError, backend_names


class UserError(click.ClickException):
    """A user-facing error: one clear line, exit code 2, never a traceback."""

    exit_code = 2


class _Group(click.Group):
    """Turns every EmulabError (and radio's RadioError) raised by a sub-command into a one-line message
    and exit code 2."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (EmulabError, RadioError) as exc:
            raise UserError(str(exc)) from None


def _set_instance(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """--instance / $EMULAB_INSTANCE, checked, and put in the environment so that every process
    this command starts (runner, services, shaper, dashboard) belongs to the same instance."""
    import os

    from emulab import paths

    try:
        name = paths.check_instance(value)
    except paths.InstanceError as exc:
        raise click.BadParameter(str(exc)) from None
    if name == paths.DEFAULT_INSTANCE:
        os.environ.pop(paths.INSTANCE_ENV, None)
    else:
        os.environ[paths.INSTANCE_ENV] = name
    return name


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="emulab")
@click.option("--instance", envvar="EMULAB_INSTANCE", default=None, metavar="NAME", expose_value=False,
              is_eager=True, callback=_set_instance,
              help="Testbed instance to act on: a number 1-99, or 'default' (today's names); "
                   "several instances run side by side. Also $EMULAB_INSTANCE.")
def main() -> None:
    """emulab: the papers' 4G + MEC + multi-cloud testbed in Mininet, with RSerPool offloading.

    \b
    Typical session (as root):
      emulab doctor                         what this machine offers, and the fallbacks used
      emulab start paper-topology --detach  build the papers' network in the background
      emulab status                         nodes, links (configured vs applied), controller
      emulab exec ue -- ping -c 3 pmc-haikou
      emulab stop                           tear it down (emulab clean after a crash)
      emulab --instance 2 start paper-topology --detach   a second, independent testbed
      emulab instances                      what runs on this machine
    """


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the probe result as JSON.")
def doctor(as_json: bool) -> None:
    """Probe the kernel and machine: sch_netem, SCTP, OVS datapaths, Mininet, os-ken, tshark, UHD/B210, OAI.

    Shows, for every missing piece, the fallback emulab uses instead. Exits 0 when the testbed can run.
    """
    from emulab.capabilities import probe

    caps = probe(fresh=True)
    if as_json:
        click.echo(json.dumps(caps.to_json(), indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        from rserpool import selector as rserpool_selector

        table = Table(title=f"emulab doctor — kernel {caps.kernel}")
        for col in ("capability", "status", "detail"):
            table.add_column(col)
        for cap in caps.items.values():
            style = "green" if cap.present else ("red" if cap.required else "yellow")
            table.add_row(cap.name, f"[{style}]{cap.verdict}[/{style}]", cap.detail)
        console = Console()
        console.print(table)
        console.print(
            f"links: [bold]{caps.link_backend}[/bold]   OVS datapath: [bold]{caps.ovs_datapath}[/bold]   "
            f"RSerPool transport: [bold]{caps.rserpool_transport}[/bold]"
        )
        console.print(f"RSerPool pool selection: [bold]{rserpool_selector.acceleration_reason()}[/bold]")
        console.print("[green]the testbed can run[/green]" if caps.can_run else "[red]the testbed cannot run here[/red]")
    sys.exit(0 if caps.can_run else 1)


@main.command()
@click.argument("topology")
@click.option("--detach", is_flag=True, help="Return once the network is up; it keeps running in the background.")
@click.option(
    "--radio",
    type=click.Choice(backend_names()),
    default=None,
    help="Radio backend for the UE–eNodeB link (default: the topology's, else emulated).",
)
@click.option("--self-check", is_flag=True, help="Build, check reachability and RTTs against the configuration, tear down.")
@click.option("--no-services", is_flag=True, help="Do not start the RSerPool services listed in the topology.")
@click.option("--timeout", type=float, default=None,
              help="Seconds to wait for a detached start (default: 60 + 0.3 per node).")
@click.option("--dashboard", "dashboard_port", type=int, default=None, is_flag=False, flag_value=8050,
              metavar="[PORT]", help="Also serve the web dashboard on 127.0.0.1:PORT (8050); it ends with the testbed.")
def start(topology: str, detach: bool, radio: str | None, self_check: bool, no_services: bool,
          timeout: float | None, dashboard_port: int | None) -> None:
    """Build TOPOLOGY (a name under topologies/ or a path to a YAML file) and start it.

    Without --detach, opens Mininet's CLI and tears everything down when you leave it.
    """
    from emulab import control, runner
    from emulab.topology import TopologyError, load

    try:
        spec = load(topology)
    except TopologyError as exc:
        raise UserError(str(exc)) from None
    control.refuse_if_running()
    options = runner.StartOptions(
        topology=str(spec.source), radio=radio, services=not no_services, self_check=self_check
    )
    if detach:
        if timeout is None:
            timeout = runner.default_timeout(len(spec.nodes))
        click.echo(runner.start_detached(options, timeout=timeout, progress=click.echo))
        if dashboard_port is not None:
            from emulab.dashboard.launch import launch_detached

            click.echo(launch_detached(dashboard_port))
    else:
        if dashboard_port is not None:  # it waits for the testbed, then ends with it
            from emulab.dashboard.launch import launch_detached

            click.echo(launch_detached(dashboard_port, wait=False))
        sys.exit(runner.run_foreground(options, progress=click.echo))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
def status(as_json: bool) -> None:
    """Show the running testbed: nodes, links (configured and applied), switches and controller."""
    from emulab import control, status_view

    data = control.request({"cmd": "status"})
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        status_view.render(data)


@main.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("node")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(node: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside NODE's network namespace; its exit code is passed through.

    Example: emulab exec ue -- ping -c 3 mec-pe1
    """
    from emulab import control

    sys.exit(control.exec_in_node(node, list(command)))


@main.command(name="self-check")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for the check.")
def self_check_cmd(timeout: float) -> None:
    """Run the self-check (reachability and RTTs against the configuration) on the running testbed.

    Exits 1 when it fails. `emulab start TOPOLOGY --self-check` is the same on a fresh testbed.
    """
    from emulab import control

    data = control.request({"cmd": "self_check"}, timeout=timeout)
    for line in data.get("lines", []):
        click.echo(line)
    sys.exit(0 if data.get("passed") else 1)


@main.command()
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for an orderly teardown.")
def stop(timeout: float) -> None:
    """Tear the running testbed down (namespaces, links, bridges, controller, services)."""
    from emulab import control

    control.stop(timeout=timeout)
    click.echo("testbed stopped")


@main.command()
@click.option("--all", "every", is_flag=True, help="Clean every instance on this machine, not just the current one.")
def clean(every: bool) -> None:
    """Remove whatever a crashed run left behind: only what emulab created (like `mn -c`, but careful).

    Acts on one instance (--instance); other testbeds on the machine keep running.
    """
    from emulab import cleanup, paths

    failure: cleanup.CleanError | None = None
    try:
        per_instance = cleanup.clean_all() if every else {paths.instance(): cleanup.clean()}
    except cleanup.CleanError as exc:  # what was removed is still worth saying before the error
        failure, per_instance = exc, exc.removed
    for name, removed in per_instance.items():
        label = "" if not every else f"[{name}] "
        for item in removed:
            click.echo(f"{label}removed {item}")
        click.echo(f"{label}clean: {len(removed)} leftover(s) removed" if removed else f"{label}clean: nothing left behind")
    if failure is not None:
        raise failure


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def instances(as_json: bool) -> None:
    """List the testbed instances on this machine: names, prefix, run directory, what runs."""
    from emulab.instances import describe_all

    rows = describe_all()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['instance']:>8}  prefix {r['prefix']}  {r['run_dir']:<16}  {r['phase']:<8}  "
                   f"{r['topology'] or '-'}  ({r['processes']} marked processes)")


@main.command()
@click.argument("action", type=click.Choice(["status", "kill", "restart"]))
def controller(action: str) -> None:
    """Show, kill (SIGKILL) or restart the testbed's os-ken controller.

    Flows the controller already installed keep forwarding while it is away; switches reconnect
    within about a second of a restart.
    """
    from emulab import control

    data = control.request({"cmd": "controller", "action": action})
    app = data.get("app") or {}
    click.echo(
        f"controller pid {data['pid']} on 127.0.0.1:{data['port']}: {'alive' if data['alive'] else 'dead'}"
        + (f", {len(app.get('connected', []))} switch(es) connected" if app and data["alive"] else "")
    )


@main.command(name="topologies")
def list_topologies() -> None:
    """List the topologies under topologies/."""
    from emulab.topology import available

    for name in available():
        click.echo(name)


from emulab.cli_radio import coverage, radio  # noqa: E402 - radio/coverage commands (issue 6)

main.add_command(radio)
main.add_command(coverage)

from emulab.dashboard.cli import dashboard, link, service  # noqa: E402 - dashboard and its controls' commands

main.add_command(dashboard)
main.add_command(service)
main.add_command(link)

from emulab.wireshark import tshark_cmd, wireshark_cmd  # noqa: E402 - tshark/wireshark with the TCP-framing dissector

main.add_command(tshark_cmd)
main.add_command(wireshark_cmd)


# ==== results: plot and simulate (emulab.plots, emulab.sim; issue 7) ===================================
from pathlib import Path  # noqa: E402 - imports kept inside this block on purpose

from emulab.cluster.options import ClusterRun, cluster_options  # noqa: E402
from emulab.scenario import Scenario, scenario_options  # noqa: E402


@main.command()
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--compare", type=click.Path(path_type=Path), default=None,
              help="A second results directory to overlay (e.g. simulated vs emulated).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where to write the PNGs (default: RESULTS_DIR/plots).")
def plot(results_dir: Path, compare: Path | None, out: Path | None) -> None:
    """Draw the papers' Figures 4-8 from RESULTS_DIR and print Table 1 beside the papers' values."""
    from rich.console import Console

    from emulab.plots import plot_results, table1

    paths = plot_results(results_dir, compare=compare, out=out)
    Console().print(table1(results_dir, compare=compare))
    for p in paths:
        click.echo(str(p))


@main.command()
@scenario_options
@click.option("--fail", "failures", multiple=True, metavar="ELEMENT@T[+DUR]",
              help="Crash a pool element at T s (back after DUR s). Repeatable.")
@click.option("--coverage-loss", "coverage", multiple=True, metavar="T+DUR",
              help="Cut the UE off from the network at T s for DUR s. Repeatable.")
@click.option("--drain", type=click.FloatRange(min=0.0), default=None,
              help="After --duration, issue no new requests and wait up to this long for the queued ones "
                   "(default: 60 with --coverage-loss, as `emulab experiment coverage-loss`; else 0, as "
                   "`emulab experiment paper`).")
@cluster_options
def simulate(scenario: Scenario, failures: tuple[str, ...], coverage: tuple[str, ...], drain: float | None,
             cluster: ClusterRun | None) -> None:
    """Simulate the CalcApp pool on TARGET (a topology, or `large` / `synthetic:N`); prints the results path last.

    Same sweep options as `emulab experiment`; the results directory has the same format, so
    `emulab plot DIR` draws it and `emulab plot A --compare B` overlays an emulated and a simulated run.
    """
    from emulab.sim import build_model, parse_coverage, parse_failure
    from emulab.sim import simulate as run_simulation

    try:
        fs = [parse_failure(f) for f in failures]
        cs = [parse_coverage(c) for c in coverage]
    except ValueError as exc:
        raise EmulabError(str(exc)) from None
    if fs:
        known = {e.name for e in build_model(scenario).elements}
        bad = [f.element for f in fs if f.element not in known]
        if bad:
            raise EmulabError(f"--fail: unknown pool element(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    if cluster is not None:  # every (setting, run) a task on a Dask cluster (emulab.cluster)
        from emulab.cluster.sweeps import simulate_on_cluster

        path, timing = simulate_on_cluster(scenario, fs, cs, cluster=cluster, progress=sys.stderr.isatty(), drain=drain)
    else:
        path, timing = run_simulation(scenario, fs, cs, progress=sys.stderr.isatty(), drain=drain)
    click.echo(
        f"{timing['events']:,} events in {timing['wall_s']:.1f} s ({timing['events_per_s']:,.0f} events/s, "
        f"{timing['realtime_ratio']:,.0f}x real time, "
        f"{f'on {cluster.address}' if cluster is not None else f'{scenario.jobs} process(es)'})",
        err=True,
    )
    click.echo(str(path))

@main.group()
def experiment() -> None:
    """Run the papers' experiments in the emulated testbed (needs root)."""


# each experiment module owns its command (emulab.experiments; docs/guides/experiment.md)
from emulab.experiments import chaos as _chaos_experiment  # noqa: E402
from emulab.experiments import coverage as _coverage_experiment  # noqa: E402
from emulab.experiments import paper as _paper_experiment  # noqa: E402

experiment.add_command(_paper_experiment.command)
experiment.add_command(_coverage_experiment.command)
experiment.add_command(_chaos_experiment.command)

from emulab.cluster.worker import command as _worker_command  # noqa: E402 - `emulab worker` (sweeps on a cluster)

main.add_command(_worker_command)
# ==== end of the plot/simulate block ==================================================================


if __name__ == "__main__":  # pragma: no cover
    main()

"""Click commands ``rserpool registrar``, ``pe``, ``pu``, ``hsdump`` and ``peers`` (thin wrappers
over the libraries).

Daemons (registrar, pe) run until SIGINT/SIGTERM; the PE deregisters on the way out. Timer options
take seconds; their defaults are RSPLIB 3.4.4's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import click

from rserpool import csp
from rserpool import transport as tp
from rserpool.policy import PolicyInfo
from rserpool.transport import format_endpoint, parse_endpoint


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _endpoints(values: tuple[str, ...], default_port: int = tp.ASAP_PORT) -> list[tuple[str, int]]:
    try:
        return [parse_endpoint(v, default_port) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _int_auto(value: str | None) -> int:
    if not value:
        return 0
    try:
        v = int(value, 0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (decimal or 0x hex)") from None
    if not 0 <= v <= 0xFFFFFFFF:
        raise click.BadParameter(f"{value!r} does not fit 32 bits")
    return v


def _announce_options(f: Callable[..., object]) -> Callable[..., object]:
    f = click.option("--announce-address", default=f"{tp.ASAP_ANNOUNCE_GROUP}:{tp.ASAP_PORT}", show_default=True,
                     help="Multicast group:port of ASAP server announces.")(f)
    f = click.option("--announce-interface", default=None,
                     help="Local IPv4 address of the interface for announces (needed without a 224.0.0.0/4 route).")(f)
    return f


def _transport_option(f: Callable[..., object]) -> Callable[..., object]:
    return click.option("--transport", type=click.Choice(["sctp", "tcp"]), default=None,
                        help="Force the ASAP transport (default: SCTP if the kernel has it, else TCP; "
                             f"env {tp.ENV_TRANSPORT}).")(f)


def _log_option(f: Callable[..., object]) -> Callable[..., object]:
    return click.option("--log-level", default="info", show_default=True,
                        type=click.Choice(["debug", "info", "warning", "error"]))(f)


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop if asked for (or, with "auto", if installed); it roughly doubles the registrar's rate."""
    if choice == "asyncio":
        return None
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        if choice == "uvloop":
            raise click.ClickException("--event-loop uvloop: uvloop is not installed") from None
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def _run_daemon(main: Callable[[asyncio.Event], Awaitable[None]], event_loop: str = "auto") -> None:
    """Run ``main(stop_event)``; SIGINT/SIGTERM set the event so ``main`` can shut down cleanly."""
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(event_loop)) as r:
            r.run(runner())
    except tp.TransportError as exc:
        raise click.ClickException(str(exc)) from None


# ---------------------------------------------------------------------------------------------


@click.command("registrar")
@click.option("--listen", "listen", multiple=True, default=("0.0.0.0",), show_default=True,
              help="ASAP endpoint ADDR[:PORT] (port 3863 by default); repeatable.")
@click.option("--enrp-listen", default="0.0.0.0:9901", show_default=True,
              help="ENRP endpoint for peers and hsdump ('none' to disable ENRP).")
@click.option("--peer", "peers", multiple=True, help="Static ENRP peer ADDR[:PORT] (port 9901 by default); repeatable.")
@click.option("--enrp-multicast/--no-enrp-multicast", default=False, show_default=True,
              help="Send and hear ENRP Presences on the multicast group (find peers without --peer).")
@click.option("--enrp-address", default=f"{tp.ENRP_ANNOUNCE_GROUP}:{tp.ENRP_PORT}", show_default=True,
              help="Multicast group:port of ENRP Presences.")
@click.option("--peer-heartbeat-cycle", default=2.444, show_default=True, help="ENRP Presence interval [s].")
@click.option("--peer-max-time-last-heard", default=5.0, show_default=True,
              help="Silence [s] after which a peer is asked for a Presence.")
@click.option("--peer-max-time-no-response", default=5.0, show_default=True,
              help="Wait [s] for that answer before the peer is declared dead (takeover).")
@click.option("--takeover-expiry", default=5.0, show_default=True,
              help="Wait [s] for Init Takeover Acks before taking over anyway.")
@click.option("--mentor-hunt-timeout", default=5.0, show_default=True,
              help="Wait [s] at start for a peer (mentor) to download the handlespace from before "
                   "announcing; ends early when the download is complete.")
@click.option("--max-elements-per-ht-request", default=128, show_default=True,
              help="PEs per Handle Table Response piece.")
@click.option("--mirror-lifetime", type=float, default=None,
              help="Life [s] of entries owned by peers without a refresh (default: the PE's registration life).")
@click.option("--identifier", default=None, help="Registrar identifier (decimal or 0x hex; default random).")
@click.option("--max-hr-items", default=3, show_default=True, help="PEs per handle resolution.")
@click.option("--max-increment", default=0, show_default=True, help="RSPLIB MaxIncrement (0 = policy default).")
@click.option("--max-bad-pe-reports", default=3, show_default=True, help="Unreachable reports that remove a PE.")
@click.option("--keepalive-interval", default=5.0, show_default=True, help="Endpoint keep-alive interval [s].")
@click.option("--keepalive-timeout", default=5.0, show_default=True, help="Endpoint keep-alive timeout [s].")
@click.option("--announce-cycle", default=1.0, show_default=True, help="Server announce cycle [s].")
@click.option("--announce-ttl", default=tp.DEFAULT_ANNOUNCE_TTL, show_default=True, help="Multicast TTL of announces.")
@click.option("--announce/--no-announce", default=True, show_default=True, help="Send ASAP server announces.")
@click.option("--max-hr-rate", default=-1.0, show_default=True,
              help="Max handle resolutions per second per PU and pool (<= 0: unlimited).")
@click.option("--max-eu-rate", default=-1.0, show_default=True,
              help="Max endpoint-unreachable reports per second per PU and pool (<= 0: unlimited).")
@click.option("--max-reg-rate", default=-1.0, show_default=True,
              help="Max registrations per second per association (<= 0: unlimited; not in RSPLIB).")
@click.option("--max-bad-messages", default=64, show_default=True,
              help="Dropped or refused messages after which an ASAP or ENRP association is aborted (0: never).")
@click.option("--audit-unreachable/--no-audit-unreachable", default=False, show_default=True,
              help="On max-bad-pe-reports, ask the PE with a keep-alive instead of removing it.")
@click.option("--enrp-peers-only/--no-enrp-peers-only", default=False, show_default=True,
              help="Accept ENRP (and hsdump) only from the hosts of the static peers.")
@click.option("--event-loop", type=click.Choice(["auto", "asyncio", "uvloop"]), default="auto", show_default=True,
              help="Event loop implementation (auto: uvloop if installed).")
@_announce_options
@_transport_option
@_log_option
@csp.click_options
def registrar_cmd(listen: tuple[str, ...], enrp_listen: str, peers: tuple[str, ...], identifier: str | None,
                  max_hr_items: int, max_increment: int, max_bad_pe_reports: int, keepalive_interval: float,
                  keepalive_timeout: float, announce_cycle: float, announce_ttl: int, announce: bool,
                  max_hr_rate: float, max_eu_rate: float, event_loop: str, announce_address: str,
                  announce_interface: str | None, transport: str | None, log_level: str,
                  enrp_multicast: bool = False, enrp_address: str = "", peer_heartbeat_cycle: float = 2.444,
                  peer_max_time_last_heard: float = 5.0, peer_max_time_no_response: float = 5.0,
                  takeover_expiry: float = 5.0, mentor_hunt_timeout: float = 5.0,
                  max_elements_per_ht_request: int = 128, mirror_lifetime: float | None = None,
                  cspserver: str | None = None, cspinterval: int | None = None, max_reg_rate: float = -1.0,
                  max_bad_messages: int = 64, audit_unreachable: bool = False,
                  enrp_peers_only: bool = False) -> None:
    """Run a registrar (ASAP server, endpoint monitoring, multicast announces, ENRP peering)."""
    from rserpool.registrar import Registrar, RegistrarConfig

    _setup_logging(log_level)
    csp.configure_from_options(cspserver, cspinterval)
    group, gport = parse_endpoint(announce_address, tp.ASAP_PORT)
    egroup, eport = parse_endpoint(enrp_address or f"{tp.ENRP_ANNOUNCE_GROUP}:{tp.ENRP_PORT}", tp.ENRP_PORT)
    cfg = RegistrarConfig(
        identifier=_int_auto(identifier),
        listen=_endpoints(listen),
        enrp_listen=None if enrp_listen.lower() == "none" else parse_endpoint(enrp_listen, tp.ENRP_PORT),
        transport=transport,
        max_hr_items=max_hr_items, max_increment=max_increment, max_bad_pe_reports=max_bad_pe_reports,
        keepalive_interval=keepalive_interval, keepalive_timeout=keepalive_timeout,
        announce=announce, announce_cycle=announce_cycle, announce_group=group, announce_port=gport,
        announce_interface=announce_interface, announce_ttl=announce_ttl,
        max_hr_rate=max_hr_rate, max_eu_rate=max_eu_rate, peers=_endpoints(peers, tp.ENRP_PORT),
        enrp_multicast=enrp_multicast, enrp_group=egroup, enrp_group_port=eport,
        peer_heartbeat_cycle=peer_heartbeat_cycle, peer_max_time_last_heard=peer_max_time_last_heard,
        peer_max_time_no_response=peer_max_time_no_response, takeover_expiry=takeover_expiry,
        mentor_hunt_timeout=mentor_hunt_timeout, max_elements_per_ht_request=max_elements_per_ht_request,
        mirror_lifetime=mirror_lifetime, max_reg_rate=max_reg_rate, max_bad_messages=max_bad_messages,
        audit_unreachable=audit_unreachable, enrp_peers_only=enrp_peers_only,
    )

    async def main(stop: asyncio.Event) -> None:
        reg = Registrar(cfg)
        await reg.start()
        click.echo(f"Registrar ${reg.identifier:08x} ({reg.kind}) on "
                   + ", ".join(format_endpoint(h, p) for h, p in reg.addresses())
                   + (f", ENRP port {reg.enrp_port}" if reg.enrp_port else ""), err=True)
        for line in cfg.describe():
            click.echo("  " + line, err=True)
        try:
            await stop.wait()
        finally:
            await reg.stop()

    _run_daemon(main, event_loop)


@click.command("pe")
@click.option("--registrar", "registrars", multiple=True, help="Registrar ADDR[:PORT]; repeatable "
              "(default: find registrars by multicast announce).")
@click.option("--pool", required=True, help="Pool handle.")
@click.option("--policy", default="RoundRobin", show_default=True,
              help="Selection policy, RSPLIB syntax: Name[:param], e.g. PriorityLeastUsed:0.1, WeightedRandom:5.")
@click.option("--load-increment", type=float, default=None,
              help="Load increment/degradation fraction for PLU/LUD-style policies (overrides :param).")
@click.option("--weight", type=int, default=None, help="Weight for WRR/WRAND.")
@click.option("--priority", type=int, default=None, help="Priority for PRIO.")
@click.option("--load", type=float, default=None, help="Initial load fraction (0..1).")
@click.option("--identifier", default=None, help="PE identifier (decimal or 0x hex; default random).")
@click.option("--service", type=click.Choice(["echo", "calcapp", "fractal"]), default="echo", show_default=True)
@click.option("--capacity", type=float, default=1_000_000.0, show_default=True,
              help="Service capacity (calcapp: calculations per second; fractal: iterations per second, "
                   "0 = as fast as the host computes).")
@click.option("--max-requests", type=int, default=0, show_default=True,
              help="Max concurrent sessions; > 0 makes the PE report load = sessions / max.")
@click.option("--listen", default="0.0.0.0:0", show_default=True, help="Service endpoint ADDR:PORT.")
@click.option("--reregistration-interval", type=float, default=30.0, show_default=True,
              help="Re-registration interval [s]; registration life is 3x this.")
@click.option("--control-channel/--no-control-channel", default=True, show_default=True,
              help="Register Transport Use 'data plus control' (as RSPLIB's PEs do; a pool's PEs must all "
                   "agree) or 'data only'.")
@_announce_options
@_transport_option
@_log_option
@csp.click_options
def pe_cmd(registrars: tuple[str, ...], pool: str, policy: str, load_increment: float | None, weight: int | None,
           priority: int | None, load: float | None, identifier: str | None, service: str, capacity: float,
           max_requests: int, listen: str, reregistration_interval: float, announce_address: str,
           announce_interface: str | None, transport: str | None, log_level: str,
           control_channel: bool = True, cspserver: str | None = None, cspinterval: int | None = None) -> None:
    """Run a pool element: register, answer keep-alives, serve, deregister on SIGINT/SIGTERM."""
    from dataclasses import replace

    from rserpool.pe import PEConfig, PoolElement
    from rserpool.policytypes import fraction_to_u32

    _setup_logging(log_level)
    csp.configure_from_options(cspserver, cspinterval)
    try:
        pol = PolicyInfo.parse(policy)
        if load_increment is not None:
            pol = replace(pol, load_degradation=fraction_to_u32(load_increment))
        if weight is not None:
            pol = replace(pol, weight=weight)
        if priority is not None:
            pol = replace(pol, weight=priority)
        if load is not None:
            pol = replace(pol, load=fraction_to_u32(load))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--policy") from None
    group, gport = parse_endpoint(announce_address, tp.ASAP_PORT)
    cfg = PEConfig(pool.encode(), pol, identifier=_int_auto(identifier), registrars=_endpoints(registrars),
                   announce_group=group, announce_port=gport, announce_interface=announce_interface,
                   listen=parse_endpoint(listen, 0), reregistration_interval=reregistration_interval,
                   transport=transport, service=service, max_requests=max_requests, capacity=capacity,
                   control_channel=control_channel)

    async def main(stop: asyncio.Event) -> None:
        pe = PoolElement(cfg)
        await pe.start(wait=False)
        click.echo(f"PE ${pe.identifier:08x} pool {pool!r} policy {pol.to_dict()['name']} "
                   f"service {service} on port {pe.port} ({pe.kind})", err=True)
        waiter = asyncio.ensure_future(stop.wait())
        task = pe._task
        assert task is not None
        try:
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            err = pe.error
            await pe.stop(deregister=err is None)
        if err is not None:
            raise click.ClickException(str(err))

    _run_daemon(main)


@click.command("pu")
@click.option("--registrar", "registrars", multiple=True,
              help="Registrar ADDR[:PORT]; repeatable (default: find registrars by multicast announce).")
@click.option("--pool", required=True, help="Pool handle.")
@click.option("--count", type=int, default=None, help="PEs to ask for (default: the registrar's, RSPLIB 3).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--echo", "echo_text", default=None,
              help="Also open a session to the chosen PE and send TEXT to its echo service; print the reply.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for announces/replies.")
@_announce_options
@_transport_option
@_log_option
def pu_cmd(registrars: tuple[str, ...], pool: str, count: int | None, as_json: bool, echo_text: str | None,
           timeout: float, announce_address: str, announce_interface: str | None, transport: str | None,
           log_level: str) -> None:
    """One handle resolution: print the chosen PEs (identifier and address), one per line."""
    from rserpool.pu import HandleResolutionError, PoolUser, PUConfig
    from rserpool.session import NoRegistrarError

    _setup_logging("warning" if log_level == "info" else log_level)
    group, gport = parse_endpoint(announce_address, tp.ASAP_PORT)
    cfg = PUConfig(registrars=_endpoints(registrars), announce_group=group, announce_port=gport,
                   announce_interface=announce_interface, transport=transport, discovery_wait=timeout,
                   request_timeout=timeout)

    async def main() -> int:
        async with PoolUser(cfg) as pu:
            try:
                pes = await pu.resolve(pool.encode(), items=count, use_cache=False)
            except HandleResolutionError as exc:
                click.echo(f"error: {exc}", err=True)
                return 2
            except (NoRegistrarError, ConnectionError) as exc:
                click.echo(f"error: {exc}", err=True)
                return 3
            reply = None
            if echo_text is not None:
                s = await pu.connect(pool.encode())
                try:
                    reply = (await s.request(echo_text.encode(), timeout=timeout)).decode("utf-8", "replace")
                finally:
                    s.close()
            if as_json:
                out: dict[str, object] = {"pool": pool, "elements": [p.to_dict() for p in pes]}
                if reply is not None:
                    out["echo"] = reply
                click.echo(json.dumps(out))
            else:
                for p in pes:
                    click.echo(f"0x{p.identifier:08x} {format_endpoint(*p.endpoint)}")
                if reply is not None:
                    click.echo(f"echo: {reply}")
            return 0

    try:
        rc = asyncio.run(main())
    except tp.TransportError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(rc)

"""The `rserpool` command: registrar, pool element, pool user, handlespace dump and capture decoding."""

from __future__ import annotations

import click

from rserpool import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="rserpool")
def main() -> None:
    """A compact RSerPool stack (RFC 5351-5356): run a registrar, a pool element or a pool user,
    dump a registrar's handlespace, or decode captured ASAP/ENRP/CalcApp traffic."""


# Sub-commands live next to the code they drive; each module contributes one click command.
# (Add one line per command below.)
from rserpool.pcaptool import pcap  # noqa: E402

main.add_command(pcap)
from rserpool.registrar_cli import registrar_cmd  # noqa: E402

main.add_command(registrar_cmd)
from rserpool.registrar_cli import pe_cmd  # noqa: E402

main.add_command(pe_cmd)
from rserpool.registrar_cli import pu_cmd  # noqa: E402

main.add_command(pu_cmd)
# hsdump and peers live with the ENRP client code; without --registrar they find registrars by
# multicast announce, as pe/pu/calcapp-pu do
from rserpool.hsdump import hsdump_cmd  # noqa: E402

main.add_command(hsdump_cmd)
from rserpool.services.calcapp_cli import calcapp_pu_cmd  # noqa: E402

main.add_command(calcapp_pu_cmd)
from rserpool.services.fractal_cli import fractal_pu_cmd  # noqa: E402

main.add_command(fractal_pu_cmd)
from rserpool.hsdump import peers_cmd  # noqa: E402

main.add_command(peers_cmd)

"""The `rserpool` command: registrar, pool element, pool user, handlespace dump and capture decoding."""

from __future__ import annotations

import click

from rserpool import __version__


class _LazyGroup(click.Group):
    """A group whose ``lazy`` commands are imported only when named (or listed by ``--help``).

    Why: a command's module may import heavy libraries (the fractal PU imports numpy) that every
    other ``rserpool`` process, the registrar above all, would otherwise pay for at start.
    """

    lazy: dict[str, str] = {}  # command name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            import importlib

            module, attr = self.lazy[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
# imported when named: the fractal PU imports numpy, which the registrar must not pay for
main.lazy = {"fractal-pu": "rserpool.services.fractal_cli:fractal_pu_cmd"}  # type: ignore[attr-defined]
from rserpool.hsdump import peers_cmd  # noqa: E402

main.add_command(peers_cmd)

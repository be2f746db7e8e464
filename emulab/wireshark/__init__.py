"""Wireshark and tshark that decode emulab's RSerPool traffic whatever the transport:
``emulab tshark ARGS…`` and ``emulab wireshark ARGS…`` run the stock tools with
``rserpool_tcp.lua`` (next to this file) loaded (``-X lua_script:FILE``).

Over SCTP, Wireshark decodes ASAP, ENRP, CalcApp and the Fractal Generator Protocol by their PPIDs
on its own. On a host without SCTP, rserpool falls back to TCP (``rserpool/transport.py``): the
registrar ports carry length-framed ASAP/ENRP, the pool elements' session channels an 8-byte
(PPID, length) tag before each message; stock tshark shows those streams as undissected ``data``.
The Lua script cuts both framings into messages and hands each one to the dissector Wireshark
registers for its SCTP PPID.

Why a Lua dissector and not an export that rewrites the TCP streams as SCTP with their PPIDs:
the capture stays what was on the wire (TCP handshakes, retransmissions, timing and the real
ports, which is what a fail-over or a coverage loss looks like), it works live while Wireshark
captures, the same file opens in any Wireshark with the script, and the decoding itself is still
Wireshark's own ASAP/ENRP/CalcApp/FGP dissectors; an SCTP export would be a second, synthetic file
whose associations, TSNs and checksums nobody sent. Debian's Wireshark and tshark are built with
Lua, so nothing else is needed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

LUA_SCRIPT = Path(__file__).with_name("rserpool_tcp.lua")
"""The Lua dissector of rserpool's TCP framings."""


def lua_args() -> list[str]:
    """The options that make tshark/wireshark load the RSerPool-over-TCP dissector."""
    return ["-X", f"lua_script:{LUA_SCRIPT}"]


def command(tool: str, args: list[str] | tuple[str, ...]) -> list[str]:
    """``tool`` (tshark or wireshark) with the dissector loaded, then ``args``."""
    path = shutil.which(tool)
    if path is None:
        package = "tshark" if tool == "tshark" else "wireshark-qt"
        raise click.ClickException(f"{tool} is not installed (Debian: apt-get install {package})")
    return [path, *lua_args(), *args]


_PASS_THROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False,
                 "help_option_names": ["--emulab-help"]}


@click.command("tshark", context_settings=_PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def tshark_cmd(args: tuple[str, ...]) -> None:
    """tshark with emulab's RSerPool-over-TCP dissector: ARGS go to tshark (e.g. -r results/RUN/pcaps/ue.pcap)."""
    cmd = command("tshark", args)
    os.execv(cmd[0], cmd)


@click.command("wireshark", context_settings=_PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def wireshark_cmd(args: tuple[str, ...]) -> None:
    """Wireshark with emulab's RSerPool-over-TCP dissector: ARGS go to wireshark (e.g. -r FILE, -k -i any)."""
    cmd = command("wireshark", args)
    os.execv(cmd[0], cmd)

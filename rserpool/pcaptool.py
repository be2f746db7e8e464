"""`rserpool pcap FILE`: list every ASAP, ENRP, CalcApp and Fractal Generator message of a capture
(over SCTP, or over rserpool's TCP fallback framings), optionally as JSON, and optionally check that
re-encoding each decoded message gives back the captured bytes."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from enum import IntEnum
from typing import Any

import click

from rserpool import wire
from rserpool.pcapfile import CaptureError, CaptureStats, Payload, read_payloads
from rserpool.policytypes import MAX_LOAD, SHORT_NAMES, PolicyType
from rserpool.wire.fractal import FINALIZER_POSITION, FGPData, FGPParameter

_KNOWN_POLICIES = frozenset(int(p) for p in PolicyType)


def _jsonable(value: Any) -> Any:
    if isinstance(value, IntEnum):
        return value.name
    if isinstance(value, bytes):
        try:
            text = value.decode("ascii")
            if text.isprintable():
                return text
        except UnicodeDecodeError:
            pass
        return {"hex": value.hex()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"_type": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = _jsonable(getattr(value, f.name))
        return out
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _policy_name(code: int) -> str:
    return SHORT_NAMES[PolicyType(code)] if code in _KNOWN_POLICIES else f"0x{code:08x}"


def summary(msg: wire.AnyMessage) -> str:
    """Key fields of a message in one short string."""
    parts: list[str] = []
    for name in ("sender_id", "receiver_id", "target_id", "server_id"):
        if hasattr(msg, name):
            parts.append(f"{name}=0x{getattr(msg, name):08x}")
    if hasattr(msg, "pool_handle"):
        parts.append(f"pool={_jsonable(msg.pool_handle)}")
    pe = getattr(msg, "pool_element", None)
    if pe is not None:
        pol = pe.policy
        parts.append(f"pe=0x{pe.identifier:08x} policy={_policy_name(pol.policy_type)} "
                     f"load={pol.load / MAX_LOAD:.1%} deg={pol.load_degradation / MAX_LOAD:.1%}")
    if getattr(msg, "identifier", None) is not None:
        parts.append(f"pe=0x{msg.identifier:08x}")
    if getattr(msg, "pool_elements", None):
        parts.append("pes=" + ",".join(f"0x{p.identifier:08x}" for p in msg.pool_elements))
    if getattr(msg, "update_action", None) is not None:
        parts.append(f"action={wire.UpdateAction(msg.update_action).name if msg.update_action in (0, 1) else msg.update_action}")
    for flag in ("reject", "home", "reply_required", "own_children_only", "more_to_send", "takeover_suggested"):
        if getattr(msg, flag, False):
            parts.append(flag)
    if getattr(msg, "error", None) is not None:
        parts.append("error=" + ",".join(str(c.code) for c in msg.error.causes))
    if isinstance(msg, wire.CalcAppMessage):
        parts.append(f"job={msg.job_id} size={msg.job_size} completed={msg.completed}")
    if isinstance(msg, FGPParameter):
        parts.append(f"size={msg.width}x{msg.height} max_iterations={msg.max_iterations} algorithm={msg.algorithm}")
    if isinstance(msg, FGPData):
        parts.append("end of image" if msg.start_x == FINALIZER_POSITION else
                     f"x={msg.start_x} y={msg.start_y} points={len(msg.values)}")
    return " ".join(parts)


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


@click.command("pcap")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message instead of text lines.")
@click.option("--check-roundtrip", is_flag=True, help="Re-encode every message; exit 1 naming those whose bytes differ.")
def pcap(file: str, as_json: bool, check_roundtrip: bool) -> None:
    """Decode the ASAP, ENRP, CalcApp and Fractal Generator messages in a pcap/pcapng capture FILE."""
    stats = CaptureStats()
    try:
        payloads = read_payloads(file, stats)
    except CaptureError as exc:
        click.echo(f"rserpool pcap: {file}: {exc}", err=True)
        sys.exit(2)
    t0 = payloads[0].time if payloads else 0.0
    count = undecodable = 0
    mismatched: list[str] = []
    out = sys.stdout
    for p in payloads:
        if p.protocol is None:
            continue
        count += 1
        where = f"frame {p.index}"
        try:
            msg = wire.decode(p.protocol, p.data)
        except wire.CodecError as exc:
            undecodable += 1
            _emit(out, as_json, p, t0, None, str(exc))
            if check_roundtrip:
                mismatched.append(f"{where} ({p.protocol}): does not decode: {exc}")
            continue
        _emit(out, as_json, p, t0, msg, None)
        if check_roundtrip:
            again = msg.encode()
            if again != p.data:
                mismatched.append(f"{where} {msg.NAME}: {len(p.data)} bytes captured, re-encoded {len(again)} "
                                  f"bytes differ")
    if check_roundtrip:
        if mismatched:
            for m in mismatched:
                click.echo(f"roundtrip mismatch: {m}", err=True)
            click.echo(f"{len(mismatched)} of {count} message(s) do not round-trip", err=True)
            sys.exit(1)
        click.echo(f"all {count} message(s) round-trip byte-exactly", err=True)


def _emit(out: Any, as_json: bool, p: Payload, t0: float, msg: wire.AnyMessage | None, error: str | None) -> None:
    if as_json:
        obj: dict[str, Any] = {
            "frame": p.index, "time": round(p.time, 6), "src": _endpoint(p.src, p.sport),
            "dst": _endpoint(p.dst, p.dport), "transport": p.transport, "ppid": p.ppid, "protocol": p.protocol,
        }
        if msg is not None:
            obj["message"] = msg.NAME
            obj["fields"] = _jsonable(msg)
        else:
            obj["error"] = error
        out.write(json.dumps(obj) + "\n")
        return
    stamp = time.strftime("%H:%M:%S", time.localtime(p.time)) + f".{int((p.time % 1) * 1e6):06d}"
    head = f"{stamp} +{p.time - t0:9.6f} {_endpoint(p.src, p.sport)} -> {_endpoint(p.dst, p.dport)} {p.protocol.upper():7s}"  # type: ignore[union-attr]
    if msg is None:
        out.write(f"{head} MALFORMED: {error}\n")
    else:
        out.write(f"{head} {msg.NAME} {summary(msg)}\n")

"""`emulab radio status` and `emulab coverage lose|restore`: the radio of a running testbed, over its control socket.

Registered in emulab.cli. The runner forwards these to the radio backend (``{"cmd": "radio",
"action": "state" | "detach" | "attach"}``), which answers with its state.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click


def _request(action: str, **extra: Any) -> dict[str, Any]:
    from emulab import control

    return control.request({"cmd": "radio", "action": action, **extra})


def format_state(st: dict[str, Any]) -> str:
    """One human line: backend, attach state (and for how long), SNR, CQI, rate, applied link."""
    parts = [f"radio {st.get('backend', '?')} on {st.get('link') or '-'}: {str(st.get('attach', '?')).upper()}"]
    if st.get("since"):
        parts[0] += f" for {max(0.0, time.time() - st['since']):.1f} s"
    if st.get("coverage") == "lost":
        parts.append("coverage LOST")
    if st.get("rrc_state"):  # OAI: the UE's own RRC state and its radio link monitor
        rlm = f", link monitor {st['rlm']}" if st.get("rlm") else ""
        parts.append(f"OAI UE {st['rrc_state']}{rlm}")
    if st.get("bearer") == "down":
        parts.append("no bearer (UE offline)")
    if st.get("radio_rtt"):
        r = st["radio_rtt"]
        parts.append(f"radio RTT {r['median_ms']:.1f} ms (sd {r['sd_ms']:.1f}, {r['n']} probes)")
    if "snr_db" in st:
        parts.append(f"SNR {st['snr_db']:.1f} dB")
    if "cqi" in st:
        parts.append(f"CQI {st['cqi']}")
    if "rate_mbit" in st:
        parts.append(f"rate {st['rate_mbit']:.1f} Mbit/s")
    mac = st.get("enb_mac")
    if mac:  # OAI: what the eNB's MAC reports of the UE
        parts.append(format_enb_mac(mac))
    p = st.get("params")
    if p:
        rate = f"{p['rate_mbit']:.1f} Mbit/s" if p.get("rate_mbit") else "unlimited"
        parts.append(f"link: {p['delay_ms']:g} ms ± {p['jitter_ms']:g}, loss {p['loss_pct']:g} %, {rate}")
    if st.get("last_error"):
        parts.append(f"last error: {st['last_error']}")
    return ", ".join(parts)


def format_enb_mac(mac: dict[str, Any]) -> str:
    """The eNB's MAC statistics of the UE (radio.oai_mac) in one phrase: MCS, SNR, throughput, BLER
    (its CQI is the state's ``cqi``)."""
    def num(key: str, fmt: str = "{}") -> str:
        return fmt.format(mac[key]) if mac.get(key) is not None else "-"

    out = f"eNB MAC: MCS DL {num('dl_mcs')} UL {num('ul_mcs')}"
    if mac.get("ul_snr_db") is not None:
        out += f", UL SNR {mac['ul_snr_db']} dB"
    if mac.get("dl_mbit_s") is not None:
        out += f", DL {num('dl_mbit_s', '{:.2f}')} UL {num('ul_mbit_s', '{:.2f}')} Mbit/s over {mac['window_s']:g} s"
    if mac.get("ul_bler_pct") is not None:
        out += f", UL BLER {mac['ul_bler_pct']:.1f} %"
    if mac.get("error"):
        out += f" (telnet: {mac['error']})"
    return out


@click.group()
def radio() -> None:
    """The radio link of the running testbed (UE–eNodeB)."""


@radio.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Print the backend's full state as JSON.")
def radio_status(as_json: bool) -> None:
    """SNR, CQI, rate and attach state of the UE (OAI: RRC state, and the eNB's MAC: MCS, CQI, throughput)."""
    st = _request("state")
    click.echo(json.dumps(st, indent=2) if as_json else format_state(st))


@click.group()
def coverage() -> None:
    """Take the UE's radio coverage away and give it back (radio link failure and re-attach follow)."""


@coverage.command()
@click.option("--for", "for_s", type=click.FloatRange(min=0.0, min_open=True), default=None, metavar="SECONDS",
              help="Restore coverage by itself after SECONDS.")
def lose(for_s: float | None) -> None:
    """Lose coverage now: no packets pass; RLF (detached) after N310 x 10 ms + T310 (1.2 s by default)."""
    st = _request("detach", **({"for_s": for_s} if for_s is not None else {}))
    click.echo(format_state(st))


@coverage.command()
def restore() -> None:
    """Restore coverage: the UE is back at once if RLF has not happened yet, else after the attach time."""
    click.echo(format_state(_request("attach")))

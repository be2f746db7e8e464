"""What OAI's eNB reports of its MAC for the UE: MCS each way, the UE's CQI, uplink SNR and BLER, throughput.

Both sources are OAI's own (lte-softmodem 2024.w12); nothing is modelled here:

* the eNB telnet server's ``measur show enbues`` (common/utils/telnetsrv/telnetsrv_enb_measurements.c,
  ``LTEMAC_UEMEASURE``): per UE the MCS the scheduler used last - ``dlsch_mcs1`` (cqi_to_mcs of the
  CQI the UE reported, openair2/LAYER2/MAC/pre_processor.c) and ``ulsch_mcs1`` (the last uplink
  grant's) -, the uplink SNR, and the MAC byte counters since the UE's context was made:
  ``total_pdu_bytes`` (downlink transport blocks scheduled) and ``total_pdu_bytes_rx`` (uplink MAC
  SDUs received). ``READER`` asks once a second from inside the eNB's node and replaces a file with
  the time and the answer (OAI's server takes one client at a time: it connects, asks, closes);
* ``MAC_stats.log``, which OAI's "mac stats" thread (openair2/LAYER2/MAC/main.c,
  ``lte_dump_mac_stats``) rewrites every second in the eNB's working directory: per UE in/out of
  sync, the downlink CQI it reported, PUSCH/PUCCH SNR and the uplink BLER.

``EnbMac`` keeps the byte counters of the last ``WINDOW_S`` seconds and turns them into Mbit/s
each way (MAC level: the downlink counts whole transport blocks, padding included; the uplink
counts the SDUs received). A counter that goes back (a new UE context after a restart) starts
the window again.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radio.oai_rlm import TELNET_CLIENT

MAC_STATS_FILE = "MAC_stats.log"  # written by OAI into the eNB's working directory
ENB_MAC_FILE = "enb-mac.txt"  # written by READER into its working directory
POLL_S = 1.0
WINDOW_S = 3.0  # throughput over the last seconds (three of OAI's one-second dumps)
STALE_S = 5.0  # a reading older than this is not shown as the MAC's state

#: Runs inside the eNB's node (argv: port, period, file): every period the answer to
#: ``measur show enbues``, with "time <unix time>" on its first line, replacing the file at once.
READER = TELNET_CLIENT + r"""
import os
port, period, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
while True:
    t = time.time()
    try:
        text = exchange(port, "measur show enbues", timeout=2.0)
    except OSError as exc:
        text = f"down: {exc}"
    with open(path + ".tmp", "w") as f:
        f.write(f"time {t:.3f}\n{text}")
    os.replace(path + ".tmp", path)
    time.sleep(max(0.0, period - (time.time() - t)))
"""

UE_BLOCK = re.compile(r"UE (\d+) Id (\d+) CCid (\d+)")
MEASURE = re.compile(r"([A-Za-z_0-9]+)\s*=\s*(\d+)")
#: measures OAI declares signed but prints through an unsigned cast of their width
SIGNED_32 = ("snr", "target_snr")
MAC_STATS_LINE = re.compile(
    r"MAC UE rnti (?P<rnti>[0-9a-fA-F]+) : (?P<sync>in synch|out of sync), PHR (?P<phr>-?\d+) "
    r"DLCQI (?P<dl_cqi>-?\d+) PUSCH (?P<pusch_snr>-?\d+) PUCCH (?P<pucch_snr>-?\d+) .*?"
    r"UL-stat rcv (?P<ul_rcv>\d+) err (?P<ul_err>\d+) bler (?P<ul_bler>[0-9.]+) .*?"
    r"total_bler (?P<total_bler>[0-9.]+) .*? mcs (?P<ul_mcs>-?\d+), .*? tbs (?P<ul_bytes>\d+) cnt (?P<ul_pdus>\d+) , "
    r"DL-stat tbs (?P<dl_bytes>\d+) cnt (?P<dl_pdus>\d+) rb (?P<dl_rbs>\d+)")


def parse_enbues(text: str) -> list[dict[str, int]]:
    """The answer to ``measur show enbues`` → one dict of measures per UE (in OAI's order)."""
    ues: list[dict[str, int]] = []
    for line in text.splitlines():
        m = UE_BLOCK.search(line)
        if m:
            ues.append({"ue_id": int(m.group(2)), "cc_id": int(m.group(3))})
            continue
        if not ues:
            continue
        for name, value in MEASURE.findall(line):
            v = int(value)
            if name in SIGNED_32 and v >= 2**31:
                v -= 2**32
            ues[-1][name] = v
    return ues


def parse_mac_stats(text: str) -> list[dict[str, Any]]:
    """OAI's MAC_stats.log → one dict per UE line (rnti as OAI prints it, in hex)."""
    out = []
    for m in MAC_STATS_LINE.finditer(text):
        d: dict[str, Any] = {k: int(v) for k, v in m.groupdict().items()
                             if k not in ("rnti", "sync", "ul_bler", "total_bler")}
        d.update(rnti=m["rnti"], in_sync=m["sync"] == "in synch", ul_bler_pct=float(m["ul_bler"]),
                 total_ul_bler_pct=float(m["total_bler"]))
        out.append(d)
    return out


def read_reader_file(path: Path) -> tuple[float, str] | None:
    """(time, answer) from READER's file; None when it is missing or not a reading."""
    try:
        first, _, rest = path.read_text(errors="replace").partition("\n")
    except OSError:
        return None
    if not first.startswith("time "):
        return None
    try:
        return float(first.split()[1]), rest
    except (IndexError, ValueError):
        return None


@dataclass
class EnbMac:
    """The eNB's MAC view of the (first) UE over time, from READER's file and MAC_stats.log."""

    reader_file: Path
    mac_stats_file: Path
    window_s: float = WINDOW_S
    samples: deque[tuple[float, int, int]] = field(default_factory=deque)  # (t, dl bytes, ul bytes)
    last: dict[str, Any] | None = None  # the latest telnet measures of the UE
    last_at: float | None = None
    error: str | None = None  # the telnet server did not answer the last time
    _seen: float | None = None
    _stats: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # the supervisor polls, status asks

    def poll(self) -> None:
        """Take READER's latest answer if it is new (a file rewritten once a second)."""
        with self._lock:
            self._poll()

    def _poll(self) -> None:
        got = read_reader_file(self.reader_file)
        if got is None or got[0] == self._seen:
            return
        self._seen = t = got[0]
        if got[1].startswith("down"):
            self.error = got[1].strip()[:200]
            return
        self.error = None
        ues = parse_enbues(got[1])
        if not ues:  # no UE context at the eNB (before the attach, after a loss)
            self.last, self.last_at = None, t
            self.samples.clear()
            return
        self.update(t, ues[0])

    def update(self, t: float, ue: dict[str, int]) -> None:
        dl, ul = ue.get("total_pdu_bytes", 0), ue.get("total_pdu_bytes_rx", 0)
        if self.samples and (dl < self.samples[-1][1] or ul < self.samples[-1][2]
                             or ue.get("crnti") != (self.last or {}).get("crnti")):
            self.samples.clear()  # a new context: its counters start again
        self.samples.append((t, dl, ul))
        while len(self.samples) > 2 and t - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        self.last, self.last_at = dict(ue), t

    def throughput(self) -> tuple[float, float, float] | None:
        """(downlink Mbit/s, uplink Mbit/s, seconds) over the window; None before two readings."""
        if len(self.samples) < 2:
            return None
        (t0, dl0, ul0), (t1, dl1, ul1) = self.samples[0], self.samples[-1]
        if t1 <= t0:
            return None
        return (dl1 - dl0) * 8 / (t1 - t0) / 1e6, (ul1 - ul0) * 8 / (t1 - t0) / 1e6, t1 - t0

    def _mac_stats(self, now: float) -> list[dict[str, Any]]:
        """OAI's MAC_stats.log if it is recent. OAI truncates it and then writes it: an empty file
        younger than half a second is that moment, and the previous reading stands."""
        try:
            st = self.mac_stats_file.stat()
            text = self.mac_stats_file.read_text(errors="replace")
        except OSError:
            return []
        if now - st.st_mtime > STALE_S:
            return []
        parsed = parse_mac_stats(text)
        if parsed or not (st.st_size == 0 and now - st.st_mtime < 0.5):
            self._stats = parsed
        return self._stats

    def state(self, now: float | None = None) -> dict[str, Any] | None:
        """What ``emulab radio status`` shows of the eNB's MAC (READER's latest answer taken first);
        None when there is nothing recent."""
        with self._lock:
            self._poll()
            return self._state(time.time() if now is None else now)

    def _state(self, now: float) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        ue = self.last if self.last_at is not None and now - self.last_at <= STALE_S else None
        if ue is not None:
            out.update(rnti=f"{ue.get('crnti', 0):x}", dl_mcs=ue.get("dlsch_mcs1"), ul_mcs=ue.get("ulsch_mcs1"),
                       ul_snr_db=ue.get("snr"), dl_bytes=ue.get("total_pdu_bytes"),
                       ul_bytes=ue.get("total_pdu_bytes_rx"), ul_errors=ue.get("num_errors_rx"),
                       at=round(self.last_at or now, 3))
            tp = self.throughput()
            if tp is not None:
                out.update(dl_mbit_s=round(tp[0], 3), ul_mbit_s=round(tp[1], 3), window_s=round(tp[2], 2))
        stats = self._mac_stats(now)
        if stats:
            s = stats[0]
            out.update(dl_cqi=s["dl_cqi"], in_sync=s["in_sync"], pusch_snr_db=s["pusch_snr"],
                       ul_bler_pct=s["ul_bler_pct"])
            out.setdefault("rnti", s["rnti"])
        if self.error:
            out["error"] = self.error
        return out or None

"""Print every SCTP DATA chunk seen on one interface as a JSON line (a helper of the interop tests).

Run inside the test's network namespace (``ip netns exec NS python sctp_sniff.py lo``): it opens an
AF_PACKET socket on the interface, prints ``{"ready": true}`` once it listens, then one line per DATA
chunk: ``{"t", "src", "sport", "dst", "dport", "ppid", "data"}`` (payload in hex). The tests decode
the payloads with ``rserpool.wire`` to check what went over the wire between RSPLIB and emulab
(ASAP Cookies and Cookie Echoes with RSPLIB's CalcApp cookie inside). Packets this host sent are
seen twice on ``lo`` (outgoing and incoming); only the incoming copy is printed.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
IPPROTO_SCTP = 132
CHUNK_DATA = 0


def main() -> None:
    iface = sys.argv[1] if len(sys.argv) > 1 else "lo"
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    print(json.dumps({"ready": True}), flush=True)
    while True:
        frame, addr = sock.recvfrom(1 << 17)
        if addr[2] == socket.PACKET_OUTGOING or len(frame) < 14 + 20:
            continue
        if struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != IPPROTO_SCTP or len(ip) < ihl + 12:
            continue
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        total = struct.unpack_from("!H", ip, 2)[0]
        sctp = ip[ihl:total]
        sport, dport = struct.unpack_from("!HH", sctp, 0)
        off = 12
        while off + 4 <= len(sctp):
            ctype, _flags, clen = struct.unpack_from("!BBH", sctp, off)
            if clen < 4:
                break
            if ctype == CHUNK_DATA and clen >= 16:
                ppid = struct.unpack_from("!I", sctp, off + 12)[0]
                print(json.dumps({"t": time.time(), "src": src, "sport": sport, "dst": dst, "dport": dport,
                                  "ppid": ppid, "data": sctp[off + 16:off + clen].hex()}), flush=True)
            off += (clen + 3) & ~3


if __name__ == "__main__":
    main()

"""Transport constants of ASAP, ENRP and CalcApp (IANA assignments and RSPLIB 3.4.4 defaults)."""

from __future__ import annotations

ASAP_PPID = 11  # RFC 5352 (RSPLIB's old value 0xFAEEB5D1)
ENRP_PPID = 12  # RFC 5353 (RSPLIB's old value 0xFAEEB5D2)
CALCAPP_PPID = 34  # RSPLIB src/calcapppackets.h
CALCAPP_PPID_LEGACY = 0x29097603  # Wireshark still maps this old value to CalcApp
FRACTAL_PPID = 32  # Fractal Generator Protocol (codec: rserpool.wire.fractal)
FRACTAL_PPID_LEGACY = 0x29097601  # RSPLIB's old value, still dissected by Wireshark

ASAP_PORT = 3863
ENRP_PORT = 9901

# RSPLIB's default multicast announce groups (seen in the reference capture).
ASAP_ANNOUNCE_ADDRESS = "239.0.0.50"
ASAP_ANNOUNCE_PORT = ASAP_PORT
ENRP_ANNOUNCE_ADDRESS = "239.0.0.51"
ENRP_ANNOUNCE_PORT = ENRP_PORT

PPID_TO_PROTOCOL: dict[int, str] = {
    ASAP_PPID: "asap",
    ENRP_PPID: "enrp",
    CALCAPP_PPID: "calcapp",
    CALCAPP_PPID_LEGACY: "calcapp",
    FRACTAL_PPID: "fractal",
    FRACTAL_PPID_LEGACY: "fractal",
}

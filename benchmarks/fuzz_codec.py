"""Fuzz the ASAP/ENRP/CalcApp decoders: mutations of valid messages (the RSPLIB reference capture
plus generated ones) and random bytes go through every decoder; anything escaping other than
CodecError fails the run. Prints counts and rate, ends with one JSON line.

    .venv/bin/python benchmarks/fuzz_codec.py [--quick] [--inputs N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import time
import traceback
import warnings
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "rserpool"))

from rserpool import wire  # noqa: E402
from rserpool.pcapfile import read_payloads  # noqa: E402

CAPTURE = str(Path(__file__).resolve().parents[1] / "tests" / "data" / "captures" / "rsplib-3.4.4-calcapp-plu-enrp.pcap")
DECODERS = (wire.decode_asap, wire.decode_enrp, wire.decode_calcapp)


def seeds(generated: int) -> list[bytes]:
    out: list[bytes] = []
    if os.path.exists(CAPTURE):
        out.extend({p.data for p in read_payloads(CAPTURE) if p.protocol})
    try:
        import wire_strategies as S
        from hypothesis.errors import NonInteractiveExampleWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonInteractiveExampleWarning)
            for _ in range(generated):
                out.append(S.any_message.example().encode())
    except ImportError as exc:  # hypothesis missing: capture seeds only
        print(f"note: no generated seeds ({exc})", file=sys.stderr)
    return out


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        n = len(buf)
        if op == 0 and n:  # flip a byte
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 1 and n:  # truncate
            del buf[rng.randrange(n):]
        elif op == 2 and n >= 6:  # rewrite a 16-bit length-like field at a 4-aligned offset + 2
            off = 2 + 4 * rng.randrange((n - 2) // 4)
            if off + 2 <= n:
                struct.pack_into("!H", buf, off, rng.choice([0, 1, 3, 4, 5, 7, 8, 0xFFFF, rng.randrange(65536)]))
        elif op == 3:  # insert random bytes
            i = rng.randrange(n + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and n > 4:  # delete a slice
            i = rng.randrange(n)
            del buf[i:i + rng.randint(1, 8)]
        elif op == 5 and n >= 4:  # fix the message length so deeper parsing is reached
            struct.pack_into("!H", buf, 2, n & 0xFFFF)
        elif op == 6 and n:  # change the message type
            buf[0] = rng.randrange(16)
    if rng.random() < 0.5 and len(buf) >= 4:
        struct.pack_into("!H", buf, 2, len(buf) & 0xFFFF)
    return bytes(buf)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 inputs instead of 120,000")
    ap.add_argument("--inputs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    total = args.inputs or (20_000 if args.quick else 120_000)
    rng = random.Random(args.seed)
    pool = seeds(100 if args.quick else 400)
    print(f"{len(pool)} seed messages, {total} inputs x {len(DECODERS)} decoders", file=sys.stderr)
    codec_errors = decoded_ok = escapes = 0
    t0 = time.perf_counter()
    for i in range(total):
        r = rng.random()
        if r < 0.1:
            data = rng.randbytes(rng.randint(0, 64))
        elif r < 0.15:
            data = rng.choice(pool)  # unmodified seeds must decode
        else:
            data = mutate(rng, rng.choice(pool))
        for dec in DECODERS:
            try:
                dec(data)
                decoded_ok += 1
            except wire.CodecError:
                codec_errors += 1
            except Exception:  # noqa: BLE001 - exactly what the fuzzer looks for
                escapes += 1
                if escapes <= 5:
                    print(f"ESCAPE at input {i} in {dec.__name__}: {data.hex()}", file=sys.stderr)
                    traceback.print_exc()
    elapsed = time.perf_counter() - t0
    rate = total / elapsed if elapsed else 0.0
    print(f"inputs {total}, decode calls {total * len(DECODERS)}, CodecError {codec_errors}, decoded {decoded_ok}, "
          f"escapes {escapes}, {elapsed:.1f} s, {rate:,.0f} inputs/s", file=sys.stderr)
    print(json.dumps({"inputs": total, "codec_errors": codec_errors, "decoded_ok": decoded_ok, "escapes": escapes,
                      "inputs_per_s": round(rate)}))
    return 1 if escapes else 0


if __name__ == "__main__":
    sys.exit(main())

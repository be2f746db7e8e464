"""``python -m emulab.dashboard``: the dashboard as its own process (what `emulab start --dashboard` runs)."""

from __future__ import annotations

import argparse
import sys

from emulab.dashboard.server import serve


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m emulab.dashboard")
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8050)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--no-fractal", action="store_true")
    args = ap.parse_args()
    serve(bind=args.bind, port=args.port, interval=args.interval, fractal_autostart=not args.no_fractal,
          announce=lambda m: print(f"emulab: {m}", flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

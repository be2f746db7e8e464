"""One coverage-guided fuzzing process (atheris + libFuzzer) for one target, or a corpus replay.

    PYTHONPATH=.:tests .venv/bin/python -m fuzz.atheris_child fuzz TARGET --escapes DIR -- [libFuzzer flags] DIRS
    PYTHONPATH=.:tests .venv/bin/python -m fuzz.atheris_child replay TARGET [PATHS]   # prints one JSON line

`fuzz` instruments the target's modules (atheris.instrument_imports) and hands them to libFuzzer, which
mutates the corpus guided by the edges each input reaches (flags: targets.libfuzzer_flags first, i.e.
limits, dictionary, value profile; the caller's after them win). libFuzzer ends the process itself
(exit()), so it runs in a child; it prints its own statistics ("cov:" = instrumented edges reached),
which the callers parse. An escape is not a crash here: the input goes to DIR/escape-<sha1> with its traceback
in DIR/escape-<sha1>.txt and one line in DIR/escapes.log, and fuzzing goes on, so that a long run
counts them all; `--raise` instead lets it crash libFuzzer (for -minimize_crash=1 and crash files).

`replay` runs files (default: the committed corpus) through the target under a line tracer and
reports inputs, escapes and the source lines of rserpool/ they reached.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import types
from pathlib import Path

from fuzz.targets import ROOT, TARGETS, Target, corpus_files, libfuzzer_flags, run_one


def _reexecs(libfuzzer_args: list[str]) -> bool:
    # these modes run argv[0] again as a program for their inner processes
    return any(a.split("=")[0] in ("-merge", "-set_cover_merge", "-minimize_crash", "-fork", "-jobs")
               for a in libfuzzer_args)


def _reexec_wrapper(target: Target, escapes: Path, raise_escapes: bool, guided: bool) -> str:
    """An executable that libFuzzer can run as argv[0]: this command again, for the same target. It
    lives in the caller's escapes directory (libFuzzer exit()s, so no clean-up of ours would run)."""
    escapes.mkdir(parents=True, exist_ok=True)
    wrapper = escapes / ".fuzz-target"
    args = [sys.executable, "-m", "fuzz.atheris_child", "fuzz", target.name, "--escapes", str(escapes),
            *(["--raise"] if raise_escapes else []), *([] if guided else ["--unguided"])]
    pythonpath = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    wrapper.write_text(f"#!/bin/sh\ncd {shlex.quote(str(ROOT))} && PYTHONPATH={shlex.quote(pythonpath)} "
                       f"exec {shlex.join(args)} -- \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def fuzz(target: Target, escapes: Path, libfuzzer_args: list[str], raise_escapes: bool, guided: bool) -> None:
    import atheris  # only this command needs it: replay and the corpus tests run without

    with atheris.instrument_imports(include=list(target.instrument)):
        decoders, allowed = target.load()
    escapes.mkdir(parents=True, exist_ok=True)
    log = escapes / "escapes.log"

    def one_input(data: bytes) -> None:
        esc = run_one(decoders, allowed, data)
        if esc is None:
            return
        (escapes / f"escape-{esc.digest}").write_bytes(data)
        (escapes / f"escape-{esc.digest}.txt").write_text(f"{esc.decoder}\n{esc.error}")
        with log.open("a") as fh:
            fh.write(f"{esc.digest} {esc.decoder} {esc.error.strip().splitlines()[-1]}\n")
        if raise_escapes:
            raise RuntimeError(f"escape from {esc.decoder}:\n{esc.error}")

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        out = atheris.Mutate(data, max_size)
        if seed & 1 and 4 <= len(out) <= 0xFFFF:
            out = out[:2] + len(out).to_bytes(2, "big") + out[4:]
        return out

    mutator = mutate if target.length_at_2 else None
    argv0 = _reexec_wrapper(target, escapes, raise_escapes, guided) if _reexecs(libfuzzer_args) else sys.argv[0]
    atheris.Setup([argv0, *libfuzzer_flags(target, guided), *libfuzzer_args], one_input,
                  custom_mutator=mutator)
    atheris.Fuzz()


def replay_lines(target: Target, files: list[Path]) -> dict:
    """Replay `files` under a line tracer: counts, escapes, lines of rserpool/ reached.

    `lines_in_functions_reached` counts the executable lines of every function (code object) of
    rserpool/ that some input entered: the share of them covered says how deep inside the code the
    fuzzer got, without counting encoders and module-level code that no decoder runs.
    """
    decoders, allowed = target.load()
    src = str(ROOT / "rserpool")
    hit: set[tuple[str, int]] = set()
    entered: set[types.CodeType] = set()

    def local(frame: types.FrameType, event: str, _arg: object):  # noqa: ANN202 - sys.settrace protocol
        if event == "line":
            hit.add((frame.f_code.co_filename, frame.f_lineno))
        return local

    def tracer(frame: types.FrameType, _event: str, _arg: object):  # noqa: ANN202
        if frame.f_code.co_filename.startswith(src):
            entered.add(frame.f_code)
            hit.add((frame.f_code.co_filename, frame.f_lineno))
            return local
        return None

    escapes = []
    sys.settrace(tracer)
    try:
        for path in files:
            esc = run_one(decoders, allowed, path.read_bytes())
            if esc is not None:
                escapes.append({"file": str(path), "decoder": esc.decoder,
                                "error": esc.error.strip().splitlines()[-1]})
    finally:
        sys.settrace(None)
    reachable = {(c.co_filename, ln) for c in entered for _s, _e, ln in c.co_lines() if ln is not None}
    files_reached = sorted({f for f, _ in reachable})
    by_file = {str(Path(f).relative_to(ROOT)): [sum(1 for g, _ in hit if g == f), sum(1 for g, _ in reachable if g == f)]
               for f in files_reached}
    return {"target": target.name, "inputs": len(files), "escapes": escapes, "lines_covered": len(hit & reachable),
            "lines_in_functions_reached": len(reachable), "lines_by_file": by_file}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fuzz")
    f.add_argument("target", choices=sorted(TARGETS))
    f.add_argument("--escapes", type=Path, required=True, help="where escaping inputs are written")
    f.add_argument("--raise", dest="raise_escapes", action="store_true", help="crash on the first escape")
    f.add_argument("--unguided", action="store_true", help="no dictionary, no value profile (to compare)")
    r = sub.add_parser("replay")
    r.add_argument("target", choices=sorted(TARGETS))
    r.add_argument("paths", nargs="*", type=Path, help="files or directories (default: the committed corpus)")
    argv = sys.argv[1:] if argv is None else argv
    # everything after "--" is libFuzzer's: its flags (-runs=N ...) and corpus directories
    libfuzzer = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    target = TARGETS[args.target]
    if args.command == "fuzz":
        fuzz(target, args.escapes, libfuzzer, args.raise_escapes, not args.unguided)
        return 0  # not reached: libFuzzer exits the process
    dirs = [p for p in args.paths if p.is_dir()]
    files = [p for p in args.paths if p.is_file()]
    if not args.paths:
        files = corpus_files(target)
    else:
        files += [p for d in dirs for p in sorted(d.iterdir()) if p.is_file() and p.name != "README.md"]
    report = replay_lines(target, files)
    print(json.dumps(report))
    return 1 if report["escapes"] else 0


if __name__ == "__main__":
    sys.exit(main())

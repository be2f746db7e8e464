"""The fuzz targets: which decoder each one feeds, which error it may raise, where its corpus lives.

Shared by the atheris child (tests/fuzz/atheris_child.py), the corpus tests and benchmarks/fuzz_codec.py.
An *escape* is anything a decoder raises other than its own documented error: CodecError for the wire
codecs (rserpool/wire/errors.py), CaptureError for the capture reader (rserpool/pcapfile.py). The
decoders are imported lazily, by `Target.load()`, so that the atheris child can import them inside
`atheris.instrument_imports()` and get their bytecode instrumented for coverage.
"""

from __future__ import annotations

import hashlib
import importlib
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "fuzz-corpus"
CAPTURE = ROOT / "tests" / "data" / "captures" / "rsplib-3.4.4-calcapp-plu-enrp.pcap"

Decoder = Callable[[bytes], object]


@dataclass(frozen=True)
class Target:
    """One fuzz target: `functions` ("module:function") all get every input."""

    name: str
    functions: tuple[str, ...]
    error: str  # "module:ExceptionClass", the one exception the functions may raise
    instrument: tuple[str, ...]  # module prefixes whose bytecode atheris instruments for coverage
    # The message carries its own total length as a big-endian u16 at offset 2 (ASAP, ENRP, CalcApp,
    # FGP): the fuzzer's mutator rewrites it to the input's length half of the time, because nearly
    # every insertion or deletion would otherwise stop at the length check and never reach the parameters.
    length_at_2: bool = True

    @property
    def corpus(self) -> Path:
        return CORPUS / self.name

    def available(self) -> bool:
        """False when a decoder module does not exist (yet): the target is then left out, and said so."""
        try:
            for spec in self.functions:
                importlib.import_module(spec.split(":")[0])
        except ModuleNotFoundError:
            return False
        return True

    def load(self) -> tuple[list[Decoder], type[BaseException]]:
        decoders = [getattr(importlib.import_module(m), f) for m, f in (s.split(":") for s in self.functions)]
        mod, cls = self.error.split(":")
        return decoders, getattr(importlib.import_module(mod), cls)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("asap", ("rserpool.wire.asap:decode_asap",), "rserpool.wire.errors:CodecError", ("rserpool.wire",)),
    Target("enrp", ("rserpool.wire.enrp:decode_enrp",), "rserpool.wire.errors:CodecError", ("rserpool.wire",)),
    Target("calcapp", ("rserpool.wire.calcapp:decode_calcapp",), "rserpool.wire.errors:CodecError",
           ("rserpool.wire",)),
    # the Fractal Generator messages and the FGP cookie (carried in ASAP Cookie parameters)
    Target("fgp", ("rserpool.wire.fractal:decode_fgp", "rserpool.wire.fractal:decode_cookie"),
           "rserpool.wire.errors:CodecError", ("rserpool.wire",)),
    Target("pcap", ("rserpool.pcapfile:parse_capture",), "rserpool.pcapfile:CaptureError",
           ("rserpool.pcapfile", "rserpool.wire"), length_at_2=False),
)}


# per-input limits: a hang or a memory blow-up is a failure too (libFuzzer stops with a timeout-/oom- file)
LIMITS = ("-max_len=4096", "-timeout=10", "-rss_limit_mb=2048")


def libfuzzer_flags(target: Target, guided: bool = True) -> list[str]:
    """The flags every run of `target` uses: the limits, the committed dictionary of the protocol's type
    codes (tests/data/fuzz-corpus/TARGET.dict) and comparison-operand (value) profiling."""
    flags = list(LIMITS)
    if guided:
        d = CORPUS / f"{target.name}.dict"
        flags += [f"-dict={d}"] if d.exists() else []
        flags.append("-use_value_profile=1")
    return flags


def available_targets() -> list[Target]:
    return [t for t in TARGETS.values() if t.available()]


@dataclass(frozen=True)
class Escape:
    """An input that made a decoder raise something other than its own error."""

    data: bytes
    decoder: str
    error: str  # the formatted traceback

    @property
    def digest(self) -> str:
        return hashlib.sha1(self.data).hexdigest()


def run_one(decoders: list[Decoder], allowed: type[BaseException], data: bytes) -> Escape | None:
    """Feed `data` to every decoder; the first escape, or None."""
    for dec in decoders:
        try:
            dec(data)
        except allowed:
            pass
        except Exception:  # noqa: BLE001 - exactly what the fuzzer looks for
            return Escape(data, f"{dec.__module__}.{dec.__name__}", traceback.format_exc())
    return None


def corpus_files(target: Target, extra: Iterable[Path] = ()) -> list[Path]:
    """Every file of the target's committed corpus (and of the `extra` directories), sorted."""
    dirs = [target.corpus, *extra]
    return sorted(p for d in dirs if d.is_dir() for p in d.iterdir() if p.is_file() and p.name != "README.md")


def replay(target: Target, files: Iterable[Path]) -> tuple[int, list[tuple[Path, Escape]]]:
    """Run every file through the target's decoders: (inputs run, escapes with their file)."""
    decoders, allowed = target.load()
    n = 0
    escapes: list[tuple[Path, Escape]] = []
    for path in files:
        n += 1
        esc = run_one(decoders, allowed, path.read_bytes())
        if esc is not None:
            escapes.append((path, esc))
    return n, escapes

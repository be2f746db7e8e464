"""The committed fuzz corpus: every file replays through its decoder without an escape, and the seed
files are exactly what tests/fuzz/seeds.py cuts out of the RSPLIB reference capture."""

from __future__ import annotations

import pytest
from fuzz import seeds
from fuzz.targets import CORPUS, TARGETS, available_targets, corpus_files, replay, run_one

from rserpool import wire
from rserpool.wire import CodecError

AVAILABLE = [t.name for t in available_targets()]
REGENERATE = "stale: run `PYTHONPATH=.:tests .venv/bin/python -m fuzz.seeds` and commit tests/data/fuzz-corpus"


@pytest.mark.parametrize("name", AVAILABLE)
def test_corpus_replays_without_escape(name: str) -> None:
    target = TARGETS[name]
    files = corpus_files(target)
    assert any(f.name.startswith("seed-") for f in files), f"no seed files in {target.corpus}"
    n, escapes = replay(target, files)
    assert n == len(files)
    assert not escapes, "\n\n".join(f"{path}: {esc.decoder}\n{esc.error}" for path, esc in escapes)


def test_seeds_are_the_capture_cut_as_seeds_py_does() -> None:
    expected = seeds.all_seeds()
    assert sorted(expected) == sorted(AVAILABLE)
    for name, files in expected.items():
        on_disk = {p.name: p.read_bytes() for p in (CORPUS / name).glob("seed-*")}
        assert on_disk == files, f"{CORPUS / name}: {REGENERATE}"
    for name, tokens in seeds.dictionaries().items():  # the protocols' type codes: they follow the enums
        assert (CORPUS / f"{name}.dict").read_text() == seeds.dictionary_text(tokens), f"{name}.dict: {REGENERATE}"


def test_codec_seeds_cover_every_message_kind_of_the_capture() -> None:
    names = {p: {wire.decode(p, d).NAME for d in files.values()} for p, files in seeds.codec_seeds().items()}
    # what tests/data/captures/README.md lists for the reference capture
    assert names["asap"] >= {"ASAP Registration", "ASAP Registration Response", "ASAP Deregistration",
                             "ASAP Handle Resolution", "ASAP Handle Resolution Response", "ASAP Endpoint Keep-Alive",
                             "ASAP Endpoint Keep-Alive Ack", "ASAP Server Announce"}
    assert names["enrp"] >= {"ENRP Presence", "ENRP Handle Update", "ENRP List Request", "ENRP List Response",
                             "ENRP Handle Table Request"}
    assert names["calcapp"] >= {"CalcApp Request", "CalcApp Accept", "CalcApp Complete"}


def test_corpus_stays_small() -> None:
    size = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert size < 2_000_000, f"{CORPUS} holds {size} bytes: minimise it (libFuzzer -merge=1 into an empty dir)"


def test_an_escape_is_anything_but_the_decoders_own_error() -> None:
    def decoder(data: bytes) -> None:
        if data == b"codec":
            raise CodecError("malformed")
        if data == b"index":
            raise IndexError("a decoder bug")

    assert run_one([decoder], CodecError, b"codec") is None
    assert run_one([decoder], CodecError, b"fine") is None
    esc = run_one([decoder], CodecError, b"index")
    assert esc is not None and "IndexError: a decoder bug" in esc.error and esc.data == b"index"

"""`make oai` (scripts/build_oai.py) and the install finder (radio/oai_install.py).

The unit tests (no marker) check the cache key, finding and verifying the offline sources, the
stub for the missing NR-only source and the finder on fake prefixes. The `oai` tests check the
real build: they skip without one, and fail instead when EMULAB_REQUIRE_OAI=1 (CI builds OAI first).
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from radio import oai_install

from helpers.oai_build import need_oai

REPO = Path(__file__).resolve().parents[2]


def _load_build_script():
    spec = importlib.util.spec_from_file_location("build_oai", REPO / "scripts" / "build_oai.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["build_oai"] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


build_oai = _load_build_script()


# --- cache key and sources (no OAI needed) ---------------------------------------------------


def test_cache_key_is_stable_and_covers_sources_flags_and_targets():
    flags = build_oai.build_flags("x86-64-v3")
    key = build_oai.cache_key(build_oai.PINS, flags, build_oai.TARGETS)
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert key == build_oai.cache_key(build_oai.PINS, build_oai.build_flags("x86-64-v3"),
                                      tuple(reversed(build_oai.TARGETS)))
    assert key != build_oai.cache_key(build_oai.PINS, build_oai.build_flags("x86-64-v4"), build_oai.TARGETS)
    other_pin = build_oai.Pin("simde", "u", "0" * 40, "simde.tar.xz")
    assert key != build_oai.cache_key(build_oai.PINS[:2] + (other_pin,), flags, build_oai.TARGETS)
    assert key != build_oai.cache_key(build_oai.PINS, flags, build_oai.TARGETS + ("oai_usrpdevif",))


def test_pins_are_the_documented_commits_and_flags_are_portable():
    pins = {p.name: p for p in build_oai.PINS}
    assert pins["openairinterface5g"].commit == "883724b977e8ae2c0b8798f3c317188ef55313f6"
    assert pins["openairinterface5g"].tag == "2024.w12"
    assert pins["asn1c"].commit == "9100393b1901d10853a340c54eaeb11bf382a6b8"
    assert pins["simde"].commit == "389f360a66d4a3bec62b7d71ad8be877487809ba"
    assert "native" not in json.dumps(build_oai.build_flags(build_oai.DEFAULT_MARCH))


def test_sources_dir_override_beside_checkout_and_none(tmp_path):
    repo = tmp_path / "main"
    repo.mkdir()
    assert build_oai.find_sources_dir({}, repo) is None
    beside = tmp_path / "shared" / "third-party"
    beside.mkdir(parents=True)
    (beside / "SHA256SUMS").write_text("")
    assert build_oai.find_sources_dir({}, repo) == beside.resolve()
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "SHA256SUMS").write_text("")
    assert build_oai.find_sources_dir({"OAI_SOURCES": str(other)}, repo) == other.resolve()
    with pytest.raises(SystemExit, match="no SHA256SUMS"):
        build_oai.find_sources_dir({"OAI_SOURCES": str(tmp_path / "nope")}, repo)


def _split_tarball(tmp_path: Path, name: str, parts: int) -> tuple[Path, str]:
    """A tar.xz with one top directory, stored as `parts` pieces; returns (dir, sha256)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:
        for path, data in (("top/a.txt", b"alpha\n"), ("top/sub/b.txt", b"beta" * 5000)):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    d = tmp_path / "third-party"
    d.mkdir()
    step = len(blob) // parts + 1
    for i in range(parts):
        (d / f"{name}.part{i:02d}").write_bytes(blob[i * step:(i + 1) * step])
    return d, hashlib.sha256(blob).hexdigest()


def test_split_tarball_is_verified_and_unpacked(tmp_path):
    d, digest = _split_tarball(tmp_path, "x.tar.xz", 3)
    (d / "SHA256SUMS").write_text(f"{digest}  x.tar.xz\n")
    pin = build_oai.Pin("x", "url", "c" * 40, "x.tar.xz", parts=3)
    sums = build_oai.read_sha256sums(d / "SHA256SUMS")
    origin = build_oai.fetch_tarball(pin, d, sums, tmp_path / "src" / "x")
    assert origin == {"origin": "tarball", "tarball": "x.tar.xz", "sha256": digest, "commit": "c" * 40}
    assert (tmp_path / "src" / "x" / "a.txt").read_text() == "alpha\n"
    assert (tmp_path / "src" / "x" / "sub" / "b.txt").stat().st_size == 20000


def test_tarball_with_wrong_checksum_is_refused(tmp_path):
    d, _ = _split_tarball(tmp_path, "x.tar.xz", 2)
    pin = build_oai.Pin("x", "url", "c" * 40, "x.tar.xz", parts=2)
    with pytest.raises(SystemExit, match="does not match"):
        build_oai.fetch_tarball(pin, d, {"x.tar.xz": "0" * 64}, tmp_path / "src" / "x")
    assert not (tmp_path / "src" / "x").exists()
    with pytest.raises(SystemExit, match="not listed"):
        build_oai.fetch_tarball(pin, d, {}, tmp_path / "src" / "x")


def test_the_shared_tarballs_match_their_sums():
    d = build_oai.find_sources_dir({})
    if d is None:
        pytest.skip("no shared/third-party beside this checkout")
    sums = build_oai.read_sha256sums(d / "SHA256SUMS")
    for pin in build_oai.PINS:
        assert build_oai.tarball_stream_sha256(d, pin) == sums[pin.tarball], pin.tarball


def test_online_path_clones_and_checks_out_the_pinned_commit(tmp_path, monkeypatch):
    """The git path against a local repository: the pinned (older) commit, not the branch head."""
    for k, v in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                 "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": "/dev/null"}.items():
        monkeypatch.setenv(k, v)
    upstream = tmp_path / "upstream"
    upstream.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(upstream), *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    (upstream / "f.txt").write_text("pinned\n")
    git("add", "f.txt")
    git("commit", "-q", "-m", "pinned")
    pinned = git("rev-parse", "HEAD")
    (upstream / "f.txt").write_text("newer\n")
    git("commit", "-q", "-am", "newer")
    pin = build_oai.Pin("x", str(upstream), pinned, "x.tar.xz")
    assert build_oai.online(pin)
    origin = build_oai.fetch_git(pin, tmp_path / "src" / "x")
    assert origin == {"origin": "git", "url": str(upstream), "commit": pinned}
    assert (tmp_path / "src" / "x" / "f.txt").read_text() == "pinned\n"
    assert not build_oai.online(build_oai.Pin("y", str(tmp_path / "nothing"), pinned, "y.tar.xz"))


def test_kronecker_stub_only_when_missing(tmp_path):
    f = tmp_path / build_oai.KRONECKER
    f.parent.mkdir(parents=True)
    assert build_oai.stub_missing_kronecker(tmp_path) is True
    text = f.read_text()
    assert "no 4G target links it" in text and "nr_polar_kronecker_power_matrices(" not in text
    f.write_text("/* real table */\n")
    assert build_oai.stub_missing_kronecker(tmp_path) is False
    assert f.read_text() == "/* real table */\n"


def test_portable_march_include(tmp_path):
    inc = tmp_path / "p.cmake"
    build_oai.portable_march_cmake(inc, "x86-64-v3")
    assert "add_compile_options(-march=x86-64-v3 -mpclmul -mtune=generic)" in inc.read_text()


# --- the finder on fake prefixes -------------------------------------------------------------


def _fake_prefix(root: Path, key: str, usrp: bool) -> Path:
    prefix = root / key
    (prefix / "bin").mkdir(parents=True)
    for b in oai_install.BINARIES:
        exe = prefix / "bin" / b
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    drv = prefix / "build" / "liboai_usrpdevif.so"
    drv.parent.mkdir()
    drv.write_bytes(b"")
    info = {"oai": {"tag": "2024.w12", "commit": "883724b977e8ae2c0b8798f3c317188ef55313f6"},
            "flags": {"march": "x86-64-v3"}, "usrp_driver": {"built": usrp, "path": str(drv)}}
    (prefix / "BUILD-INFO.json").write_text(json.dumps(info))
    return prefix


def test_finder_reads_current_and_env_override(tmp_path):
    root = tmp_path / "root"
    prefix = _fake_prefix(root, "k1", usrp=True)
    (root / "current").symlink_to("k1")
    env = {"EMULAB_OAI_ROOT": str(root), "PATH": ""}
    inst = oai_install.find_install(env)
    assert inst is not None and inst.prefix == prefix.resolve()
    assert inst.version == "2024.w12 (883724b977e8)" and inst.usrp_driver and inst.march == "x86-64-v3"
    assert oai_install.binary_path("lte-softmodem", env) == str(root / "current" / "bin" / "lte-softmodem")
    other = _fake_prefix(tmp_path / "other", "k2", usrp=False)
    inst2 = oai_install.find_install({**env, "EMULAB_OAI_PREFIX": str(other)})
    assert inst2 is not None and inst2.prefix == other.resolve() and not inst2.usrp_driver


def test_finder_incomplete_build_path_fallback_and_none(tmp_path):
    root = tmp_path / "root"
    prefix = _fake_prefix(root, "k1", usrp=False)
    (root / "current").symlink_to("k1")
    (prefix / "BUILD-INFO.json").unlink()  # an unfinished build is not an install
    assert oai_install.find_install({"EMULAB_OAI_ROOT": str(root), "PATH": ""}) is None
    bindir = tmp_path / "path"
    bindir.mkdir()
    for b in oai_install.BINARIES:
        (bindir / b).write_text("#!/bin/sh\n")
        (bindir / b).chmod(0o755)
    inst = oai_install.find_install({"EMULAB_OAI_ROOT": str(root), "PATH": str(bindir)})
    assert inst is not None and inst.prefix is None and inst.version.startswith("unknown")
    assert inst.binary("lte-uesoftmodem") == bindir / "lte-uesoftmodem"


# --- the real build (make oai) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def install() -> oai_install.OaiInstall:
    return need_oai(built_here=True)


def _modules(inst: oai_install.OaiInstall) -> list[Path]:
    build = Path(inst.info["build_dir"])
    names = ["libparams_libconfig.so", "libcoding.so", "librfsimulator.so", "libdfts.so",
             "libtelnetsrv.so", "libtelnetsrv_enb.so"]
    return [build / n for n in names]


@pytest.mark.oai
def test_build_info_records_pins_and_portable_flags(install):
    info = install.info
    pins = {p.name: p.commit for p in build_oai.PINS}
    assert info["oai"] == {"tag": "2024.w12", "commit": pins["openairinterface5g"]}
    assert {name: src["commit"] for name, src in info["sources"].items()} == pins
    assert "native" not in json.dumps(info["flags"])
    # OAI's own -march=native is still on the command line; the baseline must come after it.
    marches = re.findall(r"-march=(\S+)", info["compile_command_sample"])
    assert marches and marches[-1] == info["flags"]["march"] != "native", marches
    assert info["key"] == Path(info["prefix"]).name


@pytest.mark.oai
def test_binaries_and_modules_are_elf_with_resolved_libraries(install):
    for path in [*install.binaries.values(), *_modules(install)]:
        real = path.resolve()
        assert real.read_bytes()[:4] == b"\x7fELF", path
        ldd = subprocess.run(["ldd", str(real)], capture_output=True, text=True, timeout=60)
        assert ldd.returncode == 0 and "not found" not in ldd.stdout, ldd.stdout
    for b in install.binaries.values():
        assert os.access(b, os.X_OK)


@pytest.mark.oai
def test_usrp_driver_resolves_uhd_when_built(install):
    drv = install.info["usrp_driver"]
    if not drv["built"]:
        pytest.fail(f"USRP driver not built: {drv['error']}")
    ldd = subprocess.run(["ldd", drv["path"]], capture_output=True, text=True, timeout=60).stdout
    assert "libuhd" in ldd and "not found" not in ldd, ldd
    assert install.usrp_driver


@pytest.mark.oai
def test_4g_binaries_do_not_use_the_stubbed_nr_source(install):
    for b in install.binaries.values():
        nm = subprocess.run(["nm", str(b.resolve())], capture_output=True, text=True, timeout=120)
        assert nm.returncode == 0
        assert "nr_polar_kronecker_power_matrices" not in nm.stdout, b


@pytest.mark.oai
@pytest.mark.slow
def test_binaries_have_no_avx512_instructions(install):
    """The x86-64-v3 baseline has no AVX-512: no zmm registers in the softmodems' or modules' code
    (this build host has AVX-512, so OAI's -march=native / autodetection would have used them)."""
    for b in [*install.binaries.values(), *_modules(install)]:
        path = shlex.quote(str(b.resolve()))
        cmd = f"set -o pipefail; objdump -d --no-show-raw-insn -j .text {path} | grep -c '%[xy]mm\\|%zmm'"
        avx = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=280)
        assert avx.returncode == 0 and int(avx.stdout) > 0, f"{b}: objdump found no SIMD code at all"
        cmd = f"objdump -d --no-show-raw-insn -j .text {path} | grep -c -m1 '%zmm'"
        out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=280)
        assert out.stdout.strip() == "0", f"{b}: AVX-512 instructions found"


@pytest.mark.oai
def test_softmodems_start_and_print_their_options(install, tmp_path):
    """Each softmodem loads its config module through the RUNPATH and prints its options.

    The eNB exits after the help once its configuration (OAI's own rfsim/noS1 example) is read;
    the UE prints the help, then goes on and aborts at NAS init without SIM data: its exit code
    is not checked, only that it ran and knew its options. cwd is a temporary directory.
    """
    conf = (Path(install.info["prefix"]) / "src" / "openairinterface5g" / "ci-scripts" / "conf_files"
            / "enb.band7.25prb.rfsim.nos1.conf")
    runs = {"lte-softmodem": ["-O", str(conf), "--help"], "lte-uesoftmodem": ["--help"]}
    for name, args in runs.items():
        out = subprocess.run([str(install.binary(name)), *args], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL, cwd=tmp_path)
        text = out.stdout + out.stderr
        assert "--rfsim: Run in rf simulator mode" in text, text[-2000:]
        assert "couldn't be loaded" not in text, text[-2000:]

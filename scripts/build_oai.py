#!/usr/bin/env python3
"""Builds OpenAirInterface's 4G softmodems from pinned sources into a cached prefix (`make oai`).

What it builds: `lte-softmodem`, `lte-uesoftmodem` and the modules they load at run time
(`params_libconfig`, `coding`, `rfsimulator`, `dfts`, `telnetsrv`, `telnetsrv_enb`), plus OAI's
USRP driver `oai_usrpdevif` against Debian's libuhd-dev for the `b210` backend (a failure of that
driver alone is recorded in BUILD-INFO.json and does not fail the build).

Sources, all at pinned commits: upstream git when the machine is online, otherwise the tarballs
of a third-party directory (checked against its SHA256SUMS). That directory is OAI_SOURCES=DIR
when given, else `shared/third-party` beside the checkout (`<repo>/../shared/third-party`).

Where it goes: OAI_PREFIX_ROOT (default /opt/emulab-oai) / <key>, where <key> hashes the pinned
commits, the compiler flags and the recipe version. The prefix lies outside the checkout so that
every clone on the machine (CI runs in a fresh one) reuses the same build, and it keeps the build
directory itself because OAI's binaries find their modules through a RUNPATH into it. A finished
build writes BUILD-INFO.json last; `<root>/current` then points at it, which is where
radio/oai_install.py looks. A second run with the same key returns at once.

Only the Python standard library is used: this runs before (and independently of) the venv.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

# Bump when the way the tree is built changes (not the pins or flags: those are in the key).
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Pin:
    """One upstream source at one commit, and its offline tarball."""

    name: str
    url: str
    commit: str
    tarball: str
    parts: int = 0  # >0: stored as tarball.part00 .. part{parts-1}, joined in order
    tag: str = ""


PINS = (
    # 2024.w12: the last OAI line that still has the 4G softmodems and the 4G RF simulator.
    Pin("openairinterface5g", "https://gitlab.eurecom.fr/oai/openairinterface5g.git",
        "883724b977e8ae2c0b8798f3c317188ef55313f6", "openairinterface5g-2024.w12.tar.xz",
        parts=5, tag="2024.w12"),
    # OAI's CMake needs -gen-APER and -no-gen-JER, which only this asn1c fork has.
    Pin("asn1c", "https://github.com/mouse07410/asn1c.git",
        "9100393b1901d10853a340c54eaeb11bf382a6b8", "asn1c-mouse07410-9100393b.tar.xz"),
    # The commit OAI's cmake_targets/tools/build_helper pins; header-only.
    Pin("simde", "https://github.com/simd-everywhere/simde-no-tests.git",
        "389f360a66d4a3bec62b7d71ad8be877487809ba", "simde-389f360a.tar.xz"),
)

TARGETS = ("lte-softmodem", "lte-uesoftmodem", "params_libconfig", "coding", "rfsimulator",
           "dfts", "telnetsrv", "telnetsrv_enb")
USRP_TARGET = "oai_usrpdevif"
BINARIES = ("lte-softmodem", "lte-uesoftmodem")

# x86-64-v3 (AVX2, FMA, F16C, BMI1/2: Intel Haswell / AMD Excavator and later) plus PCLMUL is the
# lowest baseline OAI compiles for: its CMakeLists.txt declares SIMDE_X86_AVX_NATIVE, _FMA_NATIVE,
# _F16C_NATIVE and _PCLMUL_NATIVE for every x86-64 host, so SIMDE emits those intrinsics directly
# (x86-64-v2 would not compile), and openair1/PHY/CODING/crc.h calls _mm_clmulepi64_si128 itself
# (x86-64-v3 alone lacks PCLMUL; every CPU with AVX2 has it). OAI adds -march=native itself;
# see portable-march.cmake below.
DEFAULT_MARCH = "x86-64-v3"
ISA_EXTRAS = ("-mpclmul",)

# Debian packages the build needs beyond what scripts/install-debian.sh installs.
APT_PACKAGES = (
    "build-essential", "cmake", "ninja-build", "git", "xz-utils", "pkg-config",
    "automake", "autoconf", "libtool", "bison", "flex",
    "libatlas-base-dev", "libblas-dev", "liblapack-dev", "liblapacke-dev",
    "libconfig-dev", "libsctp-dev", "libssl-dev", "libreadline-dev", "zlib1g-dev", "xxd",
    "libuhd-dev", "libboost-dev",
)

# Absent from the GitHub mirror snapshot (the mirror drops blobs of 4 MiB or more).
KRONECKER = "openair1/PHY/CODING/nrPolar_tools/nr_polar_kronecker_power_matrices.c"

REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"build-oai: {msg}", flush=True)


def build_flags(march: str) -> dict:
    """The compiler-relevant settings; they go into the cache key and BUILD-INFO.json."""
    return {
        "march": march,
        "isa_extras": list(ISA_EXTRAS),
        "mtune": "generic",
        "cmake_build_type": "RelWithDebInfo",
        # AVX512 is autodetected from the build host's /proc/cpuinfo; x86-64-v3 has none.
        "cmake_options": {"AVX512": "OFF", "AVX2": "ON", "ENABLE_TELNETSRV": "ON",
                          "CCACHE_ACTIVE": "OFF"},
    }


def cache_key(pins: tuple[Pin, ...], flags: dict, targets: tuple[str, ...]) -> str:
    """Stable short hash of what determines the binaries: source commits, flags, targets, recipe."""
    material = {
        "sources": {p.name: p.commit for p in pins},
        "flags": flags,
        "targets": sorted(targets),
        "recipe": RECIPE_VERSION,
    }
    blob = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def find_sources_dir(env: dict[str, str], repo: Path = REPO) -> Path | None:
    """The third-party tarball directory: $OAI_SOURCES, else <repo>/../shared/third-party."""
    if env.get("OAI_SOURCES"):
        d = Path(env["OAI_SOURCES"]).expanduser().resolve()
        if not (d / "SHA256SUMS").is_file():
            raise SystemExit(f"build-oai: OAI_SOURCES={d} has no SHA256SUMS")
        return d
    d = (repo.parent / "shared" / "third-party").resolve()
    return d if (d / "SHA256SUMS").is_file() else None


def read_sha256sums(path: Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    return sums


def tarball_stream_sha256(sources: Path, pin: Pin) -> str:
    """SHA-256 of the (joined) tarball, reading the parts in order without writing a copy."""
    h = hashlib.sha256()
    for f in tarball_files(sources, pin):
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def tarball_files(sources: Path, pin: Pin) -> list[Path]:
    if pin.parts:
        return [sources / f"{pin.tarball}.part{i:02d}" for i in range(pin.parts)]
    return [sources / pin.tarball]


class _Joined:
    """A read-only file object over the parts of a split tarball, for tarfile's stream mode."""

    def __init__(self, files: list[Path]):
        self._files = iter(files)
        self._cur = None

    def read(self, n: int = -1) -> bytes:
        out = b""
        while n < 0 or len(out) < n:
            if self._cur is None:
                nxt = next(self._files, None)
                if nxt is None:
                    break
                self._cur = nxt.open("rb")
            data = self._cur.read(-1 if n < 0 else n - len(out))
            if not data:
                self._cur.close()
                self._cur = None
                continue
            out += data
        return out


def online(pin: Pin, timeout: float = 20.0) -> bool:
    """True when the upstream repository answers (no prompt, bounded time)."""
    if shutil.which("git") is None:
        return False
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    try:
        r = subprocess.run(["git", "ls-remote", "--exit-code", pin.url, "HEAD"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def run(cmd: list[str], **kw) -> None:
    log("+ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def fetch_git(pin: Pin, dest: Path) -> dict:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # Blobless clone: history without file contents, then only the pinned commit's blobs.
    run(["git", "clone", "--filter=blob:none", "--no-checkout", pin.url, tmp])
    try:
        run(["git", "-C", tmp, "checkout", "--detach", pin.commit])
    except subprocess.CalledProcessError:
        # Not reachable from the cloned branches and tags: ask for the commit itself.
        run(["git", "-C", tmp, "fetch", "--filter=blob:none", "origin", pin.commit])
        run(["git", "-C", tmp, "checkout", "--detach", pin.commit])
    head = subprocess.run(["git", "-C", tmp, "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    if head != pin.commit:
        raise SystemExit(f"build-oai: {pin.name}: checked out {head}, expected {pin.commit}")
    tmp.rename(dest)
    return {"origin": "git", "url": pin.url, "commit": pin.commit}


def fetch_tarball(pin: Pin, sources: Path, sums: dict[str, str], dest: Path) -> dict:
    files = tarball_files(sources, pin)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"build-oai: missing source tarball(s): {', '.join(missing)}")
    want = sums.get(pin.tarball)
    if want is None:
        raise SystemExit(f"build-oai: {pin.tarball} is not listed in {sources}/SHA256SUMS")
    got = tarball_stream_sha256(sources, pin)
    if got != want:
        raise SystemExit(f"build-oai: {pin.tarball}: SHA-256 {got} does not match SHA256SUMS {want}")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log(f"unpacking {pin.tarball} ({len(files)} file(s), sha256 ok)")
    with tarfile.open(fileobj=_Joined(files), mode="r|xz") as tf:
        # The "tar" filter (Python >= 3.11.4) keeps members inside tmp; older 3.11 lacks it.
        tf.extractall(tmp, **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
    (top,) = list(tmp.iterdir())  # each tarball holds one top directory
    top.rename(dest)
    tmp.rmdir()
    return {"origin": "tarball", "tarball": pin.tarball, "sha256": got, "commit": pin.commit}


def apt_install(packages: tuple[str, ...]) -> None:
    """Installs the missing build packages, like scripts/install-debian.sh: only what is missing."""
    missing = []
    for p in packages:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
        if "install ok installed" not in r.stdout:
            missing.append(p)
    if not missing:
        log(f"all {len(packages)} Debian build packages present")
        return
    if os.geteuid() != 0:
        raise SystemExit(f"build-oai: missing Debian packages (run as root to install): {' '.join(missing)}")
    log(f"installing {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def stub_missing_kronecker(oai: Path) -> bool:
    """Writes an empty translation unit for the NR polar Kronecker table when the tree lacks it.

    The snapshot tarball lacks this generated file (the mirror drops blobs of 4 MiB or more) but
    CMake refuses to configure while a listed source is absent. It belongs to the NR (5G) polar
    coder only (PHY_POLARSRC, linked into the NR libraries), not into any 4G target built here;
    an empty unit keeps that true: were a 4G target to reference its function, the link would
    fail instead of running with a fake table. Only done when the file is missing (a git
    checkout has it), and only in the build's copy of the source tree.
    """
    f = oai / KRONECKER
    if f.exists():
        return False
    f.write_text(
        "/* Generated by emulab's scripts/build_oai.py: the source snapshot lacks this NR-only\n"
        " * generated table. Deliberately empty: no 4G target links it. */\n"
        "typedef int emulab_nr_polar_kronecker_absent;\n")
    log(f"{KRONECKER} missing from the sources: wrote an empty NR-only stub (see BUILD-INFO.json)")
    return True


def portable_march_cmake(path: Path, march: str, extras: tuple[str, ...] = ISA_EXTRAS) -> None:
    """A CMAKE_PROJECT_INCLUDE that makes the compile flags portable without patching OAI.

    OAI's CMakeLists.txt appends `-march=native` to CMAKE_C_FLAGS/CMAKE_CXX_FLAGS for every
    non-cross build (and `-march=skylake-avx512` when AVX512 is detected), so binaries would only
    run on the CPU type that built them. Directory compile options come after CMAKE_<LANG>_FLAGS
    on the command line, and GCC honours the last -march, so this include (run by CMake right
    after OAI's project() call) overrides it for every target.
    """
    path.write_text(
        "# Written by emulab's scripts/build_oai.py: portable baseline instead of -march=native.\n"
        "include_guard(GLOBAL)\n"
        f"add_compile_options(-march={march} {' '.join(extras)} -mtune=generic)\n")


def build_asn1c(src: Path, dest: Path, jobs: int) -> Path:
    exe = dest / "bin" / "asn1c"
    if exe.is_file():
        return exe
    # As OAI's build_helper does, with the prefix inside ours instead of /opt/asn1c.
    run(["autoreconf", "-fi"], cwd=src, stdout=subprocess.DEVNULL)
    run(["./configure", f"--prefix={dest}"], cwd=src, stdout=subprocess.DEVNULL)
    run(["make", f"-j{jobs}"], cwd=src, stdout=subprocess.DEVNULL)
    run(["make", "install"], cwd=src, stdout=subprocess.DEVNULL)
    return exe


def cmake_configure(oai: Path, build: Path, asn1c: Path, simde_inc: Path, include: Path,
                    flags: dict, usrp: bool) -> list[str]:
    inc = f"-isystem {simde_inc}"
    args = ["cmake", "-G", "Ninja", "-S", str(oai), "-B", str(build),
            f"-DCMAKE_BUILD_TYPE={flags['cmake_build_type']}",
            f"-DASN1C_EXEC={asn1c}",
            f"-DCMAKE_C_FLAGS={inc}", f"-DCMAKE_CXX_FLAGS={inc}",
            f"-DCMAKE_PROJECT_INCLUDE={include}",
            f"-DOAI_USRP={'ON' if usrp else 'OFF'}"]
    args += [f"-D{k}={v}" for k, v in flags["cmake_options"].items()]
    run(args, stdout=subprocess.DEVNULL)
    return args


def effective_compile_flags(build: Path) -> str:
    """The flags ninja passes for one of lte-softmodem's sources (recorded in BUILD-INFO.json)."""
    r = subprocess.run(["ninja", "-C", str(build), "-t", "commands", "lte-softmodem"],
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if " -c " in line and "lte-softmodem.c" in line:
            return line
    return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefix-root", default=os.environ.get("OAI_PREFIX_ROOT", "/opt/emulab-oai"))
    ap.add_argument("--march", default=os.environ.get("OAI_MARCH", DEFAULT_MARCH))
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("OAI_JOBS", "2")))
    ap.add_argument("--no-usrp", action="store_true", default=os.environ.get("OAI_USRP") == "0",
                    help="skip the USRP driver (also OAI_USRP=0)")
    ap.add_argument("--print-key", action="store_true", help="print the cache key and exit")
    a = ap.parse_args(argv)

    flags = build_flags(a.march)
    targets = TARGETS + (() if a.no_usrp else (USRP_TARGET,))
    key = cache_key(PINS, flags, targets)
    root = Path(a.prefix_root)
    prefix = root / key
    if a.print_key:
        print(key)
        return 0
    info_file = prefix / "BUILD-INFO.json"
    if info_file.is_file() and all((prefix / "bin" / b).is_file() for b in BINARIES):
        point_current(root, key)
        log(f"cached: {prefix} (key {key}); nothing to do")
        return 0

    t0 = time.monotonic()
    log(f"building OAI into {prefix} (key {key}, -march={a.march}, -j{a.jobs})")
    apt_install(APT_PACKAGES)
    src = prefix / "src"
    src.mkdir(parents=True, exist_ok=True)
    origins = {}
    sources_dir = find_sources_dir(dict(os.environ))
    use_git = not os.environ.get("OAI_SOURCES") and online(PINS[0])
    if not use_git and sources_dir is None:
        raise SystemExit("build-oai: offline and no third-party tarballs found: set OAI_SOURCES=DIR "
                         "(a directory with the tarballs and SHA256SUMS) or go online")
    sums = read_sha256sums(sources_dir / "SHA256SUMS") if sources_dir else {}
    for pin in PINS:
        dest = src / pin.name
        origin_file = src / f"{pin.name}.origin.json"
        if dest.is_dir() and origin_file.is_file():
            origins[pin.name] = json.loads(origin_file.read_text())
            continue
        shutil.rmtree(dest, ignore_errors=True)
        origins[pin.name] = fetch_git(pin, dest) if use_git else fetch_tarball(pin, sources_dir, sums, dest)
        origin_file.write_text(json.dumps(origins[pin.name], indent=1))

    oai = src / "openairinterface5g"
    stubbed = stub_missing_kronecker(oai) or (oai / KRONECKER).read_text().startswith(
        "/* Generated by emulab's")
    # OAI includes <simde/x86/...>: the SIMDE tree must sit in a directory named simde.
    simde_inc = prefix / "include"
    simde_inc.mkdir(exist_ok=True)
    if not (simde_inc / "simde").exists():
        (simde_inc / "simde").symlink_to(src / "simde")

    t_asn = time.monotonic()
    asn1c = build_asn1c(src / "asn1c", prefix / "asn1c", a.jobs)
    log(f"asn1c ready ({time.monotonic() - t_asn:.0f} s)")

    build = prefix / "build"
    include = prefix / "portable-march.cmake"
    portable_march_cmake(include, a.march)
    usrp_error = ""
    usrp = not a.no_usrp
    try:
        cmake_args = cmake_configure(oai, build, asn1c, simde_inc, include, flags, usrp)
    except subprocess.CalledProcessError:
        if not usrp:
            raise
        # Most likely find_package(UHD) failed; the rfsim targets do not need it.
        usrp, usrp_error = False, "cmake configure failed with OAI_USRP=ON (UHD not found?)"
        log(usrp_error + "; configuring without the USRP driver")
        cmake_args = cmake_configure(oai, build, asn1c, simde_inc, include, flags, usrp)

    t_ninja = time.monotonic()
    run(["ninja", "-C", build, f"-j{a.jobs}", *TARGETS])
    if usrp:
        r = subprocess.run(["ninja", "-C", str(build), f"-j{a.jobs}", USRP_TARGET],
                           capture_output=True, text=True)
        if r.returncode != 0:
            usrp = False
            usrp_error = "ninja oai_usrpdevif failed: " + (r.stdout + r.stderr)[-2000:]
            log(usrp_error)
    ninja_s = time.monotonic() - t_ninja

    bindir = prefix / "bin"
    bindir.mkdir(exist_ok=True)
    for b in BINARIES:
        link = bindir / b
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(build / b)

    cc = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()
    info = {
        "key": key,
        "recipe": RECIPE_VERSION,
        "oai": {"tag": PINS[0].tag, "commit": PINS[0].commit},
        "sources": origins,
        "flags": flags,
        "cmake_args": cmake_args,
        "compile_command_sample": effective_compile_flags(build),
        "compiler": cc[0] if cc else "",
        "targets": list(TARGETS),
        "usrp_driver": {"built": usrp, "target": USRP_TARGET,
                        "path": str(build / "liboai_usrpdevif.so") if usrp else "",
                        "error": usrp_error},
        "stubbed_missing_sources": [KRONECKER] if stubbed else [],
        "prefix": str(prefix),
        "build_dir": str(build),
        "binaries": {b: str(bindir / b) for b in BINARIES},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.monotonic() - t0),
        "ninja_seconds": round(ninja_s),
        "jobs": a.jobs,
    }
    tmp = info_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    tmp.rename(info_file)  # written last: its presence means the build is complete
    point_current(root, key)
    log(f"done in {info['build_seconds']} s: {prefix} (USRP driver: {'yes' if usrp else 'no'})")
    return 0


def point_current(root: Path, key: str) -> None:
    """Atomically points <root>/current at <root>/<key> (what radio/oai_install.py reads)."""
    cur = root / "current"
    if cur.is_symlink() and os.readlink(cur) == key:
        return
    tmp = root / f".current.{os.getpid()}"
    tmp.symlink_to(key)
    tmp.replace(cur)


if __name__ == "__main__":
    sys.exit(main())

"""Finds the OpenAirInterface build that `make oai` (scripts/build_oai.py) installed.

The build lives outside any checkout, in ``/opt/emulab-oai/<key>`` (``<key>`` hashes the pinned
source commits and the compiler flags), with ``/opt/emulab-oai/current`` pointing at the latest
finished one; a finished build has ``BUILD-INFO.json`` (commits, flags, date, whether the USRP
driver was built). ``EMULAB_OAI_PREFIX`` names another prefix (one holding BUILD-INFO.json) or
``EMULAB_OAI_ROOT`` another root. Without a build, softmodems on the PATH are still used (an OAI
installed by hand), so no PATH change is needed for the built one and none is forbidden.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path("/opt/emulab-oai")
BINARIES = ("lte-softmodem", "lte-uesoftmodem")


@dataclass(frozen=True)
class OaiInstall:
    """One OAI build: its prefix, the softmodems' paths and what BUILD-INFO.json records."""

    prefix: Path | None  # None: softmodems found on the PATH, not built by `make oai`
    binaries: dict[str, Path]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """``<tag> (<commit>)`` from BUILD-INFO.json, or "unknown" for an OAI found on the PATH."""
        oai = self.info.get("oai", {})
        if not oai.get("commit"):
            return "unknown (not built by make oai)"
        return f"{oai.get('tag') or 'untagged'} ({oai['commit'][:12]})"

    @property
    def usrp_driver(self) -> bool:
        """Whether OAI's USRP driver (liboai_usrpdevif.so, for --radio b210) was built and is there."""
        drv = self.info.get("usrp_driver", {})
        return bool(drv.get("built")) and Path(drv.get("path", "")).is_file()

    @property
    def march(self) -> str:
        return self.info.get("flags", {}).get("march", "unknown")

    def binary(self, name: str) -> Path:
        return self.binaries[name]


def _from_prefix(prefix: Path) -> OaiInstall | None:
    info_file = prefix / "BUILD-INFO.json"
    try:
        info = json.loads(info_file.read_text())
    except (OSError, ValueError):
        return None
    bins = {b: prefix / "bin" / b for b in BINARIES}
    if not all(p.is_file() and os.access(p, os.X_OK) for p in bins.values()):
        return None
    return OaiInstall(prefix=prefix.resolve(), binaries=bins, info=info)


def find_install(env: Mapping[str, str] | None = None) -> OaiInstall | None:
    """The OAI build to use: $EMULAB_OAI_PREFIX, else <root>/current, else the PATH; None if none."""
    env = os.environ if env is None else env
    if env.get("EMULAB_OAI_PREFIX"):
        return _from_prefix(Path(env["EMULAB_OAI_PREFIX"]))
    root = Path(env.get("EMULAB_OAI_ROOT") or DEFAULT_ROOT)
    found = _from_prefix(root / "current")
    if found is not None:
        return found
    on_path = {b: shutil.which(b, path=env.get("PATH")) for b in BINARIES}
    if all(on_path.values()):
        return OaiInstall(prefix=None, binaries={b: Path(p) for b, p in on_path.items() if p})
    return None


def binary_path(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """Absolute path of the softmodem ``name`` from the install (None when there is no install)."""
    inst = find_install(env)
    if inst is None or name not in inst.binaries:
        return shutil.which(name, path=(os.environ if env is None else env).get("PATH"))
    return str(inst.binaries[name])

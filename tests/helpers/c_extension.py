"""The C extension (rserpool._selector) the C-path tests run against: a missing extension or function
fails the test, and skips it only when the environment says pure Python is intended
(RSERPOOL_ALLOW_PURE_PYTHON=1), so a missing build can never pass as a skip."""

from __future__ import annotations

import importlib

import pytest

from rserpool.selector import ALLOW_PURE_PYTHON_ENV, HAVE_C_SELECTOR, acceleration_reason, pure_python_allowed


def _missing_because(name: str) -> str:
    """Why ``name`` cannot be had from the extension: its import error, or the selector's reason."""
    if not HAVE_C_SELECTOR:
        return acceleration_reason()
    try:
        getattr(importlib.import_module("rserpool._selector"), name)
    except (ImportError, AttributeError) as exc:
        return f"the C extension rserpool._selector has no {name} ({exc}); rebuild it with `pip install -e .`"
    return f"{name} from the C extension rserpool._selector was not imported"


def need_c_extension(func: object, name: str) -> None:
    """Carry on when ``func`` (a module's import of ``name`` from the extension) is there; otherwise
    skip the test when pure Python is allowed, or fail it with the reason."""
    if func is not None:
        return
    reason = _missing_because(name)
    if pure_python_allowed():
        pytest.skip(f"{ALLOW_PURE_PYTHON_ENV} is set: pure Python intended ({reason})")
    pytest.fail(f"{reason}; or set {ALLOW_PURE_PYTHON_ENV}=1 if pure Python is intended", pytrace=False)

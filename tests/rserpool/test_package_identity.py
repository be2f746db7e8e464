"""rserpool speaks for itself: its version option, its environment variables, its module boundaries."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

import rserpool
from rserpool import transport as tp
from rserpool.cli import main
from rserpool.services.calcapp import STATS_ENV


def test_version_option_reports_rserpool() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"rserpool, version {rserpool.__version__}\n"


def test_environment_variables_carry_rserpool_names() -> None:
    assert tp.ENV_TRANSPORT == "RSERPOOL_TRANSPORT"
    assert STATS_ENV == "RSERPOOL_CALCAPP_STATS"


def test_pe_pu_and_session_do_not_load_the_registrar() -> None:
    """The PE and PU side needs the policy conversions, not the registrar (nor ENRP, takeover)."""
    code = ("import sys, rserpool.pe, rserpool.pu, rserpool.session; "
            "print(sorted(m for m in sys.modules if m.split('.')[1:2] and m.split('.')[1] in "
            "('registrar', 'registrar_asap', 'enrp', 'enrp_mirror', 'enrp_peers', 'takeover', 'ratelimit')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

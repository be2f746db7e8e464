"""OpenAirInterface backends: the RF simulator (`oai`) and a real USRP B210 (`b210`).

Both need OAI's lte-softmodem / lte-uesoftmodem, which no package registry reachable by the project
carries; where they are missing the backend refuses to start with a message saying so, and the
testbed is torn down cleanly.
"""

from __future__ import annotations

import shutil
from typing import Any

from radio.base import RadioBackend, RadioError

OAI_BINARIES = ("lte-softmodem", "lte-uesoftmodem")


class OaiRfsimRadio(RadioBackend):
    name = "oai"

    def start(self) -> None:
        missing = [b for b in OAI_BINARIES if not shutil.which(b)]
        if missing:
            raise RadioError(
                f"--radio {self.name}: OpenAirInterface is not installed ({', '.join(missing)} not on PATH); "
                "build OAI by hand or use --radio emulated"
            )
        raise RadioError(f"--radio {self.name}: OAI is installed, but emulab cannot drive it yet")

    def stop(self) -> None:
        pass

    def attach(self) -> None:
        raise RadioError(f"--radio {self.name} is not running")

    def detach(self) -> None:
        raise RadioError(f"--radio {self.name} is not running")

    def state(self) -> dict[str, Any]:
        return {"backend": self.name, "attached": False}


class B210Radio(OaiRfsimRadio):
    name = "b210"

    def start(self) -> None:
        if not shutil.which("uhd_find_devices"):
            raise RadioError("--radio b210: uhd_find_devices not found (Debian package uhd-host)")
        super().start()

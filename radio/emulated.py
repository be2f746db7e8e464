"""The default radio backend: the UE–eNodeB link emulated through emulab's link layer.

For now the channel is fixed at the radio link's configured parameters (base LTE user-plane delay
and cell rate from the topology); coverage loss takes the link to 100 % loss and coverage return
restores the configured parameters. The LTE channel model (path loss, SNR → CQI → rate, RLF timers,
re-attach time) plugs in here.
"""

from __future__ import annotations

import time
from typing import Any

from emulab.linkparams import LinkParams
from radio.base import RadioBackend, RadioError


class EmulatedRadio(RadioBackend):
    name = "emulated"

    def __init__(self, testbed: Any) -> None:
        super().__init__(testbed)
        self.attached = False
        self.since = 0.0
        self.configured: LinkParams | None = None

    def start(self) -> None:
        if self.link_name is None:
            return  # a topology without a radio link: nothing to drive
        try:
            self.configured = self.testbed.link_spec(self.link_name).params
        except StopIteration:
            raise RadioError(f"radio link {self.link_name!r} is not in the topology") from None
        self.attached = True
        self.since = time.time()

    def stop(self) -> None:
        self.attached = False

    def attach(self) -> None:
        if self.configured is None:
            raise RadioError("this topology has no radio link")
        self.testbed.set_link_params(self.link_name, self.configured)
        self.attached, self.since = True, time.time()

    def detach(self) -> None:
        if self.configured is None:
            raise RadioError("this topology has no radio link")
        self.testbed.set_link_params(self.link_name, self.configured.with_changes(loss_pct=100.0))
        self.attached, self.since = False, time.time()

    def state(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "link": self.link_name,
            "attached": self.attached,
            "since": self.since,
            "channel": "fixed (configured link parameters)",
            "params": self.configured.as_dict() if self.configured else None,
        }

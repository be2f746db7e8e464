"""emulab's side of the radio interface: a running ``Testbed`` as a radio backend sees it.

``radio.host.RadioHost`` says what a backend may ask of the testbed; ``TestbedRadioHost``
answers it from a ``Testbed`` (emulab.network): the topology spec, the run and log directories,
link parameters (radio's ``RadioLinkParams`` become emulab's ``LinkParams``), routes, interface
addresses and processes inside the nodes' namespaces.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulab import paths
from emulab.linkparams import LinkParams
from emulab.topology import TopologySpec
from radio.host import RadioLinkParams

if TYPE_CHECKING:
    from emulab.network import Testbed


class TestbedRadioHost:
    """Implements ``radio.host.RadioHost`` for a built ``Testbed``."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, testbed: Testbed) -> None:
        self.testbed = testbed

    @property
    def topology(self) -> TopologySpec:
        return self.testbed.spec

    @property
    def run_dir(self) -> Path:
        return paths.run_dir()

    @property
    def log_dir(self) -> Path:
        return paths.log_dir()

    def set_link_params(self, link: str, params: RadioLinkParams) -> None:
        self.testbed.set_link_params(
            link, LinkParams(params.delay_ms, params.jitter_ms, params.loss_pct, params.rate_mbit))

    def set_routes(self, node: str, present: bool, dev: str | None = None) -> None:
        self.testbed.set_routes(node, present, dev=dev)

    def replace_route(self, node: str, dest: str, via: str | None = None, dev: str | None = None,
                      src: str | None = None) -> None:
        self.testbed.replace_route(node, dest, via=via, dev=dev, src=src)

    def interface_address(self, node: str, dev: str) -> ipaddress.IPv4Interface | None:
        from pyroute2 import NetNS

        with NetNS(self.testbed.netns[node]) as ns:
            idx = ns.link_lookup(ifname=dev)
            if not idx:
                return None
            for a in ns.get_addr(index=idx[0], family=2):
                return ipaddress.IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
        return None

    def popen(self, node: str, argv: Sequence[str], cwd: Path, log: Path) -> Any:
        # the child keeps its own copy of the log's descriptor; ours is closed once it is started
        with open(log, "w") as out:
            return self.testbed.host(node).popen(list(argv), cwd=str(cwd), stdout=out, stderr=subprocess.STDOUT)

    def run(self, node: str, command: str) -> str:
        # a fresh process in the node's namespace, not Mininet's per-node shell: a backend's supervising
        # thread and the control socket's thread may both run commands, and that shell serves one at a time
        out = subprocess.run(["ip", "netns", "exec", self.testbed.netns[node], "sh", "-c", command],
                             capture_output=True, text=True, timeout=60, check=False)
        return out.stdout + out.stderr

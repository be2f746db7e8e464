"""The declarative topology: load a YAML file into a validated, immutable ``TopologySpec``.

``load("paper-topology")`` reads ``topologies/paper-topology.yaml`` (or ``$EMULAB_TOPOLOGIES``);
``load(path)`` reads a file. Every problem with a file is a ``TopologyError`` whose str() is one
line: "<file>: <field path>: expected <what>, got <what>". The format is documented at the top of
``topologies/paper-topology.yaml``.
"""

from emulab.topology.loader import available, load, resolve
from emulab.topology.model import (
    FORWARDING_ROLES,
    ROLES,
    SERVICE_KINDS,
    Endpoint,
    LinkSpec,
    NodeSpec,
    RadioSpec,
    Route,
    ServiceSpec,
    SiteSpec,
    SwitchSpec,
    TopologyError,
    TopologySpec,
)

__all__ = [
    "FORWARDING_ROLES", "ROLES", "SERVICE_KINDS",
    "Endpoint", "LinkSpec", "NodeSpec", "RadioSpec", "Route", "ServiceSpec", "SiteSpec", "SwitchSpec",
    "TopologyError", "TopologySpec", "available", "load", "resolve",
]

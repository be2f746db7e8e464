"""Loading a topology file: YAML -> validated ``TopologySpec``, or one ``TopologyError``.

The format is documented at the top of ``topologies/paper-topology.yaml``. Checks run in file order
(top-level keys, sites, nodes, switches, links, addressing, radio, connectivity) and stop at the
first problem, so each error message names exactly one field.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulab import paths
from emulab.linkparams import LinkParamError, LinkParams, parse_percent, parse_rate_mbit, parse_time_ms
from emulab.paths import topologies_dir
from emulab.topology.model import (
    BRIDGE_PREFIX,
    FORWARDING_ROLES,
    IFNAME_MAX,
    ROLES,
    SERVICE_KINDS,
    Endpoint,
    LinkSpec,
    NodeSpec,
    RadioSpec,
    ServiceSpec,
    SiteSpec,
    SwitchSpec,
    TopologyError,
    TopologySpec,
)
from emulab.topology.routing import unreachable
from emulab.topology.schema import Checker, did_you_mean, read_yaml, show
from radio import DEFAULT_BACKEND, RadioOptionError, backend_names, get_backend

NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")
TOPOLOGY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: "em-<name>-<port>" must fit in 15 characters; 8 leaves room for up to 999 ports (every
#: instance's prefix has the default's 3 characters, see emulab.paths).
SWITCH_NAME_MAX = IFNAME_MAX - len(BRIDGE_PREFIX) - len("-999")
SWITCH_NAME = re.compile(r"[a-z][a-z0-9-]*")

TOP_REQUIRED = ("name", "sites", "nodes", "links")
TOP_OPTIONAL = ("description", "switches", "radio")
SITE_KEYS = ("description", "location", "source")
NODE_REQUIRED = ("role", "site")
NODE_OPTIONAL = ("forwarding", "services", "description")
SWITCH_REQUIRED = ("site",)
SWITCH_OPTIONAL = ("subnet", "description")
LINK_REQUIRED = ("ends",)
LINK_OPTIONAL = ("subnet", "addresses", "delay", "jitter", "loss", "rate", "segment", "radio", "description")
SERVICE_REQUIRED = ("kind",)
SERVICE_OPTIONAL = ("options",)
RADIO_OPTIONAL = ("backend", "link", "options")

Address = ipaddress.IPv4Interface | ipaddress.IPv4Address


def available() -> list[str]:
    """Names of the topology files in ``topologies_dir()``, sorted."""
    folder = topologies_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if p.is_file())


def resolve(name_or_path: str | Path) -> tuple[Path, str]:
    """(file to read, how to show it in messages). A bare name means <topologies>/<name>.yaml."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml")):
        return Path(name_or_path), text
    path = topologies_dir() / f"{text}.yaml"
    return path, str(path)


def load(name_or_path: str | Path) -> TopologySpec:
    """Read and validate a topology; every problem is a single-line ``TopologyError``."""
    path, shown = resolve(name_or_path)
    if not path.exists() and not str(name_or_path).endswith((".yaml", ".yml")) and "/" not in str(name_or_path):
        names = available()
        raise TopologyError(
            shown, "(file)", f"a topology name ({', '.join(names) or 'none found'})",
            f"{str(name_or_path)!r}{did_you_mean(str(name_or_path), names)}",
        )
    raw = read_yaml(path, shown)
    try:
        return _Builder(Checker(shown), path).build(raw)
    except TopologyError:
        raise
    except Exception as exc:  # a loader bug must still not surface as a traceback
        raise TopologyError(
            shown, "(file)", "a file the loader can check (this is a loader bug; please report it)",
            f"{type(exc).__name__}: {' '.join(str(exc).split())}",
        ) from exc


# --------------------------------------------------------------------------------------------------


@dataclass
class _RawLink:
    """A link between validation steps: ends checked, addresses not yet assigned."""

    index: int
    a: str
    b: str
    params: LinkParams
    segment: str | None
    radio: bool
    description: str
    subnet: ipaddress.IPv4Network | None = None
    subnet_path: str = ""
    addresses: dict[str, Address] = field(default_factory=dict)
    assigned: dict[str, ipaddress.IPv4Interface] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"links[{self.index}]"

    @property
    def name(self) -> str:
        return f"{self.a}--{self.b}"


class _Builder:
    def __init__(self, check: Checker, path: Path) -> None:
        self.check = check
        self.path = path
        self.sites: dict[str, SiteSpec] = {}
        self.nodes: dict[str, NodeSpec] = {}
        self.switch_raw: dict[str, dict[str, Any]] = {}
        self.switch_subnet: dict[str, ipaddress.IPv4Network] = {}
        self.links: list[_RawLink] = []

    def build(self, raw: object) -> TopologySpec:
        c = self.check
        if raw is None:
            c.fail("", "a mapping with the keys name, sites, nodes, links", "an empty file")
        top = c.mapping(raw, "", TOP_REQUIRED, TOP_OPTIONAL, what="a mapping with the keys name, sites, nodes, links")
        name = c.string(top["name"], "name", "a topology name")
        if not TOPOLOGY_NAME.fullmatch(name):
            c.fail("name", f"a topology name matching {TOPOLOGY_NAME.pattern}", repr(name))
        description = c.string(top.get("description", ""), "description")
        self._sites(top["sites"])
        self._nodes(top["nodes"])
        self._switches(top.get("switches"))
        self._links(top["links"])
        self._segments()
        self._networks()
        self._assign()
        links = self._link_specs()
        radio = self._radio(top.get("radio"), links)
        spec = TopologySpec(
            name=name, description=description, source=self.path.resolve(), sites=self.sites,
            nodes=self.nodes, links=tuple(links), radio=radio,
            switches={
                n: SwitchSpec(n, s["site"], self.switch_subnet[n], s.get("description") or "")
                for n, s in self.switch_raw.items()
            },
        )
        self._connectivity(spec)
        return spec

    # --- sites, nodes, switches --------------------------------------------------------------

    def _sites(self, value: object) -> None:
        c = self.check
        for name, raw in c.names(value, "sites", NAME, "site").items():
            p = f"sites.{name}"
            fields = c.mapping(raw if raw is not None else {}, p, (), SITE_KEYS)
            self.sites[name] = SiteSpec(
                name=name,
                description=c.string(fields.get("description") or "", f"{p}.description"),
                location=c.optional_string(fields.get("location"), f"{p}.location"),
                source=c.optional_string(fields.get("source"), f"{p}.source"),
            )

    def _site_ref(self, value: object, path: str) -> str:
        if not isinstance(value, str) or value not in self.sites:
            known = ", ".join(self.sites) or "none defined"
            self.check.fail(path, f"a site defined under sites ({known})", f"{show(value)}{did_you_mean(value, self.sites)}")
        return value

    def _nodes(self, value: object) -> None:
        c = self.check
        nodes = c.names(value, "nodes", NAME, "node")
        if not nodes:
            c.fail("nodes", "at least one node", "none")
        for name, raw in nodes.items():
            p = f"nodes.{name}"
            fields = c.mapping(raw, p, NODE_REQUIRED, NODE_OPTIONAL)
            role = c.choice(fields["role"], f"{p}.role", ROLES, "a role")
            site = self._site_ref(fields["site"], f"{p}.site")
            forwarding = c.boolean(fields.get("forwarding", role in FORWARDING_ROLES), f"{p}.forwarding")
            self.nodes[name] = NodeSpec(
                name=name, role=role, site=site, forwarding=forwarding,
                services=self._services(fields.get("services"), f"{p}.services"),
                description=c.string(fields.get("description") or "", f"{p}.description"),
            )

    def _services(self, value: object, path: str) -> tuple[ServiceSpec, ...]:
        c = self.check
        if value is None:
            return ()
        if not isinstance(value, list):
            c.fail(path, "a list of services like [{kind: registrar}]", show(value))
        services = []
        for i, raw in enumerate(value):
            p = f"{path}[{i}]"
            fields = c.mapping(raw, p, SERVICE_REQUIRED, SERVICE_OPTIONAL)
            kind = c.choice(fields["kind"], f"{p}.kind", SERVICE_KINDS, "a service kind")
            options = fields.get("options")
            options = {} if options is None else c.mapping(options, f"{p}.options")
            services.append(ServiceSpec(kind, dict(options)))
        return tuple(services)

    def _switches(self, value: object) -> None:
        c = self.check
        for name, raw in c.names(value, "switches", SWITCH_NAME, "switch").items():
            p = f"switches.{name}"
            if len(name) > SWITCH_NAME_MAX:
                c.fail(
                    p, f"a switch name of at most {SWITCH_NAME_MAX} characters, so that port names "
                    f"'{BRIDGE_PREFIX}<name>-<port>' fit in {IFNAME_MAX} characters", repr(name),
                )
            if name in self.nodes:
                c.fail(p, "a switch name not already used by a node", repr(name))
            fields = c.mapping(raw, p, SWITCH_REQUIRED, SWITCH_OPTIONAL)
            self._site_ref(fields["site"], f"{p}.site")
            c.string(fields.get("description") or "", f"{p}.description")
            if fields.get("subnet") is not None:
                self.switch_subnet[name] = c.network(fields["subnet"], f"{p}.subnet", 30, "'10.0.0.0/24'")
            self.switch_raw[name] = fields

    # --- links ---------------------------------------------------------------------------------

    def _links(self, value: object) -> None:
        c = self.check
        if not isinstance(value, list) or not value:
            c.fail("links", "a non-empty list of links", show(value) if value != [] else "an empty list")
        seen: dict[frozenset[str], int] = {}
        known = list(self.nodes) + list(self.switch_raw)
        for i, raw in enumerate(value):
            p = f"links[{i}]"
            fields = c.mapping(raw, p, LINK_REQUIRED, LINK_OPTIONAL)
            ends = fields["ends"]
            if not isinstance(ends, list) or len(ends) != 2:
                c.fail(f"{p}.ends", "a pair of node or switch names like [ue, enb]", show(ends))
            for k, end in enumerate(ends):
                if not isinstance(end, str) or end not in known:
                    c.fail(f"{p}.ends[{k}]", "the name of a node or switch", f"{show(end)}{did_you_mean(end, known)}")
            a, b = ends
            if a == b:
                c.fail(f"{p}.ends", "two different ends", f"[{a}, {b}]")
            pair = frozenset((a, b))
            if pair in seen:
                c.fail(f"{p}.ends", "a pair not linked before", f"[{a}, {b}] (already links[{seen[pair]}])")
            seen[pair] = i
            link = _RawLink(
                index=i, a=a, b=b, params=self._params(fields, p),
                segment=c.optional_string(fields.get("segment"), f"{p}.segment", "a segment label like 'S1-U'"),
                radio=c.boolean(fields.get("radio", False), f"{p}.radio"),
                description=c.string(fields.get("description") or "", f"{p}.description"),
            )
            self._link_addressing(link, fields)
            self.links.append(link)

    def _params(self, fields: Mapping[str, Any], p: str) -> LinkParams:
        c = self.check

        def number(key: str, parse: Any, expected: str) -> float | None:
            value = fields.get(key)
            if value is None:
                return None
            try:
                return float(parse(value))
            except LinkParamError:
                c.fail(f"{p}.{key}", expected, show(value))

        delay = number("delay", parse_time_ms, "a duration like '20ms'")
        jitter = number("jitter", parse_time_ms, "a duration like '2ms'")
        loss = number("loss", parse_percent, "a percentage like '1%'")
        rate = number("rate", parse_rate_mbit, "a rate like '100Mbit'")
        for key, value in (("delay", delay), ("jitter", jitter)):
            if value is not None and value < 0:
                c.fail(f"{p}.{key}", "a duration that is not negative", show(fields[key]))
        if loss is not None and not 0.0 <= loss <= 100.0:
            c.fail(f"{p}.loss", "a percentage between 0 and 100", show(fields["loss"]))
        if rate is not None and rate <= 0:
            c.fail(f"{p}.rate", "a positive rate like '100Mbit'", show(fields["rate"]))
        return LinkParams(delay_ms=delay or 0.0, jitter_ms=jitter or 0.0, loss_pct=loss or 0.0, rate_mbit=rate)

    def _link_addressing(self, link: _RawLink, fields: Mapping[str, Any]) -> None:
        c, p = self.check, link.path
        hosts = [e for e in (link.a, link.b) if e in self.nodes]
        switch = next((e for e in (link.a, link.b) if e in self.switch_raw), None)
        if fields.get("subnet") is not None:
            if switch is not None:
                c.fail(f"{p}.subnet", f"no subnet on a link to a switch (switch {switch!r} has the subnet)",
                       show(fields["subnet"]))
            link.subnet = c.network(fields["subnet"], f"{p}.subnet", 31, "'10.0.0.0/30'")
            link.subnet_path = f"{p}.subnet"
        raw_addresses = fields.get("addresses")
        if raw_addresses is not None:
            addresses = c.mapping(raw_addresses, f"{p}.addresses", what="a mapping of host names to addresses")
            for host, value in addresses.items():
                if host not in hosts:
                    c.fail(f"{p}.addresses.{host}",
                           f"an address for a host end of this link ({', '.join(hosts) or 'none: switch to switch'})",
                           f"an address for {host!r}")
                link.addresses[host] = c.interface(value, f"{p}.addresses.{host}")
        if len(hosts) == 2 and link.subnet is None:
            # Point-to-point without a subnet: both addresses must be given, with the same prefix.
            given = [link.addresses.get(h) for h in hosts]
            if not all(isinstance(a, ipaddress.IPv4Interface) for a in given):
                c.fail(p, "a 'subnet' (like '10.0.0.0/30') or both 'addresses' with a prefix length on a link "
                       "between two hosts", "neither")
            nets = {a.network for a in given if isinstance(a, ipaddress.IPv4Interface)}
            if len(nets) != 1:
                c.fail(f"{p}.addresses", "two addresses in one subnet", ", ".join(str(a) for a in given))
            link.subnet = nets.pop()
            link.subnet_path = f"{p}.addresses"

    # --- subnets and addresses -----------------------------------------------------------------

    def _segments(self) -> None:
        """Switches linked to each other form one L2 segment; exactly one of them names its subnet."""
        c = self.check
        parent = {s: s for s in self.switch_raw}

        def root(s: str) -> str:
            while parent[s] != s:
                s = parent[s]
            return s

        for link in self.links:
            if link.a in parent and link.b in parent:
                parent[root(link.b)] = root(link.a)
        groups: dict[str, list[str]] = {}
        for s in self.switch_raw:
            groups.setdefault(root(s), []).append(s)
        for members in groups.values():
            named = [s for s in members if s in self.switch_subnet]
            if not named:
                what = "a subnet like '10.0.0.0/24'"
                if len(members) > 1:
                    what += f" on one of the linked switches {', '.join(members)}"
                c.fail(f"switches.{members[0]}.subnet", what, "nothing")
            if len(named) > 1:
                c.fail(f"switches.{named[1]}.subnet",
                       f"no subnet (switch {named[1]!r} is linked to {named[0]!r}, which already names the segment's)",
                       str(self.switch_subnet[named[1]]))
            for s in members:
                self.switch_subnet[s] = self.switch_subnet[named[0]]

    def _networks(self) -> None:
        """No two segments or point-to-point links may share or overlap address space."""
        c = self.check
        claimed: list[tuple[ipaddress.IPv4Network, str]] = []
        segment_subnets = {}
        for s, net in self.switch_subnet.items():
            segment_subnets.setdefault(net, f"switches.{s}.subnet")
        candidates = [(net, p) for net, p in segment_subnets.items()]
        candidates += [(link.subnet, link.subnet_path) for link in self.links if link.subnet is not None]
        for net, p in candidates:
            for other, other_path in claimed:
                if net.overlaps(other):
                    c.fail(p, "a subnet that overlaps no other", f"{net} (overlaps {other} of {other_path.removesuffix('.subnet').removesuffix('.addresses')})")
            claimed.append((net, p))

    def _subnet_of(self, link: _RawLink) -> ipaddress.IPv4Network:
        if link.subnet is not None:
            return link.subnet
        switch = link.a if link.a in self.switch_raw else link.b
        return self.switch_subnet[switch]

    def _assign(self) -> None:
        """Explicit addresses first (checked), then the lowest free host address for every other host end."""
        c = self.check
        used: dict[ipaddress.IPv4Address, str] = {}
        on_subnet: dict[tuple[str, ipaddress.IPv4Network], str] = {}
        for link in self.links:
            hosts = [e for e in (link.a, link.b) if e in self.nodes]
            if not hosts:
                continue
            net = self._subnet_of(link)
            for host in hosts:
                key = (host, net)
                if key in on_subnet:
                    c.fail(f"{link.path}.ends", "at most one interface per node on a subnet",
                           f"a second interface of {host!r} on {net} (first: {on_subnet[key]})")
                on_subnet[key] = link.path
            for host, given in link.addresses.items():
                p = f"{link.path}.addresses.{host}"
                ip = given.ip if isinstance(given, ipaddress.IPv4Interface) else given
                if isinstance(given, ipaddress.IPv4Interface) and given.network.prefixlen != net.prefixlen:
                    c.fail(p, f"an address in {net}", str(given))
                if not _usable(ip, net):
                    c.fail(p, f"a host address in {net}", str(given))
                if ip in used:
                    c.fail(p, "an address no other interface has", f"{ip} (already on {used[ip]})")
                used[ip] = f"{host} in {link.path}"
                link.assigned[host] = ipaddress.IPv4Interface(f"{ip}/{net.prefixlen}")
        for link in self.links:
            for host in (link.a, link.b):
                if host not in self.nodes or host in link.assigned:
                    continue
                net = self._subnet_of(link)
                free = next((ip for ip in net.hosts() if ip not in used), None)
                if free is None:
                    c.fail(link.path, f"a free address in {net} for {host!r}", "none left")
                used[free] = f"{host} in {link.path}"
                link.assigned[host] = ipaddress.IPv4Interface(f"{free}/{net.prefixlen}")

    def _link_specs(self) -> list[LinkSpec]:
        host_count: dict[str, int] = {}
        port_count: dict[str, int] = {}

        def endpoint(link: _RawLink, name: str) -> Endpoint:
            if name in self.switch_raw:
                port_count[name] = port_count.get(name, 0) + 1
                return Endpoint(name, f"{paths.prefix()}{name}-{port_count[name]}", None)
            host_count[name] = host_count.get(name, 0) + 1
            return Endpoint(name, f"eth{host_count[name] - 1}", link.assigned[name])

        return [
            LinkSpec(link.name, endpoint(link, link.a), endpoint(link, link.b), link.params, link.segment,
                     link.radio, link.description)
            for link in self.links
        ]

    # --- radio and connectivity ----------------------------------------------------------------

    def _radio(self, value: object, links: list[LinkSpec]) -> RadioSpec | None:
        c = self.check
        radio_links = [(i, li) for i, li in enumerate(links) if li.radio]
        if len(radio_links) > 1:
            c.fail(f"links[{radio_links[1][0]}].radio", "at most one radio link",
                   f"a second one (links[{radio_links[0][0]}] is already the radio link)")
        for i, li in radio_links:
            roles = sorted(self.nodes[e.node].role if e.node in self.nodes else "switch" for e in li.ends)
            if roles != ["enb", "ue"]:
                c.fail(f"links[{i}].ends", "a radio link between a node of role ue and one of role enb",
                       f"[{li.a.node}, {li.b.node}] (roles {', '.join(roles)})")
        if value is None and not radio_links:
            return None
        fields = c.mapping(value if value is not None else {}, "radio", (), RADIO_OPTIONAL)
        if not radio_links:
            c.fail("radio", "a link marked 'radio: true' for the radio section to drive", "none")
        link = radio_links[0][1]
        backend = c.choice(fields.get("backend", DEFAULT_BACKEND), "radio.backend", backend_names(), "a radio backend")
        name = fields.get("link", link.name)
        if name != link.name:
            c.fail("radio.link", f"the name of the radio link ({link.name!r})", show(name))
        options = fields.get("options")
        options = {} if options is None else c.mapping(options, "radio.options")
        try:  # each backend checks its own options; caught here, the error names the file, not a failed start
            get_backend(backend).validate_options(dict(options), "radio.options", link.params)
        except RadioOptionError as exc:
            c.fail(exc.where, exc.expected, exc.got)
        return RadioSpec(backend, link.name, dict(options))

    def _connectivity(self, spec: TopologySpec) -> None:
        c = self.check
        for name in spec.nodes:
            if not spec.links_of(name):
                c.fail(f"nodes.{name}", "a node with at least one link", "none")
        pair = unreachable(spec)
        if pair is not None:
            target, source = pair
            c.fail(f"nodes.{target}", "a node every other node can reach through forwarding nodes",
                   f"one that {source!r} cannot reach (no router path to {spec.addresses(target)[0].network})")


def _usable(ip: ipaddress.IPv4Address, net: ipaddress.IPv4Network) -> bool:
    """Assignable: any address of a /31, else not the network or broadcast address."""
    if ip not in net:
        return False
    return net.prefixlen >= 31 or ip not in (net.network_address, net.broadcast_address)

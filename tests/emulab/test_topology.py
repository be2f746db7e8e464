"""Tests of the topology format: the papers' topology, routing, and one bad file per validation rule."""

from __future__ import annotations

import ipaddress
import json
import pickle
import random
import shutil
import warnings
from pathlib import Path

import pytest

from emulab.topology import TopologyError, TopologySpec, available, load
from radio import backend_names

DATA = Path(__file__).parent / "data"
TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"

PAPER_NODES = [
    "ue", "enb", "hss", "mme", "spgwc", "spgwu", "mec-pr", "mec-pe1", "mec-pe2",
    "pmc-longyearbyen", "pmc-gjovik", "pmc-tromso", "pmc-haikou", "pr-stavanger",
]


@pytest.fixture(scope="module")
def paper() -> TopologySpec:
    return load("paper-topology")


@pytest.fixture(scope="module")
def small() -> TopologySpec:
    return load("small")


# --- a route follower: walks next hops the way the kernels in the namespaces would ----------------


def _on_link(spec: TopologySpec, node: str, ip: ipaddress.IPv4Address) -> str | None:
    """The interface of ``node`` whose subnet holds ``ip``."""
    for end in spec.interfaces(node):
        if end.address is not None and ip in end.address.network:
            return end.intf
    return None


def walk(spec: TopologySpec, src: str, dst: ipaddress.IPv4Address) -> list[str]:
    """Nodes a packet from ``src`` to ``dst`` visits; fails on a missing route, a loop or a non-router."""
    path, node = [src], src
    for _ in range(len(spec.nodes) + 1):
        if any(a.ip == dst for a in spec.addresses(node)):
            return path
        if node != src:
            assert spec.nodes[node].forwarding, f"{path}: {node} would have to forward but does not"
        if _on_link(spec, node, dst) is not None:
            nxt = spec.owner_of(dst)
            assert nxt is not None, f"{dst} belongs to nobody"
        else:
            matches = [r for r in spec.routes()[node] if dst in r.dest]
            assert matches, f"{path}: {node} has no route to {dst}"
            route = max(matches, key=lambda r: r.dest.prefixlen)
            assert _on_link(spec, node, route.via) == route.dev, f"{node}: {route} is not on-link via {route.dev}"
            nxt = spec.owner_of(route.via)
            assert nxt is not None and nxt != node, f"{node}: next hop {route.via} is nobody else"
        path.append(nxt)
        node = nxt
    raise AssertionError(f"routing loop from {src} to {dst}: {path}")


def one_way_delay(spec: TopologySpec, path: list[str]) -> float:
    """Configured one-way delay (ms) along a node path; hops across a switch add both host-switch links."""
    total = 0.0
    for a, b in zip(path, path[1:], strict=False):
        direct = [li for li in spec.links_of(a) if li.peer_of(a).node == b]
        if direct:
            total += direct[0].params.delay_ms
            continue
        via_switch = [
            (la, lb) for la in spec.links_of(a) for lb in spec.links_of(b)
            if la.peer_of(a).node == lb.peer_of(b).node and la.peer_of(a).node in spec.switches
        ]
        assert via_switch, f"{a} and {b} are not adjacent"
        total += via_switch[0][0].params.delay_ms + via_switch[0][1].params.delay_ms
    return total


# --- good files ----------------------------------------------------------------------------------


def test_available_lists_the_shipped_topologies() -> None:
    assert {"paper-topology", "small"} <= set(available())


def test_paper_node_names_are_the_contract(paper: TopologySpec) -> None:
    hosts = [n for n, s in paper.nodes.items() if s.role != "router"]
    assert hosts == PAPER_NODES
    assert [n for n, s in paper.nodes.items() if s.role == "router"] == ["nornet-oslo"]
    assert list(paper.switches) == ["sgi"]
    assert paper.switches["sgi"].bridge == "em-sgi"


def test_paper_roles_and_sites(paper: TopologySpec) -> None:
    roles = {n: s.role for n, s in paper.nodes.items()}
    assert {roles[n] for n in ("ue", "enb", "hss", "mme", "spgwc", "spgwu")} == {
        "ue", "enb", "hss", "mme", "spgwc", "spgwu"}
    assert roles["ue"] == "ue" and roles["enb"] == "enb" and roles["spgwu"] == "spgwu"
    assert set(paper.sites) == {
        "ue", "ran", "epc", "mec", "longyearbyen", "gjovik", "tromso", "haikou", "stavanger"}
    assert paper.nodes["pmc-haikou"].site == "haikou"
    assert paper.nodes["pr-stavanger"].site == "stavanger"
    assert paper.nodes["mec-pe1"].site == "mec"
    forwarding = {n for n, s in paper.nodes.items() if s.forwarding}
    assert {"enb", "spgwu", "nornet-oslo"} <= forwarding
    assert "ue" not in forwarding


def test_paper_addresses(paper: TopologySpec) -> None:
    assert paper.primary_address("ue") == ipaddress.IPv4Address("10.0.0.1")
    assert paper.primary_address("enb") == ipaddress.IPv4Address("10.0.0.2")
    assert paper.addresses("spgwu")[-1] == ipaddress.IPv4Interface("10.2.0.1/24")
    assert paper.primary_address("pmc-haikou") == ipaddress.IPv4Address("10.3.88.2")
    # MEC hosts are auto-assigned from the SGi switch subnet in link order.
    assert [paper.primary_address(n) for n in ("mec-pr", "mec-pe1", "mec-pe2")] == [
        ipaddress.IPv4Address(f"10.2.0.{i}") for i in (2, 3, 4)]
    every = [a.ip for n in paper.nodes for a in paper.addresses(n)]
    assert len(every) == len(set(every))


def test_paper_interface_names(paper: TopologySpec) -> None:
    assert [e.intf for e in paper.interfaces("enb")] == ["eth0", "eth1", "eth2"]
    assert [e.intf for e in paper.interfaces("sgi")] == [f"em-sgi-{k}" for k in range(1, 6)]
    for link in paper.links:
        for end in link.ends:
            assert len(end.intf) <= 15
            assert (end.address is None) == (end.node in paper.switches)


def test_paper_segments(paper: TopologySpec) -> None:
    segment = {frozenset((li.a.node, li.b.node)): li.segment for li in paper.links}
    expected = {
        ("ue", "enb"): "Uu", ("enb", "mme"): "S1-C", ("enb", "spgwu"): "S1-U", ("mme", "spgwc"): "S11",
        ("spgwc", "spgwu"): "SXab", ("mme", "hss"): "S6a", ("spgwu", "sgi"): "SGi",
        ("nornet-oslo", "pmc-haikou"): "WAN",
    }
    for pair, label in expected.items():
        assert segment[frozenset(pair)] == label


def test_paper_radio(paper: TopologySpec) -> None:
    assert paper.radio is not None
    assert paper.radio.backend == "emulated"
    assert paper.radio.link == "ue--enb"
    radio = paper.radio_link
    assert radio is not None and radio.name == "ue--enb" and radio.radio
    assert 5 <= radio.params.delay_ms <= 10
    assert radio.params.rate_mbit is not None and 15 <= radio.params.rate_mbit <= 37
    assert [li.name for li in paper.links if li.radio] == ["ue--enb"]


def test_paper_services(paper: TopologySpec) -> None:
    registrars = [n for n, s in paper.nodes.items() if any(v.kind == "registrar" for v in s.services)]
    assert registrars == ["ue", "mec-pr", "pr-stavanger"]
    pes = {
        n: next(v.options for v in s.services if v.kind == "pe")
        for n, s in paper.nodes.items() if any(v.kind == "pe" for v in s.services)
    }
    assert list(pes) == ["ue", "mec-pe1", "mec-pe2", "pmc-longyearbyen", "pmc-gjovik", "pmc-tromso", "pmc-haikou"]
    assert pes["ue"]["capacity"] == 200000 and pes["ue"]["load_increment"] == 1.0
    assert {pes[n]["load_increment"] for n in ("mec-pe1", "mec-pe2")} == {0.1}
    assert {pes[n]["load_increment"] for n in pes if n.startswith("pmc-")} == {0.5}
    assert {o["capacity"] for n, o in pes.items() if n != "ue"} == {1000000}
    assert {o["max_requests"] for o in pes.values()} == {4}
    assert {o["policy"] for o in pes.values()} == {"PLU"}
    assert len({o["pool"] for o in pes.values()}) == 1


def test_ue_reaches_haikou_through_the_user_plane(paper: TopologySpec) -> None:
    ue_routes = paper.routes()["ue"]
    assert [str(r.dest) for r in ue_routes] == ["0.0.0.0/0"]
    assert ue_routes[0].via == paper.primary_address("enb") and ue_routes[0].dev == "eth0"
    path = walk(paper, "ue", paper.primary_address("pmc-haikou"))
    assert path == ["ue", "enb", "spgwu", "nornet-oslo", "pmc-haikou"]
    assert walk(paper, "ue", paper.primary_address("mec-pe1")) == ["ue", "enb", "spgwu", "mec-pe1"]
    assert walk(paper, "pmc-haikou", paper.primary_address("ue")) == ["pmc-haikou", "nornet-oslo", "spgwu", "enb", "ue"]


def test_paper_delays(paper: TopologySpec) -> None:
    def rtt(a: str, b: str) -> float:
        return 2 * one_way_delay(paper, walk(paper, a, paper.primary_address(b)))

    assert rtt("ue", "pmc-haikou") > 300
    assert rtt("nornet-oslo", "pmc-haikou") > 300
    for site in ("pmc-gjovik", "pmc-tromso", "pmc-longyearbyen", "pr-stavanger"):
        assert 2 * 15 <= rtt("nornet-oslo", site) <= 2 * 25  # "≈20 ms one way within Norway" (issue 2)
    assert 15 <= rtt("ue", "mec-pe1") <= 25  # LTE ping ~20 ms
    assert rtt("ue", "mec-pe1") < rtt("ue", "pmc-gjovik") < rtt("ue", "pmc-haikou")


def test_mec_hosts_default_via_spgwu_and_wan_explicit(paper: TopologySpec) -> None:
    routes = paper.routes()["mec-pe1"]
    default = [r for r in routes if r.dest.prefixlen == 0]
    assert len(default) == 1 and default[0].via == ipaddress.IPv4Address("10.2.0.1")
    explicit = {str(r.dest): str(r.via) for r in routes if r.dest.prefixlen}
    assert explicit == {f"10.3.{i}.0/30": "10.2.0.254" for i in (3, 4, 5, 8, 88)}
    # Routers never get a default route (unknown destinations must not bounce between them).
    for name, node in paper.nodes.items():
        if node.forwarding:
            assert all(r.dest.prefixlen for r in paper.routes()[name])


@pytest.mark.parametrize("name", ["paper-topology", "small", DATA / "good-radio.yaml",
                                  DATA / "good-base.yaml", DATA / "good-switch-chain.yaml"])
def test_every_pair_of_nodes_is_routed(name: str | Path) -> None:
    spec = load(name)
    for src in spec.nodes:
        connected = {a.network for a in spec.addresses(src)}
        for route in spec.routes()[src]:
            assert route.dest not in connected
        for dst in spec.nodes:
            for address in spec.addresses(dst):
                path = walk(spec, src, address.ip)
                assert path[0] == src and path[-1] == dst


def test_routes_are_deterministic(paper: TopologySpec) -> None:
    again = load(TOPOLOGIES / "paper-topology.yaml")
    assert again.routes() == paper.routes()
    assert again.links == paper.links


def test_small(small: TopologySpec) -> None:
    assert list(small.nodes) == ["h1", "h2", "h3", "r1", "h4"]
    assert list(small.switches) == ["s1"]
    link = small.link("r1--h4")
    assert link.params.delay_ms == 10.0 and link.b.address == ipaddress.IPv4Interface("10.0.1.2/30")
    assert small.routes()["r1"] == ()
    assert [(str(r.dest), str(r.via)) for r in small.routes()["h1"]] == [("0.0.0.0/0", "10.0.0.254")]
    assert walk(small, "h1", small.primary_address("h4")) == ["h1", "r1", "h4"]
    assert 2 * one_way_delay(small, ["h1", "r1", "h4"]) == 20.0
    assert small.radio is None and small.radio_link is None


def test_switch_chain_shares_the_subnet() -> None:
    spec = load(DATA / "good-switch-chain.yaml")
    assert spec.switches["s2"].subnet == spec.switches["s1"].subnet
    assert [e.intf for e in spec.interfaces("s2")] == ["em-s2-1", "em-s2-2", "em-s2-3"]
    assert spec.primary_address("h3") == ipaddress.IPv4Address("10.9.0.1")


def test_radio_section_options() -> None:
    spec = load(DATA / "good-radio.yaml")
    assert spec.radio is not None
    assert (spec.radio.backend, spec.radio.link, dict(spec.radio.options)) == ("oai", "ue--enb", {"telnet_port": 9090})


def test_radio_section_defaults_without_radio_key(tmp_path: Path) -> None:
    text = (DATA / "good-radio.yaml").read_text().split("radio: {backend")[0]
    (tmp_path / "r.yaml").write_text(text)
    spec = load(tmp_path / "r.yaml")
    assert spec.radio is not None and (spec.radio.backend, spec.radio.link) == ("emulated", "ue--enb")


def test_jitter_above_delay_loads_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = load(DATA / "good-switch-chain.yaml")
    params = spec.link("r1--h3").params
    assert params.jitter_ms > params.delay_ms


def test_as_dict_is_json(paper: TopologySpec) -> None:
    data = json.loads(json.dumps(paper.as_dict()))
    assert data["links"][0]["name"] == "ue--enb"
    assert data["routes"]["ue"] == [{"dest": "0.0.0.0/0", "via": "10.0.0.2", "dev": "eth0"}]


def test_env_var_selects_the_topologies_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(TOPOLOGIES / "small.yaml", tmp_path / "mine.yaml")
    monkeypatch.setenv("EMULAB_TOPOLOGIES", str(tmp_path))
    assert available() == ["mine"]
    assert load("mine").name == "small"


def test_unknown_bare_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(TOPOLOGIES / "small.yaml", tmp_path / "small.yaml")
    monkeypatch.setenv("EMULAB_TOPOLOGIES", str(tmp_path))
    with pytest.raises(TopologyError) as err:
        load("smal")
    assert str(err.value) == f"{tmp_path / 'smal.yaml'}: (file): expected a topology name (small), got 'smal' (did you mean 'small'?)"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as err:
        load(tmp_path / "nope.yaml")
    assert str(err.value) == f"{tmp_path / 'nope.yaml'}: (file): expected an existing topology file, got no such file"


# --- bad files: one per validation rule, exact messages -------------------------------------------

BAD = {
    "bad-syntax": "line 7, column 5: expected valid YAML, got expected ',' or '}', but got ':' (while parsing a flow mapping)",
    "bad-indent": "line 6, column 4: expected valid YAML, got expected <block end>, but found '<block mapping start>' (while parsing a block mapping)",
    "bad-binary": "(file): expected valid UTF-8 YAML, got unacceptable character #x00ff: invalid start byte in \"<byte string>\", position 6",
    "bad-duplicate-key": "line 6, column 3: expected unique mapping keys, got 'h1' twice (first on line 5)",
    "bad-empty": "(top level): expected a mapping with the keys name, sites, nodes, links, got an empty file",
    "bad-top-list": "(top level): expected a mapping with the keys name, sites, nodes, links, got a list",
    "bad-unknown-top-key": "nodse: expected one of the keys name, sites, nodes, links, description, switches, radio, got unknown key 'nodse' (did you mean 'nodes'?)",
    "bad-missing-links": "links: expected a value (the key 'links' is required), got nothing",
    "bad-no-links-list": "links: expected a non-empty list of links, got an empty list",
    "bad-name-type": "name: expected a topology name, got [base]",
    "bad-unknown-link-key": "links[3].dealy: expected one of the keys ends, subnet, addresses, delay, jitter, loss, rate, segment, radio, description, got unknown key 'dealy' (did you mean 'delay'?)",
    "bad-delay": "links[3].delay: expected a duration like '20ms', got 'fast'",
    "bad-negative-delay": "links[3].delay: expected a duration that is not negative, got -5",
    "bad-jitter": "links[3].jitter: expected a duration like '2ms', got [1, 2]",
    "bad-loss": "links[3].loss: expected a percentage between 0 and 100, got '150%'",
    "bad-loss-text": "links[3].loss: expected a percentage like '1%', got 'some'",
    "bad-rate": "links[3].rate: expected a rate like '100Mbit', got '10 furlongs'",
    "bad-zero-rate": "links[3].rate: expected a positive rate like '100Mbit', got '0Mbit'",
    "bad-forwarding-type": "nodes.r1.forwarding: expected true or false, got 'maybe'",
    "bad-role": "nodes.r1.role: expected a role (ue, enb, hss, mme, spgwc, spgwu, router, registrar, pe, pu, mec, pmc, host), got 'routr' (did you mean 'router'?)",
    "bad-site-ref": "nodes.h2.site: expected a site defined under sites (lab), got 'lba' (did you mean 'lab'?)",
    "bad-node-missing-role": "nodes.h2.role: expected a value (the key 'role' is required), got nothing",
    "bad-node-not-mapping": "nodes.h2: expected a mapping, got [host, lab]",
    "bad-node-name": "nodes.H2: expected a node name matching [a-z][a-z0-9-]{0,30}, got 'H2'",
    "bad-service-kind": "nodes.h1.services[0].kind: expected a service kind (registrar, pe, pu), got 'registar' (did you mean 'registrar'?)",
    "bad-service-options": "nodes.h1.services[0].options: expected a mapping, got [1, 2]",
    "bad-services-not-list": "nodes.h1.services: expected a list of services like [{kind: registrar}], got a mapping",
    "bad-switch-name-long": "switches.sgilanoslo: expected a switch name of at most 8 characters, so that port names 'em-<name>-<port>' fit in 15 characters, got 'sgilanoslo'",
    "bad-switch-name-clash": "switches.h1: expected a switch name not already used by a node, got 'h1'",
    "bad-switch-no-subnet": "switches.s1.subnet: expected a subnet like '10.0.0.0/24', got nothing",
    "bad-switch-segment-two-subnets": "switches.s2.subnet: expected no subnet (switch 's2' is linked to 's1', which already names the segment's), got 10.0.9.0/24",
    "bad-subnet-host-bits": "switches.s1.subnet: expected an IPv4 subnet with no host bits set, got '10.0.0.1/24'",
    "bad-subnet-text": "switches.s1.subnet: expected an IPv4 subnet like '10.0.0.0/24', got 'lan'",
    "bad-unknown-end": "links[1].ends[1]: expected the name of a node or switch, got 's2'",
    "bad-self-link": "links[1].ends: expected two different ends, got [h2, h2]",
    "bad-ends-not-pair": "links[1].ends: expected a pair of node or switch names like [ue, enb], got [h2, s1, h1]",
    "bad-duplicate-link": "links[3].ends: expected a pair not linked before, got [s1, h1] (already links[0])",
    "bad-duplicate-address": "links[1].addresses.h2: expected an address no other interface has, got 10.0.0.9 (already on h1 in links[0])",
    "bad-address-out-of-subnet": "links[0].addresses.h1: expected a host address in 10.0.0.0/24, got 10.0.5.1",
    "bad-address-broadcast": "links[0].addresses.h1: expected a host address in 10.0.0.0/24, got 10.0.0.255",
    "bad-address-prefix": "links[0].addresses.h1: expected an address in 10.0.0.0/24, got 10.0.0.1/16",
    "bad-address-text": "links[0].addresses.h1: expected an IPv4 address like '10.0.0.1' or '10.0.0.1/24', got '10.0.0.300'",
    "bad-address-wrong-end": "links[0].addresses.h2: expected an address for a host end of this link (h1), got an address for 'h2'",
    "bad-subnet-on-switch-link": "links[0].subnet: expected no subnet on a link to a switch (switch 's1' has the subnet), got '10.0.7.0/24'",
    "bad-overlapping-subnets": "links[3].subnet: expected a subnet that overlaps no other, got 10.0.0.128/30 (overlaps 10.0.0.0/24 of switches.s1)",
    "bad-p2p-no-subnet": "links[3]: expected a 'subnet' (like '10.0.0.0/30') or both 'addresses' with a prefix length on a link between two hosts, got neither",
    "bad-p2p-addresses-differ": "links[3].addresses: expected two addresses in one subnet, got 10.0.1.1/30, 10.0.2.2/30",
    "bad-subnet-full": "links[2]: expected a free address in 10.0.0.0/30 for 'r1', got none left",
    "bad-two-interfaces-one-segment": "links[2].ends: expected at most one interface per node on a subnet, got a second interface of 'h1' on 10.0.0.0/24 (first: links[0])",
    "bad-radio-flag-type": "links[0].radio: expected true or false, got 1",
    "bad-radio-two-links": "links[2].radio: expected at most one radio link, got a second one (links[0] is already the radio link)",
    "bad-radio-roles": "links[1].ends: expected a radio link between a node of role ue and one of role enb, got [enb, h1] (roles enb, host)",
    "bad-radio-without-link": "radio: expected a link marked 'radio: true' for the radio section to drive, got none",
    # the choices are the registry's (radio.backend_names()): emulated, oai, b210 and any added since
    "bad-radio-backend": f"radio.backend: expected a radio backend ({', '.join(backend_names())}), got 'sdr'",
    "bad-radio-link-name": "radio.link: expected the name of the radio link ('ue--enb'), got 'enb--ue'",
    "bad-radio-option-typo": "radio.options: expected options the emulated radio understands, got unknown option "
                             "'bandwith_mhz' (known: antenna_gain_dbi, attach_time_s, bandwidth_mhz, base_delay_ms, base_jitter_ms, bler_slope_db, bs_height_m, carrier_mhz, coverage_holes, distance_m, harq_rtt_ms, max_harq_tx, max_rate_mbit, min_distance_m, n310, n311, noise_figure_db, overhead, qin_db, qout_db, reestablish_time_s, seed, shadowing_corr_m, shadowing_std_db, snr_profile, t310_ms, t311_ms, tick_s, trajectory, tx_power_dbm)",
    "bad-radio-option-value": "radio.options: expected options the emulated radio understands, got bandwidth_mhz "
                              "must be one of [1.4, 3.0, 5.0, 10.0, 15.0, 20.0], got 3.5",
    "bad-radio-option-holes": "radio.options: expected options the emulated radio understands, got "
                              "coverage_holes[0]: expected {at: <s>, for: <s>}, got {'at': 10}",
    "bad-isolated-node": "nodes.h4: expected a node with at least one link, got none",
    "bad-unreachable-node": "nodes.h1: expected a node every other node can reach through forwarding nodes, got one that 'h3' cannot reach (no router path to 10.0.0.0/24)",
}


@pytest.mark.parametrize("stem", sorted(BAD))
def test_bad_file_message(stem: str) -> None:
    path = DATA / f"{stem}.yaml"
    with pytest.raises(TopologyError) as err:
        load(path)
    assert str(err.value) == f"{path}: {BAD[stem]}"
    assert err.value.file == str(path)
    assert str(pickle.loads(pickle.dumps(err.value))) == str(err.value)


def test_every_bad_file_has_an_expected_message() -> None:
    assert sorted(p.stem for p in DATA.glob("bad-*.yaml")) == sorted(BAD)


GARBLED = [
    "{{{{", "]", "name: [", "- - - -\n  - :", "\t\tname: x", ": :", "&a [*a, *a]", "!!python/object:os.system ls",
    "name: x\nsites: &s {lab: *s}\nnodes: 3\nlinks: x\n", "? [a, b]\n: c\n", "name: x\nname: y\n",
    "name: x\nsites: {lab: {}}\nnodes: {h1: {role: host, site: lab}}\nlinks: [{ends: [h1, 7]}]\n",
    "name: x\nsites: {lab: []}\nnodes: {}\nlinks: []\n", "name: 2020-01-01\nsites: {}\nnodes: {}\nlinks: []\n",
    "name: x\nsites: {lab: {}}\nnodes: {h1: {role: host, site: lab, services: [[]]}}\nlinks: [[]]\n",
    "name: x\nsites: {1: {}}\nnodes: {}\nlinks: []\n", "\x00\x01\x02", "'unterminated", "x: !!binary Zm9v",
]


@pytest.mark.parametrize("text", GARBLED)
def test_garbled_yaml_only_raises_topology_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "garbled.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert "loader bug" not in message


def test_random_mutations_of_good_files_only_raise_topology_error(tmp_path: Path) -> None:
    """Delete, duplicate and corrupt lines/characters of the shipped files: load or TopologyError, never more."""
    rng = random.Random(1234)
    sources = [(TOPOLOGIES / "paper-topology.yaml").read_text(), (TOPOLOGIES / "small.yaml").read_text()]
    path = tmp_path / "mutant.yaml"
    outcomes = {"loaded": 0, "rejected": 0}
    for _ in range(300):
        lines = rng.choice(sources).splitlines(keepends=True)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(lines))
            op = rng.randrange(4)
            if op == 0:
                del lines[i]
            elif op == 1:
                lines.insert(i, lines[rng.randrange(len(lines))])
            elif op == 2 and lines[i].strip():
                j = rng.randrange(len(lines[i]))
                lines[i] = lines[i][:j] + rng.choice(" :-[]{}x0/.%#'\"") + lines[i][j + 1:]
            else:
                lines[i] = lines[i].replace("10.", "10.1", 1).replace("ms", "", 1)
        path.write_text("".join(lines))
        try:
            load(path)
            outcomes["loaded"] += 1
        except TopologyError as err:
            assert "\n" not in str(err) and "loader bug" not in str(err), str(err)
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 50

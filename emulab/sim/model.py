"""The simulator's view of a pool: its elements with capacity, policy and the delays that matter.

Built either from a topology (``emulab.topology.load``: every ``pe`` service is a pool element; the
PUs run on the UE node and resolve handles at the UE's registrar) or from a built-in synthetic
scenario, ``synthetic:N`` (``large`` = ``synthetic:1000``), used to check that the simulator scales.

Delays come from the topology's links (one-way ``delay_ms`` summed along the routed path, jitter and
rates ignored: CalcApp messages are tiny):

* request delay = ``connect_rtts`` × RTT (RSPLIB's client opens a new SCTP association per job:
  INIT/INIT-ACK before the COOKIE-ECHO that carries the request) + one way to the element;
* accept / reject / complete = one way back;
* load update delay = PE → its home registrar (ASAP re-registration) + home registrar → the PU's
  registrar (ENRP handle update); the PU's registrar is the one the PLU selection runs on.

The UE's radio timers (``RadioTimers``: when a coverage loss becomes a radio link failure, how long
the re-attach takes) are those the topology's radio backend (``radio.get_backend``) runs with under
the topology's ``radio.options`` (``rrc_timers``: radio.lte's, for the emulated radio and OAI), so a
simulated coverage loss follows the emulated one's timeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emulab.errors import EmulabError
from emulab.scenario import ELEMENT_CLASSES, Scenario
from radio import DEFAULT_BACKEND, RadioError, get_backend
from radio.lte import FRAME_S, LteConfig
from rserpool.policy import PolicyInfo

LARGE_ELEMENTS = 1000
_LTE = LteConfig()  # radio.lte's defaults: the one source of the RRC timers below


class ModelError(EmulabError):
    """The target cannot be simulated (unknown topology, no pool elements …)."""


@dataclass(frozen=True, slots=True)
class ElementModel:
    """One pool element as the simulator sees it."""

    name: str
    element_class: str
    capacity: float
    max_requests: int
    policy: PolicyInfo
    one_way_s: float
    """UE -> element one-way delay (the way back is taken to be equal)."""
    rtt_s: float
    load_update_delay_s: float
    on_ue: bool
    """Runs on the UE itself: still reachable when the UE loses coverage."""


@dataclass(frozen=True, slots=True)
class RadioTimers:
    """The UE's RRC timers as ``radio.lte`` runs them (36.331 §5.3.11; OAI defaults).

    A hard coverage loss at L is a radio link failure (RLF) at L + N310 frames + T310 (1.2 s): until
    then packets are just lost; from then on the UE's routes are withdrawn (the emulated radio's
    bearer), so connections to remote addresses fail at once. Coverage back at R: the UE re-attaches
    one frame later plus ``attach_time_s`` (or ``reestablish_time_s``, if set and within T311 of the
    RLF); a loss shorter than the RLF time never detaches the UE.
    """

    n310: int = _LTE.n310
    t310_ms: float = _LTE.t310_ms
    n311: int = _LTE.n311
    t311_ms: float = _LTE.t311_ms
    attach_time_s: float = _LTE.attach_time_s
    reestablish_time_s: float | None = _LTE.reestablish_time_s

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None, backend: str = DEFAULT_BACKEND) -> RadioTimers:
        """The timers radio ``backend`` runs with under a topology's ``radio.options`` (defaults without)."""
        try:
            t = get_backend(backend).rrc_timers(dict(options or {}))
        except RadioError as exc:
            raise ModelError(str(exc)) from None
        return cls(t.n310, t.t310_ms, t.n311, t.t311_ms, t.attach_time_s, t.reestablish_time_s)

    @property
    def rlf_s(self) -> float:
        """Coverage lost → radio link failure (N310 × 10 ms + T310)."""
        return self.n310 * FRAME_S + self.t310_ms / 1000.0

    def reattach_s(self, detached_for: float) -> float:
        """Coverage back → attached again, after ``detached_for`` seconds since the RLF."""
        if self.reestablish_time_s is not None and detached_for <= self.t311_ms / 1000.0:
            return FRAME_S + self.reestablish_time_s
        return FRAME_S + self.attach_time_s

    def to_dict(self) -> dict[str, Any]:
        return {"n310": self.n310, "t310_ms": self.t310_ms, "n311": self.n311, "t311_ms": self.t311_ms,
                "attach_time_s": self.attach_time_s, "reestablish_time_s": self.reestablish_time_s}


@dataclass(frozen=True, slots=True)
class PoolModel:
    """The pool and where its users are."""

    name: str
    elements: tuple[ElementModel, ...]
    policy_type: int
    pu_node: str = "ue"
    registrar: str | None = None
    handle_resolution_rtt_s: float = 0.0
    """PU <-> its registrar (0 when the registrar runs on the UE, as in the papers)."""
    radio: RadioTimers = field(default_factory=RadioTimers)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "pu_node": self.pu_node,
            "registrar": self.registrar,
            "handle_resolution_rtt_s": self.handle_resolution_rtt_s,
            "radio": self.radio.to_dict(),
            "elements": [
                {
                    "name": e.name, "class": e.element_class, "capacity": e.capacity,
                    "max_requests": e.max_requests, "policy": e.policy.to_dict(),
                    "one_way_s": e.one_way_s, "rtt_s": e.rtt_s,
                    "load_update_delay_s": e.load_update_delay_s, "on_ue": e.on_ue,
                }
                for e in self.elements[:50]
            ],
            "element_count": len(self.elements),
        }


def policy_type_of(name: str) -> int:
    try:
        return int(PolicyInfo.parse(name.split(":", 1)[0]).policy_type)
    except ValueError as exc:
        raise ModelError(f"--policy: {exc}") from None


def _policy_info(ptype: int, increment: float) -> PolicyInfo:
    # PLU-like policies carry the increment in the load-degradation field (RSPLIB); others ignore it
    try:
        return PolicyInfo.make(ptype, load_degradation=min(1.0, max(0.0, increment)))
    except ValueError as exc:
        raise ModelError(f"bad policy parameters: {exc}") from None


def element_class(role: str, site: str, node: str) -> str:
    """ue | mec | pmc for a node hosting a PE: by role, else by site (the papers' three places)."""
    for cls in ELEMENT_CLASSES:
        if role == cls:
            return cls
    if site in ("ue", "mec"):
        return site
    if node.startswith(("ue", "mec")):
        return "ue" if node.startswith("ue") else "mec"
    return "pmc"


def build_model(scenario: Scenario) -> PoolModel:
    """The pool model for ``scenario.target`` with the scenario's per-class overrides applied."""
    target = scenario.target
    if target == "large" or target.startswith("synthetic:"):
        n = LARGE_ELEMENTS
        if target.startswith("synthetic:"):
            try:
                n = int(target.split(":", 1)[1])
            except ValueError:
                raise ModelError(f"{target}: expected synthetic:<number of elements>") from None
            if n < 1:
                raise ModelError(f"{target}: need at least one element")
        return synthetic_model(n, scenario)
    return topology_model(target, scenario)


def _class_value(m: Mapping[str, float], cls: str, fallback: float) -> float:
    return float(m.get(cls, fallback))


def synthetic_model(n: int, scenario: Scenario) -> PoolModel:
    """n elements: one on the UE, 10 % in the MEC (RTT 19 ms), the rest PMC (RTT 59 ms, 1 in 8 at 339 ms).

    The delays are the paper topology's (UE->MEC 19 ms, UE->Norway 59 ms, UE->Haikou 339 ms RTT).
    """
    ptype = policy_type_of(scenario.policy)
    elements: list[ElementModel] = []
    n_mec = max(1, n // 10) if n > 1 else 0
    for i in range(n):
        if i == 0:
            cls, name, rtt, lud = "ue", "ue-pe", 0.0, 0.0
        elif i <= n_mec:
            cls, name, rtt, lud = "mec", f"mec-pe{i}", 0.019, 0.0095
        else:
            k = i - n_mec
            far = k % 8 == 0
            cls, name, rtt, lud = "pmc", f"pmc-pe{k}", (0.339 if far else 0.059), (0.2295 if far else 0.0695)
        elements.append(ElementModel(
            name=name, element_class=cls,
            capacity=_class_value(scenario.capacity, cls, 1e6),
            max_requests=scenario.max_requests,
            policy=_policy_info(ptype, _class_value(scenario.increments, cls, 0.0)),
            one_way_s=rtt / 2, rtt_s=rtt, load_update_delay_s=lud, on_ue=(cls == "ue"),
        ))
    return PoolModel(name=f"synthetic:{n}", elements=tuple(elements), policy_type=ptype, registrar="ue")


def topology_model(target: str, scenario: Scenario) -> PoolModel:
    from emulab.selfcheck_paths import path_links
    from emulab.topology import TopologyError, load

    try:
        spec = load(target)
    except TopologyError as exc:
        raise ModelError(str(exc)) from None
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise ModelError(f"unknown topology or scenario {target!r}: {exc}") from None

    pu_node = next((n for n, s in spec.nodes.items() if s.role == "ue"), None)
    if pu_node is None:
        raise ModelError(f"{target}: no node with role ue to run the pool users on")
    registrars = [n for n, s in spec.nodes.items() if any(v.kind == "registrar" for v in s.services)]

    cache: dict[tuple[str, str], float] = {}

    def one_way(a: str, b: str) -> float:
        if a == b:
            return 0.0
        key = (a, b)
        if key not in cache:
            try:
                cache[key] = sum(lk.params.delay_ms for lk in path_links(spec, a, b)) / 1000.0
            except (ValueError, KeyError) as exc:
                raise ModelError(f"{target}: no path {a} -> {b}: {exc}") from None
        return cache[key]

    pu_registrar: str | None = None
    if pu_node in registrars:
        pu_registrar = pu_node
    elif registrars:
        pu_registrar = min(registrars, key=lambda r: one_way(pu_node, r) + one_way(r, pu_node))
    hr_rtt = 0.0 if pu_registrar is None else one_way(pu_node, pu_registrar) + one_way(pu_registrar, pu_node)

    ptype = policy_type_of(scenario.policy)
    elements: list[ElementModel] = []
    pool_name: str | None = None
    for name, node in spec.nodes.items():
        for svc in node.services:
            if svc.kind != "pe":
                continue
            opts = dict(svc.options)
            pool = str(opts.get("pool", "Processing Pool"))
            if pool_name is None:
                pool_name = pool
            elif pool != pool_name:
                continue  # one pool per simulation: the first PE's
            cls = element_class(node.role, node.site, name)
            home = opts.get("registrar")
            home_pr = home if isinstance(home, str) and home in spec.nodes else pu_registrar
            lud = 0.0
            if home_pr is not None:
                lud = one_way(name, home_pr)
                if pu_registrar is not None and home_pr != pu_registrar:
                    lud += one_way(home_pr, pu_registrar)
            ow = one_way(pu_node, name)
            rtt = ow + one_way(name, pu_node)
            elements.append(ElementModel(
                name=name, element_class=cls,
                capacity=_class_value(scenario.capacity, cls, float(opts.get("capacity", 1e6))),
                max_requests=scenario.max_requests,
                policy=_policy_info(ptype, _class_value(scenario.increments, cls, float(opts.get("load_increment", 0.0)))),
                one_way_s=rtt / 2, rtt_s=rtt, load_update_delay_s=lud, on_ue=(name == pu_node),
            ))
    if not elements:
        raise ModelError(f"{target}: the topology has no pool elements (services of kind pe)")
    return PoolModel(
        name=spec.name, elements=tuple(elements), policy_type=ptype, pu_node=pu_node,
        registrar=pu_registrar, handle_resolution_rtt_s=hr_rtt,
        radio=(RadioTimers.from_options(spec.radio.options, spec.radio.backend) if spec.radio is not None
               else RadioTimers()),
    )


__all__ = [
    "ElementModel", "ModelError", "PoolModel", "RadioTimers", "build_model", "element_class",
    "synthetic_model", "topology_model",
]

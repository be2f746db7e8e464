"""The dashboard's fractal: a Fractal Generator pool user on the UE, image after image, and what the
page draws of it (which element computed which points, and each session's timeline).

The pool user is ``emulab.dashboard.agent fractal`` in the UE's namespace, asking the UE's registrar
(so it carries on with the UE's own element when coverage is lost, as in the demo). Its lines land in
``on_line``; every Data message becomes a region ``[pe, x, y, points]``, every session event a
timeline entry, and both are handed to the page's live stream (``publish``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from emulab.dashboard.state import ASAP_PORT, AgentProcess, LiveState

TIMELINE_KINDS = {"connect": "resolve", "first_data": "accept", "failover": "fail-over", "done": "done",
                  "failed": "fail"}


class FractalJob:
    def __init__(self, state: LiveState, publish: Callable[[str, dict[str, Any]], None], *,
                 width: int = 400, height: int = 250, iterations: int = 1024, strips: int = 4,
                 pause: float = 2.0) -> None:
        self.state, self.publish = state, publish
        self.options = {"width": width, "height": height, "iterations": iterations, "strips": strips, "pause": pause}
        self.agent: AgentProcess | None = None
        self.node: str | None = None
        self.image: dict[str, Any] | None = None  # the image being drawn
        self.last: dict[str, Any] | None = None  # the last one completed
        self.images_done = 0
        self.numbered = 0  # images numbered so far: a restarted pool user's images carry on from here
        self._base = 0

    @property
    def running(self) -> bool:
        return self.agent is not None and self.agent.alive

    def ue_node(self) -> str:
        nodes = self.state.status.get("nodes", [])
        ue = next((n["name"] for n in nodes if n["role"] == "ue"), None)
        if ue is None:
            raise ValueError("the topology has no node with role ue")
        return ue

    async def start(self, **options: Any) -> None:
        if self.running:
            return
        self.options.update({k: v for k, v in options.items() if k in self.options and v is not None})
        ue = self.ue_node()
        # the UE's own registrar when it runs one, else the first registrar
        regs = self.state.registrar_nodes()
        reg = ue if ue in regs else (regs[0] if regs else None)
        if reg is None:
            raise ValueError("no registrar runs in the testbed")
        ns = (self.state.run_state.get("nodes", {}).get(ue) or {}).get("netns_path")
        addr = self.state.primary(reg)
        if not ns or not addr:
            raise ValueError(f"no namespace or address for {ue}")
        o = self.options
        args = ["fractal", f"{addr}:{ASAP_PORT}", "--width", str(o["width"]), "--height", str(o["height"]),
                "--iterations", str(o["iterations"]), "--strips", str(o["strips"]), "--pause", str(o["pause"])]
        self.node = ue
        self._base = self.numbered
        self.agent = AgentProcess(ue, ns, args, self.on_line, self.state.run_state.get("run_id"))
        await self.agent.start()
        self.publish("fractal_status", {"running": True})

    async def stop(self) -> None:
        if self.agent is not None:
            await self.agent.stop()
            self.agent = None
        self.publish("fractal_status", {"running": False})

    def on_line(self, _node: str, obj: dict[str, Any]) -> None:
        if "image" not in obj:
            return
        n = int(obj["image"]) + self._base
        self.numbered = max(self.numbered, n)
        if "update" in obj:
            if self.image is None or self.image["n"] != n:
                return
            region = [*obj["update"][:4], obj.get("shade", "")]
            self.image["regions"].append(region)
            # a point belongs to the element that sent it last (after a fail-over without a cookie,
            # the new element recomputes what the old one had sent)
            pe, x, y, points = region[:4]
            start = y * self.image["width"] + x
            self.image["owner"][start:start + points] = pe
            self.publish("fractal_update", {"image": n, "region": region})
            return
        kind = obj.get("event")
        if kind == "image":
            self.image = {"n": n, "width": obj["width"], "height": obj["height"], "strips": obj["strips"],
                          "started_at": obj.get("at", time.time()), "regions": [], "timeline": [],
                          "owner": np.zeros(obj["width"] * obj["height"], dtype=np.uint32),
                          "complete": False, "ok": None, "elapsed": None}
            self.publish("fractal_image", self._public(self.image))
        elif kind == "image_done" and self.image is not None and self.image["n"] == n:
            self.image.update(complete=True, ok=obj.get("ok"), elapsed=obj.get("elapsed"))
            self.images_done += 1
            self.last = self.image
            self.publish("fractal_done", {"image": n, "ok": obj.get("ok"), "elapsed": obj.get("elapsed"),
                                          "points": self._points(self.image)})
        elif kind in TIMELINE_KINDS and self.image is not None and self.image["n"] == n:
            entry = {"strip": obj.get("strip"), "kind": TIMELINE_KINDS[kind], "t": obj.get("t"),
                     "pe": obj.get("pe"), "from_pe": obj.get("from_pe"), "cookie": obj.get("cookie"),
                     "error": obj.get("error")}
            if entry["t"] is None:  # a failed session has no time of its own: since the image started
                entry["t"] = round(time.time() - self.image["started_at"], 3)
            self.image["timeline"].append(entry)
            self.publish("fractal_event", {"image": n, **entry})

    @staticmethod
    def _points(image: dict[str, Any]) -> dict[str, int]:
        """Points of the image per element identifier (who computed how much of what is there now)."""
        owner = image["owner"]
        ids, counts = np.unique(owner[owner != 0], return_counts=True)
        return {str(int(i)): int(c) for i, c in zip(ids, counts, strict=True)}

    def _public(self, image: dict[str, Any] | None, regions: bool = True) -> dict[str, Any] | None:
        if image is None:
            return None
        out = {k: image[k] for k in ("n", "width", "height", "strips", "started_at", "timeline", "complete", "ok",
                                     "elapsed")}
        out["points"] = self._points(image)
        if regions:
            out["regions"] = image["regions"]
        return out

    def to_json(self, names: dict[int, str], regions: bool = False) -> dict[str, Any]:
        """The fractal for ``/api/state``: PE identifiers with their nodes, the current and last image
        (without the regions unless asked: the live stream carries those)."""
        image, last = self._public(self.image, regions), self._public(self.last, False)
        ids = set()
        for img in (image, last):  # the points counted once per image, by _public
            if img is not None:
                ids.update(int(k) for k in img["points"])
                ids.update(int(e["pe"]) for e in img["timeline"] if e.get("pe"))
        return {
            "running": self.running, "node": self.node, "options": self.options, "images_done": self.images_done,
            "elements": {str(i): {"identifier_hex": f"0x{i:08x}", "node": names.get(i)} for i in sorted(ids)},
            "image": image, "last": last,
        }

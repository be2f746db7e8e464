"""The dashboard's web server (aiohttp): the page, ``/api/state``, a server-sent event stream and the controls.

* ``GET /``: the page (plain HTML + JS + SVG from ``emulab/dashboard/static``; no build step);
* ``GET /api/state``: the whole state as JSON (docs/dashboard.md);
* ``GET /api/stream``: server-sent events: ``state`` after every refresh, ``fractal_*`` as the
  pool user's messages arrive;
* ``POST /api/control``: ``{"action": ...}`` (coverage_lose, coverage_restore, service_kill,
  service_restart, link_set, fractal_start, fractal_stop), through ``emulab.dashboard.actions``.
  Bound to a loopback address the controls are open; bound elsewhere they need the token printed
  at start (header ``X-Dashboard-Token`` or ``?token=``).

The server ends by itself when the testbed it showed stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from emulab.dashboard import actions
from emulab.dashboard.fractal import FractalJob
from emulab.dashboard.state import LiveState
from emulab.errors import EmulabError

STATIC = Path(__file__).parent / "static"


def is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


class Dashboard:
    def __init__(self, *, interval: float = 1.0, token: str | None = None, fractal_options: dict[str, Any] | None = None,
                 fractal_autostart: bool = False) -> None:
        self.interval = interval
        self.token = token
        self.state = LiveState()
        self.subscribers: set[asyncio.Queue[tuple[str, str]]] = set()
        self.fractal = FractalJob(self.state, self.publish, **(fractal_options or {}))
        self.state.fractal = self.fractal
        self.fractal_autostart = fractal_autostart
        self.ended = asyncio.Event()
        self.refreshes = 0
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ live stream
    def publish(self, event: str, data: dict[str, Any]) -> None:
        payload = json.dumps(data, separators=(",", ":"))
        for q in list(self.subscribers):
            if q.qsize() < 5000:  # a stalled page must not grow the server's memory without end
                q.put_nowait((event, payload))

    async def _loop(self) -> None:
        while True:
            t0 = time.monotonic()
            try:
                await self.state.refresh()
            except Exception as exc:  # a failed refresh is shown, the dashboard stays up
                self.state.message = f"refresh failed: {type(exc).__name__}: {exc}"
            self.refreshes += 1
            if self.state.seen and not self.state.running:
                # the testbed this dashboard showed is gone: so is the dashboard
                self.publish("state", self.state.to_json())
                await self.fractal.stop()
                self.ended.set()
                return
            if self.state.running and self.fractal_autostart and not self.fractal.running and self.fractal.agent is None:
                with contextlib.suppress(ValueError, EmulabError):
                    await self.fractal.start()
            self.publish("state", self.state.to_json())
            await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - t0)))

    async def start(self, app: web.Application) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def cleanup(self, app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.fractal.stop()
        await self.state.stop_agents()

    # ------------------------------------------------------------------ handlers
    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def api_state(self, request: web.Request) -> web.Response:
        data = self.state.to_json()
        if data.get("fractal") is not None:
            data["fractal"] = self.fractal.to_json(self.state.pe_names, regions=True)
        return web.json_response(data, dumps=lambda o: json.dumps(o, indent=1))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        q: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.subscribers.add(q)
        try:
            snapshot = self.state.to_json()
            if snapshot.get("fractal") is not None:
                snapshot["fractal"] = self.fractal.to_json(self.state.pe_names, regions=True)
            await resp.write(f"event: state\ndata: {json.dumps(snapshot)}\n\n".encode())
            while True:
                try:
                    event, payload = await asyncio.wait_for(q.get(), 15.0)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                chunks = [f"event: {event}\ndata: {payload}\n\n"]
                while not q.empty() and len(chunks) < 500:  # batch what queued up
                    event, payload = q.get_nowait()
                    chunks.append(f"event: {event}\ndata: {payload}\n\n")
                await resp.write("".join(chunks).encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.subscribers.discard(q)
        return resp

    def _authorised(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("X-Dashboard-Token") or request.query.get("token") or ""
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def control(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "the controls need the dashboard's token"}, status=403)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "expected a JSON body"}, status=400)
        action = body.get("action")
        handlers: dict[str, Callable[[], Any]] = {
            "coverage_lose": lambda: asyncio.to_thread(actions.coverage, True),
            "coverage_restore": lambda: asyncio.to_thread(actions.coverage, False),
            "service_kill": lambda: asyncio.to_thread(actions.service, "kill", str(body["node"]), str(body["kind"])),
            "service_restart": lambda: asyncio.to_thread(actions.service, "restart", str(body["node"]),
                                                         str(body["kind"])),
            "link_set": lambda: asyncio.to_thread(
                actions.set_link, str(body["link"]),
                **{k: float(body[k]) for k in ("delay_ms", "jitter_ms", "loss_pct", "rate_mbit")
                   if body.get(k) not in (None, "")}),
            "fractal_start": lambda: self.fractal.start(**{k: int(body[k]) for k in ("width", "height", "iterations",
                                                                                      "strips") if k in body}),
            "fractal_stop": lambda: self.fractal.stop(),
        }
        if action not in handlers:
            return web.json_response({"error": f"unknown action {action!r} ({', '.join(handlers)})"}, status=400)
        try:
            result = await handlers[action]()
        except KeyError as exc:
            return web.json_response({"error": f"missing field {exc}"}, status=400)
        except (EmulabError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=409)
        self.publish("control", {"action": action, "at": time.time()})
        return web.json_response({"ok": True, "result": result})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.index)
        app.router.add_get("/api/state", self.api_state)
        app.router.add_get("/api/stream", self.stream)
        app.router.add_post("/api/control", self.control)
        app.router.add_static("/static/", STATIC)
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.cleanup)
        return app


def serve(*, bind: str = "127.0.0.1", port: int = 8050, interval: float = 1.0, fractal_autostart: bool = True,
          fractal_options: dict[str, Any] | None = None, announce: Callable[[str], None] = print) -> None:
    """Run the dashboard until the testbed it shows stops (or SIGINT/SIGTERM)."""
    token = None if is_loopback(bind) else secrets.token_urlsafe(16)
    dash = Dashboard(interval=interval, token=token, fractal_options=fractal_options,
                     fractal_autostart=fractal_autostart)

    async def main() -> None:
        import signal

        runner = web.AppRunner(dash.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, bind, port)
        await site.start()
        host = f"[{bind}]" if ":" in bind else bind
        announce(f"dashboard on http://{host}:{port}/" + (f"?token={token}" if token else ""))
        if token:
            announce(f"controls token: {token} (bound to {bind}: the controls need it)")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ended = asyncio.ensure_future(dash.ended.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if dash.ended.is_set():
            announce("the testbed stopped: dashboard ends")
        await runner.cleanup()

    asyncio.run(main())

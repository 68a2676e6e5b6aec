"""The FastAPI application: ``/ws`` (the dialogue protocol), ``/health`` and ``/metrics``.

:func:`create_app` takes an already loaded (and warmed-up) :class:`~freeze_omni.dialogue.engine.DialogueEngine`;
nothing is loaded at import time. The app starts the engine's workers on startup and stops them on shutdown.
Other transports (the web client's page, an OpenAI-Realtime endpoint) are more routes on the same app, each a
thin adapter over the same transport-agnostic session API.
"""

from __future__ import annotations

import hmac
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse

from freeze_omni.server import protocol as P

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


@dataclass
class ServerSettings:
    """Limits and security of the server.

    Attributes:
        max_users: concurrent sessions; one more gets an ``error`` ``busy`` event and is closed.
        token: if set, clients must present it (``Authorization: Bearer TOKEN`` or ``?token=TOKEN``); also
            guards ``/metrics``.
        allowed_origins: browser origins allowed to open ``/ws`` (requests without an ``Origin`` header, i.e.
            not from a web page, always pass). None: same-origin pages and localhost pages; ``["*"]``: any.
        max_message_bytes: largest client message handled; larger ones get ``message_too_large`` and are dropped
            (messages over 4x this close the connection with 1009 at the websocket layer).
        max_prompt_chars: longest system prompt.
        idle_timeout_s: a connection that sends nothing for this long is closed (``idle_timeout``).
        max_session_s: a connection is closed after this long (``session_timeout``).
        max_backlog_s: unprocessed input audio per session beyond this is dropped (``input_overflow``).
    """

    max_users: int = 8
    token: Optional[str] = None
    allowed_origins: Optional[list[str]] = None
    max_message_bytes: int = 65536
    max_prompt_chars: int = 4000
    idle_timeout_s: float = 120.0
    max_session_s: float = 3600.0
    max_backlog_s: float = 20.0

    def limits(self) -> dict[str, Any]:
        """What ``session.created`` announces."""
        return {"max_message_bytes": self.max_message_bytes, "max_prompt_chars": self.max_prompt_chars,
                "idle_timeout_s": self.idle_timeout_s, "max_session_s": self.max_session_s}

    def token_ok(self, headers: Any, query: Any) -> bool:
        if not self.token:
            return True
        given = ""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        given = given or query.get("token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    def origin_ok(self, origin: Optional[str], host: Optional[str]) -> bool:
        """Browsers always send ``Origin``; a request without one is not from a web page (and any other client
        could forge the header anyway), so it passes: the token is what guards those."""
        if origin is None:
            return True
        if self.allowed_origins is not None:
            return "*" in self.allowed_origins or origin.rstrip("/") in [o.rstrip("/") for o in self.allowed_origins]
        parts = urlsplit(origin)
        return parts.hostname in LOCAL_HOSTS or (host is not None and parts.netloc == host)


@dataclass
class ServerState:
    """What the routes share: the engine, the settings and the live connection count (event-loop thread only)."""

    engine: Any
    settings: ServerSettings
    active: int = 0
    connections: set = field(default_factory=set)


def create_app(engine: Any, settings: Optional[ServerSettings] = None) -> FastAPI:
    """The ASGI app serving ``engine`` (started on app startup, stopped on shutdown)."""
    from freeze_omni.server.ws import handle_connection

    state = ServerState(engine, settings or ServerSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="freeze-omni", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state

    @app.get("/health")
    async def health() -> JSONResponse:
        ok = engine.scheduler.running
        return JSONResponse({"status": "ok" if ok else "stopped", "sessions": state.active,
                             "max_users": state.settings.max_users, "workers": engine.cfg.workers,
                             "protocol": P.PROTOCOL_VERSION}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> PlainTextResponse:
        if not state.settings.token_ok(request.headers, request.query_params):
            return PlainTextResponse("unauthorized\n", status_code=401)
        return PlainTextResponse(engine.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.websocket(P.PATH)
    async def ws_endpoint(ws: WebSocket) -> None:
        await handle_connection(ws, state)

    app.include_router(__import__("freeze_omni.server.realtime", fromlist=["router"]).router)  # /v1/realtime

    # the web client (freeze_omni/server/static): the page at /, its scripts and style under /static/
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    static_dir = Path(__file__).parent / "static"
    app.mount("/static", StaticFiles(directory=static_dir), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(static_dir / "index.html", headers={"Cache-Control": "no-cache"})

    return app

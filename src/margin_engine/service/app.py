"""The FastAPI application factory."""

from __future__ import annotations

import gc
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from margin_engine import __version__

from . import dashboard, problems, routes_accounts, routes_margin, routes_pool, stream
from .settings import ServiceSettings
from .state import ServiceState
from .warm import warm_kernels

SETTINGS_VARIABLE = "MARGIN_ENGINE_SERVICE_SETTINGS"  # workers > 1 read their settings here
DESCRIPTION = """Pre-trade what-if, margins of posted books and stored accounts, the pool's
health and an event stream. Authenticate with `Authorization: Bearer <API key>` (keys from
`margin-engine keys create`); errors are RFC 9457 `application/problem+json` naming each field
at fault. The dashboard is at `/`; the WebSocket stream at `/v1/stream`."""


class BodyLimit:
    """Refuse a body whose Content-Length exceeds the limit (413), before reading it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                    problem = problems.ProblemError(
                        problems.ProblemKind.TOO_LARGE, f"bodies of at most {self.limit:,} "
                        "bytes; margin larger books with `margin-engine compute`")
                    await problems.problem_response(problem)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # opened on the event loop's thread, the only one that uses the store
        state = ServiceState(settings)
        app.state.service = state
        # the kernels of a what-if compiled or loaded now, not on the first request (37.7 s
        # from an empty numba cache, 0.4 s from a warm one)
        warm_kernels(state.follower.config)
        # what start-up made lives as long as the process: full garbage collections (50-80
        # ms under load when they walked it) leave it alone from here on
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            state.close()

    app = FastAPI(title="margin-engine", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan)
    problems.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    for module in (routes_accounts, routes_margin, routes_pool, stream, dashboard):
        app.include_router(module.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        state: ServiceState = app.state.service
        return {"status": "ok", "tick": state.market_version}

    return app


def settings_to_environment(settings: ServiceSettings) -> None:
    os.environ[SETTINGS_VARIABLE] = json.dumps(
        {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()})


def create_app_from_environment() -> FastAPI:
    """The factory each uvicorn worker process calls (``serve --workers N``)."""
    data = json.loads(os.environ[SETTINGS_VARIABLE])
    for name in ("market", "config"):
        if data.get(name) is not None:
            data[name] = Path(data[name])
    return create_app(ServiceSettings(**data))

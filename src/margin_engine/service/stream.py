"""``WS /v1/stream``: margin events from the store's event log (the monitor's outbox and the
audit events) after a sequence number, as they are committed; with ``health=true`` (admin) also
each tick's pool health.

Authenticate with ``Authorization: Bearer <key>``, or (browsers cannot set headers on a
WebSocket) with a first message ``{"api_key": "<key>"}``. Messages: ``{"type": "ready",
"after": N}``, ``{"type": "events", "events": [{"seq", "tick", "kind", "account",
"payload"}]}``, ``{"type": "health", "points": [{"tick", ...}]}``, and ``{"type": "error",
...problem}`` before a refused connection is closed. An account's key gets its own account's
events only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from .auth import Principal, principal_of
from .keys import Scope
from .problems import STATUS, TITLES, ProblemError
from .state import ServiceState

router = APIRouter()
BATCH = 500
AUTH_SECONDS = 10.0
POLICY_VIOLATION = 1008


async def _token(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    try:
        message = await asyncio.wait_for(websocket.receive_text(), AUTH_SECONDS)
        data = json.loads(message)
    except (TimeoutError, ValueError, WebSocketDisconnect, KeyError, RuntimeError):
        return None
    token = data.get("api_key") if isinstance(data, dict) else None
    return token if isinstance(token, str) else None


async def _refuse(websocket: WebSocket, problem: ProblemError) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_json({"type": "error", "title": TITLES[problem.kind],
                                   "status": STATUS[problem.kind], "detail": problem.detail})
        await websocket.close(code=POLICY_VIOLATION)


def _event(seq: int, event: Any) -> dict[str, Any]:
    return {"seq": seq, "tick": event.tick_seq, "kind": event.kind, "account": event.account,
            "payload": json.loads(event.payload)}


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket, after: int | None = None, health: bool = False,
                 tick: int | None = None) -> None:
    """``after``: the event sequence to start after (default: now); ``tick``: the tick to
    start the health points after (default: now)."""
    state: ServiceState = websocket.app.state.service
    await websocket.accept()
    try:
        principal: Principal = await principal_of(state, await _token(websocket))
        principal.require(Scope.ADMIN if principal.account is None or health else Scope.READ)
    except ProblemError as problem:
        await _refuse(websocket, problem)
        return
    store = state.store
    seq = store.last_event_seq() if after is None else max(0, after)
    if tick is None:
        last = store.last_metrics()
        tick = 0 if last is None else last[0]
    tick = max(0, tick)
    await websocket.send_json({"type": "ready", "after": seq, "tick": tick})
    receiver = asyncio.ensure_future(websocket.receive())
    try:
        while True:
            if receiver.done():
                if receiver.result()["type"] == "websocket.disconnect":
                    return
                receiver = asyncio.ensure_future(websocket.receive())
            events = store.events_after(seq, BATCH) if principal.account is None else \
                store.account_events_after(principal.account, seq, BATCH)
            if events:
                seq = events[-1][0]
                await websocket.send_json({"type": "events",
                                           "events": [_event(s, e) for s, e in events]})
            points = store.metrics_after(tick, BATCH) if health else []
            if points:
                tick = points[-1][0]
                await websocket.send_json({"type": "health", "points": [
                    {"tick": t, **json.loads(p)} for t, p in points]})
            if not events and not points:
                await asyncio.wait([receiver], timeout=state.settings.stream_poll_seconds)
    except (WebSocketDisconnect, RuntimeError, ConnectionError):
        return
    finally:
        receiver.cancel()

"""The pool (admin keys): health per tick as the monitor recorded it, the accounts nearest
liquidation, margin efficiency by model, and the breaker and oracle state."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from margin_engine.core.timeutil import ns_to_iso
from margin_engine.store.base import EventKind

from .auth import Principal, authenticate
from .book import book_documents
from .keys import Scope
from .pool import PoolView, pool_view
from .responses import PROBLEMS
from .state import ServiceState, compute, service_state

router = APIRouter(prefix="/v1/pool", tags=["pool"], responses=PROBLEMS)
Auth = Annotated[Principal, Depends(authenticate)]
BREAKER_KINDS = (EventKind.BREAKER_ON.value, EventKind.BREAKER_OFF.value)
ORACLE_KINDS = (EventKind.ORACLE_FLAGGED.value, EventKind.ORACLE_CLEARED.value)


def health_point(tick: int, payload: str) -> dict[str, Any]:
    return {"tick": tick, **json.loads(payload)}


@router.get("/health", summary="Pool health at the last tick")
async def get_health(request: Request, principal: Auth) -> JSONResponse:
    """Collateral by asset, coverage ratio, concentration, insurance-fund cover, accounts near
    liquidation, in margin call and liquidatable, the breaker multiplier (null before the
    first tick)."""
    principal.require(Scope.ADMIN)
    last = service_state(request).store.last_metrics()
    return JSONResponse({"health": None if last is None else health_point(*last)})


@router.get("/history", summary="Pool health per tick")
async def get_history(request: Request, principal: Auth,
                      after: Annotated[int, Query(ge=0, le=2**62)] = 0,
                      limit: Annotated[int, Query(ge=1, le=10_000)] = 5000) -> JSONResponse:
    """A page of ticks after `after` (`next_after` for the next page)."""
    principal.require(Scope.ADMIN)
    rows = service_state(request).store.metrics_after(after, limit)
    return JSONResponse({"points": [health_point(t, p) for t, p in rows],
                         "next_after": rows[-1][0] if len(rows) == limit else None})


async def _view(state: ServiceState, limit: int) -> PoolView:
    market = state.market()
    key = (state.store.last_event_seq(), state.market_version, limit)
    view: PoolView | None = state.pool.get(key)
    if view is None:
        accounts = book_documents(*state.store.book_rows())
        follower = state.follower
        view = await compute(lambda: pool_view(accounts, follower.instruments, market,
                                               follower.config, follower.model, limit))
        state.pool.put(key, view)
    return view


@router.get("/at-risk", summary="Accounts nearest liquidation")
async def get_at_risk(request: Request, principal: Auth,
                      limit: Annotated[int, Query(ge=1, le=50)] = 10) -> JSONResponse:
    """The accounts not yet liquidatable whose liquidation price is nearest the index, in % of
    the index (negative: below), at the current market under the service's model."""
    principal.require(Scope.ADMIN)
    state = service_state(request)
    view = await _view(state, limit)
    return JSONResponse({"tick": state.market_version, "accounts": view.accounts,
                         "liquidatable": view.liquidatable,
                         "in_margin_call": view.in_margin_call, "at_risk": view.at_risk})


@router.get("/efficiency", summary="Margin efficiency by model")
async def get_efficiency(request: Request, principal: Auth) -> JSONResponse:
    """Every stored account under each model: gross notional / IM of the pool."""
    principal.require(Scope.ADMIN)
    state = service_state(request)
    view = await _view(state, 10)
    return JSONResponse({"tick": state.market_version, "models": view.efficiency})


def _event(item: tuple[int, Any] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    seq, event = item
    return {"seq": seq, "tick": event.tick_seq, "kind": event.kind,
            "payload": json.loads(event.payload)}


@router.get("/state", summary="Breaker, oracle and prices")
async def get_state(request: Request, principal: Auth) -> JSONResponse:
    """The circuit breaker's multiplier and last change, the symbols whose oracle sources
    disagree, each symbol's price and the last tick."""
    principal.require(Scope.ADMIN)
    state = service_state(request)
    market = state.follower.market if state.follower.monitor is None else state.market()
    store = state.store
    breaker = store.last_events_of(BREAKER_KINDS, 1)
    oracle = store.last_events_of(ORACLE_KINDS, 20)
    last = store.last_metrics()
    multiplier = state.follower.breaker_multiplier
    return JSONResponse({
        "tick": state.market_version,
        "time": None if last is None else json.loads(last[1]).get("time"),
        "breaker": {"multiplier": multiplier, "on": multiplier > 1.0,
                    "last_change": _event(breaker[0] if breaker else None)},
        "oracle": {"flagged": state.follower.flagged,
                   "last_events": [_event(item) for item in oracle]},
        "prices": {} if market is None else
        {**{u: m.index for u, m in sorted(market.underlyings.items())}},
        "market_time": None if market is None else ns_to_iso(market.timestamp_ns),
        "last_event_seq": store.last_event_seq()})

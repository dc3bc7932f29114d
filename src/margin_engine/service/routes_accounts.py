"""Accounts, positions and collateral kept in the store (every change an audited event), an
account's current margin and liquidation prices, and pre-trade what-if."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AfterValidator

from margin_engine.app.compute import ModelChoice, bind
from margin_engine.app.whatif import Order, account_margin, what_if
from margin_engine.core.errors import InputError
from margin_engine.core.names import EXPECTED_ACCOUNT_ID, MAX_NAME_LENGTH, account_id_problem
from margin_engine.domain.instruments import check_trades_at
from margin_engine.service.strict_json import UniqueKeysRoute
from margin_engine.store.service import AccountRows, BookOp, BookWrite

from .auth import Principal, authenticate
from .book import account_document, audit_event, changed, portfolio_document
from .keys import Scope
from .problems import FieldError, ProblemError, ProblemKind, from_input_error
from .responses import PROBLEMS
from .schemas import (
    AccountIn,
    AccountList,
    AccountOut,
    AccountSummary,
    CollateralIn,
    Deleted,
    PositionIn,
    PositionOut,
    WhatIfRequest,
)
from .state import ServiceState, compute, service_state

router = APIRouter(prefix="/v1", tags=["accounts"], responses=PROBLEMS,
                   route_class=UniqueKeysRoute)


def _account_id(value: str) -> str:
    """An account id as books give them (``core.names.account_id_problem``)."""
    problem = account_id_problem(value)
    if problem is not None:
        raise ValueError(f"{EXPECTED_ACCOUNT_ID}; {problem}")
    return value


AccountId = Annotated[str, Path(min_length=1, max_length=MAX_NAME_LENGTH,
                                description="Account id: printable text of at most 256 "
                                            "characters, as in a book."),
                      AfterValidator(_account_id)]
InstrumentName = Annotated[str, Path(min_length=1, max_length=100,
                                     description="Instrument name (e.g. BTC-PERP).")]
AssetName = Annotated[str, Path(pattern=r"^[A-Za-z0-9._@-]{1,40}$",
                                description="Collateral asset (ASSET or ASSET@CHAIN).")]
Auth = Annotated[Principal, Depends(authenticate)]


def _account_out(document: dict[str, Any], event_seq: int | None = None) -> AccountOut:
    return AccountOut(id=document["id"], mode=document["mode"],
                      positions=[PositionOut(**p) for p in document["positions"]],
                      collateral=document["collateral"], event_seq=event_seq)


def _check(state: ServiceState, document: dict[str, Any], write: BookWrite) -> None:
    """Refuse an account the engine would refuse: parsed, and bound to the current market
    when the service has one; and a position set in an instrument that no longer trades at
    that market's time (it would be settled at once, at the index when the market gives no
    settlement price). Nothing is written then."""
    from margin_engine.io.portfolio_file import parse_portfolio

    portfolio = portfolio_document([document], state.follower.instruments)
    try:
        parsed = parse_portfolio(portfolio)
        market = state.follower.market
        if market is not None:
            bind(portfolio, market)
            if write.op is BookOp.PUT_POSITION and write.name is not None:
                check_trades_at(parsed.instruments[write.name], market.timestamp_ns,
                                field="instrument", value=write.name)
    except InputError as exc:
        raise ProblemError(ProblemKind.INVALID_INPUT, str(exc),
                           [FieldError(exc.field or "body", exc.value, exc.expected)]) from None


def _apply(state: ServiceState, principal: Principal, write: BookWrite,
           rows: AccountRows | None, before: Any, after: Any) -> tuple[dict[str, Any] | None,
                                                                       int]:
    document = changed(rows, write)
    if document is not None:
        _check(state, document, write)
    seq = state.store.change_book([write], audit_event(write, principal.key_id, before, after))
    return document, seq


# The hot routes first: a request is matched against the routes in order.
@router.get("/accounts/{account_id}/margin", summary="An account's margin now",
            responses={200: {"description": "`tick`: the last tick of the market; `account`: "
                             "equity, IM, MM, breakdown and liquidation prices."}})
async def get_margin(account_id: AccountId, request: Request, principal: Auth,
                     model: ModelChoice | None = None, explain: bool = False) -> JSONResponse:
    """At the current market (the monitor's, after its last tick), under the service's model
    unless `model` is given."""
    principal.require(Scope.READ, account_id)
    state = service_state(request)
    rows = state.account_rows(account_id)
    market = state.market()
    follower = state.follower
    name = (model or ModelChoice(follower.model)).value
    key = ("margin", rows, state.market_version, name, explain, True)
    margin = state.margins.get(key)
    if margin is None:
        try:
            margin = await compute(lambda: account_margin(
                account_document(rows), market, follower.config, model=name,
                instruments=follower.instruments, explain=explain))
        except InputError as exc:
            raise from_input_error(exc) from None
        state.margins.put(key, margin)
    return JSONResponse({"tick": state.market_version, "account": margin.to_json()})


@router.post("/accounts/{account_id}/what-if", summary="Pre-trade what-if on a stored account",
             responses={200: {"description": "IM, MM, adjusted equity and liquidation prices "
                              "before and after the orders, and the change."}})
async def post_what_if(account_id: AccountId, body: WhatIfRequest, request: Request,
                       principal: Auth) -> JSONResponse:
    """The orders are merged into the account's positions (an average entry when adding, the
    closed part's P&L realised into USD cash when reducing); nothing is stored. Needs `read`."""
    principal.require(Scope.READ, account_id)
    state = service_state(request)
    rows = state.account_rows(account_id)
    market = state.market()
    follower = state.follower
    name = (body.model or ModelChoice(follower.model)).value
    key = ("margin", rows, state.market_version, name, False, body.liquidation_prices)
    before = state.margins.get(key)
    orders = [Order(instrument=o.instrument, size=o.size, price=o.price) for o in body.orders]
    try:
        result = await compute(lambda: what_if(
            account_document(rows), orders, market, follower.config, model=name,
            instruments=follower.instruments, liquidation=body.liquidation_prices,
            before=before, content=(rows, follower.instruments_key)), small=before is not None)
    except InputError as exc:
        raise from_input_error(exc) from None
    if before is None:
        state.margins.put(key, result.before)
    return JSONResponse({"tick": state.market_version, **result.to_json()})


@router.get("/accounts", response_model=AccountList, summary="List accounts")
async def list_accounts(request: Request, principal: Auth,
                        after: Annotated[str, Query(max_length=64)] = "",
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> AccountList:
    """Admin: every account, by id, a page at a time. An account's key: its own account."""
    principal.require(Scope.READ)
    state = service_state(request)
    if Scope.ADMIN not in principal.scopes:
        principal.require(Scope.READ, account=principal.account or "")
        rows = state.store.account_rows(principal.account or "")
        found = [] if rows is None or rows.account <= after else [(rows.account, rows.mode)]
        return AccountList(accounts=[AccountSummary(id=i, mode=m) for i, m in found],
                           next_after=None)
    page = state.store.account_list(after, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return AccountList(accounts=[AccountSummary(id=i, mode=m) for i, m in page],
                       next_after=page[-1][0] if more else None)


@router.put("/accounts/{account_id}", response_model=AccountOut, status_code=200,
            summary="Create an account or change its mode",
            responses={201: {"description": "Created."}})
async def put_account(account_id: AccountId, body: AccountIn, request: Request,
                      response: Response, principal: Auth) -> AccountOut:
    """Needs `admin`."""
    principal.require(Scope.ADMIN)
    state = service_state(request)
    rows = state.store.account_rows(account_id)
    write = BookWrite(op=BookOp.PUT_ACCOUNT, account=account_id, mode=body.mode.value)
    document, seq = _apply(state, principal, write, rows,
                           None if rows is None else rows.mode, body.mode.value)
    assert document is not None
    if rows is None:
        response.status_code = 201
    return _account_out(document, seq)


@router.get("/accounts/{account_id}", response_model=AccountOut, summary="An account")
async def get_account(account_id: AccountId, request: Request, principal: Auth) -> AccountOut:
    principal.require(Scope.READ, account_id)
    return _account_out(account_document(service_state(request).account_rows(account_id)))


@router.delete("/accounts/{account_id}", response_model=Deleted,
               summary="Delete an account with its positions and collateral")
async def delete_account(account_id: AccountId, request: Request, principal: Auth) -> Deleted:
    """Needs `admin`."""
    principal.require(Scope.ADMIN)
    state = service_state(request)
    rows = state.account_rows(account_id)
    write = BookWrite(op=BookOp.DELETE_ACCOUNT, account=account_id)
    _, seq = _apply(state, principal, write, rows, account_document(rows), None)
    return Deleted(deleted=account_id, event_seq=seq)


@router.get("/accounts/{account_id}/positions", response_model=list[PositionOut],
            summary="An account's positions")
async def get_positions(account_id: AccountId, request: Request,
                        principal: Auth) -> list[PositionOut]:
    principal.require(Scope.READ, account_id)
    rows = service_state(request).account_rows(account_id)
    return [PositionOut(instrument=i, size=s, entry_price=e) for i, s, e in rows.positions]


@router.put("/accounts/{account_id}/positions/{instrument}", response_model=AccountOut,
            summary="Set a position (size and average entry price)")
async def put_position(account_id: AccountId, instrument: InstrumentName, body: PositionIn,
                       request: Request, principal: Auth) -> AccountOut:
    """Needs `trade` (on the key's own account) or `admin`."""
    principal.require(Scope.TRADE, account_id)
    state = service_state(request)
    rows = state.account_rows(account_id)
    old = next(({"size": s, "entry_price": e} for i, s, e in rows.positions
                if i == instrument), None)
    write = BookWrite(op=BookOp.PUT_POSITION, account=account_id, name=instrument,
                      size=body.size, entry_price=body.entry_price)
    document, seq = _apply(state, principal, write, rows, old,
                           {"size": body.size, "entry_price": body.entry_price})
    assert document is not None
    return _account_out(document, seq)


@router.delete("/accounts/{account_id}/positions/{instrument}", response_model=AccountOut,
               summary="Remove a position")
async def delete_position(account_id: AccountId, instrument: InstrumentName, request: Request,
                          principal: Auth) -> AccountOut:
    principal.require(Scope.TRADE, account_id)
    state = service_state(request)
    rows = state.account_rows(account_id)
    old = next(({"size": s, "entry_price": e} for i, s, e in rows.positions
                if i == instrument), None)
    if old is None:
        raise ProblemError(ProblemKind.NOT_FOUND, f"account {account_id!r} holds no "
                           f"{instrument!r}")
    write = BookWrite(op=BookOp.DELETE_POSITION, account=account_id, name=instrument)
    document, seq = _apply(state, principal, write, rows, old, None)
    assert document is not None
    return _account_out(document, seq)


@router.get("/accounts/{account_id}/collateral", response_model=dict[str, float],
            summary="An account's collateral balances")
async def get_collateral(account_id: AccountId, request: Request,
                         principal: Auth) -> dict[str, float]:
    principal.require(Scope.READ, account_id)
    return dict(service_state(request).account_rows(account_id).collateral)


@router.put("/accounts/{account_id}/collateral/{asset}", response_model=AccountOut,
            summary="Set a collateral balance")
async def put_collateral(account_id: AccountId, asset: AssetName, body: CollateralIn,
                         request: Request, principal: Auth) -> AccountOut:
    """Needs `trade` (on the key's own account) or `admin`."""
    principal.require(Scope.TRADE, account_id)
    state = service_state(request)
    rows = state.account_rows(account_id)
    old = dict(rows.collateral).get(asset)
    write = BookWrite(op=BookOp.PUT_COLLATERAL, account=account_id, name=asset,
                      amount=body.amount)
    document, seq = _apply(state, principal, write, rows, old, body.amount)
    assert document is not None
    return _account_out(document, seq)


@router.delete("/accounts/{account_id}/collateral/{asset}", response_model=AccountOut,
               summary="Remove a collateral balance")
async def delete_collateral(account_id: AccountId, asset: AssetName, request: Request,
                            principal: Auth) -> AccountOut:
    principal.require(Scope.TRADE, account_id)
    state = service_state(request)
    rows = state.account_rows(account_id)
    old = dict(rows.collateral).get(asset)
    if old is None:
        raise ProblemError(ProblemKind.NOT_FOUND, f"account {account_id!r} holds no {asset!r}")
    write = BookWrite(op=BookOp.DELETE_COLLATERAL, account=account_id, name=asset)
    document, seq = _apply(state, principal, write, rows, old, None)
    assert document is not None
    return _account_out(document, seq)

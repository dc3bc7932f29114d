"""``POST /v1/margin``: margin a posted book at a posted market (what ``compute --json``
gives for the same files)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from margin_engine.app.compute import bind, compute_bound
from margin_engine.core.errors import InputError
from margin_engine.margin.config import RiskConfig
from margin_engine.service.strict_json import UniqueKeysRoute

from .auth import Principal, authenticate
from .keys import Scope
from .problems import from_input_error
from .responses import PROBLEMS
from .schemas import MarginRequest
from .state import compute, service_state

router = APIRouter(prefix="/v1", tags=["margin"], route_class=UniqueKeysRoute)


def margin_document(body: MarginRequest, liquidation_limit: int) -> dict[str, Any]:
    try:
        config = RiskConfig() if body.config is None else RiskConfig.from_dict(body.config)
    except InputError as exc:
        raise exc.located(field_prefix="config") from None
    bound = bind(body.portfolio, body.market, portfolio_field="portfolio", market_field="market")
    try:
        report = compute_bound(bound, config, model=body.model, explain=body.explain,
                               liquidation=body.liquidation_prices,
                               liquidation_limit=liquidation_limit)
    except InputError as exc:
        if exc.account is not None:
            raise exc.located(field_prefix="portfolio") from None
        raise
    return report.to_json()


@router.post("/margin", summary="Margin a posted portfolio at a posted market",
             responses={200: {"description": "The `compute --json` document: every account's "
                              "equity, IM, MM, breakdown and liquidation prices."}, **PROBLEMS})
async def post_margin(body: MarginRequest, request: Request,
                      principal: Annotated[Principal, Depends(authenticate)]) -> JSONResponse:
    """Any model, for any book (liquidation prices for up to the service's limit of accounts);
    `explain` lists every contribution. Needs the `read` scope."""
    principal.require(Scope.READ)
    limit = service_state(request).settings.liquidation_limit
    try:
        document = await compute(lambda: margin_document(body, limit))
    except InputError as exc:
        raise from_input_error(exc, {"portfolio": body.portfolio, "market": body.market,
                                     "config": body.config}) from None
    return JSONResponse(document)

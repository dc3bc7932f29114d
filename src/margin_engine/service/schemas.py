"""Request and response bodies (pydantic, for validation and the OpenAPI document).
Portfolios and markets are the engine's own JSON documents, checked by the engine's parsers
(whose errors name the field); numbers that are not finite are refused here."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from margin_engine.app.compute import LiquidationChoice, ModelChoice
from margin_engine.core.numbers import MAX_MAGNITUDE


def _not_a_boolean(value: Any) -> Any:
    """JSON true and false are no numbers (pydantic would take them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("a number, not true or false")
    return value


Number = Annotated[float, BeforeValidator(_not_a_boolean)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MarginModeChoice(StrEnum):
    ISOLATED = "isolated"
    CROSS = "cross"
    PORTFOLIO = "portfolio"


class MarginRequest(Strict):
    portfolio: dict[str, Any] = Field(description="A portfolio document "
                                      "(`margin-engine/portfolio/v1`).")
    market: dict[str, Any] = Field(description="A market snapshot (`margin-engine/market/v1`).")
    model: ModelChoice = Field(ModelChoice.ACCOUNT, description="A margin model, or `account`: "
                               "each account under its own mode (var needs a price history "
                               "and is served by the CLI only).")
    explain: bool = Field(False, description="List every contribution per account.")
    liquidation_prices: LiquidationChoice = Field(
        LiquidationChoice.AUTO, description="`auto`: for books of up to the service's limit "
        "(100 accounts by default).")
    config: dict[str, Any] | None = Field(None, description="A risk configuration (the "
                                          "defaults where absent).")


class OrderIn(Strict):
    instrument: str = Field(min_length=1, max_length=100, examples=["BTC-PERP"])
    size: Number = Field(allow_inf_nan=False, ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE,
                         description="Signed contracts (negative: sell).")
    price: Number = Field(allow_inf_nan=False, ge=0.0, le=MAX_MAGNITUDE,
                          description="Fill price in the instrument's convention.")


class WhatIfRequest(Strict):
    orders: list[OrderIn] = Field(min_length=1, max_length=100)
    model: ModelChoice | None = Field(None, description="Default: the service's model.")
    liquidation_prices: bool = Field(True, description="Before and after (a root search per "
                                     "underlying each).")


class AccountIn(Strict):
    mode: MarginModeChoice


class PositionIn(Strict):
    size: Number = Field(allow_inf_nan=False, ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)
    entry_price: Number = Field(allow_inf_nan=False, ge=0.0, le=MAX_MAGNITUDE)


class CollateralIn(Strict):
    amount: Number = Field(allow_inf_nan=False, ge=0.0, le=MAX_MAGNITUDE)


class PositionOut(BaseModel):
    instrument: str
    size: float
    entry_price: float


class AccountOut(BaseModel):
    id: str
    mode: str
    positions: list[PositionOut]
    collateral: dict[str, float]
    event_seq: int | None = Field(None, description="The audit event of this change.")


class AccountSummary(BaseModel):
    id: str
    mode: str


class AccountList(BaseModel):
    accounts: list[AccountSummary]
    next_after: str | None = Field(None, description="Pass as `after` for the next page.")


class Deleted(BaseModel):
    deleted: str
    event_seq: int

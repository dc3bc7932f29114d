"""Liquidation prices in a batch's result parts (``batch --liquidation-prices``).

For every underlying U of the market, three columns (USD index levels of U, null where there is
none): ``liquidation_price_U`` (the level nearest today's index in log distance, the
``liquidation_price`` of ``compute --json``), ``liquidation_down_U`` (the closest at or below
today's index) and ``liquidation_up_U`` (the closest above it). Each account's levels are
searched under the model it is margined by (its own mode with ``--model account``), by the same
compiled search as ``compute`` (``liquidation.price.liquidation_levels``), reusing the part's
model results. A level depends on its account alone, so a part's levels are those of the same
accounts in a single run over the whole book, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.run import AccountMargins

SIDES = ("price", "down", "up")  # nearest, at or below today's index, above it


def level_columns(underlyings: Iterable[str]) -> tuple[str, ...]:
    """The result columns of the liquidation levels, in order: per underlying (sorted by
    name) its nearest, down and up level."""
    return tuple(f"liquidation_{side}_{u}" for u in sorted(underlyings) for side in SIDES)


def empty_level_columns(underlyings: Iterable[str]) -> dict[str, Any]:
    """The level columns without rows (float64, as in every part)."""
    import pyarrow as pa

    return {name: pa.array([], type=pa.float64()) for name in level_columns(underlyings)}


def liquidation_columns(bound: BoundBook, config: RiskConfig, margins: AccountMargins,
                        underlyings: Sequence[str], market_key: str) -> dict[str, Any]:
    """The level columns of the part's accounts, each under the model its margins came from
    (``margins.parts``), for every underlying of ``underlyings`` (the market's): null where
    the account has no level on that side or no exposure to the underlying. ``market_key``
    names the market, config and declared instruments of the run: the instruments' states on
    the search's grid are kept under it for the worker's next part
    (``liquidation.shared_states``)."""
    import pyarrow as pa

    from margin_engine.liquidation.price import liquidation_levels
    from margin_engine.liquidation.shared_states import states_shared
    from margin_engine.liquidation.vector_levels import known_results
    from margin_engine.margin.registry import get_model

    n = bound.account_count
    found = {side: np.full((n, len(bound.underlyings)), np.nan) for side in SIDES}
    known = [(get_model(result.model), result) for _, result in margins.parts]
    with known_results(bound, config, known), states_shared(market_key):
        for rows, result in margins.parts:
            levels = liquidation_levels(bound, result.model, config, accounts=rows)
            for side, values in zip(SIDES, (levels.nearest, levels.down, levels.up),
                                    strict=True):
                found[side][rows] = values[rows]
    column_of = {u: k for k, u in enumerate(bound.underlyings)}
    columns: dict[str, Any] = {}
    for u in sorted(underlyings):
        for side in SIDES:
            k = column_of.get(u)
            values = found[side][:, k] if k is not None else np.full(n, np.nan)
            columns[f"liquidation_{side}_{u}"] = pa.array(values, mask=~np.isfinite(values),
                                                          type=pa.float64())
    return columns


def levels_found(table_columns: dict[str, Any]) -> dict[str, int]:
    """The levels found below and above today's index, over every account and underlying."""
    counts = {"liquidation_levels_down": 0, "liquidation_levels_up": 0}
    for name, column in table_columns.items():
        for side in ("down", "up"):
            if name.startswith(f"liquidation_{side}_"):
                counts[f"liquidation_levels_{side}"] += len(column) - column.null_count
    return counts

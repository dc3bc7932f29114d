"""Helpers shared by the models: (account, underlying) segment sums and activity masks."""

from __future__ import annotations

import numpy as np

from margin_engine.book.bound import BoundBook, asset_prices
from margin_engine.collateral.haircuts import CollateralHaircuts, book_haircuts
from margin_engine.core.types import BoolArray, FloatArray, IntArray
from margin_engine.margin.config import RiskConfig


def position_cell(bound: BoundBook) -> IntArray:
    """Flat (account, underlying) cell index of every position: account x n_u + underlying."""
    n_u = len(bound.underlyings)
    und = bound.book.instruments.underlying[bound.book.position_instrument].astype(np.int64)
    return bound.position_account * n_u + und


def per_underlying_sum(bound: BoundBook, per_position: FloatArray,
                       mask: np.ndarray | None = None) -> FloatArray:
    """accounts x underlyings sums of a per-position array (rows outside ``mask`` skipped)."""
    n_u = len(bound.underlyings)
    cells = position_cell(bound)
    weights = per_position if mask is None else np.where(mask, per_position, 0.0)
    flat = np.bincount(cells, weights=weights, minlength=bound.account_count * n_u)
    return flat.reshape(bound.account_count, n_u).astype(np.float64)


def active_cells(bound: BoundBook) -> BoolArray:
    """(account, underlying) cells holding a position (any size)."""
    n_u = len(bound.underlyings)
    flat = np.zeros(bound.account_count * n_u, dtype=np.bool_)
    flat[position_cell(bound)] = True
    return flat.reshape(bound.account_count, n_u)


def collateral_haircuts(bound: BoundBook, config: RiskConfig, revalued: frozenset[str]
                        ) -> CollateralHaircuts:
    """Haircuts of every account's collateral at the bound market's prices (``revalued``: the
    assets whose volatility part the calling model leaves out)."""
    return book_haircuts(bound.book.collateral, bound.book.assets,
                         asset_prices(bound.book, bound.market), config.haircuts, revalued)


def coins_of(bound: BoundBook) -> frozenset[str]:
    """Collateral assets that are underlyings of the bound book (moved by scenario models)."""
    return frozenset(bound.underlyings)

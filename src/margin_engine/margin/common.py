"""Helpers shared by the models: (account, underlying) segment sums and activity masks."""

from __future__ import annotations

import numpy as np

from margin_engine.book.bound import BoundBook
from margin_engine.core.types import BoolArray, FloatArray, IntArray


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

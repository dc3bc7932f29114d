"""The per-row checks of a bulk positions file in one compiled pass (no temporary per check).

Check k fails on row r when:
    0  size not finite                      1  |size| > max_magnitude
    2  entry not finite or entry < 0        3  entry > max_magnitude
    4  entry = 0 on a spot, perpetual or future (entry 0 is a premium only for options)
    5  margin given and not 0 <= margin <= max_magnitude
    6  leverage given and not 0 < leverage <= max_magnitude
    7  margin and leverage both given
(a NaN margin or leverage is an empty cell: not given). ``first[k]`` is the first row failing
check k, -1 if none; the reader reports the first check that fails, at its first row.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from margin_engine.core.types import FloatArray, IntArray

CHECKS = 8


@njit(cache=True, parallel=True)
def first_bad_rows_nb(size: FloatArray, entry: FloatArray, margin: FloatArray,
                      leverage: FloatArray, inst: np.ndarray, inst_is_option: np.ndarray,
                      max_magnitude: float) -> IntArray:
    """``first[k]`` of every check (``margin``/``leverage``: empty when the column is absent),
    the rows checked in pieces of ``PIECE`` rows in parallel: a check's first failing row is
    its first in the first piece where it fails."""
    n = size.shape[0]
    pieces = max(1, (n + PIECE - 1) // PIECE)
    firsts = np.full((pieces, CHECKS), -1, dtype=np.int64)
    for p in prange(pieces):
        _first_bad_rows(size, entry, margin, leverage, inst, inst_is_option, max_magnitude,
                        n * p // pieces, n * (p + 1) // pieces, firsts[p])
    first = np.full(CHECKS, -1, dtype=np.int64)
    for k in range(CHECKS):
        for p in range(pieces):
            if firsts[p, k] >= 0:
                first[k] = firsts[p, k]
                break
    return first


PIECE = 262_144  # rows a piece


@njit(cache=True)
def _first_bad_rows(size: FloatArray, entry: FloatArray, margin: FloatArray,
                    leverage: FloatArray, inst: np.ndarray, inst_is_option: np.ndarray,
                    max_magnitude: float, start: int, stop: int, first: IntArray) -> None:
    has_margin = margin.shape[0] > 0
    has_leverage = leverage.shape[0] > 0
    for r in range(start, stop):
        s, e = size[r], entry[r]
        m = margin[r] if has_margin else math.nan
        lev = leverage[r] if has_leverage else math.nan
        _mark(first, 0, r, not math.isfinite(s))
        _mark(first, 1, r, abs(s) > max_magnitude)
        _mark(first, 2, r, not (math.isfinite(e) and e >= 0.0))
        _mark(first, 3, r, e > max_magnitude)
        _mark(first, 4, r, e == 0.0 and not inst_is_option[inst[r]])
        _mark(first, 5, r, not math.isnan(m) and not (0.0 <= m <= max_magnitude))
        _mark(first, 6, r, not math.isnan(lev) and not (0.0 < lev <= max_magnitude))
        _mark(first, 7, r, not math.isnan(m) and not math.isnan(lev))


@njit(cache=True, inline="always")
def _mark(first: IntArray, check: int, row: int, failed: bool) -> None:
    if failed and first[check] < 0:
        first[check] = row

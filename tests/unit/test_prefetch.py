"""The prefetch hint compiles for the tables it is given and changes no result."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from margin_engine.core.prefetch import prefetch_row


@njit(cache=False)
def _sum_rows_with_hints(table: np.ndarray) -> float:
    total = 0.0
    for r in range(table.shape[0]):
        for j in range(table.shape[1]):
            prefetch_row(table, r, j)
            for w in range(table.shape[2]):
                total += table[r, j, w]
    return total


@pytest.mark.parametrize("width", [1, 8, 30, 33])
def test_a_prefetched_table_reads_the_same_numbers(width: int) -> None:
    table = np.random.default_rng(width).normal(size=(3, 5, width))
    assert _sum_rows_with_hints(table) == pytest.approx(float(table.sum()), rel=1e-12)


def test_only_a_three_dimensional_table_is_accepted() -> None:
    @njit(cache=False)
    def flat(table: np.ndarray) -> None:
        prefetch_row(table, 0, 0)

    with pytest.raises(TypingError):
        flat(np.zeros(4))

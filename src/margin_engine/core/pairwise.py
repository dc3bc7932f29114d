"""numpy's sum of a contiguous float64 array, number for number, in compiled code: where a
figure must be the number numpy gave (stored figures replayed as text, a deduction that was
``sum(axis=1)`` of a table).
"""

from __future__ import annotations

import numpy as np
from numba import njit

PAIRWISE_BLOCK = 128  # numpy's block: 8 running sums up to this many numbers


@njit(cache=True)
def pairwise_sum(values: np.ndarray, start: int, n: int) -> float:
    """sum of values[start:start + n] as numpy's ``sum`` adds a contiguous float64 array
    (pairwise: halves, the first a multiple of 8 long, down to blocks of at most 128, each
    added by ``block_sum``). The halving runs on a stack of its own: a recursive compiled
    function crashed the process when a caller loaded it from numba's cache."""
    if n <= PAIRWISE_BLOCK:
        return block_sum(values, start, n)
    depth = 64  # halves of at least 8 below 2^63 numbers
    first = np.empty(depth, dtype=np.int64)
    length = np.empty(depth, dtype=np.int64)
    left = np.empty(depth)
    right_next = np.zeros(depth, dtype=np.bool_)  # the left half is added: the right next
    first[0], length[0] = start, n
    top = 1
    total = 0.0
    down = True
    while top > 0:
        k = top - 1
        half = length[k] // 2
        half -= half % 8
        if down:
            if length[k] <= PAIRWISE_BLOCK:
                total = block_sum(values, first[k], length[k])
                top -= 1
                down = False
                continue
            right_next[k] = False
            first[top], length[top] = first[k], half
            top += 1
            continue
        if not right_next[k]:  # the left half's total is in: the right half now
            left[k] = total
            right_next[k] = True
            first[top], length[top] = first[k] + half, length[k] - half
            top += 1
            down = True
            continue
        total = left[k] + total
        top -= 1
    return total


@njit(cache=True, inline="always")
def block_sum(values: np.ndarray, start: int, n: int) -> float:
    """numpy's sum of at most ``PAIRWISE_BLOCK`` numbers: in turn below 8, else 8 running
    sums (of every eighth number) combined pairwise, then the rest in turn."""
    total: float
    if n < 8:
        total = 0.0
        for i in range(n):
            total += values[start + i]
        return total
    r0, r1, r2, r3 = values[start], values[start + 1], values[start + 2], values[start + 3]
    r4, r5 = values[start + 4], values[start + 5]
    r6, r7 = values[start + 6], values[start + 7]
    i = 8
    while i < n - n % 8:
        r0 += values[start + i]
        r1 += values[start + i + 1]
        r2 += values[start + i + 2]
        r3 += values[start + i + 3]
        r4 += values[start + i + 4]
        r5 += values[start + i + 5]
        r6 += values[start + i + 6]
        r7 += values[start + i + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        total += values[start + i]
        i += 1
    return total

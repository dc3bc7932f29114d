"""Robust vectorised Black-76 implied vol with a reason code wherever no vol exists.

In-the-money quotes are first turned into their out-of-the-money twin by put-call parity
(r = 0: C - P = F - K), whose price carries the same vol with far better conditioning. The
solver runs Newton steps on ln(price) (near-linear in sigma even in the far wings, where prices
reach 1e-100 x F) kept inside a shrinking bisection bracket [1e-6, 20].
"""

from __future__ import annotations

import enum
import math

import numpy as np
from numba import njit

from margin_engine.core.types import BoolArray, FloatArray, IntArray
from margin_engine.pricing.black76 import price_scalar_nb

VOL_LOW, VOL_HIGH = 1e-6, 20.0


class IvReason(enum.IntEnum):
    """Why an implied vol is NaN (OK when it is not)."""

    OK = 0
    BAD_INPUT = 1  # NaN, non-positive forward/strike, negative price
    EXPIRED = 2  # T <= 0
    BELOW_INTRINSIC = 3  # price <= intrinsic: no time value left
    ABOVE_BOUND = 4  # call >= F or put >= K
    NOT_BRACKETED = 5  # would need a vol above 2,000 %
    NO_CONVERGENCE = 6


@njit(cache=True)
def _solve_nb(target: FloatArray, forward: FloatArray, strike: FloatArray, years: FloatArray,
              is_call: BoolArray, tolerance: float, out: FloatArray, reason: IntArray) -> None:
    sqrt_2pi = math.sqrt(2.0 * math.pi)
    for i in range(target.shape[0]):
        p, f, k, t, c = target[i], forward[i], strike[i], years[i], is_call[i]
        out[i] = np.nan
        if not (p >= 0.0 and f > 0.0 and k > 0.0) or math.isnan(t):
            reason[i] = 1
            continue
        if t <= 0.0:
            reason[i] = 2
            continue
        if (c and p >= f) or ((not c) and p >= k):
            reason[i] = 4
            continue
        # Use the out-of-the-money twin: same vol, price = time value only.
        if c and f > k:
            p, c = p - (f - k), False
        elif (not c) and k > f:
            p, c = p - (k - f), True
        if p <= 0.0:
            reason[i] = 3
            continue
        lo, hi = VOL_LOW, VOL_HIGH
        if price_scalar_nb(f, k, t, hi, c) < p:
            reason[i] = 5
            continue
        sq = math.sqrt(t)
        s = max(math.sqrt(2.0 * abs(math.log(f / k)) / t), 0.2)  # near the inflection point
        if not (lo < s < hi):
            s = 0.5
        done = False
        log_target = math.log(p)
        for _ in range(200):
            value = price_scalar_nb(f, k, t, s, c)
            if value > p:
                hi = s
            else:
                lo = s
            if value <= 0.0:  # underflow far below the target: bisect upwards
                s = 0.5 * (lo + hi)
                continue
            diff = math.log(value) - log_target  # Newton on ln(price): near-linear in the wings
            if abs(diff) <= 1e-15:
                done = True
                break
            d1 = (math.log(f / k) + 0.5 * s * s * t) / (s * sq)
            vega = f * math.exp(-0.5 * d1 * d1) / sqrt_2pi * sq
            step = s - diff * value / vega if vega > 0.0 else 0.5 * (lo + hi)
            if not (lo < step < hi):
                step = 0.5 * (lo + hi)
            if abs(step - s) <= tolerance * s:
                s = step
                done = True
                break
            s = step
        if done or hi - lo <= 1e-10 * s:
            out[i] = s
            reason[i] = 0
        else:
            reason[i] = 6


def implied_vol_with_reason(
    option_price: FloatArray | float, forward: FloatArray | float, strike: FloatArray | float,
    years: FloatArray | float, is_call: BoolArray | bool, tolerance: float = 1e-14,
) -> tuple[FloatArray, IntArray]:
    """(vol, reason) for broadcast inputs; vol is NaN exactly where reason != IvReason.OK."""
    p, f, k, t, c = np.broadcast_arrays(
        np.asarray(option_price, dtype=np.float64), np.asarray(forward, dtype=np.float64),
        np.asarray(strike, dtype=np.float64), np.asarray(years, dtype=np.float64),
        np.asarray(is_call, dtype=np.bool_))
    shape = p.shape
    flat = [np.ascontiguousarray(a).ravel() for a in (p, f, k, t)]
    calls = np.ascontiguousarray(c).ravel()
    out = np.empty(flat[0].shape[0])
    reason = np.empty(flat[0].shape[0], dtype=np.int64)
    _solve_nb(flat[0], flat[1], flat[2], flat[3], calls, tolerance, out, reason)
    return out.reshape(shape), reason.reshape(shape)

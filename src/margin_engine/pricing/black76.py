"""Vectorised Black-76 (r = 0): price, delta, gamma, vega, theta and implied vol.

Same formulas as ``pricing.reference`` (which documents them), compiled with numba; inputs are
broadcast float64 arrays, ``is_call`` a boolean array. Vega is per 1.00 of vol, theta per year.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from margin_engine.core.types import BoolArray, FloatArray

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@njit(cache=True, fastmath=False)
def price_scalar_nb(forward: float, strike: float, years: float, sigma: float,
                    is_call: bool) -> float:
    """Black-76 price of one option (numba; used inside scenario kernels)."""
    if years <= 0.0 or sigma <= 0.0:
        intrinsic = forward - strike if is_call else strike - forward
        return max(intrinsic, 0.0)
    root = sigma * math.sqrt(years)
    d1 = (math.log(forward / strike) + 0.5 * root * root) / root
    d2 = d1 - root
    if is_call:
        return forward * 0.5 * math.erfc(-d1 / _SQRT2) - strike * 0.5 * math.erfc(-d2 / _SQRT2)
    return strike * 0.5 * math.erfc(d2 / _SQRT2) - forward * 0.5 * math.erfc(d1 / _SQRT2)


@njit(cache=True, fastmath=False)
def price_delta_scalar_nb(forward: float, strike: float, years: float, sigma: float,
                          is_call: bool) -> tuple[float, float]:
    """(price, d price / d forward) of one option: ``price_scalar_nb``'s price (the same
    operations, the same number) and its delta N(d1) (call) or N(d1) - 1 (put) from the same
    normal tail; at or past expiry, or at zero vol, the intrinsic value's slope (1 / -1 in the
    money, 0 out of it and at the strike)."""
    if years <= 0.0 or sigma <= 0.0:
        if is_call:
            return max(forward - strike, 0.0), 1.0 if forward > strike else 0.0
        return max(strike - forward, 0.0), -1.0 if forward < strike else 0.0
    root = sigma * math.sqrt(years)
    d1 = (math.log(forward / strike) + 0.5 * root * root) / root
    d2 = d1 - root
    if is_call:
        n_d1 = 0.5 * math.erfc(-d1 / _SQRT2)
        return forward * n_d1 - strike * 0.5 * math.erfc(-d2 / _SQRT2), n_d1
    tail = 0.5 * math.erfc(d1 / _SQRT2)  # N(-d1)
    return strike * 0.5 * math.erfc(d2 / _SQRT2) - forward * tail, -tail


@njit(cache=True)
def _greeks_nb(forward: FloatArray, strike: FloatArray, years: FloatArray, sigma: FloatArray,
               is_call: BoolArray, out: FloatArray) -> None:
    """out[:, 0..4] = price, delta, gamma, vega, theta."""
    for i in range(forward.shape[0]):
        f, k, t, s, c = forward[i], strike[i], years[i], sigma[i], is_call[i]
        out[i, 0] = price_scalar_nb(f, k, t, s, c)
        if t <= 0.0 or s <= 0.0:
            itm = f > k if c else f < k
            out[i, 1] = ((1.0 if c else -1.0) if itm else 0.0)
            out[i, 2] = 0.0
            out[i, 3] = 0.0
            out[i, 4] = 0.0
            continue
        sq = math.sqrt(t)
        root = s * sq
        d1 = (math.log(f / k) + 0.5 * root * root) / root
        pdf = _INV_SQRT_2PI * math.exp(-0.5 * d1 * d1)
        n_d1 = 0.5 * math.erfc(-d1 / _SQRT2)
        out[i, 1] = n_d1 if c else n_d1 - 1.0
        out[i, 2] = pdf / (f * root)
        out[i, 3] = f * pdf * sq
        out[i, 4] = -f * pdf * s / (2.0 * sq)


@njit(cache=True)
def _price_nb(forward: FloatArray, strike: FloatArray, years: FloatArray, sigma: FloatArray,
              is_call: BoolArray, out: FloatArray) -> None:
    for i in range(forward.shape[0]):
        out[i] = price_scalar_nb(forward[i], strike[i], years[i], sigma[i], is_call[i])


def _broadcast(
    forward: FloatArray | float, strike: FloatArray | float, years: FloatArray | float,
    sigma: FloatArray | float, is_call: BoolArray | bool,
) -> tuple[tuple[int, ...], FloatArray, FloatArray, FloatArray, FloatArray, BoolArray]:
    f, k, t, s, c = np.broadcast_arrays(
        np.asarray(forward, dtype=np.float64), np.asarray(strike, dtype=np.float64),
        np.asarray(years, dtype=np.float64), np.asarray(sigma, dtype=np.float64),
        np.asarray(is_call, dtype=np.bool_),
    )
    shape = f.shape
    return (shape, np.ascontiguousarray(f).ravel(), np.ascontiguousarray(k).ravel(),
            np.ascontiguousarray(t).ravel(), np.ascontiguousarray(s).ravel(),
            np.ascontiguousarray(c).ravel())


def greeks(
    forward: FloatArray | float, strike: FloatArray | float, years: FloatArray | float,
    sigma: FloatArray | float, is_call: BoolArray | bool,
) -> dict[str, FloatArray]:
    """Price and Greeks of broadcast inputs: keys price, delta, gamma, vega, theta."""
    shape, f, k, t, s, c = _broadcast(forward, strike, years, sigma, is_call)
    out = np.empty((f.shape[0], 5), dtype=np.float64)
    _greeks_nb(f, k, t, s, c, out)
    names = ("price", "delta", "gamma", "vega", "theta")
    return {name: out[:, j].reshape(shape) for j, name in enumerate(names)}


def price(
    forward: FloatArray | float, strike: FloatArray | float, years: FloatArray | float,
    sigma: FloatArray | float, is_call: BoolArray | bool,
) -> FloatArray:
    """Black-76 price (undiscounted, r = 0) of broadcast inputs."""
    shape, f, k, t, s, c = _broadcast(forward, strike, years, sigma, is_call)
    out = np.empty(f.shape[0], dtype=np.float64)
    _price_nb(f, k, t, s, c, out)
    return out.reshape(shape)


def implied_vol(
    option_price: FloatArray | float, forward: FloatArray | float, strike: FloatArray | float,
    years: FloatArray | float, is_call: BoolArray | bool,
) -> FloatArray:
    """Implied Black-76 vol (decimal); NaN where none exists (see ``implied_vol_with_reason``)."""
    from margin_engine.pricing.implied import implied_vol_with_reason

    return implied_vol_with_reason(option_price, forward, strike, years, is_call)[0]

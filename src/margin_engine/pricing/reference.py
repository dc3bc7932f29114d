"""Scalar Black-76 reference (r = 0 unless a discount factor is given): slow, obvious, exact.

d1 = (ln(F/K) + sigma^2 T / 2) / (sigma sqrt T),  d2 = d1 - sigma sqrt T
call = D (F N(d1) - K N(d2)),  put = D (K N(-d2) - F N(-d1))
delta_call = D N(d1), delta_put = D (N(d1) - 1), gamma = D phi(d1) / (F sigma sqrt T),
vega = D F phi(d1) sqrt T (per 1.00 of vol),
theta (per year, r = 0) = -F phi(d1) sigma / (2 sqrt T).
At T <= 0 or sigma <= 0 the option is worth its intrinsic value and has no gamma, vega or theta.
"""

from __future__ import annotations

import math

SQRT2 = math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / SQRT2)


def norm_pdf(x: float) -> float:
    return INV_SQRT_2PI * math.exp(-0.5 * x * x)


def _d1_d2(forward: float, strike: float, years: float, sigma: float) -> tuple[float, float]:
    root = sigma * math.sqrt(years)
    d1 = (math.log(forward / strike) + 0.5 * root * root) / root
    return d1, d1 - root


def black76_price(
    forward: float, strike: float, years: float, sigma: float, is_call: bool,
    discount: float = 1.0,
) -> float:
    if years <= 0.0 or sigma <= 0.0:
        intrinsic = forward - strike if is_call else strike - forward
        return discount * max(intrinsic, 0.0)
    d1, d2 = _d1_d2(forward, strike, years, sigma)
    if is_call:
        return discount * (forward * norm_cdf(d1) - strike * norm_cdf(d2))
    return discount * (strike * norm_cdf(-d2) - forward * norm_cdf(-d1))


def black76_delta(forward: float, strike: float, years: float, sigma: float,
                  is_call: bool) -> float:
    if years <= 0.0 or sigma <= 0.0:
        itm = forward > strike if is_call else forward < strike
        return (1.0 if is_call else -1.0) if itm else 0.0
    d1, _ = _d1_d2(forward, strike, years, sigma)
    return norm_cdf(d1) if is_call else norm_cdf(d1) - 1.0


def black76_gamma(forward: float, strike: float, years: float, sigma: float) -> float:
    if years <= 0.0 or sigma <= 0.0:
        return 0.0
    d1, _ = _d1_d2(forward, strike, years, sigma)
    return norm_pdf(d1) / (forward * sigma * math.sqrt(years))


def black76_vega(forward: float, strike: float, years: float, sigma: float) -> float:
    if years <= 0.0 or sigma <= 0.0:
        return 0.0
    d1, _ = _d1_d2(forward, strike, years, sigma)
    return forward * norm_pdf(d1) * math.sqrt(years)


def black76_theta(forward: float, strike: float, years: float, sigma: float) -> float:
    if years <= 0.0 or sigma <= 0.0:
        return 0.0
    d1, _ = _d1_d2(forward, strike, years, sigma)
    return -forward * norm_pdf(d1) * sigma / (2.0 * math.sqrt(years))


def implied_vol(
    price: float, forward: float, strike: float, years: float, is_call: bool,
    tolerance: float = 1e-12,
) -> float:
    """Bisection on [1e-6, 20]: slow and sure. NaN when no vol reproduces the price."""
    intrinsic = max(forward - strike, 0.0) if is_call else max(strike - forward, 0.0)
    upper_bound = forward if is_call else strike
    if years <= 0.0 or not intrinsic < price < upper_bound:
        return math.nan
    low, high = 1e-6, 20.0
    if black76_price(forward, strike, years, high, is_call) < price:
        return math.nan
    for _ in range(200):
        mid = 0.5 * (low + high)
        if black76_price(forward, strike, years, mid, is_call) < price:
            low = mid
        else:
            high = mid
        if high - low < tolerance:
            break
    return 0.5 * (low + high)

"""Scalar reference of the `sensitivity` model (plain Python, one account), used by explain and
as the oracle of the fused kernel: its own bump-and-reprice Greeks and tenor split, and the SIMM
aggregation. Same formulas as ``margin.sensitivity``, none of its code."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

from margin_engine.pricing.reference import black76_price

Z99 = NormalDist().inv_cdf(0.99)
LAMBDA_BASE = NormalDist().inv_cdf(0.995) ** 2 - 1.0
BUMP = 1e-4  # relative index bump for delta, absolute vol bump for vega


def _derivative(f: Callable[[float], float], x: float, h: float) -> float:
    """Five-point central difference: f'(x) with an error of order h^4."""
    return (8.0 * (f(x + h) - f(x - h)) - (f(x + 2 * h) - f(x - 2 * h))) / (12.0 * h)


def option_sensitivities(forward: float, strike: float, years: float, sigma: float,
                         is_call: bool) -> tuple[float, float]:
    """(USD per 1 % index move, dV/dsigma per unit of vol) of one option, by repricing.

    The forward moves with the index, F x (1 + m), so the 1 % sensitivity is 0.01 dV/dm at m = 0.
    Vega is bumped on the out-of-the-money side: a call and a put of the same strike differ by
    F - K (parity), which has no vol in it, and the cheaper option rounds less."""
    def value(move: float) -> float:
        return black76_price(forward * (1.0 + move), strike, years, sigma, is_call)

    def otm_value(vol: float) -> float:
        return black76_price(forward, strike, years, vol, strike >= forward)

    return 0.01 * _derivative(value, 0.0, BUMP), _derivative(otm_value, sigma, BUMP)


def tenor_split(days: float, tenor_days: Sequence[float]) -> list[float]:
    """Share of a vega on each tenor: linear in days between the two neighbouring tenors, all on
    the first (last) tenor before (after) them."""
    shares = [0.0] * len(tenor_days)
    if days <= tenor_days[0]:
        shares[0] = 1.0
        return shares
    if days >= tenor_days[-1]:
        shares[-1] = 1.0
        return shares
    for t in range(len(tenor_days) - 1):
        lo, hi = tenor_days[t], tenor_days[t + 1]
        if lo <= days < hi:
            shares[t] = (hi - days) / (hi - lo)
            shares[t + 1] = (days - lo) / (hi - lo)
            break
    return shares


def _clamp(x: float, k: float) -> float:
    return max(min(x, k), -k)


def simm_aggregate(
    ws: Mapping[str, float], vr: Mapping[str, Sequence[float]],
    cvr: Mapping[str, Sequence[float]], rho: Sequence[Sequence[float]],
    gamma: Mapping[tuple[str, str], float], lambda_base: float = LAMBDA_BASE,
) -> dict[str, Any]:
    """Delta, vega and curvature margins from weighted sensitivities per bucket (and tenor)."""
    buckets = sorted(set(ws) | set(vr) | set(cvr))

    def g(a: str, b: str) -> float:
        return gamma.get((a, b), gamma.get((b, a), 0.0))

    delta_sq = sum(ws.get(b, 0.0) ** 2 for b in buckets) + sum(
        g(b, c) * ws.get(b, 0.0) * ws.get(c, 0.0) for b in buckets for c in buckets if b != c)
    n_t = len(rho)
    k_vega, s_vega, k_curv, s_curv = {}, {}, {}, {}
    for b in buckets:
        v = list(vr.get(b, [0.0] * n_t))
        c = list(cvr.get(b, [0.0] * n_t))
        kv = sum(v[t] * v[u] * (1.0 if t == u else rho[t][u]) for t in range(n_t)
                 for u in range(n_t))
        kc = sum(c[t] * c[u] * (1.0 if t == u else rho[t][u] ** 2) for t in range(n_t)
                 for u in range(n_t))
        k_vega[b], k_curv[b] = math.sqrt(max(0.0, kv)), math.sqrt(max(0.0, kc))
        s_vega[b], s_curv[b] = _clamp(sum(v), k_vega[b]), _clamp(sum(c), k_curv[b])
    vega_sq = sum(k_vega[b] ** 2 for b in buckets) + sum(
        g(b, c) * s_vega[b] * s_vega[c] for b in buckets for c in buckets if b != c)
    curv_sq = sum(k_curv[b] ** 2 for b in buckets) + sum(
        g(b, c) ** 2 * s_curv[b] * s_curv[c] for b in buckets for c in buckets if b != c)
    total_cvr = sum(sum(cvr.get(b, [])) for b in buckets)
    total_abs = sum(abs(x) for b in buckets for x in cvr.get(b, []))
    theta = min(total_cvr / total_abs, 0.0) if total_abs > 0 else 0.0
    lam = lambda_base * (1 + theta) - theta
    delta = math.sqrt(max(0.0, delta_sq))
    vega = math.sqrt(max(0.0, vega_sq))
    curvature = max(total_cvr + lam * math.sqrt(max(0.0, curv_sq)), 0.0)
    return {"delta_margin": delta, "vega_margin": vega, "curvature_margin": curvature,
            "theta": theta, "lambda": lam, "initial_margin": delta + vega + curvature,
            "vega_bucket": k_vega, "curvature_bucket": k_curv}

"""Scalar reference of the SIMM aggregation (plain Python, one account), used by explain and as
the oracle of the fused kernel. Same formulas as ``margin.sensitivity``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from margin_engine.margin.sensitivity import LAMBDA_BASE


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

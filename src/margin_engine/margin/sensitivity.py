"""`sensitivity` (SPEC 3.4): SIMM-structured delta, vega and curvature with a crypto risk class.

Buckets are underlyings; vega and curvature sit on tenors 2w/1m/3m/6m/1y/2y (a position's vega
split linearly between the two nearest tenors, flat outside). Per account, with s_u the USD
change for a 1 % move of u (positions and coin collateral) and v_{u,t} = dV/dsigma on tenor t:

    WS_u = RW_u s_u;   Delta = sqrt(max(0, sum_u WS_u^2 + sum_{u != w} gamma_uw WS_u WS_w))
    sigma_u = RW_u / 100 x sqrt(365 / MPOR) / Phi^-1(0.99)
    VR_{u,t} = VRW sigma_u v_{u,t};   K_u = sqrt(max(0, sum_t VR^2 + sum_{t != t'} rho VR VR'))
    S_u = clamp(sum_t VR_{u,t}, -K_u, K_u);  Vega = sqrt(max(0, sum K_u^2 + sum gamma S_u S_w))
    CVR_{u,t} = -SF(t) sigma_u v_{u,t},  SF(t) = 0.5 min(1, MPOR / t_days)
      (minus: a loss measure, so that bought options carry no curvature charge; see the note)
    K_u = sqrt(max(0, sum CVR^2 + sum rho^2 CVR CVR')),  S_u = clamp(sum_t CVR, -K_u, K_u)
    theta = min(sum CVR / sum |CVR|, 0),  lambda = (Phi^-1(0.995)^2 - 1)(1 + theta) - theta
    Curvature = max(sum CVR + lambda sqrt(max(0, sum K^2 + sum gamma^2 S_u S_w)), 0)
    IM = Delta + Vega + Curvature,  MM = maintenance_fraction x IM
A correlation given in the market overrides the calibrated gamma for that pair.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
from numba import njit, prange

from margin_engine.book.bound import BoundBook
from margin_engine.core.types import FloatArray, IntArray
from margin_engine.margin.common import active_cells, coins_of, collateral_haircuts
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.protocol import MarginResult, ModelDefaults
from margin_engine.margin.sensitivity_params import SensitivityParams
from margin_engine.pricing.black76 import greeks

CHUNK = 4096
Z99 = NormalDist().inv_cdf(0.99)
LAMBDA_BASE = NormalDist().inv_cdf(0.995) ** 2 - 1.0


def instrument_sensitivities(bound: BoundBook, params: SensitivityParams
                             ) -> tuple[FloatArray, FloatArray, IntArray, FloatArray]:
    """Per instrument: USD per 1 % move, dV/dsigma, lower tenor index and its weight."""
    table = bound.book.instruments
    n = len(table.instruments)
    delta_1pct = 0.01 * bound.base_price.copy()
    vega = np.zeros(n)
    rows = np.nonzero(table.is_option & bound.live)[0]
    tenor_lo = np.zeros(n, dtype=np.int64)
    weight_lo = np.ones(n)
    if rows.size:
        forward = bound.base_price[rows]  # moves 1 % with a 1 % index move
        g = greeks(forward, table.strike[rows], bound.years[rows], bound.sigma[rows],
                   table.is_call[rows])
        delta_1pct[rows] = 0.01 * forward * g["delta"]
        vega[rows] = g["vega"]
        tenors = np.asarray(params.tenor_days)
        days = np.clip(bound.years[rows] * 365.0, tenors[0], tenors[-1])
        hi = np.clip(np.searchsorted(tenors, days, side="left"), 1, tenors.size - 1)
        lo = hi - 1
        tenor_lo[rows] = lo
        weight_lo[rows] = (tenors[hi] - days) / (tenors[hi] - tenors[lo])
    delta_1pct[~bound.live] = 0.0  # settled: no sensitivity left
    vega[~bound.live] = 0.0
    return delta_1pct, vega, tenor_lo, weight_lo


def underlying_gamma(bound: BoundBook, params: SensitivityParams) -> FloatArray:
    n = len(bound.underlyings)
    gamma = np.eye(n)
    for i, a in enumerate(bound.underlyings):
        for j, b in enumerate(bound.underlyings):
            if i != j:
                key = (a, b) if a < b else (b, a)
                gamma[i, j] = bound.market.correlation[key] if key in bound.market.correlation \
                    else params.correlation(a, b)
    return gamma


@njit(cache=True, inline="always")
def no_vega(v: FloatArray, u: int, n_t: int) -> bool:
    """Whether underlying u's vega row is all zero (its vega and curvature terms are exact
    zeros: kv = sv = kc = sc = 0 and nothing added to the totals)."""
    t = 0
    while t < n_t and v[u, t] == 0.0:
        t += 1
    return t == n_t


@njit(cache=True, parallel=True)
def sensitivity_margin_nb(
    offsets: IntArray, pos_inst: np.ndarray, pos_q: FloatArray, inst_und: np.ndarray,
    delta_1pct: FloatArray, vega: FloatArray, tenor_lo: IntArray, weight_lo: FloatArray,
    coll_exposure: FloatArray, rw: FloatArray, sigma_u: FloatArray, vrw: float,
    sf: FloatArray, rho: FloatArray, gamma: FloatArray, lambda_base: float, mm_fraction: float,
    im: FloatArray, mm: FloatArray, delta_m: FloatArray, vega_m: FloatArray,
    curv_m: FloatArray, ws_out: FloatArray, vk_out: FloatArray, cvr_out: FloatArray,
) -> None:
    n_acct = offsets.shape[0] - 1
    n_u = rw.shape[0]
    n_t = sf.shape[0]
    n_chunks = (n_acct + CHUNK - 1) // CHUNK
    for c in prange(n_chunks):
        s = np.empty(n_u)
        v = np.empty((n_u, n_t))
        ws = np.empty(n_u)
        kv = np.empty(n_u)
        sv = np.empty(n_u)
        kc = np.empty(n_u)
        sc = np.empty(n_u)
        cvr_sum = np.empty(n_u)
        for a in range(c * CHUNK, min(n_acct, (c + 1) * CHUNK)):
            s[:] = 0.0
            v[:, :] = 0.0
            for p in range(offsets[a], offsets[a + 1]):
                i = pos_inst[p]
                u = inst_und[i]
                q = pos_q[p]
                s[u] += q * delta_1pct[i]
                if vega[i] != 0.0:
                    lo = tenor_lo[i]
                    v[u, lo] += q * vega[i] * weight_lo[i]
                    if lo + 1 < n_t:
                        v[u, lo + 1] += q * vega[i] * (1.0 - weight_lo[i])
            for u in range(n_u):
                s[u] += 0.01 * coll_exposure[a, u]
            # delta
            quad = 0.0
            for u in range(n_u):
                ws[u] = rw[u] * s[u]
            # (terms of an underlying without delta, vega or curvature are exact zeros, which
            # change no sum: passed over, so an account costs the underlyings it holds)
            for u in range(n_u):
                if ws[u] == 0.0:
                    continue
                for w in range(n_u):
                    if ws[w] != 0.0:
                        quad += (1.0 if u == w else gamma[u, w]) * ws[u] * ws[w]
            delta = math.sqrt(max(0.0, quad))
            # vega and curvature per bucket
            total_cvr = 0.0
            total_abs = 0.0
            for u in range(n_u):
                if no_vega(v, u, n_t):
                    kv[u], sv[u], kc[u], sc[u], cvr_sum[u] = 0.0, 0.0, 0.0, 0.0, 0.0
                    continue
                kq = 0.0
                cq = 0.0
                sum_vr = 0.0
                sum_cvr = 0.0
                for t in range(n_t):
                    vr_t = vrw * sigma_u[u] * v[u, t]
                    cv_t = -sf[t] * sigma_u[u] * v[u, t]
                    sum_vr += vr_t
                    sum_cvr += cv_t
                    total_abs += abs(cv_t)
                    for t2 in range(n_t):
                        vr_2 = vrw * sigma_u[u] * v[u, t2]
                        cv_2 = -sf[t2] * sigma_u[u] * v[u, t2]
                        r = 1.0 if t == t2 else rho[t, t2]
                        kq += r * vr_t * vr_2
                        cq += r * r * cv_t * cv_2
                kv[u] = math.sqrt(max(0.0, kq))
                sv[u] = max(min(sum_vr, kv[u]), -kv[u])
                kc[u] = math.sqrt(max(0.0, cq))
                sc[u] = max(min(sum_cvr, kc[u]), -kc[u])
                cvr_sum[u] = sum_cvr
                total_cvr += sum_cvr
            vq = 0.0
            cq = 0.0
            for u in range(n_u):
                if kv[u] == 0.0 and kc[u] == 0.0:  # (then sv[u] = sc[u] = 0)
                    continue
                vq += kv[u] * kv[u]
                cq += kc[u] * kc[u]
                for w in range(n_u):
                    if w != u and (sv[w] != 0.0 or sc[w] != 0.0):
                        vq += gamma[u, w] * sv[u] * sv[w]
                        cq += gamma[u, w] * gamma[u, w] * sc[u] * sc[w]
            vega_margin = math.sqrt(max(0.0, vq))
            theta = min(total_cvr / total_abs, 0.0) if total_abs > 0.0 else 0.0
            lam = lambda_base * (1.0 + theta) - theta
            curvature = max(total_cvr + lam * math.sqrt(max(0.0, cq)), 0.0)
            total = delta + vega_margin + curvature
            im[a] = total
            mm[a] = mm_fraction * total
            delta_m[a] = delta
            vega_m[a] = vega_margin
            curv_m[a] = curvature
            for u in range(n_u):
                ws_out[a, u] = ws[u]
                vk_out[a, u] = kv[u]
                cvr_out[a, u] = cvr_sum[u]


class SensitivityModel(ModelDefaults):
    name = "sensitivity"
    revalues_coins = True

    def __init__(self, params: SensitivityParams | None = None) -> None:
        self._params = params

    @property
    def params(self) -> SensitivityParams:
        if self._params is None:
            self._params = SensitivityParams.default()
        return self._params

    def compute(self, bound: BoundBook, config: RiskConfig) -> MarginResult:
        params = self.params
        delta_1pct, vega, tenor_lo, weight_lo = instrument_sensitivities(bound, params)
        rw = np.array([params.risk_weight(u) for u in bound.underlyings])
        sigma_u = rw / 100.0 * math.sqrt(365.0 / params.mpor_days) / Z99
        sf = np.array([0.5 * min(1.0, params.mpor_days / t) for t in params.tenor_days])
        n_acct, n_u = bound.account_count, len(bound.underlyings)
        out = {k: np.empty(n_acct) for k in ("im", "mm", "delta", "vega", "curvature")}
        ws, vk, cvr = (np.empty((n_acct, n_u)) for _ in range(3))
        book = bound.book
        sensitivity_margin_nb(
            book.offsets, book.position_instrument, bound.quantity,
            book.instruments.underlying, delta_1pct, vega, tenor_lo, weight_lo,
            np.ascontiguousarray(bound.collateral_exposure), rw, sigma_u,
            params.vega_risk_weight, sf, np.ascontiguousarray(params.tenor_correlation),
            underlying_gamma(bound, params), LAMBDA_BASE, params.maintenance_fraction,
            out["im"], out["mm"], out["delta"], out["vega"], out["curvature"], ws, vk, cvr)
        return MarginResult(
            model=self.name, initial_margin=out["im"], maintenance_margin=out["mm"],
            active=active_cells(bound) | (bound.collateral_exposure != 0.0),
            per_underlying={"weighted_delta": ws, "vega_risk": vk, "curvature_risk": cvr},
            per_account={"delta_margin": out["delta"], "vega_margin": out["vega"],
                         "curvature_margin": out["curvature"]},
            collateral_haircut=collateral_haircuts(bound, config, coins_of(bound)).deduction,
        )

    def explain(self, bound: BoundBook, config: RiskConfig, result: MarginResult,
                account: int) -> dict[str, Any]:
        """Delta, vega and curvature risk per underlying and tenor, recomputed from scratch
        with this model's parameters (scalar reference)."""
        from margin_engine.margin.explain import explain_sensitivity

        return explain_sensitivity(bound, account, self.params)

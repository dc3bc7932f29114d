"""`margin-engine calibrate`: sensitivity-model parameters from real price and DVOL history.

With h = MPOR days and c = confidence, on daily UTC closes:
* risk weight RW_u = 100 x quantile_c |S_{t+h} / S_t - 1| (overlapping h-day moves), percent;
* vega risk weight VRW = quantile_c |DVOL_{t+h} / DVOL_t - 1| pooled over the DVOL files (without
  DVOL: the same on 30-day realised vol);
* tenor correlation rho_tt' = correlation of h-day changes of log realised vol measured over
  windows of each tenor's length (14 ... 730 days), averaged over the underlyings;
* underlying correlation gamma_bc = correlation of overlapping h-day log returns on common days.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from margin_engine.core.correlation import repaired_pairs
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import NS_PER_SECOND, ns_to_iso
from margin_engine.core.types import FloatArray, IntArray
from margin_engine.data.prices import PriceSeries
from margin_engine.margin.sensitivity_params import TENOR_DAYS, SensitivityParams

DAY_NS = 86_400 * NS_PER_SECOND


def daily_closes(series: PriceSeries) -> tuple[IntArray, FloatArray]:
    """Last close of each UTC day, labelled by the day's start (ns)."""
    days = series.time_ns // DAY_NS
    last = np.nonzero(np.append(days[1:] != days[:-1], True))[0]
    return days[last] * DAY_NS, series.close[last]


def _h_moves(closes: FloatArray, h: int) -> FloatArray:
    return closes[h:] / closes[:-h] - 1.0


def _quantile_abs(values: FloatArray, confidence: float) -> float:
    return float(np.quantile(np.abs(values), confidence, method="linear"))


def _realised_vol(log_returns: FloatArray, window: int) -> FloatArray:
    """Rolling annualised realised vol (365 days a year), NaN until the window fills."""
    out = np.full(log_returns.size, np.nan)
    if log_returns.size < window:
        return out
    csum = np.concatenate([[0.0], np.cumsum(log_returns)])
    csq = np.concatenate([[0.0], np.cumsum(log_returns**2)])
    n = window
    mean = (csum[n:] - csum[:-n]) / n
    var = (csq[n:] - csq[:-n]) / n - mean**2
    out[n - 1:] = np.sqrt(np.maximum(var, 0.0) * n / (n - 1) * 365.0)
    return out


def calibrate(prices: Mapping[str, PriceSeries], dvol: Mapping[str, PriceSeries] | None = None,
              *, confidence: float = 0.99, mpor_days: int = 1) -> SensitivityParams:
    if not prices:
        raise InputError("at least one --prices UNDERLYING=FILE", field="--prices")
    if not 0.5 < confidence < 1.0:
        raise InputError("a confidence in (0.5, 1)", field="--confidence", value=confidence)
    if mpor_days < 1:
        raise InputError("an MPOR of at least 1 day", field="--mpor-days", value=mpor_days)
    h = int(mpor_days)
    daily = {u: daily_closes(s) for u, s in prices.items()}
    weights: dict[str, float] = {}
    data: dict[str, Any] = {}
    vol_change_by_tenor: dict[str, FloatArray] = {}
    for u, (days, closes) in daily.items():
        if closes.size < max(TENOR_DAYS) + 2 * h + 10:
            raise InputError(f"at least {int(max(TENOR_DAYS)) + 2 * h + 10} daily closes "
                             "(the 2-year tenor needs them)", field=f"--prices {u}",
                             value=f"{closes.size} days")
        weights[u] = 100.0 * _quantile_abs(_h_moves(closes, h), confidence)
        log_returns = np.diff(np.log(closes))
        rv = np.column_stack([_realised_vol(log_returns, int(t)) for t in TENOR_DAYS])
        valid = ~np.isnan(rv).any(axis=1)
        changes = np.diff(np.log(rv[valid][::1]), n=1, axis=0) if h == 1 else \
            np.log(rv[valid][h:] / rv[valid][:-h])
        vol_change_by_tenor[u] = changes
        data[u] = {"source": Path(prices[u].source).name, "first": ns_to_iso(int(days[0])),
                   "last": ns_to_iso(int(days[-1])), "days": int(closes.size)}
    tenor_corr = np.mean([np.corrcoef(c, rowvar=False) for c in vol_change_by_tenor.values()],
                         axis=0)
    tenor_corr = 0.5 * (tenor_corr + tenor_corr.T)  # exactly symmetric
    np.fill_diagonal(tenor_corr, 1.0)

    pairs: dict[tuple[str, str], float] = {}
    names = sorted(daily)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common, ia, ib = np.intersect1d(daily[a][0], daily[b][0], return_indices=True)
            if common.size < 2 * h + 30:
                continue
            ra = np.log(daily[a][1][ia][h:] / daily[a][1][ia][:-h])
            rb = np.log(daily[b][1][ib][h:] / daily[b][1][ib][:-h])
            pairs[(a, b)] = float(np.corrcoef(ra, rb)[0, 1])
            data[f"{a}/{b}"] = {"common_days": int(common.size)}
    repaired = repaired_pairs(pairs)
    if repaired != pairs:  # pairs over different windows: made a correlation matrix
        data["correlation repaired"] = {f"{a}/{b}": pairs[(a, b)] for a, b in pairs}
        pairs = repaired

    vrw_source = "dvol"
    vol_moves: list[FloatArray] = []
    if dvol:
        for u, series in dvol.items():
            days, levels = daily_closes(series)
            vol_moves.append(_h_moves(levels, h))
            data[f"dvol {u}"] = {"source": Path(series.source).name,
                                 "first": ns_to_iso(int(days[0])),
                                 "last": ns_to_iso(int(days[-1])), "days": int(levels.size)}
    else:
        vrw_source = "30-day realised vol (no DVOL given)"
        for _, closes in daily.values():
            rv30 = _realised_vol(np.diff(np.log(closes)), 30)
            rv30 = rv30[~np.isnan(rv30)]
            vol_moves.append(_h_moves(rv30, h))
    vega_weight = _quantile_abs(np.concatenate(vol_moves), confidence)
    return SensitivityParams(
        confidence=confidence, mpor_days=float(h), risk_weights=weights,
        default_risk_weight=max(weights.values()), vega_risk_weight=vega_weight,
        tenor_days=TENOR_DAYS, tenor_correlation=tenor_corr, underlying_correlation=pairs,
        provenance={
            "method": "RW = 100 x quantile(|h-day move|); VRW = quantile(|h-day relative "
                      f"change of {vrw_source}|); tenor correlation = mean over underlyings "
                      "of corr(h-day change of log realised vol over 14/30/91/182/365/730-day "
                      "windows); gamma = corr(h-day log returns); daily UTC closes, "
                      "overlapping windows",
            "data": data,
        },
    )

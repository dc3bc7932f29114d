"""Daily volatility forecasters behind one protocol, walk-forward only.

Each returns v[t], the forecast of Var(r_t) for the daily log return r_t = ln(P_t / P_{t-1}),
made with data up to day t-1 only (NaN while there is not enough history):
* ``ewma``: v_t = lambda v_{t-1} + (1 - lambda) r_{t-1}^2, seeded with the variance of the
  first 30 returns (so v_t is NaN for t <= 30).
* ``garch``: GARCH(1,1) (arch, zero mean, normal) refitted every 63 days on the last 1,000
  returns; between refits the fitted recursion runs on realised returns.
* ``har``: HAR-RV (Corsi) on log realised variance: log RV_t = b0 + b1 log RV_{t-1} +
  b2 log mean RV_{t-5..t-1} + b3 log mean RV_{t-22..t-1}, OLS refitted every 21 days; RV from
  intraday bars when the file has them, else r^2; forecast exp(fit + residual variance / 2)
  x sum r^2 / sum RV over the fitted days (intraday RV misses overnight and microstructure
  effects, so it runs below close-to-close variance).
* ``implied``: Deribit DVOL of the day before, annualised percent -> daily variance
  (DVOL / 100)^2 / 365.
* ``learned``: gradient-boosted trees (scikit-learn) on features known the day before
  (realised variance over 1, 5, 22 days, EWMA variance, DVOL level and change, funding, volume),
  target log RV, refitted every 63 days on all earlier days, smearing-corrected and rescaled
  to close-to-close variance like ``har``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from margin_engine.core.errors import InputError
from margin_engine.core.types import FloatArray

SEED = 30
EPS = 1e-10


@dataclass(frozen=True, slots=True, kw_only=True)
class ForecastInputs:
    """Daily series aligned on days: returns r_t and optional extras (NaN where missing)."""

    returns: FloatArray
    realised_variance: FloatArray  # intraday RV of day t (r_t^2 when no intraday bars)
    dvol: FloatArray  # DVOL close of day t, percent
    funding: FloatArray  # mean funding rate of day t
    volume: FloatArray  # volume of day t


class Forecaster(Protocol):
    name: str

    def variance(self, inputs: ForecastInputs) -> FloatArray: ...


@dataclass(frozen=True, slots=True)
class EwmaForecaster:
    ewma_lambda: float = 0.94
    name: str = "ewma"

    def variance(self, inputs: ForecastInputs) -> FloatArray:
        r = inputs.returns
        out = np.full(r.size, np.nan)
        if r.size <= SEED:
            return out
        v = float(np.var(r[:SEED], ddof=1))
        for t in range(SEED, r.size):
            out[t] = v  # forecast for day t from returns < t
            v = self.ewma_lambda * v + (1 - self.ewma_lambda) * r[t] ** 2
        return out


@dataclass(frozen=True, slots=True)
class GarchForecaster:
    refit_every: int = 63
    window: int = 1000
    min_obs: int = 250
    name: str = "garch"

    def variance(self, inputs: ForecastInputs) -> FloatArray:
        from arch import arch_model

        r = inputs.returns * 100.0  # percent returns: better conditioned
        out = np.full(r.size, np.nan)
        omega = alpha = beta = v = math.nan
        for t in range(self.min_obs, r.size):
            if (t - self.min_obs) % self.refit_every == 0:
                sample = r[max(0, t - self.window):t]
                fit = arch_model(sample, mean="Zero", vol="GARCH", p=1, q=1,
                                 dist="normal", rescale=False).fit(disp="off")
                omega, alpha, beta = (float(fit.params[k]) for k in ("omega", "alpha[1]",
                                                                      "beta[1]"))
                last = float(fit.conditional_volatility[-1]) ** 2
                v = omega + alpha * sample[-1] ** 2 + beta * last
            out[t] = v / 10_000.0
            v = omega + alpha * r[t] ** 2 + beta * v
        return out


def _har_features(rv: FloatArray) -> FloatArray:
    """Row t: log RV_{t-1}, log mean RV_{t-5..t-1}, log mean RV_{t-22..t-1} (NaN early)."""
    n = rv.size
    c = np.concatenate([[0.0], np.cumsum(rv)])
    out = np.full((n, 3), np.nan)
    for k, w in enumerate((1, 5, 22)):
        t = np.arange(w, n)
        out[t, k] = np.log((c[t] - c[t - w]) / w + EPS)
    return out


@dataclass(frozen=True, slots=True)
class HarForecaster:
    refit_every: int = 21
    min_obs: int = 300
    name: str = "har"

    def variance(self, inputs: ForecastInputs) -> FloatArray:
        rv = inputs.realised_variance
        x = _har_features(rv)
        y = np.log(rv + EPS)
        out = np.full(rv.size, np.nan)
        coef = np.zeros(4)
        resid_var = 0.0
        ratio = 1.0
        for t in range(self.min_obs, rv.size):
            if (t - self.min_obs) % self.refit_every == 0:
                rows = np.arange(22, t)  # samples whose target day is before t
                design = np.column_stack([np.ones(rows.size), x[rows]])
                coef, *_ = np.linalg.lstsq(design, y[rows], rcond=None)
                resid_var = float(np.var(y[rows] - design @ coef))
                ratio = close_to_close_ratio(inputs, rows)
            out[t] = math.exp(float(coef[0] + x[t] @ coef[1:]) + resid_var / 2) * ratio
        return out


def close_to_close_ratio(inputs: ForecastInputs, rows: np.ndarray) -> float:
    """sum r^2 / sum RV over past days: brings an RV forecast to close-to-close variance."""
    return float(np.sum(inputs.returns[rows] ** 2) / np.sum(inputs.realised_variance[rows]))


@dataclass(frozen=True, slots=True)
class ImpliedForecaster:
    name: str = "implied"

    def variance(self, inputs: ForecastInputs) -> FloatArray:
        if not np.isfinite(inputs.dvol).any():
            raise InputError("a DVOL history for the implied forecaster (--dvol U=FILE)",
                             field="--forecaster", value="implied")
        out = np.full(inputs.dvol.size, np.nan)
        out[1:] = (inputs.dvol[:-1] / 100.0) ** 2 / 365.0
        return out


def learned_features(inputs: ForecastInputs) -> FloatArray:
    """Row t: what is known at the end of day t-1."""
    rv = inputs.realised_variance
    har = _har_features(rv)
    ewma = EwmaForecaster().variance(inputs)
    n = rv.size
    dvol_prev = np.full(n, np.nan)
    dvol_prev[1:] = inputs.dvol[:-1]
    dvol_change = np.full(n, np.nan)
    dvol_change[2:] = inputs.dvol[1:-1] / inputs.dvol[:-2] - 1
    funding = np.full(n, np.nan)
    funding[1:] = inputs.funding[:-1]
    volume = np.full(n, np.nan)
    volume[1:] = np.log(inputs.volume[:-1] + 1.0)
    return np.column_stack([har, np.log(ewma + EPS), np.log(dvol_prev), dvol_change, funding,
                            volume])


@dataclass(frozen=True, slots=True)
class LearnedForecaster:
    refit_every: int = 63
    min_obs: int = 500
    seed: int = 0
    name: str = "learned"

    def variance(self, inputs: ForecastInputs) -> FloatArray:
        from sklearn.ensemble import HistGradientBoostingRegressor

        x = learned_features(inputs)
        y = np.log(inputs.realised_variance + EPS)
        out = np.full(y.size, np.nan)
        model = None
        smear = 1.0
        columns = np.arange(x.shape[1])
        for t in range(self.min_obs, y.size):
            if (t - self.min_obs) % self.refit_every == 0:
                rows = np.arange(SEED + 1, t)
                # features with no information yet (e.g. DVOL before it existed) are left out
                columns = np.array([c for c in range(x.shape[1])
                                    if np.unique(x[rows, c][np.isfinite(x[rows, c])]).size > 1])
                model = HistGradientBoostingRegressor(max_iter=150, learning_rate=0.05,
                                                      max_leaf_nodes=15, min_samples_leaf=40,
                                                      random_state=self.seed)
                model.fit(x[rows][:, columns], y[rows])
                smear = float(np.mean(np.exp(y[rows] - model.predict(x[rows][:, columns])))) \
                    * close_to_close_ratio(inputs, rows)
            assert model is not None
            out[t] = math.exp(float(model.predict(x[t:t + 1, columns])[0])) * smear
        return out


FORECASTERS: dict[str, type] = {
    "ewma": EwmaForecaster, "garch": GarchForecaster, "har": HarForecaster,
    "implied": ImpliedForecaster, "learned": LearnedForecaster,
}


def get_forecaster(name: str) -> Forecaster:
    if name not in FORECASTERS:
        raise InputError(f"a forecaster, one of {sorted(FORECASTERS)}", field="--forecaster",
                         value=name)
    forecaster: Forecaster = FORECASTERS[name]()
    return forecaster

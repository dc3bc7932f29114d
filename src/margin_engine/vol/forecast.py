"""Daily volatility forecasters behind one protocol, walk-forward only.

Each returns v[t], the forecast of Var(r_t) for the daily log return r_t = ln(P_t / P_{t-1}),
made with data up to day t-1 only (NaN while there is not enough history):
* ``ewma``: v_t = lambda v_{t-1} + (1 - lambda) r_{t-1}^2, seeded with the variance of the
  first 30 returns (so v_t is NaN for t <= 30).
* ``garch``: GARCH(1,1) (arch, zero mean, normal) refitted every 63 days on the last 1,000
  returns; between refits the fitted recursion runs on realised returns.
* ``har``: HAR-RV (Corsi) on log realised variance: log RV_t = b0 + b1 log RV_{t-1} +
  b2 log mean RV_{t-5..t-1} + b3 log mean RV_{t-22..t-1}, OLS refitted every 21 days; RV from
  intraday bars when the file has them, else r^2; forecast exp(fit) x mean exp(residual) (Duan's
  smearing: the residuals of log r^2 are far from normal, log chi2(1) with variance ~4.9, so
  exp(residual variance / 2) would be ~11.8 where the true factor is ~3.6) x sum r^2 / sum RV
  over the fitted days (intraday RV misses overnight and microstructure effects, so it runs
  below close-to-close variance); log RV is floored at log(0.001 x median RV) (``log_floor``).
* ``implied``: Deribit DVOL of the day before, annualised percent -> daily variance
  (DVOL / 100)^2 / 365.
* ``learned``: gradient-boosted trees (scikit-learn) on features known the day before
  (realised variance over 1, 5, 22 days, EWMA variance, DVOL level and change, funding, volume),
  fitting RV with the Gamma deviance (log link; QLIKE up to constants), refitted every 63 days
  on all earlier days and rescaled by k = mean(RV / prediction) x sum r^2 / sum RV, with k
  measured out of sample: on the last quarter of the training days, predicted by a model
  fitted on the first three quarters (the former log-RV fit smeared in sample, where the trees
  fit the noise, gave E[r^2 / v] of 2.1-2.6 on daily closes); RV floored like ``har``'s.
* ``predictive`` (``margin_engine.vol.predictive``): the margin quantile itself, calibrated on
  standardised losses pooled across assets; ``variance`` gives its scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from margin_engine.core.errors import InputError
from margin_engine.core.types import FloatArray, IntArray

SEED = 30
EPS = 1e-10
RV_FLOOR = 1e-3  # a fraction of the median realised variance (``log_floor``)


class ForecasterName(StrEnum):
    """The forecasters ``--forecaster`` accepts."""

    EWMA = "ewma"
    GARCH = "garch"
    HAR = "har"
    IMPLIED = "implied"
    LEARNED = "learned"
    PREDICTIVE = "predictive"


@dataclass(frozen=True, slots=True, kw_only=True)
class ForecastInputs:
    """Daily series aligned on days: returns r_t and optional extras (NaN where missing)."""

    returns: FloatArray
    realised_variance: FloatArray  # intraday RV of day t (r_t^2 when no intraday bars)
    dvol: FloatArray  # DVOL close of day t, percent
    funding: FloatArray  # mean funding rate of day t
    volume: FloatArray  # volume of day t
    # UTC day (ns) at whose close r_t ends; needed only to pool histories in calendar time
    days_ns: IntArray | None = None


class Forecaster(Protocol):
    @property
    def name(self) -> str: ...

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
        smear = 1.0
        ratio = 1.0
        floor = -np.inf
        for t in range(self.min_obs, rv.size):
            if (t - self.min_obs) % self.refit_every == 0:
                rows = np.arange(22, t)  # samples whose target day is before t
                floor = log_floor(rv[:t])
                design = np.column_stack([np.ones(rows.size), np.maximum(x[rows], floor)])
                target = np.maximum(y[rows], floor)
                coef, *_ = np.linalg.lstsq(design, target, rcond=None)
                smear = float(np.mean(np.exp(target - design @ coef)))
                ratio = close_to_close_ratio(inputs, rows)
            out[t] = math.exp(float(coef[0] + np.maximum(x[t], floor) @ coef[1:])) * smear \
                * ratio
        return out


def log_floor(rv: FloatArray) -> float:
    """log(RV_FLOOR x median RV): the least log RV a fit sees. A day whose bars never moved
    (illiquid years: 39 days of Bitstamp 2011-2015) has RV ~0 and log RV ~ -23, 15 units below
    the median, enough to tilt a least-squares fit and its retransformation on its own."""
    return math.log(RV_FLOOR * float(np.median(rv)) + EPS)


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


def _informative(x: FloatArray, rows: np.ndarray) -> np.ndarray:
    """Columns with more than one finite value on ``rows`` (e.g. DVOL before it existed is not)."""
    return np.array([c for c in range(x.shape[1])
                     if np.unique(x[rows, c][np.isfinite(x[rows, c])]).size > 1], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class LearnedForecaster:
    refit_every: int = 63
    min_obs: int = 500
    holdout: float = 0.25  # share of the training days the scale k is measured on
    seed: int = 0
    name: str = "learned"

    def _model(self) -> object:
        from sklearn.ensemble import HistGradientBoostingRegressor

        # Gamma deviance with its log link: the trees fit E[RV | x] itself (the deviance is
        # QLIKE up to constants), so no retransformation of a log forecast is needed
        return HistGradientBoostingRegressor(loss="gamma", max_iter=150, learning_rate=0.05,
                                             max_leaf_nodes=15, min_samples_leaf=40,
                                             random_state=self.seed)

    def variance(self, inputs: ForecastInputs) -> FloatArray:
        # scikit-learn first: the limit applies only to the thread pools already loaded
        import sklearn.ensemble  # noqa: F401
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        x = learned_features(inputs)
        rv = inputs.realised_variance
        out = np.full(rv.size, np.nan)
        # one thread: these fits are small, and OpenMP threads on a busy 2-core machine cost
        # 10-100x more than they save
        with threadpool_limits(limits=1):
            for start in range(self.min_obs, rv.size, self.refit_every):
                rows = np.arange(SEED + 1, start)
                y = np.maximum(rv, math.exp(log_floor(rv[:start])))
                columns = _informative(x, rows)
                model: Any = self._model()
                model.fit(x[rows][:, columns], y[rows])
                cut = rows[int(rows.size * (1 - self.holdout))]
                early, late = rows[rows < cut], rows[rows >= cut]
                early_columns = _informative(x, early)
                check: Any = self._model()
                check.fit(x[early][:, early_columns], y[early])
                scale = float(np.mean(y[late] / check.predict(x[late][:, early_columns]))) \
                    * close_to_close_ratio(inputs, rows)
                block = slice(start, min(start + self.refit_every, rv.size))
                out[block] = model.predict(x[block][:, columns]) * scale
        return out


def _predictive() -> Forecaster:
    from margin_engine.vol.predictive import PredictiveForecaster

    return PredictiveForecaster()


FORECASTERS: dict[str, Callable[[], Forecaster]] = {
    ForecasterName.EWMA: EwmaForecaster, ForecasterName.GARCH: GarchForecaster,
    ForecasterName.HAR: HarForecaster, ForecasterName.IMPLIED: ImpliedForecaster,
    ForecasterName.LEARNED: LearnedForecaster, ForecasterName.PREDICTIVE: _predictive,
}


def forecaster_name(name: str, field: str = "--forecaster") -> ForecasterName:
    """A forecaster's name, or InputError naming the accepted ones."""
    try:
        return ForecasterName(name)
    except ValueError:
        raise InputError(f"a forecaster, one of {', '.join(ForecasterName)}", field=field,
                         value=name) from None


def get_forecaster(name: str) -> Forecaster:
    return FORECASTERS[forecaster_name(name)]()

"""``predictive``: the margin rate as a calibrated quantile of the next MPOR's loss, walk-forward.

For return t (from the close of day t-1 to the close of day t), with data up to the close of
day t-1 only:

* scale s_t = (1 - w) sqrt(v_t) + w s*_t, where
  v_t = lambda v_{t-1} + (1 - lambda) r_{t-1}^2 (lambda 0.97, seeded with the mean of the first
  30 squared returns) and s*_t the stressed volatility: the largest root-mean-square return of
  any 250-return window (shorter while the history is) in the last 10 years. The weight w = 25 %
  is EMIR RTS 153/2013 art. 28(1)(b) (at least 25 % weight on stressed observations), the
  anti-procyclicality of the design: margin rises less in a crash because a quarter of it
  already stood at stressed levels;
* standardised losses of every past MPOR window j of every pooled history (h = MPOR days,
  R_j = r_j + ... + r_{j+h-1}):  long  l_j = (1 - exp(R_j)) / (s_j sqrt(h)),
  short u_j = (exp(R_j) - 1) / (s_j sqrt(h)), for the windows that ended by the close of day t-1
  and in the last ``window_days`` (3 years); pooled across assets because they are already in
  units of each asset's own scale;
* multiplier c_t = Q_c(l and u), the split-conformal quantile at confidence c of the 2m long
  and short losses together: the k-th smallest with k = ceil((2m + 1) c) (m >= ``min_windows``
  = 500). The margin range is symmetric, so it is calibrated to be exceeded on 1 - c of the
  sides on average (each window has a long and a short side); taking the larger of the two
  sides' quantiles instead over-covered the lighter side on the development period (170
  exceptions where 206 were expected) at 5 % more margin;
* rate_t = c_t s_t sqrt(h): the price move the margin must cover, on either side.

So the quantile is predicted directly (no normal z): the conformal step makes the exceptions
1 - c per side on average over the pooled windows, whatever the tails, and the same
calibration transfers to an asset with no history of its own (its first rate needs only its
30-day seed). Leave-one-asset-out: ``own_history=False`` calibrates on the pool alone.

Why this scale and not a richer one: on the development period (2017-2021 BTC and ETH, before
any test history), EWMA scales with lambda 0.96-0.985 gave the lowest calibrated margin; EWMA on
intraday realised variance, HAR-RV and a pooled linear quantile regression on RV, EWMA and
long-run vol gave the same or more margin out of sample at the same coverage. DVOL starts in
2021-03 and could not be judged there, so it is left out rather than chosen on the test years.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from margin_engine.core.errors import InputError
from margin_engine.core.types import FloatArray, IntArray
from margin_engine.vol.forecast import SEED, ForecastInputs

DAY_NS = 86_400 * 10**9


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictiveSettings:
    """Parameters of ``predictive`` (defaults as documented in the module)."""

    ewma_lambda: float = 0.97
    stressed_weight: float = 0.25  # EMIR art. 28(1)(b); 0 turns the anti-procyclicality off
    stressed_window: int = 250  # returns in a stressed-period window
    stressed_lookback_days: int = 3650  # where the stressed period is searched
    window_days: int = 1095  # calibration window (calendar days, or returns without dates)
    min_windows: int = 500  # fewest pooled standardised losses for a rate

    def __post_init__(self) -> None:
        if not 0.0 < self.ewma_lambda < 1.0:
            raise InputError("a decay in (0, 1)", field="ewma_lambda", value=self.ewma_lambda)
        if not 0.0 <= self.stressed_weight <= 1.0:
            raise InputError("a weight in [0, 1]", field="stressed_weight",
                             value=self.stressed_weight)
        for name in ("stressed_window", "stressed_lookback_days", "window_days", "min_windows"):
            if getattr(self, name) < 1:
                raise InputError("a positive integer", field=name, value=getattr(self, name))


@dataclass(frozen=True, slots=True, kw_only=True)
class RateForecast:
    """Per return t (aligned on ``ForecastInputs.returns``; NaN before the first rate)."""

    rate: FloatArray  # c_t s_t sqrt(h), the margin rate in force at the close before r_t
    scale: FloatArray  # s_t
    multiplier: FloatArray  # c_t
    rate_without_apc: FloatArray  # the same calibration with w = 0: the cost of the design's APC


@dataclass(frozen=True, slots=True)
class PredictiveForecaster:
    """Calibrated quantile forecaster; ``pool`` holds other assets' histories (with days)."""

    settings: PredictiveSettings = field(default_factory=PredictiveSettings)
    pool: tuple[ForecastInputs, ...] = ()
    own_history: bool = True  # False: leave-one-asset-out, the pool alone is calibrated on
    name: str = "predictive"

    def variance(self, inputs: ForecastInputs) -> FloatArray:
        """s_t^2: the scale (not a variance forecast: the rate is c_t s_t sqrt(h))."""
        result: FloatArray = predictive_scale(inputs.returns, self.settings) ** 2
        return result

    def rates(self, inputs: ForecastInputs, confidence: float, mpor_days: int) -> RateForecast:
        if not 0.5 < confidence < 1.0:
            raise InputError("a confidence in (0.5, 1)", field="--confidence", value=confidence)
        if mpor_days < 1:
            raise InputError("at least 1 day", field="--mpor-days", value=mpor_days)
        if self.pool and (inputs.days_ns is None or any(p.days_ns is None for p in self.pool)):
            raise InputError("days on every history to pool them in calendar time",
                             field="days_ns")
        if not self.own_history and not self.pool:
            raise InputError("a pool of other histories (leave-one-asset-out)", field="pool")
        with_apc = self._rates(inputs, confidence, mpor_days, self.settings)
        without = self._rates(inputs, confidence, mpor_days,
                              replace(self.settings, stressed_weight=0.0))
        return RateForecast(rate=with_apc[0], scale=with_apc[1], multiplier=with_apc[2],
                            rate_without_apc=without[0])

    def _rates(self, inputs: ForecastInputs, confidence: float, h: int,
               settings: PredictiveSettings) -> tuple[FloatArray, FloatArray, FloatArray]:
        scale = predictive_scale(inputs.returns, settings)
        members = ((inputs,) if self.own_history else ()) + self.pool
        ends, longs, shorts = [], [], []
        for member in members:
            s = scale if member is inputs else predictive_scale(member.returns, settings)
            end, lo, up = standardised_losses(member.returns, s, h, _days(member))
            ends.append(end)
            longs.append(lo)
            shorts.append(up)
        end = np.concatenate(ends)
        order = np.argsort(end, kind="stable")
        multiplier = conformal_multiplier(
            end[order], np.concatenate(longs)[order], np.concatenate(shorts)[order],
            forecast_times(_days(inputs)), confidence, settings.window_days * _unit(inputs),
            settings.min_windows)
        return multiplier * scale * math.sqrt(h), scale, multiplier


def _unit(inputs: ForecastInputs) -> int:
    return 1 if inputs.days_ns is None else DAY_NS


def _days(inputs: ForecastInputs) -> IntArray:
    """End time of each return: its day (ns), or its index when the history has no days."""
    if inputs.days_ns is None:
        return np.arange(inputs.returns.size, dtype=np.int64)
    days: IntArray = np.asarray(inputs.days_ns, dtype=np.int64)
    if days.shape != inputs.returns.shape or (days.size > 1 and np.any(np.diff(days) <= 0)):
        raise InputError("increasing days, one per return", field="days_ns")
    return days


def forecast_times(days: IntArray) -> IntArray:
    """When the forecast of return t is made: the end of return t-1 (for t = 0, just before
    the end of return 0: nothing of this history is known yet)."""
    out = np.empty_like(days)
    out[1:] = days[:-1]
    out[:1] = days[:1] - 1
    return out


def predictive_scale(returns: FloatArray, settings: PredictiveSettings) -> FloatArray:
    """s_t = (1 - w) sqrt(v_t) + w s*_t from returns before t (NaN for t < 30)."""
    r = np.asarray(returns, dtype=np.float64)
    n = r.size
    out = np.full(n, np.nan)
    if n <= SEED:
        return out
    lam = settings.ewma_lambda
    v = np.empty(n)
    v[:SEED] = np.nan
    variance = float(np.mean(r[:SEED] ** 2))
    for day in range(SEED, n):
        v[day] = variance
        variance = lam * variance + (1 - lam) * r[day] ** 2
    # rolling[t]: RMS of the last min(window, t) returns before t
    squares = np.concatenate([[0.0], np.cumsum(r**2)])
    index = np.arange(n)
    width = np.minimum(settings.stressed_window, np.maximum(index, 1))
    rolling = np.sqrt(np.maximum(squares[index] - squares[index - width], 0.0) / width)
    rolling[:SEED] = np.nan
    stressed = np.full(n, np.nan)
    lookback = settings.stressed_lookback_days
    if n - SEED <= lookback:  # the whole history is in every lookback: a running maximum
        stressed[SEED:] = np.maximum.accumulate(rolling[SEED:])
    else:
        for k in range(SEED, n):
            stressed[k] = rolling[max(SEED, k - lookback):k + 1].max()
    w = settings.stressed_weight
    out[SEED:] = (1 - w) * np.sqrt(v[SEED:]) + w * stressed[SEED:]
    return out


def standardised_losses(returns: FloatArray, scale: FloatArray, h: int, days: IntArray
                        ) -> tuple[IntArray, FloatArray, FloatArray]:
    """(end time, long loss, short loss) per MPOR window j (returns j .. j+h-1) in units of
    s_j sqrt(h), for the windows with a scale."""
    r = np.asarray(returns, dtype=np.float64)
    n = r.size - h + 1
    if n <= 0:
        empty = np.zeros(0)
        return np.zeros(0, dtype=np.int64), empty, empty
    c = np.concatenate([[0.0], np.cumsum(r)])
    window = c[h:h + n] - c[:n]
    s = scale[:n] * math.sqrt(h)
    ok = np.isfinite(s) & (s > 0)
    move = np.expm1(window[ok])
    return days[h - 1:h - 1 + n][ok], -move / s[ok], move / s[ok]


def conformal_multiplier(end: IntArray, longs: FloatArray, shorts: FloatArray,
                         times: IntArray, confidence: float, window: int,
                         min_windows: int) -> FloatArray:
    """c at each forecast time: the k-th smallest of the long and short standardised losses of
    the m windows with time - window < end <= time, k = ceil((2m + 1) confidence); NaN when
    m < min_windows or k > 2m. ``end`` sorted."""
    out = np.full(times.size, np.nan)
    hi = np.searchsorted(end, times, side="right")
    lo = np.searchsorted(end, times - window, side="right")
    both = np.column_stack([longs, shorts])
    cache: dict[tuple[int, int], float] = {}
    for t in range(times.size):
        a, b = int(lo[t]), int(hi[t])
        m = b - a
        if m < min_windows:
            continue
        k = math.ceil((2 * m + 1) * confidence)
        if k > 2 * m:
            continue
        key = (a, b)
        if key not in cache:
            cache[key] = float(np.partition(both[a:b].ravel(), k - 1)[k - 1])
        out[t] = cache[key]
    return out


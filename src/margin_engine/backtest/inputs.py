"""Daily inputs for backtests and forecasters from price files of any bar size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from margin_engine.core.types import FloatArray, IntArray
from margin_engine.data.prices import PriceSeries
from margin_engine.margin.calibration import DAY_NS, daily_closes
from margin_engine.vol.forecast import ForecastInputs


@dataclass(frozen=True, slots=True, kw_only=True)
class DailyHistory:
    days_ns: IntArray  # day of each close
    closes: FloatArray
    inputs: ForecastInputs  # returns r_t = ln(close_t / close_{t-1}), one fewer than closes
    intraday: bool


def _on_days(days: IntArray, series: PriceSeries | None, reduce: str) -> FloatArray:
    out = np.full(days.size, np.nan)
    if series is None:
        return out
    day_of = series.time_ns // DAY_NS * DAY_NS
    unique, first = np.unique(day_of, return_index=True)
    if reduce == "last":
        values = np.array([series.close[i] for i in np.append(first[1:], day_of.size) - 1])
    else:
        values = np.add.reduceat(series.close, first) / np.diff(np.append(first, day_of.size))
    at = np.searchsorted(unique, days)
    ok = (at < unique.size) & (unique[np.minimum(at, unique.size - 1)] == days)
    out[ok] = values[at[ok]]
    return out


def daily_history(series: PriceSeries, dvol: PriceSeries | None = None,
                  funding: PriceSeries | None = None) -> DailyHistory:
    """Daily closes, returns and realised variance (sum of squared intraday log returns of
    each day when the bars are shorter than a day, else the squared daily return)."""
    days, closes = daily_closes(series)
    returns = np.diff(np.log(closes))
    spacing = np.median(np.diff(series.time_ns)) if series.size > 1 else DAY_NS
    intraday = bool(spacing < DAY_NS)
    if intraday:
        log_r = np.diff(np.log(series.close))
        bar_day = series.time_ns[1:] // DAY_NS * DAY_NS
        rv_all = np.bincount(np.searchsorted(days, bar_day), weights=log_r**2,
                             minlength=days.size)
        rv = rv_all[1:]
    else:
        rv = returns**2
    volume = np.zeros(days.size)
    day_index = np.searchsorted(days, series.time_ns // DAY_NS * DAY_NS)
    np.add.at(volume, np.clip(day_index, 0, days.size - 1), np.nan_to_num(series.volume))
    inputs = ForecastInputs(returns=returns, realised_variance=np.maximum(rv, 1e-12),
                            dvol=_on_days(days, dvol, "last")[1:],
                            funding=_on_days(days, funding, "mean")[1:],
                            volume=volume[1:])
    return DailyHistory(days_ns=days, closes=closes, inputs=inputs, intraday=intraday)

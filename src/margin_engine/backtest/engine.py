"""Replay a price history through a margin model or a predictive margin, day by day.

For every close day d (positions and the market's time to expiry held fixed, prices moved by
the history's returns since its first day): margin M_d from the model (the var model sees only
history up to d) or from a forecaster, and the loss over the MPOR L_d = equity_d -
equity_{d+h} (full revaluation, coin collateral included). An exception is L_d > M_d.

Predictive margin: rate_{u,d} = max(floor, z sigma_{u,d} sqrt(h)), z = Phi^-1(confidence),
sigma the forecaster's daily vol for day d+1 (known at the close of d); with APC ``buffer``
x 1.25, ``floor`` at least the rate from the standard deviation of all returns up to d (up to
10 years), ``stressed_weight`` 75 % / 25 % with the rate from the most volatile 250 days so far.
The rate sets the portfolio model's price range: every move of the grid of underlying u is
scaled by rate_{u,d} / 16 %.

Reported: exceptions, Kupiec / Christoffersen / conditional coverage, traffic light, mean and
median margin (and as a share of gross notional), efficiency, procyclicality (largest 1-day and
5-day relative margin increase, peak-to-trough ratio), mean and worst shortfall when breached.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Any

import numpy as np

from margin_engine.backtest.inputs import DailyHistory
from margin_engine.backtest.stats import christoffersen, kupiec_pof, traffic_light
from margin_engine.book.bound import bind_market, instruments_live, pinned_settlements
from margin_engine.book.columnar import ColumnarBook
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.core.types import FloatArray
from margin_engine.liquidation.shocks import marks_by_underlying, with_index
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.portfolio import run_portfolio_kernel
from margin_engine.margin.protocol import MarginModel
from margin_engine.margin.registry import get_model
from margin_engine.margin.scenarios import value_change_grid
from margin_engine.market.snapshot import MarketSnapshot
from margin_engine.vol.forecast import get_forecaster

GRID_MAX_MOVE = 0.16
STRESSED_DAYS = 250


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictiveConfig:
    floor_rate: float = 0.0
    z: str = "normal"  # normal: Phi^-1(c); empirical: past standardised-return quantiles
    apc: str = "none"  # none, buffer, floor, stressed_weight
    buffer: float = 0.25
    stressed_weight: float = 0.25
    floor_years: float = 10.0


@dataclass(slots=True)
class BacktestResult:
    summary: dict[str, Any]
    days: list[str] = field(default_factory=list)
    days_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    margin: FloatArray = field(default_factory=lambda: np.zeros(0))
    loss: FloatArray = field(default_factory=lambda: np.zeros(0))
    price: FloatArray = field(default_factory=lambda: np.zeros(0))
    gross: FloatArray = field(default_factory=lambda: np.zeros(0))


def _aligned(histories: Mapping[str, DailyHistory]) -> tuple[np.ndarray, FloatArray]:
    names = sorted(histories)
    days = histories[names[0]].days_ns
    for u in names[1:]:
        days = np.intersect1d(days, histories[u].days_ns)
    closes = np.column_stack([histories[u].closes[np.searchsorted(histories[u].days_ns, days)]
                              for u in names])
    return days, closes


def predictive_rates(history: DailyHistory, forecaster: str, confidence: float, mpor_days: int,
                     cfg: PredictiveConfig) -> FloatArray:
    """rate[d] for every close day d of ``history`` (NaN without a forecast)."""
    variance = get_forecaster(forecaster).variance(history.inputs)
    rates = np.full(history.days_ns.size, np.nan)
    # at close d the forecast for the next return (index d of the returns) is variance[d]
    sigma = np.sqrt(variance)
    r = history.inputs.returns
    z: FloatArray | float = NormalDist().inv_cdf(confidence)
    if cfg.z == "empirical":
        z = empirical_z(r, sigma, confidence)
    rate = np.maximum(cfg.floor_rate, z * sigma * math.sqrt(mpor_days))
    if cfg.apc == "buffer":
        rate = rate * (1 + cfg.buffer)
    elif cfg.apc in ("floor", "stressed_weight"):
        long_run = np.full(r.size, np.nan)
        stressed = np.full(r.size, np.nan)
        window = int(cfg.floor_years * 365)
        c1 = np.concatenate([[0.0], np.cumsum(r)])
        c2 = np.concatenate([[0.0], np.cumsum(r**2)])
        for d in range(30, r.size):
            lo = max(0, d - window)
            n = d - lo
            long_run[d] = math.sqrt(max((c2[d] - c2[lo]) / n - ((c1[d] - c1[lo]) / n) ** 2,
                                        0.0))
            w = min(STRESSED_DAYS, d)
            rolling = (c2[w:d + 1] - c2[:d + 1 - w]) / w
            stressed[d] = math.sqrt(float(rolling.max()))
        base = z * math.sqrt(mpor_days)
        rate = np.maximum(rate, base * long_run) if cfg.apc == "floor" else \
            (1 - cfg.stressed_weight) * rate + cfg.stressed_weight * base * stressed
    rates[:r.size] = rate
    return rates


def empirical_z(returns: FloatArray, sigma: FloatArray, confidence: float,
                min_days: int = 250) -> FloatArray:
    """z_d = the larger c-quantile of -e and e over past standardised returns e_t = r_t / s_t
    (t < d): the forecaster's own tails, fatter than normal for crypto."""
    e = returns / sigma
    z = np.full(returns.size, np.nan)
    finite = np.isfinite(e)
    for d in range(returns.size):
        past = e[:d][finite[:d]]
        if past.size >= min_days:
            z[d] = max(float(np.quantile(-past, confidence)), float(np.quantile(past, confidence)))
    return z


def run_backtest(book: ColumnarBook, market: MarketSnapshot,
                 histories: Mapping[str, DailyHistory], *, config: RiskConfig,
                 confidence: float, mpor_days: int, model: str | None = None,
                 forecaster: str | None = None, built: Mapping[str, MarginModel] | None = None,
                 predictive: PredictiveConfig | None = None, start_ns: int | None = None,
                 end_ns: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> BacktestResult:
    if (model is None) == (forecaster is None):
        raise InputError("exactly one of --model or --forecaster", field="--model")
    if book.account_count != 1:
        raise InputError("a portfolio with exactly one account (the backtested book)",
                         field="--portfolio", value=f"{book.account_count} accounts")
    for u in histories:
        if u not in market.underlyings:
            raise InputError(f"an underlying of the market {sorted(market.underlyings)}",
                             field="--prices", value=u)
    # A backtest measures the margin against the book's price losses; collateral haircuts and
    # the stablecoin depeg charge are not price risk of the book, so they are left out here.
    config = replace(config, haircuts=replace(config.haircuts, enabled=False))
    names = sorted(histories)
    days, closes = _aligned(histories)
    h = int(mpor_days)
    marked = marks_by_underlying(market, {i.name: i.underlying
                                          for i in book.instruments.instruments})
    base = {u: market.underlyings[u].index for u in names}
    market = pinned_settlements(bind_market(book, market))  # settled cash does not move

    def market_at(d: int) -> MarketSnapshot:
        m = market
        for k, u in enumerate(names):
            m = with_index(m, marked, u, base[u] * closes[d, k] / closes[0, k])
        return m

    rates = None
    if forecaster is not None:
        rates = np.column_stack([
            predictive_rates(histories[u], forecaster, confidence, h,
                             predictive or PredictiveConfig())[
                np.searchsorted(histories[u].days_ns, days)] for u in names])
    var_config = replace(config, var=replace(config.var, confidence=confidence,
                                             mpor_days=float(h)))
    start = 0 if start_ns is None else int(np.searchsorted(days, start_ns))
    stop = days.size - h if end_ns is None else min(days.size - h,
                                                    int(np.searchsorted(days, end_ns, "right")))
    equity = np.full(days.size, np.nan)
    margin = np.full(days.size, np.nan)
    gross = np.full(days.size, np.nan)
    for d in range(start, min(stop + h, days.size)):
        if progress is not None:
            progress(d - start, min(stop + h, days.size) - start)
        bound = bind_market(book, market_at(d))
        equity[d] = float(bound.equity()[0])
        if d >= stop:
            continue
        gross[d] = float(bound.account_gross_notional()[0])
        if rates is not None:
            scale = np.ones(len(bound.underlyings))
            if not np.isfinite(rates[d]).all():
                continue
            for k, u in enumerate(names):
                if u in bound.underlyings:
                    scale[bound.underlyings.index(u)] = rates[d, k] / GRID_MAX_MOVE
            grid = value_change_grid(bound, config.portfolio, scale)
            margin[d] = float(run_portfolio_kernel(bound, config, grid, scale)
                              .initial_margin[0])
        elif model == "var":
            from margin_engine.margin.var import VarHistory, VarModel

            if d < 60:
                continue
            cut = VarHistory(underlyings=tuple(names), days_ns=days[:d + 1],
                             closes=closes[:d + 1], dvol=np.full((d + 1, len(names)), np.nan))
            margin[d] = float(VarModel(cut).compute(bound, var_config).initial_margin[0])
        else:
            assert model is not None
            margin[d] = float(get_model(model, built).compute(bound, config)
                              .initial_margin[0])
    loss = np.full(days.size, np.nan)
    loss[:days.size - h] = equity[:days.size - h] - equity[h:]
    valid = np.isfinite(margin) & np.isfinite(loss)
    if not valid.any():
        raise InputError("days with both a margin and a loss (more history or a later "
                         "--start)", field="--prices")
    result = _summarise(days, closes[:, 0], margin, loss, gross, valid, confidence, h,
                        model or f"predictive:{forecaster}")
    # The book is revalued every day at the market's own time (a constant time to expiry), so
    # nothing expires during a backtest; what had expired by then is settled cash, said here.
    live = instruments_live(book, market.timestamp_ns)
    result.summary["settled_instruments"] = sorted(
        {book.instruments.instruments[i].name for i in book.position_instrument[~live[
            book.position_instrument]].tolist()})
    return result


def _max_increase(values: FloatArray, lag: int) -> float:
    """Largest relative increase over ``lag`` days of a margin rate (margin / notional): the
    model's own procyclicality, without the price level."""
    with np.errstate(divide="ignore", invalid="ignore"):
        change = values[lag:] / values[:-lag] - 1
    finite = change[np.isfinite(change)]
    return float(finite.max()) if finite.size else 0.0


def _summarise(days: np.ndarray, price: FloatArray, margin: FloatArray, loss: FloatArray,
               gross: FloatArray, valid: np.ndarray, confidence: float, h: int,
               method: str) -> BacktestResult:
    m, lo, g = margin[valid], loss[valid], gross[valid]
    hits = lo > m
    observations, exceptions = int(valid.sum()), int(hits.sum())
    lr, p = kupiec_pof(observations, exceptions, 1 - confidence)
    ind = christoffersen(hits, 1 - confidence)
    shortfall = (lo - m)[hits]
    with np.errstate(divide="ignore", invalid="ignore"):
        one_day = m[1:] / m[:-1] - 1
        five_day = m[5:] / m[:-5] - 1
    positive = m[m > 0]
    summary = {
        "method": method, "first": ns_to_iso(int(days[valid][0])),
        "last": ns_to_iso(int(days[valid][-1])), "confidence": confidence, "mpor_days": h,
        "observations": observations, "exceptions": exceptions,
        "expected_exceptions": observations * (1 - confidence),
        "exception_rate": exceptions / observations, "kupiec_lr": lr, "kupiec_p": p,
        "christoffersen_p": ind["p_ind"], "conditional_coverage_p": ind["p_cc"],
        "traffic_light": traffic_light(observations, exceptions, 1 - confidence),
        "mean_margin": float(np.mean(m)), "median_margin": float(np.median(m)),
        "mean_margin_rate": float(np.mean(m / g)),
        "mean_efficiency": float(np.mean(g[m > 0] / m[m > 0])) if (m > 0).any() else None,
        "max_1d_increase": float(np.nanmax(one_day[np.isfinite(one_day)], initial=0.0)),
        "max_5d_rate_increase": _max_increase(m / g, 5),
        "max_5d_increase": float(np.nanmax(five_day[np.isfinite(five_day)], initial=0.0)),
        "peak_to_trough": float(positive.max() / positive.min()) if positive.size else None,
        "mean_shortfall": float(shortfall.mean()) if shortfall.size else 0.0,
        "worst_shortfall": float(shortfall.max()) if shortfall.size else 0.0,
    }
    return BacktestResult(summary=summary, days=[ns_to_iso(int(x))[:10] for x in days[valid]],
                          days_ns=days[valid],
                          margin=m, loss=lo, price=price[valid], gross=g)

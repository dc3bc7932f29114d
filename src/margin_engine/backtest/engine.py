"""Replay a price history through a margin model or a predictive margin, day by day.

For every close day d (positions and the market's time to expiry held fixed, prices moved by
the history's returns since its first day): margin M_d from the model (the var model sees only
history up to d) or from a forecaster, and the loss over the MPOR L_d = equity_d -
equity_{d+h} (full revaluation, coin collateral included). An exception is L_d > M_d.

Predictive margin: rate_{u,d} = max(floor, m_{u,d} sigma_{u,d} sqrt(h)), sigma the forecaster's
daily vol for day d+1 (known at the close of d) and m = Phi^-1(confidence) (``--z normal``) or
the past standardised-return quantile (``--z empirical``); ``predictive`` gives its rate
c_d s_d sqrt(h) directly (``margin_engine.vol.predictive``: m = c, its conformal multiplier, and
sigma = s, its scale). With APC ``buffer`` x 1.25, ``floor`` at least m x the standard
deviation of all returns up to d (up to 10 years), ``stressed_weight`` 75 % / 25 % with m x the
volatility of the most volatile 250 days so far. The rate sets the portfolio model's price
range: every move of the grid of underlying u is scaled by rate_{u,d} / 16 %.

Reported: exceptions, Kupiec / Christoffersen / conditional coverage, traffic light, mean and
median margin (and as a share of gross notional), efficiency, procyclicality (largest 1-day and
5-day relative margin increase, peak-to-trough ratio), mean and worst shortfall when breached,
and anticipation: over each of the five largest 1-day losses, the margin rate in force (margin /
gross notional at the close before) against its mean over the 30 days before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from statistics import NormalDist
from typing import Any

import numpy as np

from margin_engine.backtest.inputs import DailyHistory
from margin_engine.backtest.stats import christoffersen, kupiec_pof, traffic_light
from margin_engine.book.bound import bind_market, instruments_live, pinned_settlements
from margin_engine.book.columnar import ColumnarBook
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.core.types import FloatArray, IntArray
from margin_engine.liquidation.shocks import marks_by_underlying, with_index
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.portfolio import run_portfolio_kernel
from margin_engine.margin.protocol import MarginModel
from margin_engine.margin.registry import from_history, get_model, needs_history
from margin_engine.margin.scenarios import value_change_grid
from margin_engine.market.snapshot import MarketSnapshot
from margin_engine.vol.forecast import (
    ForecasterName,
    ForecastInputs,
    forecaster_name,
    get_forecaster,
)

GRID_MAX_MOVE = 0.16
STRESSED_DAYS = 250
ANTICIPATION_MOVES = 5
ANTICIPATION_DAYS = 30


class ZMethod(StrEnum):
    """How a variance forecast becomes a quantile (``predictive`` has its own)."""

    NORMAL = "normal"  # Phi^-1(confidence)
    EMPIRICAL = "empirical"  # past standardised-return quantiles


class ApcMethod(StrEnum):
    """Anti-procyclicality applied on top of a forecaster's rate (EMIR RTS 153/2013 art. 28)."""

    NONE = "none"
    BUFFER = "buffer"
    FLOOR = "floor"
    STRESSED_WEIGHT = "stressed_weight"


@dataclass(frozen=True, slots=True, kw_only=True)
class PredictiveConfig:
    floor_rate: float = 0.0
    z: ZMethod = ZMethod.NORMAL
    apc: ApcMethod = ApcMethod.NONE
    buffer: float = 0.25
    stressed_weight: float = 0.25
    floor_years: float = 10.0
    # ``predictive`` only: more histories (with days) it calibrates on besides the backtested
    # underlyings' own, and whether it may use those (False: leave-one-asset-out)
    pool: tuple[ForecastInputs, ...] = ()
    own_history: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "z", ZMethod(self.z))
        object.__setattr__(self, "apc", ApcMethod(self.apc))


@dataclass(slots=True)
class BacktestResult:
    summary: dict[str, Any]
    days: list[str] = field(default_factory=list)
    days_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    margin: FloatArray = field(default_factory=lambda: np.zeros(0))
    loss: FloatArray = field(default_factory=lambda: np.zeros(0))
    price: FloatArray = field(default_factory=lambda: np.zeros(0))
    gross: FloatArray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True, slots=True, kw_only=True)
class RatePath:
    """A forecaster's margin rates on the close days of one history (NaN without one)."""

    rate: FloatArray
    multiplier: FloatArray  # m_d: z, the empirical quantile or predictive's c_d
    rate_without_apc: FloatArray | None = None  # predictive: the same with its APC off


@dataclass(frozen=True, slots=True, kw_only=True)
class Method:
    """One way to margin the book in a backtest: a margin model, or margin rates per close day
    (rows: the aligned days of ``run_methods``; columns: the histories' underlyings, sorted)."""

    label: str
    model: str | None = None
    rates: FloatArray | None = None


def _aligned(histories: Mapping[str, DailyHistory]) -> tuple[np.ndarray, FloatArray]:
    names = sorted(histories)
    days = histories[names[0]].days_ns
    for u in names[1:]:
        days = np.intersect1d(days, histories[u].days_ns)
    closes = np.column_stack([histories[u].closes[np.searchsorted(histories[u].days_ns, days)]
                              for u in names])
    return days, closes


def with_days(history: DailyHistory) -> ForecastInputs:
    """The history's forecast inputs with the day each return ends (to pool histories)."""
    return replace(history.inputs, days_ns=np.asarray(history.days_ns[1:], dtype=np.int64))


def rate_path(history: DailyHistory, forecaster: str, confidence: float, mpor_days: int,
              cfg: PredictiveConfig, others: Sequence[ForecastInputs] = ()) -> RatePath:
    """rate[d] for every close day d of ``history``; ``others``: the other histories of the
    run, which ``predictive`` pools with ``cfg.pool``."""
    name = forecaster_name(forecaster)
    r = history.inputs.returns
    n = history.days_ns.size
    without: FloatArray | None = None
    if name is ForecasterName.PREDICTIVE:
        from margin_engine.vol.predictive import PredictiveForecaster

        forecast = PredictiveForecaster(pool=(*others, *cfg.pool),
                                        own_history=cfg.own_history).rates(
            with_days(history), confidence, mpor_days)
        rate, multiplier = np.maximum(cfg.floor_rate, forecast.rate), forecast.multiplier
        without = _apply_apc(np.maximum(cfg.floor_rate, forecast.rate_without_apc), r,
                             multiplier * math.sqrt(mpor_days), cfg)
    else:
        variance = get_forecaster(name).variance(history.inputs)
        # at close d the forecast for the next return (index d of the returns) is variance[d]
        sigma = np.sqrt(variance)
        multiplier = np.full(r.size, NormalDist().inv_cdf(confidence))
        if cfg.z is ZMethod.EMPIRICAL:
            multiplier = empirical_z(r, sigma, confidence)
        rate = np.maximum(cfg.floor_rate, multiplier * sigma * math.sqrt(mpor_days))
    rate = _apply_apc(rate, r, multiplier * math.sqrt(mpor_days), cfg)
    pad = np.full(n - r.size, np.nan)
    return RatePath(rate=np.concatenate([rate, pad]),
                    multiplier=np.concatenate([multiplier, pad]),
                    rate_without_apc=None if without is None else np.concatenate([without, pad]))


def predictive_rates(history: DailyHistory, forecaster: str, confidence: float, mpor_days: int,
                     cfg: PredictiveConfig) -> FloatArray:
    """rate[d] for every close day d of ``history`` (NaN without a forecast)."""
    return rate_path(history, forecaster, confidence, mpor_days, cfg).rate


def _apply_apc(rate: FloatArray, r: FloatArray, base: FloatArray, cfg: PredictiveConfig
               ) -> FloatArray:
    if cfg.apc is ApcMethod.BUFFER:
        buffered: FloatArray = rate * (1 + cfg.buffer)
        return buffered
    if cfg.apc is ApcMethod.NONE:
        return rate
    long_run = np.full(r.size, np.nan)
    stressed = np.full(r.size, np.nan)
    window = int(cfg.floor_years * 365)
    c1 = np.concatenate([[0.0], np.cumsum(r)])
    c2 = np.concatenate([[0.0], np.cumsum(r**2)])
    for d in range(30, r.size):
        lo = max(0, d - window)
        n = d - lo
        long_run[d] = math.sqrt(max((c2[d] - c2[lo]) / n - ((c1[d] - c1[lo]) / n) ** 2, 0.0))
        w = min(STRESSED_DAYS, d)
        rolling = (c2[w:d + 1] - c2[:d + 1 - w]) / w
        stressed[d] = math.sqrt(float(rolling.max()))
    if cfg.apc is ApcMethod.FLOOR:
        result: FloatArray = np.maximum(rate, base * long_run)
        return result
    weighted: FloatArray = (1 - cfg.stressed_weight) * rate + cfg.stressed_weight * base * stressed
    return weighted


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


def forecast_rates(histories: Mapping[str, DailyHistory], forecaster: str, confidence: float,
                   mpor_days: int, cfg: PredictiveConfig
                   ) -> tuple[FloatArray, FloatArray | None]:
    """(rates, rates without predictive's APC or None): aligned days x sorted underlyings."""
    names = sorted(histories)
    days, _ = _aligned(histories)
    inputs = {u: with_days(histories[u]) for u in names}
    paths = {u: rate_path(histories[u], forecaster, confidence, mpor_days, cfg,
                          others=tuple(inputs[v] for v in names if v != u)) for u in names}
    at = {u: np.searchsorted(histories[u].days_ns, days) for u in names}
    rates = np.column_stack([paths[u].rate[at[u]] for u in names])
    without = None
    if all(p.rate_without_apc is not None for p in paths.values()):
        without = np.column_stack([paths[u].rate_without_apc[at[u]]  # type: ignore[index]
                                   for u in names])
    return rates, without


@contextmanager
def one_numba_thread() -> Iterator[None]:
    """A backtest margins one or two accounts a day: the parallel kernels' thread start-up costs
    more than it saves (10x on a busy 2-core machine), so they run on one thread."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def run_backtest(book: ColumnarBook, market: MarketSnapshot,
                 histories: Mapping[str, DailyHistory], *, config: RiskConfig,
                 confidence: float, mpor_days: int, model: str | None = None,
                 forecaster: str | None = None, built: Mapping[str, MarginModel] | None = None,
                 predictive: PredictiveConfig | None = None, start_ns: int | None = None,
                 end_ns: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> BacktestResult:
    if (model is None) == (forecaster is None):
        raise InputError("exactly one of --model or --forecaster", field="--model")
    _check(book, market, histories, confidence, mpor_days)
    if forecaster is not None:
        rates, _ = forecast_rates(histories, forecaster, confidence, int(mpor_days),
                                  predictive or PredictiveConfig())
        method = Method(label=f"predictive:{forecaster_name(forecaster)}", rates=rates)
    else:
        method = Method(label=str(model), model=model)
    return run_methods(book, market, histories, [method], config=config, confidence=confidence,
                       mpor_days=mpor_days, built=built, start_ns=start_ns, end_ns=end_ns,
                       progress=progress)[method.label]


def _check(book: ColumnarBook, market: MarketSnapshot, histories: Mapping[str, DailyHistory],
           confidence: float, mpor_days: int) -> None:
    if book.account_count != 1:
        raise InputError("a portfolio with exactly one account (the backtested book)",
                         field="--portfolio", value=f"{book.account_count} accounts")
    if not histories:
        raise InputError("at least one price history", field="--prices")
    for u in histories:
        if u not in market.underlyings:
            raise InputError(f"an underlying of the market {sorted(market.underlyings)}",
                             field="--prices", value=u)
    if not 0.5 < confidence < 1.0:
        raise InputError("a confidence in (0.5, 1)", field="--confidence", value=confidence)
    if mpor_days < 1:
        raise InputError("at least 1 day", field="--mpor-days", value=mpor_days)


def run_methods(book: ColumnarBook, market: MarketSnapshot,
                histories: Mapping[str, DailyHistory], methods: Sequence[Method], *,
                config: RiskConfig, confidence: float, mpor_days: int,
                built: Mapping[str, MarginModel] | None = None, start_ns: int | None = None,
                end_ns: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> dict[str, BacktestResult]:
    """Backtest the book under several methods in one pass over the days (each day's market
    and equity are computed once). Every method's result covers its own days; compare them
    on common dates with ``on_common_days``."""
    _check(book, market, histories, confidence, mpor_days)
    # A backtest measures the margin against the book's price losses; collateral haircuts and
    # the stablecoin depeg charge are not price risk of the book, so they are left out here.
    config = replace(config, haircuts=replace(config.haircuts, enabled=False))
    names = sorted(histories)
    days, closes = _aligned(histories)
    h = int(mpor_days)
    for method in methods:
        if (method.model is None) == (method.rates is None):
            raise InputError("a model or margin rates", field="method", value=method.label)
        if method.rates is not None and method.rates.shape != (days.size, len(names)):
            raise InputError(f"rates of shape {(days.size, len(names))}", field="method",
                             value=method.label)
    marked = marks_by_underlying(market, {i.name: i.underlying
                                          for i in book.instruments.instruments})
    base = {u: market.underlyings[u].index for u in names}
    market = pinned_settlements(bind_market(book, market))  # settled cash does not move

    def market_at(d: int) -> MarketSnapshot:
        m = market
        for k, u in enumerate(names):
            m = with_index(m, marked, u, base[u] * closes[d, k] / closes[0, k])
        return m

    var_config = replace(config, var=replace(config.var, confidence=confidence,
                                             mpor_days=float(h)))
    start = 0 if start_ns is None else int(np.searchsorted(days, start_ns))
    stop = days.size - h if end_ns is None else min(days.size - h,
                                                    int(np.searchsorted(days, end_ns, "right")))
    equity = np.full(days.size, np.nan)
    margin = np.full((len(methods), days.size), np.nan)
    gross = np.full(days.size, np.nan)
    last = min(stop + h, days.size)
    with one_numba_thread():
        for d in range(start, last):
            if progress is not None:
                progress(d - start, last - start)
            bound = bind_market(book, market_at(d))
            equity[d] = float(bound.equity()[0])
            if d >= stop:
                continue
            gross[d] = float(bound.account_gross_notional()[0])
            for k, method in enumerate(methods):
                margin[k, d] = _margin_on_day(method, bound, d, names, days, closes, config,
                                              var_config, built)
    loss = np.full(days.size, np.nan)
    loss[:days.size - h] = equity[:days.size - h] - equity[h:]
    # The book is revalued every day at the market's own time (a constant time to expiry), so
    # nothing expires during a backtest; what had expired by then is settled cash, said here.
    live = instruments_live(book, market.timestamp_ns)
    settled = sorted({book.instruments.instruments[i].name for i in book.position_instrument[
        ~live[book.position_instrument]].tolist()})
    results: dict[str, BacktestResult] = {}
    for k, method in enumerate(methods):
        valid = np.isfinite(margin[k]) & np.isfinite(loss)
        if not valid.any():
            span = (f"{ns_to_iso(int(days[0]))[:10]} to {ns_to_iso(int(days[-1]))[:10]}"
                    if days.size else "no common day")
            window = (f"{'the first day' if start_ns is None else ns_to_iso(start_ns)[:10]} to "
                      f"{'the last day' if end_ns is None else ns_to_iso(end_ns)[:10]}")
            raise InputError(
                f"days with both a {method.label} margin and a {h}-day loss: the histories' "
                f"common days run {span} ({days.size:,} days); a window inside them of at "
                f"least {h + 1} days", field="--start" if start_ns is not None else "--prices",
                value=window)
        result = _summarise(days, closes[:, 0], margin[k], loss, gross, valid, confidence, h,
                            method.label)
        result.summary["settled_instruments"] = settled
        results[method.label] = result
    return results


def _margin_on_day(method: Method, bound: Any, d: int, names: list[str], days: IntArray,
                   closes: FloatArray, config: RiskConfig, var_config: RiskConfig,
                   built: Mapping[str, MarginModel] | None) -> float:
    if method.rates is not None:
        if not np.isfinite(method.rates[d]).all():
            return math.nan
        scale = np.ones(len(bound.underlyings))
        for k, u in enumerate(names):
            if u in bound.underlyings:
                scale[bound.underlyings.index(u)] = method.rates[d, k] / GRID_MAX_MOVE
        grid = value_change_grid(bound, config.portfolio, scale)
        return float(run_portfolio_kernel(bound, config, grid, scale).initial_margin[0])
    assert method.model is not None
    if needs_history(method.model):  # made from the history up to day d
        from margin_engine.margin.var import VarHistory

        if d < 60:
            return math.nan
        cut = VarHistory(underlyings=tuple(names), days_ns=days[:d + 1], closes=closes[:d + 1],
                         dvol=np.full((d + 1, len(names)), np.nan))
        model = from_history(method.model, cut)
        return float(model.compute(bound, var_config).initial_margin[0])
    return float(get_model(method.model, built).compute(bound, config).initial_margin[0])


def on_common_days(results: Mapping[str, BacktestResult]) -> dict[str, BacktestResult]:
    """Every result restricted to the days on which all of them have a margin and a loss."""
    if not results:
        return {}
    common: np.ndarray | None = None
    for result in results.values():
        common = result.days_ns if common is None else np.intersect1d(common, result.days_ns)
    assert common is not None
    if common.size == 0:
        raise InputError("methods with days in common", field="--compare",
                         value=", ".join(results))
    return {label: restrict(result, common) for label, result in results.items()}


def restrict(result: BacktestResult, days_ns: np.ndarray) -> BacktestResult:
    """The result on some of its days (re-summarised)."""
    keep = np.isin(result.days_ns, days_ns)
    out = _summarise(result.days_ns, result.price, result.margin, result.loss, result.gross,
                     keep, result.summary["confidence"], result.summary["mpor_days"],
                     result.summary["method"])
    for key in ("settled_instruments",):
        if key in result.summary:
            out.summary[key] = result.summary[key]
    return out


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
        "anticipation": anticipation(days[valid], m, lo, g),
    }
    return BacktestResult(summary=summary, days=[ns_to_iso(int(x))[:10] for x in days[valid]],
                          days_ns=days[valid],
                          margin=m, loss=lo, price=price[valid], gross=g)


def anticipation(days_ns: np.ndarray, margin: FloatArray, loss: FloatArray, gross: FloatArray,
                 count: int = ANTICIPATION_MOVES, before: int = ANTICIPATION_DAYS
                 ) -> list[dict[str, Any]]:
    """Over each of the ``count`` largest losses (as a share of gross notional), the margin rate
    in force at the close before it against the rate's mean over the ``before`` days before:
    ratio > 1 means margin had risen ahead of the move."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = margin / gross
        move = loss / gross
    order = [int(i) for i in np.argsort(-np.where(np.isfinite(move), move, -np.inf))[:count]]
    out: list[dict[str, Any]] = []
    for i in order:
        prior = rate[max(0, i - before):i]
        prior = prior[np.isfinite(prior)]
        mean = float(prior.mean()) if prior.size else None
        finite = bool(np.isfinite(rate[i]) and np.isfinite(move[i]))
        out.append({"day": ns_to_iso(int(days_ns[i]))[:10],
                    "loss_rate": float(move[i]) if finite else None,
                    "rate": float(rate[i]) if finite else None, "prior_mean_rate": mean,
                    "ratio": float(rate[i] / mean) if mean and finite else None})
    return out

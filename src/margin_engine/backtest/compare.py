"""`margin-engine backtest --compare F1,F2,...`: forecasters side by side on common dates.

A comparison runs every forecaster on one history (or a joint set of histories) for the book and
for its mirror (every position's size negated: long and short), keeps only the days on which
every forecaster has a margin, and summarises each on those days: exceptions against expected,
Kupiec and Christoffersen p, traffic light, mean margin rate, worst shortfall, largest 5-day
rate rise and anticipation (``engine.anticipation``). ``predictive`` is also run with its
anti-procyclicality off (``apc_cost`` = its mean margin rate with / without - 1) and, when asked,
leave-one-asset-out (calibrated on the other assets' histories alone).

The verdict per history compares ``predictive`` with ``ewma`` on those dates:
exceptions long + short <= ewma's, mean margin rate <= 1.05 x ewma's, Kupiec p >= 5 % on each
side, largest 5-day rate rise <= ewma's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np

from margin_engine.backtest.engine import (
    BacktestResult,
    Method,
    PredictiveConfig,
    forecast_rates,
    on_common_days,
    restrict,
    run_methods,
)
from margin_engine.backtest.inputs import DailyHistory
from margin_engine.book.columnar import ColumnarBook
from margin_engine.core.errors import InputError
from margin_engine.margin.config import RiskConfig
from margin_engine.market.snapshot import MarketSnapshot
from margin_engine.vol.forecast import ForecasterName, ForecastInputs, forecaster_name

MARGIN_RATIO_LIMIT = 1.05
KUPIEC_LEVEL = 0.05
NO_APC = "predictive (no APC)"
LOAO = "predictive (leave-one-asset-out)"
LOAO_NO_APC = "predictive (leave-one-asset-out, no APC)"


class Side(StrEnum):
    LONG = "long"  # the book as given
    SHORT = "short"  # its mirror: every size negated


def mirrored(book: ColumnarBook) -> ColumnarBook:
    """The same book with every position's size negated (collateral unchanged)."""
    return replace(book, size=-book.size)


def parse_forecasters(text: str) -> tuple[ForecasterName, ...]:
    """``ewma,garch,...`` -> forecaster names (each known, none twice)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise InputError("a comma-separated list of forecasters", field="--compare", value=text)
    parsed = tuple(forecaster_name(n, field="--compare") for n in names)
    if len(set(parsed)) != len(parsed):
        raise InputError("each forecaster once", field="--compare", value=text)
    return parsed


@dataclass(slots=True)
class Comparison:
    """Forecasters on one history, both sides, on common dates."""

    label: str
    forecasters: tuple[str, ...]
    first: str
    last: str
    days: int
    rows: list[dict[str, Any]]  # one per side and forecaster (and predictive variants)
    errors: list[dict[str, str]] = field(default_factory=list)
    results: dict[tuple[str, str], BacktestResult] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None

    def row(self, side: str, method: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["side"] == side and r["method"] == method), None)

    def to_json(self) -> dict[str, Any]:
        return {"history": self.label, "forecasters": list(self.forecasters),
                "common_dates": {"first": self.first, "last": self.last, "days": self.days},
                "rows": self.rows, "errors": self.errors, "verdict": self.verdict}


def compare_forecasters(book: ColumnarBook, market: MarketSnapshot,
                        histories: Mapping[str, DailyHistory], *,
                        forecasters: Sequence[str], label: str, config: RiskConfig,
                        confidence: float = 0.99, mpor_days: int = 1,
                        predictive: PredictiveConfig | None = None,
                        leave_one_out_pool: Sequence[ForecastInputs] | None = None,
                        start_ns: int | None = None, end_ns: int | None = None,
                        progress: Callable[[str], None] | None = None) -> Comparison:
    """Run the comparison; ``leave_one_out_pool`` (forecast inputs with days of other assets)
    adds ``predictive`` calibrated on that pool alone."""
    cfg = predictive or PredictiveConfig()
    names = tuple(forecaster_name(f, field="--compare") for f in forecasters)
    methods: list[Method] = []
    errors: list[dict[str, str]] = []
    for name in names:
        if progress:
            progress(f"{label}: {name} forecasts")
        try:
            rates, without = forecast_rates(histories, name, confidence, mpor_days, cfg)
        except InputError as exc:  # e.g. `implied` with no DVOL for this history
            errors.append({"method": str(name), "error": str(exc)})
            continue
        methods.append(Method(label=str(name), rates=rates))
        if without is not None:
            methods.append(Method(label=NO_APC, rates=without))
    if ForecasterName.PREDICTIVE in names and leave_one_out_pool is not None:
        loao = replace(cfg, pool=tuple(leave_one_out_pool), own_history=False)
        rates, without = forecast_rates(histories, ForecasterName.PREDICTIVE, confidence,
                                        mpor_days, loao)
        methods.append(Method(label=LOAO, rates=rates))
        if without is not None:
            methods.append(Method(label=LOAO_NO_APC, rates=without))
    main = [m.label for m in methods if m.label in names]
    if not main:
        raise InputError("at least one forecaster with forecasts for this history",
                         field="--compare", value=", ".join(names))
    runs: dict[str, dict[str, BacktestResult]] = {}
    for side, side_book in ((Side.LONG, book), (Side.SHORT, mirrored(book))):
        if progress:
            progress(f"{label}: {side} backtests")
        runs[side] = run_methods(side_book, market, histories, methods, config=config,
                                 confidence=confidence, mpor_days=mpor_days,
                                 start_ns=start_ns, end_ns=end_ns)
    common_results = on_common_days({m: runs[Side.LONG][m] for m in main})
    common = next(iter(common_results.values())).days_ns
    rows: list[dict[str, Any]] = []
    results: dict[tuple[str, str], BacktestResult] = {}
    for side in Side:
        for method in methods:
            result = restrict(runs[side][method.label], common)
            results[(str(side), method.label)] = result
            rows.append({"side": str(side), **result.summary, "method": method.label,
                         "hindsight_multiplier": _finite(hindsight_multiplier(result,
                                                                              confidence))})
    for side in Side:
        for helper, base in ((NO_APC, ForecasterName.PREDICTIVE), (LOAO_NO_APC, LOAO)):
            with_apc = next((r for r in rows if r["side"] == side and r["method"] == base), None)
            plain = next((r for r in rows if r["side"] == side and r["method"] == helper), None)
            if with_apc is not None and plain is not None:
                with_apc["apc_cost"] = _finite(with_apc["mean_margin_rate"]
                                               / plain["mean_margin_rate"] - 1)
    comparison = Comparison(label=label, forecasters=tuple(str(n) for n in names),
                            first=str(rows[0]["first"]), last=str(rows[0]["last"]),
                            days=int(common.size),
                            rows=[r for r in rows if r["method"] not in (NO_APC, LOAO_NO_APC)],
                            errors=errors, results=results)
    comparison.verdict = verdict(comparison, confidence)
    return comparison


def verdict(comparison: Comparison, confidence: float = 0.99) -> dict[str, Any] | None:
    """predictive (and its leave-one-asset-out run) against ewma on the days both have (the
    leave-one-asset-out run starts once the other assets' pool is deep enough)."""
    if any((str(side), ForecasterName.EWMA) not in comparison.results for side in Side):
        return None
    out: dict[str, Any] = {}
    for method in (ForecasterName.PREDICTIVE, LOAO):
        rows = {side: comparison.results.get((str(side), method)) for side in Side}
        if any(r is None for r in rows.values()):
            continue
        mine: dict[str, dict[str, Any]] = {}
        ewma: dict[str, dict[str, Any]] = {}
        for side, result in rows.items():
            assert result is not None
            base = restrict(comparison.results[(str(side), ForecasterName.EWMA)], result.days_ns)
            mine[side] = {**result.summary,
                          "hindsight_multiplier": _finite(hindsight_multiplier(result,
                                                                               confidence))}
            ewma[side] = {**base.summary,
                          "hindsight_multiplier": _finite(hindsight_multiplier(base, confidence)),
                          "kupiec_hindsight_multiplier": _finite(
                              kupiec_hindsight_multiplier(base, confidence))}
        out[str(method)] = judge(mine, ewma)
        out[str(method)]["days"] = int(rows[Side.LONG].days_ns.size)  # type: ignore[union-attr]
    return out or None


def judge(rows: Mapping[str, Mapping[str, Any]], ewma: Mapping[str, Mapping[str, Any]]
          ) -> dict[str, Any]:
    """The acceptance points of one method against ewma (rows per side)."""
    exceptions = sum(int(rows[s]["exceptions"]) for s in Side)
    ewma_exceptions = sum(int(ewma[s]["exceptions"]) for s in Side)
    rate = float(np.mean([rows[s]["mean_margin_rate"] for s in Side]))
    ewma_rate = float(np.mean([ewma[s]["mean_margin_rate"] for s in Side]))
    rise = max(float(rows[s]["max_5d_rate_increase"]) for s in Side)
    ewma_rise = max(float(ewma[s]["max_5d_rate_increase"]) for s in Side)
    kupiec = {str(s): float(rows[s]["kupiec_p"]) for s in Side}
    checks = {
        "exceptions_at_most_ewma": exceptions <= ewma_exceptions,
        "margin_at_most_1.05x_ewma": rate <= MARGIN_RATIO_LIMIT * ewma_rate,
        "kupiec_both_sides": all(p >= KUPIEC_LEVEL for p in kupiec.values()),
        "5d_rise_at_most_ewma": rise <= ewma_rise,
    }
    bounds = [ewma[s]["hindsight_multiplier"] for s in Side]
    hindsight = None if None in bounds else max(float(b) for b in bounds)
    lenient = [ewma[s].get("kupiec_hindsight_multiplier") for s in Side]
    kupiec_hindsight = max(float(b) for b in lenient if b is not None) \
        if None not in lenient else None
    return {"exceptions": exceptions, "ewma_exceptions": ewma_exceptions,
            "expected_exceptions": sum(float(rows[s]["expected_exceptions"]) for s in Side),
            "mean_margin_rate": rate, "ewma_mean_margin_rate": ewma_rate,
            "margin_ratio": rate / ewma_rate, "kupiec_p": kupiec,
            "max_5d_rate_increase": rise, "ewma_max_5d_rate_increase": ewma_rise,
            "ewma_hindsight_ratio": hindsight,
            "ewma_kupiec_hindsight_ratio": kupiec_hindsight,
            "checks": checks, "passed": all(checks.values())}


def hindsight_multiplier(result: BacktestResult, confidence: float) -> float:
    """The constant k, chosen with hindsight on these very days, by which this margin would have
    to be multiplied to have exceptions on at most 1 - confidence of them: the confidence
    quantile of loss / margin (a look-ahead bound, not a forecaster)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = result.loss / result.margin
    ratio = ratio[np.isfinite(ratio)]
    return float(np.quantile(ratio, confidence, method="higher")) if ratio.size else float("nan")


def kupiec_hindsight_multiplier(result: BacktestResult, confidence: float,
                                level: float = KUPIEC_LEVEL) -> float:
    """The smallest constant k, chosen with hindsight on these very days, by which this margin
    could be multiplied and still pass Kupiec's test at ``level``: with x the most exceptions
    the test accepts on T days at rate 1 - confidence, k is the (T - x)-th smallest
    loss / margin, so that exactly the x largest ratios stay exceptions (a look-ahead bound:
    the most lenient reading of "passes Kupiec")."""
    from margin_engine.backtest.stats import kupiec_pof

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = result.loss / result.margin
    ratio = np.sort(ratio[np.isfinite(ratio)])
    days = int(ratio.size)
    if days == 0:
        return float("nan")
    rate = 1.0 - confidence
    most = int(np.floor(rate * days))
    while most + 1 < days and kupiec_pof(days, most + 1, rate)[1] >= level:
        most += 1
    return float(max(ratio[days - most - 1], 0.0))


def crash_anticipation(comparison: Comparison, crash_day_ns: int, *, before: int = 30,
                       search_days: int = 2) -> list[dict[str, Any]]:
    """Per forecaster (long book), the largest 1-day move ending within ``search_days`` of the
    crash day: the rate in force at the close before it against its mean over the ``before``
    days before (ratio > 1: margin had risen ahead)."""
    out: list[dict[str, Any]] = []
    day = 86_400 * 10**9
    for (side, method), result in comparison.results.items():
        if side != Side.LONG or method in (NO_APC, LOAO_NO_APC):
            continue
        # loss[i] is the move from close day i to close day i + 1
        ends = result.days_ns + day
        near = np.nonzero(np.abs(ends - crash_day_ns) <= search_days * day)[0]
        if near.size == 0:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = result.margin / result.gross
            move = result.loss / result.gross
        i = int(near[np.argmax(np.abs(move[near]))])
        prior = rate[max(0, i - before):i]
        mean = float(prior.mean()) if prior.size else None
        out.append({"method": method, "move_day": _iso_day(int(ends[i])),
                    "book_return": float(-move[i]), "rate": float(rate[i]),
                    "prior_mean_rate": mean,
                    "ratio": float(rate[i] / mean) if mean else None,
                    "next_rate": float(rate[i + 1]) if i + 1 < rate.size else None})
    return out


def _finite(value: float) -> float | None:
    """The value, or None where it is not finite (JSON has no NaN)."""
    return float(value) if np.isfinite(value) else None


def _iso_day(ns: int) -> str:
    return str(np.datetime64(ns, "ns").astype("datetime64[D]"))

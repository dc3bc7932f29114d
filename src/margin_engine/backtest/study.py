"""`margin-engine backtest --study crashes`: every model and forecaster on BTC and ETH, full
history and the crash windows, at 99 % / 1 day, for a 1-coin long perpetual.

Every row of a history compares the methods on the same days: the common dates of every method
but ``implied`` (DVOL starts 2021-03-24), which is compared with ``ewma`` on its own days
instead. ``predictive`` pools the other asset's histories of the study (walk-forward).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from margin_engine.backtest.engine import (
    BacktestResult,
    Method,
    PredictiveConfig,
    ZMethod,
    _summarise,
    forecast_rates,
    on_common_days,
    restrict,
    run_methods,
    with_days,
)
from margin_engine.backtest.inputs import daily_history
from margin_engine.book.columnar import book_from_portfolio
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import parse_timestamp
from margin_engine.data.prices import load_funding_file, load_price_file
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.margin.config import RiskConfig
from margin_engine.market.documents import flat_market_document

# (label, underlying, price file, DVOL file, funding file)
HISTORIES = (
    ("BTC 2017-2025 (2h)", "BTC", "binance_btcusdt_2h_2017-2025.csv",
     "deribit_dvol_btc_daily_ohlc_2021-2026.csv", "binance_btcusdt_perp_funding_8h_2019-2026.csv"),
    ("BTC 2022-2025 (1h)", "BTC", "binance_btcusdt_1h_2022-2025.csv",
     "deribit_dvol_btc_daily_ohlc_2021-2026.csv", "binance_btcusdt_perp_funding_8h_2019-2026.csv"),
    ("ETH 2017-2021 (1h)", "ETH", "cdd_binance_ethusdt_1h_2017-2021.csv",
     "deribit_dvol_eth_daily_ohlc_2021-2026.csv", None),
    ("ETH 2022-2025 (1h)", "ETH", "binance_ethusdt_1h_2022-2025.csv",
     "deribit_dvol_eth_daily_ohlc_2021-2026.csv", "binance_ethusdt_perp_funding_8h_2024-2026.csv"),
)
CRASHES = {  # the crash day; windows run 30 days before to 30 days after
    "2020-03-12 covid": "2020-03-12", "2021-05-19": "2021-05-19",
    "2022-05 UST/LUNA": "2022-05-09", "2022-06 3AC": "2022-06-13",
    "2022-11 FTX": "2022-11-08", "2023-03 USDC depeg": "2023-03-10",
    "2024-08-05": "2024-08-05", "2025-10-10": "2025-10-10",
}
MODELS = ("isolated", "cross", "portfolio", "sensitivity", "var")
FORECASTERS = ("ewma", "garch", "har", "implied", "learned", "predictive")
OWN_DAYS = ("implied",)  # compared on their own days, not in the common dates
DAY = 86_400 * 10**9


def _book(underlying: str) -> Any:
    return book_from_portfolio(parse_portfolio({
        "schema": "margin-engine/portfolio/v1", "accounts": [{
            "id": "long", "mode": "portfolio", "collateral": {"USDC": 1_000_000},
            "positions": [{"instrument": f"{underlying}-PERP", "size": 1,
                           "entry_price": 1}]}]}))


def _slice(result: BacktestResult, start: int, end: int) -> BacktestResult | None:
    keep = (result.days_ns >= start) & (result.days_ns <= end)
    if keep.sum() < 10:
        return None
    return _summarise(result.days_ns, result.price, result.margin, result.loss, result.gross, keep,
                      result.summary["confidence"], result.summary["mpor_days"],
                      result.summary["method"])


def run_study(data: Path, *, z: str = "normal",
              progress: Callable[[str], None] | None = None,
              histories: tuple[tuple[str, str, str, str, str | None], ...] = HISTORIES,
              methods: tuple[str, ...] = (*MODELS, *FORECASTERS)) -> dict[str, Any]:
    loaded = {}
    for label, underlying, price_file, dvol_file, funding_file in histories:
        path = data / price_file
        if not path.exists():
            raise InputError(f"the shared data file {price_file} (give --data DIR)",
                             value=str(path))
        loaded[label] = (underlying, daily_history(
            load_price_file(path), load_price_file(data / dvol_file),
            load_funding_file(data / funding_file) if funding_file else None))
    rows: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    for label, (underlying, history) in loaded.items():
        market = parse_market(flat_market_document({underlying: float(history.closes[0])},
                                                   int(history.days_ns[0])))
        cfg = PredictiveConfig(z=ZMethod(z), pool=tuple(
            with_days(h) for u, h in loaded.values() if u != underlying))
        plan: list[Method] = []
        failed: dict[str, str] = {}
        for method in methods:
            if method in MODELS:
                plan.append(Method(label=method, model=method))
                continue
            if progress:
                progress(f"{label}: {method}")
            try:
                rates, _ = forecast_rates({underlying: history}, method, 0.99, 1, cfg)
            except InputError as exc:  # e.g. no DVOL in this period for `implied`
                failed[method] = str(exc)
                continue
            plan.append(Method(label=f"predictive:{method}", rates=rates))
        if progress:
            progress(f"{label}: backtests")
        results = run_methods(_book(underlying), market, {underlying: history}, plan,
                              config=RiskConfig(), confidence=0.99, mpor_days=1)
        own = {k: v for k, v in results.items() if k.removeprefix("predictive:") in OWN_DAYS}
        common = on_common_days({k: v for k, v in results.items() if k not in own})
        for method in methods:
            key = method if method in MODELS else f"predictive:{method}"
            if method in failed:
                rows.append({"history": label, "method": method, "error": failed[method]})
            elif key in common:
                rows.append({"history": label, **common[key].summary})
            elif key in own:
                rows.append({"history": label, **own[key].summary})
        for key, result in own.items():
            if "predictive:ewma" in results:
                days = np.intersect1d(result.days_ns, results["predictive:ewma"].days_ns)
                same = restrict(results["predictive:ewma"], days)
                rows.append({"history": label, **same.summary,
                             "method": f"predictive:ewma ({key.removeprefix('predictive:')}'s "
                                       "days)"})
        compared = {**common, **own}
        for name, day in CRASHES.items():
            centre = parse_timestamp(f"{day}T00:00:00Z", field="crash")
            for result in compared.values():
                sliced = _slice(result, centre - 30 * DAY, centre + 30 * DAY)
                if sliced is not None:
                    windows.append({"history": label, "window": name, **sliced.summary})
    return {"z": z, "full_history": rows, "crash_windows": windows}

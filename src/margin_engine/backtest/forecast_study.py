"""`margin-engine backtest --compare F,... --data DIR`: the forecasters on every history of the
shared data with intraday bars (a year or more) and on the other assets' daily histories, a
1-coin perpetual long and short, 99 % / 1 day, on each history's common dates.

``predictive`` pools, besides the history itself, the reference histories of the other assets
(BTC: Binance 2h 2017-2025; ETH: Binance 1h 2017-2021 and 2022-2025), and is also run
leave-one-asset-out: calibrated on those alone, never on the evaluated asset. On the 2024-08-05
and 2025-10-10 crash days, each forecaster's rate in force over the largest move is set against
its 30-day mean before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from margin_engine.backtest.compare import Comparison, compare_forecasters, crash_anticipation
from margin_engine.backtest.engine import PredictiveConfig, with_days
from margin_engine.backtest.inputs import DailyHistory, daily_history
from margin_engine.book.columnar import ColumnarBook, book_from_portfolio
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import parse_timestamp
from margin_engine.data.prices import load_funding_file, load_price_file
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.margin.config import RiskConfig
from margin_engine.market.documents import flat_market_document
from margin_engine.vol.forecast import ForecastInputs

DEFAULT_FORECASTERS = ("ewma", "garch", "har", "learned", "predictive")
CRASH_DAYS = ("2024-08-05", "2025-10-10")
BTC_DVOL = "deribit_dvol_btc_daily_ohlc_2021-2026.csv"
ETH_DVOL = "deribit_dvol_eth_daily_ohlc_2021-2026.csv"
BTC_FUNDING = "binance_btcusdt_perp_funding_8h_2019-2026.csv"


@dataclass(frozen=True, slots=True, kw_only=True)
class HistorySpec:
    label: str
    asset: str
    prices: str
    dvol: str | None = None
    funding: str | None = None
    reference: bool = False  # pooled by predictive when evaluating the other assets
    intraday: bool = True  # in the acceptance set (intraday bars, a year or more)


HISTORIES = (
    HistorySpec(label="BTC 2017-2025 (Binance 2h)", asset="BTC",
                prices="binance_btcusdt_2h_2017-2025.csv", dvol=BTC_DVOL, funding=BTC_FUNDING,
                reference=True),
    HistorySpec(label="BTC 2022-2025 (Binance 1h)", asset="BTC",
                prices="binance_btcusdt_1h_2022-2025.csv", dvol=BTC_DVOL, funding=BTC_FUNDING),
    HistorySpec(label="BTC 2011-2025 (Bitstamp 2h)", asset="BTC",
                prices="bitstamp_btcusd_2h_2011-2025.csv", dvol=BTC_DVOL),
    HistorySpec(label="BTC 2015-2020 (Gemini 1h)", asset="BTC",
                prices="cdd_gemini_btcusd_1h_2015-2020.csv"),
    HistorySpec(label="BTC 2017-2021 (Binance 1h)", asset="BTC",
                prices="cdd_binance_btcusdt_1h_2017-2021.csv", dvol=BTC_DVOL,
                funding=BTC_FUNDING),
    HistorySpec(label="BTC 2018-2022 (Bitstamp 1h)", asset="BTC",
                prices="cdd_bitstamp_btcusd_1h_2018-2022.csv", dvol=BTC_DVOL,
                funding=BTC_FUNDING),
    HistorySpec(label="BTC perp 2024-2026 (Binance 1h)", asset="BTC",
                prices="binance_btcusdt_perp_1h_2024-2026.csv", dvol=BTC_DVOL,
                funding="binance_btcusdt_perp_funding_8h_2024-2026.csv"),
    HistorySpec(label="ETH 2017-2021 (Binance 1h)", asset="ETH",
                prices="cdd_binance_ethusdt_1h_2017-2021.csv", dvol=ETH_DVOL, reference=True),
    HistorySpec(label="ETH 2022-2025 (Binance 1h)", asset="ETH",
                prices="binance_ethusdt_1h_2022-2025.csv", dvol=ETH_DVOL,
                funding="binance_ethusdt_perp_funding_8h_2024-2026.csv", reference=True),
    HistorySpec(label="ETH perp 2024-2026 (Binance 1h)", asset="ETH",
                prices="binance_ethusdt_perp_1h_2024-2026.csv", dvol=ETH_DVOL,
                funding="binance_ethusdt_perp_funding_8h_2024-2026.csv"),
    HistorySpec(label="BNB 2017-2024 (Yahoo daily)", asset="BNB",
                prices="yahoo_bnb_usd_daily.csv", intraday=False),
    HistorySpec(label="DOGE 2013-2021 (CoinMarketCap daily)", asset="DOGE",
                prices="cmc_kaggle_doge_daily_2013-2021.csv", intraday=False),
    HistorySpec(label="XRP 2013-2021 (CoinMarketCap daily)", asset="XRP",
                prices="cmc_kaggle_xrp_daily_2013-2021.csv", intraday=False),
)


def load_history(data: Path, spec: HistorySpec) -> DailyHistory:
    path = data / spec.prices
    if not path.exists():
        raise InputError(f"the shared data file {spec.prices} (give --data DIR)",
                         value=str(path))
    return daily_history(load_price_file(path),
                         load_price_file(data / spec.dvol) if spec.dvol else None,
                         load_funding_file(data / spec.funding) if spec.funding else None)


def perpetual_book(asset: str) -> ColumnarBook:
    """One account, 1 coin long of the asset's linear perpetual, 1,000,000 USDC."""
    return book_from_portfolio(parse_portfolio({
        "schema": "margin-engine/portfolio/v1", "accounts": [{
            "id": "long", "mode": "portfolio", "collateral": {"USDC": 1_000_000},
            "positions": [{"instrument": f"{asset}-PERP", "size": 1, "entry_price": 1}]}]}))


def run_forecast_study(data: Path, *, forecasters: Sequence[str] = DEFAULT_FORECASTERS,
                       histories: Sequence[HistorySpec] = HISTORIES,
                       confidence: float = 0.99, mpor_days: int = 1,
                       progress: Callable[[str], None] | None = None
                       ) -> tuple[dict[str, Any], list[Comparison]]:
    """(JSON document, comparisons with their day-by-day results for the report)."""
    loaded = {spec.label: load_history(data, spec) for spec in histories}
    references = [spec for spec in HISTORIES if spec.reference]
    pool_inputs: dict[str, ForecastInputs] = {}
    for spec in references:
        history = loaded.get(spec.label)
        pool_inputs[spec.label] = with_days(history if history is not None
                                            else load_history(data, spec))
    comparisons: list[Comparison] = []
    for spec in histories:
        history = loaded[spec.label]
        others = tuple(pool_inputs[r.label] for r in references if r.asset != spec.asset)
        market = parse_market(flat_market_document({spec.asset: float(history.closes[0])},
                                                   int(history.days_ns[0])))
        comparisons.append(compare_forecasters(
            perpetual_book(spec.asset), market, {spec.asset: history},
            forecasters=forecasters, label=spec.label, config=RiskConfig(),
            confidence=confidence, mpor_days=mpor_days,
            predictive=PredictiveConfig(pool=others), leave_one_out_pool=others,
            progress=progress))
    crashes: list[dict[str, Any]] = []
    for day in CRASH_DAYS:
        crash_ns = parse_timestamp(f"{day}T00:00:00Z", field="crash")
        for comparison in comparisons:
            rows = crash_anticipation(comparison, crash_ns)
            if rows:
                crashes.append({"crash": day, "history": comparison.label, "rows": rows})
    intraday = {spec.label for spec in histories if spec.intraday}
    document = {
        "confidence": confidence, "mpor_days": mpor_days, "forecasters": list(forecasters),
        "book": "1-coin linear perpetual, long and its mirror short, 1,000,000 USDC",
        "histories": [c.to_json() for c in comparisons],
        "crash_windows": crashes,
        "acceptance": [{"history": c.label, "intraday": c.label in intraday,
                        **(c.verdict or {})} for c in comparisons],
    }
    return document, comparisons

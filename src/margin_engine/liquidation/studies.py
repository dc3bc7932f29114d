"""Ready-made studies on the real data: crash-window replays and the March 2023 USDC depeg."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from margin_engine.book.columnar import book_from_portfolio
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import ns_to_iso, parse_timestamp
from margin_engine.data.prices import PriceSeries, align, load_price_file
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.liquidation.config import BreakerConfig, LiquidationConfig
from margin_engine.liquidation.population import leveraged_population
from margin_engine.liquidation.replay import replay
from margin_engine.margin.config import RiskConfig
from margin_engine.market.documents import flat_market_document

CRASH_WINDOWS = {
    "2024-08-05 (15m)": ("binance_btcusdt_perp_15m_window_2024-08-05.csv",
                         "binance_ethusdt_perp_15m_window_2024-08-05.csv", None),
    "2025-10-10 (5m)": ("binance_btcusdt_perp_5m_window_2025-10-10.csv",
                        "binance_ethusdt_perp_5m_window_2025-10-10.csv",
                        "binance_btcusdt_spot_5m_window_2025-10-10.csv"),
}
DEPEG_FILES = ("binanceus_btcusd_1m_2023-03-01_2023-03-21.csv",
               "binanceus_btcusdc_1m_2023-03-01_2023-03-21.csv")
DEPEG_WINDOW = ("2023-03-09T00:00:00Z", "2023-03-14T00:00:00Z")
DEPEG_THRESHOLD = 0.98  # minutes with implied USDC/USD below this count as the depeg


def _file(data: Path, name: str) -> Path:
    path = data / name
    if not path.exists():
        raise InputError(f"the shared data file {name} (give --data DIR)", value=str(path))
    return path


def crash_replays(data: Path, *, accounts: int, seed: int, latency_seconds: float,
                  insurance_fund: float, penalty_rate: float,
                  windows: tuple[str, ...] = tuple(CRASH_WINDOWS),
                  between: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """Every crash window, breaker off then on, same population and parameters."""
    rows = []
    for window in windows:
        btc_file, eth_file, oracle_file = CRASH_WINDOWS[window]
        paths = {"BTC": load_price_file(_file(data, btc_file)),
                 "ETH": load_price_file(_file(data, eth_file))}
        if between is not None:
            paths = {u: p.between(*between) for u, p in paths.items()}
        oracle = {"BTC": load_price_file(_file(data, oracle_file))} if oracle_file else None
        index = {u: float(p.close[0]) for u, p in paths.items()}
        start = int(paths["BTC"].time_ns[0])
        book = book_from_portfolio(parse_portfolio(leveraged_population(accounts, seed, index)))
        market = parse_market(flat_market_document(index, start))
        for enabled in (False, True):
            config = LiquidationConfig(latency_seconds=latency_seconds,
                                       insurance_fund=insurance_fund, penalty_rate=penalty_rate,
                                       breaker=BreakerConfig(enabled=enabled))
            result = replay(book, market, paths, config=RiskConfig(), liquidation=config,
                            oracle_paths=oracle)
            liquidated = {e["account"] for e in result.events if e["type"] == "liquidation"}
            rows.append({"window": window, **result.totals,
                         "accounts_liquidated": len(liquidated)})
    return rows


def usdc_rate(btcusd: PriceSeries, btcusdc: PriceSeries) -> PriceSeries:
    """Implied USDC/USD = BTCUSD / BTCUSDC on common minutes."""
    times, closes = align([btcusd, btcusdc])
    rate = closes[:, 0] / closes[:, 1]
    return PriceSeries(source="BTCUSD/BTCUSDC", time_ns=times, close=rate, open=rate, high=rate,
                       low=rate, volume=np.zeros(rate.size))


def depeg_study(data: Path, *, accounts: int, seed: int,
                window: tuple[str, str] = DEPEG_WINDOW) -> dict[str, Any]:
    """How many USDC-collateralised BTC perp accounts become liquidatable when USDC is valued
    at its oracle price (implied from Binance.US BTCUSD / BTCUSDC) vs at a fixed 1.0."""
    btcusd = load_price_file(_file(data, DEPEG_FILES[0]))
    btcusdc = load_price_file(_file(data, DEPEG_FILES[1]))
    start, end = (parse_timestamp(t, field="window") for t in window)
    btc = btcusd.between(start, end)
    rate = usdc_rate(btcusd, btcusdc).between(start, end)
    index = {"BTC": float(btc.close[0])}
    book = book_from_portfolio(parse_portfolio(leveraged_population(
        accounts, seed, index, btc_collateral_share=0.0)))
    market = parse_market(flat_market_document(index, int(btc.time_ns[0])))
    config = LiquidationConfig(latency_seconds=60.0)
    fixed = replay(book, market, {"BTC": btc}, config=RiskConfig(), liquidation=config,
                   execute=False)
    oracle = replay(book, replace(market, asset_prices={**market.asset_prices,
                                                        "USDC": float(rate.close[0])}),
                    {"BTC": btc}, config=RiskConfig(), liquidation=config,
                    asset_paths={"USDC": rate}, execute=False)
    if oracle.below_by_bar is None or fixed.below_by_bar is None:
        raise RuntimeError("replay(execute=False) records liquidatable accounts by bar")
    by_oracle, by_fixed = oracle.below_by_bar, fixed.below_by_bar
    rate_on_bars = rate.close[np.searchsorted(rate.time_ns, oracle.times_ns)]
    depegged = rate_on_bars < DEPEG_THRESHOLD
    low = int(np.argmin(rate_on_bars))

    def compare(bars: np.ndarray) -> dict[str, int]:
        """Accounts below MM on any of ``bars`` at each valuation, and those below at only one
        of them (above 1.0 the oracle values USDC higher than the fixed price does, so an
        account can be below MM only at 1.0)."""
        at_oracle = by_oracle[bars].any(axis=0)
        at_fixed = by_fixed[bars].any(axis=0)
        return {"oracle": int(at_oracle.sum()), "fixed_1": int(at_fixed.sum()),
                "oracle_only": int((at_oracle & ~at_fixed).sum()),
                "fixed_only": int((at_fixed & ~at_oracle).sum())}

    every = np.ones(rate_on_bars.size, dtype=np.bool_)
    return {
        "window": f"{window[0]} to {window[1]}", "accounts": accounts,
        "usdc_low": float(rate_on_bars[low]),
        "usdc_low_at": ns_to_iso(int(oracle.times_ns[low])),
        "usdc_high": float(rate_on_bars.max()),
        "depeg_minutes": int(depegged.sum()), "depeg_threshold": DEPEG_THRESHOLD,
        "minutes_above_1": int((rate_on_bars > 1.0).sum()),
        "at_low": compare(np.arange(rate_on_bars.size) == low),
        "during_depeg": compare(depegged),
        "whole_window": compare(every),
        "btc_start": float(btc.close[0]), "btc_low": float(btc.close.min()),
        "btc_end": float(btc.close[-1]),
    }

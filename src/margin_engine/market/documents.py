"""A market document at given prices: what a replay, backtest or monitor starts from when no
snapshot is given."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from margin_engine.core.timeutil import ns_to_iso

STABLECOINS = ("USDC", "USDT", "USD")


def flat_market_document(prices: Mapping[str, float], timestamp_ns: int, *, vol: float = 0.6,
                         btc_eth_correlation: float | None = 0.8) -> dict[str, Any]:
    """``margin-engine/market/v1`` with each underlying at its price and a flat vol, its coin
    priced as collateral, stablecoins at 1, and the BTC/ETH correlation when both are there."""
    both = {"BTC", "ETH"} <= set(prices) and btc_eth_correlation is not None
    return {"schema": "margin-engine/market/v1", "timestamp": ns_to_iso(timestamp_ns),
            "underlyings": {u: {"index": p, "vol": {"type": "flat", "sigma": vol}}
                            for u, p in prices.items()},
            "assets": {**{s: {"price": 1.0} for s in STABLECOINS},
                       **{u: {"price": p} for u, p in prices.items()}},
            "correlation": {"BTC": {"ETH": btc_eth_correlation}} if both else {}}

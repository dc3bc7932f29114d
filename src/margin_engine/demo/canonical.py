"""One canonical book per strategy (fixed sizes and strikes) on the demo market, for model
comparisons: the strategy set of the model issue, each a single account."""

from __future__ import annotations

from typing import Any

CANONICAL: dict[str, list[tuple[str, float, float]]] = {
    "naked short call": [("BTC-26SEP25-75000-C", -1, 2000)],
    "covered call": [("BTC-PERP", 1, 65000), ("BTC-26SEP25-75000-C", -1, 2000)],
    "protective put": [("BTC-PERP", 1, 65000), ("BTC-26SEP25-58000-P", 1, 3000)],
    "long straddle": [("BTC-26SEP25-65000-C", 1, 7000), ("BTC-26SEP25-65000-P", 1, 7000)],
    "short strangle": [("BTC-26SEP25-75000-C", -1, 2000), ("BTC-26SEP25-55000-P", -1, 2000)],
    "bull call spread": [("BTC-26SEP25-66000-C", 1, 6000), ("BTC-26SEP25-76000-C", -1, 2000)],
    "bear put spread": [("BTC-26SEP25-64000-P", 1, 6000), ("BTC-26SEP25-54000-P", -1, 2000)],
    "calendar spread": [("BTC-27JUN25-65000-C", -1, 3500), ("BTC-26DEC25-65000-C", 1, 9500)],
    "delta-hedged short straddle": [("ETH-26SEP25-2500-C", -20, 250),
                                    ("ETH-26SEP25-2500-P", -20, 240), ("ETH-PERP", 1.6, 2500)],
    "BTC/ETH pair": [("BTC-PERP", 1, 65000), ("ETH-PERP", -26, 2500)],
    "perp-future basis": [("BTC-PERP", -1, 65000), ("BTC-26DEC25", 1, 67000)],
    "synthetic forward": [("BTC-26SEP25-65000-C", 1, 7000), ("BTC-26SEP25-65000-P", -1, 7000)],
    "naked future": [("BTC-26DEC25", 1, 67000)],
}


def canonical_portfolio() -> dict[str, Any]:
    return {"schema": "margin-engine/portfolio/v1", "accounts": [
        {"id": name, "mode": "portfolio", "collateral": {"USDC": 100000},
         "positions": [{"instrument": i, "size": s, "entry_price": e} for i, s, e in legs]}
        for name, legs in CANONICAL.items()]}

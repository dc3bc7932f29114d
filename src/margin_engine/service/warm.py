"""The service's kernels compiled (or loaded from numba's cache) before its first request.

From an empty cache (a fresh install, a new version) the first what-if with liquidation prices
in a new process took 37.7 s, compiling; 0.39 s loading a warm cache; 0.7 ms after. A what-if
on an account of each margin mode at start-up moves that wait before the service answers.
"""

from __future__ import annotations

from typing import Any

from margin_engine.app.compute import ModelChoice
from margin_engine.app.whatif import Order, forget_kept, what_if
from margin_engine.demo.canonical import canonical_portfolio
from margin_engine.demo.market import demo_market_document
from margin_engine.domain.instruments import MarginMode
from margin_engine.io.market_file import parse_market
from margin_engine.margin.config import RiskConfig

STRATEGIES = ("delta-hedged short straddle", "BTC/ETH pair", "perp-future basis")


def warm_kernels(config: RiskConfig | None = None) -> None:
    """What-ifs with liquidation prices on the demo market, one account of every margin mode
    holding options, futures and perpetuals of both coins, under ``config`` (the service's);
    what they kept is dropped afterwards."""
    market = parse_market(demo_market_document())
    by_id = {a["id"]: a for a in canonical_portfolio()["accounts"]}
    held = {p["instrument"]: p for name in STRATEGIES for p in by_id[name]["positions"]}
    positions = list(held.values())
    order = Order(instrument="BTC-PERP", size=0.1, price=65000.0)
    for mode in MarginMode:
        account: dict[str, Any] = {"id": f"warm-{mode.value}", "mode": mode.value,
                                   "collateral": {"USDC": 20_000.0}, "positions": positions}
        what_if(account, [order], market, config, model=ModelChoice.ACCOUNT)
    forget_kept()

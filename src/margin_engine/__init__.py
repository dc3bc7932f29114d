"""margin-engine: portfolio-margin and liquidation risk engine for crypto derivatives.

The public Python API: margin a book, or ask what an order would do to an account.

>>> import margin_engine
>>> portfolio = {"schema": "margin-engine/portfolio/v1", "accounts": [
...     {"id": "covered-call", "mode": "portfolio", "collateral": {"USDC": 50000},
...      "positions": [{"instrument": "BTC-PERP", "size": 1, "entry_price": 64000},
...                    {"instrument": "BTC-27JUN25-75000-C", "size": -1,
...                     "entry_price": 900}]}]}
>>> market = {"schema": "margin-engine/market/v1", "timestamp": "2025-06-01T00:00:00Z",
...           "underlyings": {"BTC": {"index": 65000, "vol": {"type": "flat", "sigma": 0.55}}},
...           "assets": {"USDC": {"price": 1}, "BTC": {"price": 65000}}}
>>> report = margin_engine.compute(portfolio, market, model="portfolio")
>>> account = report.accounts[0]
>>> round(account.initial_margin, 2), round(account.maintenance_margin, 2)
(10648.47, 8518.77)
>>> round(account.underlyings["BTC"].liquidation.down.price, 2)
15180.34
>>> order = margin_engine.Order(instrument="BTC-PERP", size=-1, price=65000)
>>> result = margin_engine.what_if(portfolio["accounts"][0], [order],
...                                margin_engine.load_market_input(market),
...                                model="portfolio")
>>> result.realised_pnl, result.change.equity  # sold at the mark: 1,000 USD realised
(1000.0, 0.0)
>>> round(result.change.initial_margin, 2)
-2420.58

Results are typed (``MarginReport``, ``AccountMargin``, ``UnderlyingMargin``,
``LiquidationPrices``, ``Explanation``, ``WhatIf``); ``to_json()`` gives the
``margin-engine compute --json`` document. Heavy modules load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from margin_engine.app import (
        AccountMargin,
        Explanation,
        LiquidationChoice,
        LiquidationLevel,
        LiquidationPrices,
        MarginChange,
        MarginReport,
        ModelChoice,
        Order,
        PositionMargin,
        UnderlyingMargin,
        WhatIf,
        compute,
        load_market_input,
        what_if,
    )
    from margin_engine.core.errors import InputError, MarginEngineError
    from margin_engine.margin.config import RiskConfig

_EXPORTS = {
    **{name: "margin_engine.app" for name in (
        "AccountMargin", "Explanation", "LiquidationChoice", "LiquidationLevel",
        "LiquidationPrices", "MarginChange", "MarginReport", "ModelChoice", "Order",
        "PositionMargin", "UnderlyingMargin", "WhatIf", "compute", "load_market_input",
        "what_if")},
    "InputError": "margin_engine.core.errors",
    "MarginEngineError": "margin_engine.core.errors",
    "RiskConfig": "margin_engine.margin.config",
}
__all__ = [
    "AccountMargin", "Explanation", "InputError", "LiquidationChoice", "LiquidationLevel",
    "LiquidationPrices", "MarginChange", "MarginEngineError", "MarginReport", "ModelChoice",
    "Order", "PositionMargin", "RiskConfig", "UnderlyingMargin", "WhatIf", "__version__",
    "compute", "load_market_input", "what_if",
]


def __getattr__(name: str) -> Any:
    """Load the public API on first use (the CLI starts without numpy and numba)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'margin_engine' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

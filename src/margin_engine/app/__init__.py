"""The application layer: typed requests and results shared by the Python API, the CLI and the
HTTP service (``margin_engine.compute``, ``margin_engine.what_if``)."""

from margin_engine.app.compute import (
    LiquidationChoice,
    ModelChoice,
    bind,
    compute,
    compute_bound,
    load_book,
    load_market_input,
)
from margin_engine.app.results import (
    AccountMargin,
    CollateralLine,
    Explanation,
    LiquidationLevel,
    LiquidationPrices,
    MarginReport,
    PositionMargin,
    UnderlyingMargin,
    WorstScenario,
)
from margin_engine.app.whatif import MarginChange, Order, WhatIf, account_margin, what_if

__all__ = [
    "AccountMargin", "CollateralLine", "Explanation", "LiquidationChoice", "LiquidationLevel",
    "LiquidationPrices", "MarginChange", "MarginReport", "ModelChoice", "Order",
    "PositionMargin", "UnderlyingMargin", "WhatIf", "WorstScenario", "account_margin", "bind",
    "compute", "compute_bound", "load_book", "load_market_input", "what_if",
]

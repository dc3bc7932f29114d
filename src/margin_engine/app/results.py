"""The typed results of a margin run, for callers of the application layer (defined with the
models in ``margin/results.py``, which builds them)."""

from margin_engine.margin.results import (
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

__all__ = ["AccountMargin", "CollateralLine", "Explanation", "LiquidationLevel",
           "LiquidationPrices", "MarginReport", "PositionMargin", "UnderlyingMargin",
           "WorstScenario"]

"""Liquidation and circuit-breaker parameters (defined with the risk config they belong to)."""

from margin_engine.margin.config import (
    AdlRanking,
    BreakerConfig,
    LiquidationConfig,
    ShortfallRule,
)

__all__ = ["AdlRanking", "BreakerConfig", "LiquidationConfig", "ShortfallRule"]

"""Liquidation and circuit-breaker parameters (defined with the risk config they belong to)."""

from margin_engine.margin.config import BreakerConfig, LiquidationConfig

__all__ = ["BreakerConfig", "LiquidationConfig"]

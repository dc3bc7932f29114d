"""Liquidation and circuit-breaker parameters (all in the risk config's spirit: frozen, typed)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """Velocity = |P_t / P_{t - window} - 1| over the liquidation-latency window. When it exceeds
    ``mm_buffer`` (the move maintenance margin is sized to absorb), margin requirements are
    multiplied by min(max_multiplier, velocity / mm_buffer); once calm the multiplier decays to 1
    with ``half_life_seconds``."""

    enabled: bool = False
    mm_buffer: float = 0.01
    max_multiplier: float = 2.0
    half_life_seconds: float = 1800.0
    off_threshold: float = 1.01  # the breaker reports off once the multiplier decays below this


@dataclass(frozen=True, slots=True, kw_only=True)
class LiquidationConfig:
    penalty_rate: float = 0.01  # of the closed notional, to the insurance fund
    target_buffer: float = 1.0  # close until equity >= IM x target_buffer
    latency_seconds: float = 60.0  # from trigger to execution
    shortfall: str = "adl"  # "adl" (auto-deleveraging) or "socialised"
    adl_ranking: str = "profit_x_leverage"  # or "profit"
    insurance_fund: float = 0.0  # initial fund, USD
    settlement_asset: str = "USD"
    breaker: BreakerConfig = BreakerConfig()

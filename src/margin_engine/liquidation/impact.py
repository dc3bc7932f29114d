"""Price impact of forced sales, from the traded notional over the book's depth.

Depth D_s of a symbol is the USD notional that moves its price by 1 % (the "1 % depth" of an
order book). Under stress the book thins: with the symbol's price P at P_0 x (1 + d) since the
start,

    D_eff = D_s x max(floor, 1 - stress_sensitivity x |d|)

and a round's net signed flow Q (USD; sales negative) moves the log price by

    linear:       ln(P' / P) = 0.01 x Q / D_eff
    square root:  ln(P' / P) = 0.01 x sign(Q) x sqrt(|Q| / D_eff)

(equal at |Q| = D_eff; the log form keeps every price > 0).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from margin_engine.core.errors import InputError


class ImpactLaw(enum.Enum):
    LINEAR = "linear"
    SQUARE_ROOT = "square-root"


# 1 % depth in USD on one venue (stated assumptions: a mid-sized venue's perp books; the
# venue token's book is thin, stablecoin books deep).
DEFAULT_DEPTH: Mapping[str, float] = {
    "BTC": 40e6, "ETH": 20e6, "VTK": 0.5e6, "USDC": 200e6, "USDT": 300e6,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ImpactConfig:
    law: ImpactLaw = ImpactLaw.SQUARE_ROOT
    depth_usd: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_DEPTH))
    default_depth_usd: float = 5e6  # a symbol without its own depth
    stress_sensitivity: float = 2.0  # a 20 % move leaves 60 % of the depth
    depth_floor: float = 0.1  # the book never thins below 10 % of its depth

    def __post_init__(self) -> None:
        for symbol, depth in {**self.depth_usd, "default": self.default_depth_usd}.items():
            if not (math.isfinite(depth) and depth > 0):
                raise InputError("a depth in USD > 0", field=f"depth.{symbol}", value=depth)
        if not (math.isfinite(self.stress_sensitivity) and self.stress_sensitivity >= 0):
            raise InputError("a number >= 0", field="stress_sensitivity",
                             value=self.stress_sensitivity)
        if not 0 < self.depth_floor <= 1:
            raise InputError("a fraction in (0, 1]", field="depth_floor", value=self.depth_floor)

    def depth(self, symbol: str) -> float:
        return float(self.depth_usd.get(symbol, self.default_depth_usd))


def effective_depth(config: ImpactConfig, symbol: str, price: float, start_price: float) -> float:
    """D_eff: the symbol's depth thinned by how far its price has moved since the start."""
    moved = abs(price / start_price - 1.0)
    return config.depth(symbol) * max(config.depth_floor, 1.0 - config.stress_sensitivity * moved)


def log_move(config: ImpactConfig, flow_usd: float, depth_usd: float) -> float:
    """ln(P' / P) for a net signed flow (sales < 0) against depth D_eff."""
    if flow_usd == 0.0:
        return 0.0
    ratio = abs(flow_usd) / depth_usd
    size = ratio if config.law is ImpactLaw.LINEAR else math.sqrt(ratio)
    return math.copysign(0.01 * size, flow_usd)


@dataclass(frozen=True, slots=True, kw_only=True)
class Impact:
    """One symbol's impact in one round."""

    symbol: str
    flow_usd: float
    depth_usd: float
    log_move: float
    price_before: float
    price_after: float


def apply_impact(config: ImpactConfig, flows: Mapping[str, float], prices: Mapping[str, float],
                 start_prices: Mapping[str, float]) -> dict[str, Impact]:
    """Every symbol with a net flow: its depth now, its move and its new price."""
    out = {}
    for symbol, flow in sorted(flows.items()):
        if flow == 0.0:
            continue
        price = prices[symbol]
        depth = effective_depth(config, symbol, price, start_prices[symbol])
        move = log_move(config, flow, depth)
        out[symbol] = Impact(symbol=symbol, flow_usd=flow, depth_usd=depth, log_move=move,
                             price_before=price, price_after=price * math.exp(move))
    return out

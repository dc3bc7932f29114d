"""Market snapshot: index prices, vol surfaces, marks, asset prices, correlations."""

from margin_engine.market.snapshot import (
    AtmByExpiryVol,
    FlatVol,
    MarketSnapshot,
    SviVol,
    UnderlyingMarket,
    VolSurface,
)

__all__ = [
    "AtmByExpiryVol", "FlatVol", "MarketSnapshot", "SviVol", "UnderlyingMarket", "VolSurface",
]

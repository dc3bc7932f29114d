"""The values a model's or a venue profile's number may take, and what it means.

A number of the right type can still make a method meaningless: a price range of 1.5 moves the
price to -50 % of itself (the logarithm of a negative price, NaN margins), a maintenance
fraction of 5 puts MM above IM, a collateral rate of 3 counts a coin at three times its price.
Venue profile parameters carry their ``Bounds`` in their dataclass field's metadata
(``bounded``; per-underlying tables take the bounds of their field for every value) and the
profile file reader refuses a value outside them (``profiles/files.py``); the risk
configuration checks its numbers against a table of them (``margin/config.py``). The error
names the key, the interval and what the number means.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field
from typing import Any

BOUNDS = "bounds"  # the key of a field's metadata


@dataclass(frozen=True, slots=True)
class Bounds:
    """low <= value <= high (strict where ``*_open``); ``meaning`` says why, for the error."""

    low: float
    high: float
    meaning: str
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def expected(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open or math.isinf(self.high) else "]"
        high = "inf" if math.isinf(self.high) else f"{self.high:g}"
        return f"a number in {left}{self.low:g}, {high}{right}: {self.meaning}"


def bounded(bounds: Bounds, default: Any = MISSING, *, default_factory: Any = MISSING) -> Any:
    """A dataclass field whose values a profile file may set within ``bounds`` (no default
    when neither ``default`` nor ``default_factory`` is given)."""
    metadata = {BOUNDS: bounds}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


PRICE_RANGE = Bounds(0.0, 1.0, "a price move as a fraction of the price (a down move of the "
                     "whole range must leave a positive price)", high_open=True)
FRACTION = Bounds(0.0, 1.0, "a fraction (of a notional, a price or a weight)")
MAINTENANCE_SHARE = Bounds(0.0, 1.0, "MM as a fraction of IM (above 1, MM would exceed IM)",
                           low_open=True)
AT_LEAST_ONE = Bounds(1.0, math.inf, "a multiple of MM (below 1, the account would be "
                      "liquidated only after its equity fell below MM)")
IM_MULTIPLE = Bounds(1.0, math.inf, "IM as a multiple of MM (below 1, IM would be below MM)")
COLLATERAL_RATE = Bounds(0.0, 1.0, "the share of a collateral asset's value counted (above "
                         "1, the asset would count for more than its price)")
VOL_UP = Bounds(0.0, 10.0, "a relative rise of the volatility (10 = eleven times)")
VOL_DOWN = Bounds(0.0, 1.0, "a relative fall of the volatility (1 = to zero, then the floor)")
VOL_LEVEL = Bounds(0.0, 10.0, "a volatility in decimals (0.5 = 50 %)")
DAMPENING = Bounds(0.0, 1.0, "the exponent of the tenor dampening (reference days / days)^p")
REFERENCE_DAYS = Bounds(0.0, 3650.0, "the tenor in days at which the vol shock is whole",
                        low_open=True)
ANNUAL_RATE = Bounds(0.0, 10.0, "an annual rate as a fraction (0.05 = 5 % a year)")
FACTOR = Bounds(0.0, 1000.0, "a non-negative multiplier")
VOL_SHOCK = Bounds(-1.0, 10.0, "a relative vol shock (-1: to zero, then the floor)")
EWMA_DECAY = Bounds(0.0, 1.0, "an EWMA decay", low_open=True)

"""Circuit breaker on price velocity (see BreakerConfig)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from margin_engine.core.timeutil import NS_PER_SECOND
from margin_engine.core.types import FloatArray, IntArray
from margin_engine.liquidation.config import BreakerConfig


@dataclass(slots=True)
class CircuitBreaker:
    config: BreakerConfig
    window_seconds: float
    multiplier: float = 1.0
    on: bool = False
    last_ns: int | None = None
    history: list[tuple[int, float]] = field(default_factory=list)

    def update(self, time_ns: int, velocity: float) -> tuple[float, str | None]:
        """New multiplier and a state change ("on", "off") or None."""
        cfg = self.config
        if not cfg.enabled:
            return 1.0, None
        if self.last_ns is not None and self.multiplier > 1.0:
            elapsed = (time_ns - self.last_ns) / NS_PER_SECOND
            decay = math.pow(0.5, elapsed / cfg.half_life_seconds)
            self.multiplier = 1.0 + (self.multiplier - 1.0) * decay
        self.last_ns = time_ns
        if velocity > cfg.mm_buffer:
            target = min(cfg.max_multiplier, velocity / cfg.mm_buffer)
            self.multiplier = max(self.multiplier, target)
        change = None
        if not self.on and self.multiplier >= cfg.off_threshold:
            self.on, change = True, "on"
        elif self.on and self.multiplier < cfg.off_threshold:
            self.on, change = False, "off"
        self.history.append((time_ns, self.multiplier))
        return self.multiplier, change


def velocities(time_ns: IntArray, prices: FloatArray, window_seconds: float) -> FloatArray:
    """|P_t / P_{t - window} - 1| with P_{t - window} the last price at or before t - window
    (the first price while the window is not yet full). prices: times x series -> max over
    series."""
    target = time_ns - int(window_seconds * NS_PER_SECOND)
    back = np.searchsorted(time_ns, target, side="right") - 1
    back = np.clip(back, 0, None)
    ratio = np.abs(prices / prices[back] - 1.0)
    result: FloatArray = ratio.max(axis=1) if ratio.ndim == 2 else ratio
    return result

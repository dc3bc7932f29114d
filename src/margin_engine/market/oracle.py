"""Oracle guard: several sources per asset -> a guarded price, or a flagged state with a reason.

* Every update is validated whole before anything changes: a NaN, infinite, zero or negative
  price, an unknown asset or a set of stale-only sources is refused (InputError) and the
  previous state stays.
* Fresh = age <= max_age_seconds. Price = median of fresh sources.
* Flagged (price kept, liquidations must not use it) when fresh sources disagree by more than
  max_deviation (relative (max - min) / median) or fewer than min_sources are fresh.
* Confidence = max(largest source confidence, half the spread of fresh prices): collateral is
  valued at price - confidence, liabilities at price + confidence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import NS_PER_SECOND, ns_to_iso


@dataclass(frozen=True, slots=True, kw_only=True)
class OracleSource:
    name: str
    price: float
    timestamp_ns: int
    confidence: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OracleConfig:
    max_age_seconds: float = 60.0
    max_deviation: float = 0.02
    min_sources: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardedPrice:
    asset: str
    price: float
    confidence: float
    timestamp_ns: int
    flagged: bool
    reason: str | None
    sources: tuple[str, ...]

    @property
    def collateral_price(self) -> float:
        return max(self.price - self.confidence, 0.0)

    @property
    def liability_price(self) -> float:
        return self.price + self.confidence


@dataclass(slots=True)
class OracleGuard:
    """Guarded prices for a fixed set of assets; refused updates change nothing."""

    assets: frozenset[str]
    config: OracleConfig = field(default_factory=OracleConfig)
    prices: dict[str, GuardedPrice] = field(default_factory=dict)

    def update(self, asset: str, sources: Sequence[OracleSource], now_ns: int) -> GuardedPrice:
        guarded = guard_price(asset, sources, now_ns, self.config, self.assets)
        self.prices[asset] = guarded
        return guarded


def _validate(asset: str, sources: Iterable[OracleSource], known: frozenset[str]) -> None:
    if asset not in known:
        raise InputError(f"an asset the oracle guards {sorted(known)}", field="asset",
                         value=asset)
    for source in sources:
        if not (math.isfinite(source.price) and source.price > 0):
            raise InputError("a finite price > 0", field=f"{asset}.{source.name}.price",
                             value=source.price)
        if not (math.isfinite(source.confidence) and source.confidence >= 0):
            raise InputError("a finite confidence >= 0",
                             field=f"{asset}.{source.name}.confidence", value=source.confidence)


def guard_price(asset: str, sources: Sequence[OracleSource], now_ns: int, config: OracleConfig,
                known: frozenset[str]) -> GuardedPrice:
    if not sources:
        raise InputError("at least one price source", field=asset)
    _validate(asset, sources, known)
    max_age_ns = config.max_age_seconds * NS_PER_SECOND
    fresh = [s for s in sources if now_ns - s.timestamp_ns <= max_age_ns]
    if not fresh:
        newest = max(s.timestamp_ns for s in sources)
        raise InputError(
            f"a source younger than {config.max_age_seconds:g} s at {ns_to_iso(now_ns)} "
            f"(stale-only: newest {(now_ns - newest) / NS_PER_SECOND:g} s old)", field=asset)
    prices = np.array([s.price for s in fresh])
    median = float(np.median(prices))
    spread = float(prices.max() - prices.min())
    confidence = max(max(s.confidence for s in fresh), spread / 2)
    reason = None
    if len(fresh) < config.min_sources:
        reason = f"{len(fresh)} fresh source(s), {config.min_sources} required"
    elif spread / median > config.max_deviation:
        reason = (f"sources disagree by {100 * spread / median:.2f} % > "
                  f"{100 * config.max_deviation:.2f} %")
    return GuardedPrice(asset=asset, price=median, confidence=confidence,
                        timestamp_ns=max(s.timestamp_ns for s in fresh),
                        flagged=reason is not None, reason=reason,
                        sources=tuple(s.name for s in fresh))

"""The MarginModel protocol and the result every model returns (arrays over accounts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from margin_engine.book.bound import BoundBook
from margin_engine.core.types import FloatArray, IntArray
from margin_engine.margin.config import RiskConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class MarginResult:
    """Initial and maintenance margin per account, with the model's own breakdown.

    ``per_underlying`` arrays have shape accounts x underlyings (e.g. ``scan_risk``);
    ``per_position`` arrays are aligned with the book's position rows (e.g. ``initial_margin``).
    ``active`` marks the (account, underlying) cells the account has any exposure in.
    """

    model: str
    initial_margin: FloatArray
    maintenance_margin: FloatArray
    active: np.ndarray
    per_underlying: Mapping[str, FloatArray | IntArray] = field(default_factory=dict)
    per_position: Mapping[str, FloatArray] = field(default_factory=dict)
    per_account: Mapping[str, FloatArray] = field(default_factory=dict)  # model components
    scenarios: tuple[tuple[float, float, float], ...] = ()  # (price move, vol shock, weight)
    collateral_haircut: FloatArray | None = None  # USD per account taken off by haircuts
    # Per position, equity of a position that carries its own margin (isolated): margin held
    # + unrealised P&L; None where positions share the account's equity.
    position_equity: FloatArray | None = None

    def adjusted_equity(self, equity: FloatArray) -> FloatArray:
        """Equity after collateral haircuts: what IM and MM are compared with."""
        if self.collateral_haircut is None:
            return equity
        adjusted: FloatArray = equity - self.collateral_haircut
        return adjusted

    def maintenance_gap(self, equity: FloatArray, position_account: IntArray,
                        multiplier: float = 1.0) -> FloatArray:
        """Per account, how far equity is above MM x ``multiplier`` (< 0: liquidatable). With
        positions on their own margin, the smallest gap of a position that has an MM."""
        gap: FloatArray = self.adjusted_equity(equity) - multiplier * self.maintenance_margin
        if self.position_equity is None:
            return gap
        position_mm = self.per_position["maintenance_margin"]
        held = position_mm > 0.0
        per_position = np.where(held, self.position_equity - multiplier * position_mm, np.inf)
        worst = np.full(gap.shape[0], np.inf)
        np.minimum.at(worst, position_account, per_position)
        return np.where(np.isfinite(worst), worst, gap)


class MarginModel(Protocol):
    """A margin model: pure function of a bound book and a risk config. Callers choose what to
    do through these members, never through the model's name or class.

    ``revalues_coins``: its scenarios move coin collateral of its underlyings (so haircuts leave
    out the coins' volatility part). ``needs_history``: it is built from a price history, so
    there is no default instance of it. ``incremental``: ``recompute`` has an incremental path
    (otherwise it returns None and the caller runs ``compute``)."""

    name: str
    revalues_coins: bool
    needs_history: bool
    incremental: bool

    def compute(self, bound: BoundBook, config: RiskConfig) -> MarginResult: ...

    def recompute(self, bound: BoundBook, config: RiskConfig, previous: MarginResult,
                  underlying: str) -> MarginResult | None:
        """After a move of ``underlying`` alone, the result of ``compute`` from ``previous``;
        None when the model has no incremental path."""
        ...

    def explain(self, bound: BoundBook, config: RiskConfig, result: MarginResult,
                account: int) -> dict[str, Any]:
        """Every contribution to ``account``'s margin in ``result`` (plain data)."""
        ...


class ModelDefaults:
    """The protocol's defaults for a model class: needs no history, has no incremental path."""

    needs_history = False
    incremental = False

    def recompute(self, bound: BoundBook, config: RiskConfig, previous: MarginResult,
                  underlying: str) -> MarginResult | None:
        """No incremental path: None (the caller runs ``compute``)."""
        return None

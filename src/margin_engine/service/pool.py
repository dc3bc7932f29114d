"""Pool views over every stored account at the current market: margin efficiency by model and
the accounts nearest liquidation (pure computations, run off the event loop)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from margin_engine.app.compute import LiquidationChoice, bind, compute_bound
from margin_engine.margin.config import RiskConfig
from margin_engine.market.snapshot import MarketSnapshot

from .book import portfolio_document


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolView:
    efficiency: list[dict[str, Any]]  # per model: gross notional, IM, MM, efficiency
    at_risk: list[dict[str, Any]]  # accounts nearest liquidation, nearest first
    accounts: int
    liquidatable: int  # adjusted equity below MM under the service's model
    in_margin_call: int  # below IM, not below MM


def pool_view(accounts: Sequence[Mapping[str, Any]], instruments: Mapping[str, Any],
              market: MarketSnapshot, config: RiskConfig, model: str,
              limit: int) -> PoolView:
    from margin_engine.margin.registry import MODEL_NAMES
    from margin_engine.margin.run import margins_by_mode, run_models

    if not accounts:
        return PoolView(efficiency=[], at_risk=[], accounts=0, liquidatable=0,
                        in_margin_call=0)
    bound = bind(portfolio_document(accounts, instruments), market)
    run = run_models(bound, config, list(MODEL_NAMES))
    gross = float(run.gross_notional.sum())
    efficiency = []
    for name, result in run.results.items():
        initial = float(result.initial_margin.sum())
        efficiency.append({"model": name, "gross_notional": gross, "initial_margin": initial,
                           "maintenance_margin": float(result.maintenance_margin.sum()),
                           "efficiency": gross / initial if initial > 0 else None})
    margins = margins_by_mode(bound, model, lambda name: run.results[name])
    liquidatable, in_margin_call = margins.standing()
    holding = margins.maintenance > 0.0
    health = np.where(holding, margins.adjusted_equity / np.where(holding, margins.maintenance,
                                                                  1.0), np.inf)
    candidates = [int(a) for a in np.argsort(health, kind="stable")
                  if holding[a] and not liquidatable[a]][:2 * limit]
    at_risk = _nearest(accounts, candidates, instruments, market, config, model, health)
    return PoolView(efficiency=efficiency, at_risk=at_risk[:limit], accounts=len(accounts),
                    liquidatable=int(liquidatable.sum()),
                    in_margin_call=int(in_margin_call.sum()))


def _nearest(accounts: Sequence[Mapping[str, Any]], rows: list[int],
             instruments: Mapping[str, Any], market: MarketSnapshot, config: RiskConfig,
             model: str, health: np.ndarray) -> list[dict[str, Any]]:
    """The ``rows`` accounts with their liquidation prices, nearest (in %) first."""
    if not rows:
        return []
    report = compute_bound(bind(portfolio_document([accounts[a] for a in rows], instruments),
                                market), config, model=model, liquidation=LiquidationChoice.ON,
                           liquidation_limit=len(rows))
    out: list[dict[str, Any]] = []
    for row, margin in zip(rows, report.accounts, strict=True):
        best: tuple[float, str, float] | None = None
        for u, cell in margin.underlyings.items():
            levels = cell.liquidation
            distance = None if levels is None else levels.nearest_distance_pct
            if levels is not None and levels.nearest is not None and distance is not None \
                    and (best is None or abs(distance) < abs(best[0])):
                best = (distance, u, levels.nearest)
        if best is None:
            continue
        out.append({"account": margin.id, "model": margin.model,
                    "health": float(health[row]), "equity": margin.adjusted_equity,
                    "maintenance_margin": margin.maintenance_margin,
                    "underlying": best[1], "liquidation_price": best[2],
                    "distance_pct": best[0]})
    out.sort(key=lambda item: abs(float(item["distance_pct"])))
    return out

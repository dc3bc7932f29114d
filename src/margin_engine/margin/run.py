"""Run margin models over a bound book and shape the results into the JSON contract.

``compute --json``: {"model", "timestamp", "accounts": [{"id", "mode", "model", "equity",
"adjusted_equity", "initial_margin", "maintenance_margin", "excess", "margin_ratio",
"gross_notional", "efficiency", "underlyings": {U: {..., "liquidation_price",
"liquidation_prices"}}}]}. equity is mark-to-market; adjusted_equity is after collateral
haircuts, what IM and MM are compared with: excess = adjusted_equity - IM; margin_ratio =
MM / adjusted_equity (null when it is <= 0); efficiency = gross notional / IM (null when
IM = 0); liquidation_price = the index level of U nearest today's at which adjusted equity =
MM with everything else fixed; liquidation_prices = {"down": {"price", "distance_pct"},
"up": {...}}, the closest such level at or below the index and above it (null when there is
none within (0, 10 x index]).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook
from margin_engine.book.columnar import MODES_BY_CODE
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.core.types import FloatArray
from margin_engine.liquidation.price import LiquidationLevels
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.greeks import account_greeks
from margin_engine.margin.protocol import MarginModel, MarginResult
from margin_engine.margin.registry import MODEL_NAMES, get_model

BY_ACCOUNT_MODE = "account"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRun:
    """Results of several models on one bound book, plus the model-independent numbers."""

    bound: BoundBook
    config: RiskConfig
    built: dict[str, MarginModel]
    results: dict[str, MarginResult]
    equity: FloatArray
    gross_notional: FloatArray
    greeks: dict[str, FloatArray]

    def model_of(self, account: int, requested: str) -> str:
        if requested != BY_ACCOUNT_MODE:
            return requested
        return MODES_BY_CODE[int(self.bound.book.mode[account])].value


def margins_by_mode(bound: BoundBook, model: str, compute: Callable[[str], MarginResult]
                    ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(IM, MM, equity after haircuts) per account under ``model``, or, for ``account``, under
    each account's own mode; ``compute`` runs a model by name on ``bound``."""
    equity = bound.equity()
    if model != BY_ACCOUNT_MODE:
        result = compute(model)
        return (result.initial_margin, result.maintenance_margin,
                result.adjusted_equity(equity))
    initial = np.zeros(bound.account_count)
    maintenance = np.zeros(bound.account_count)
    adjusted = np.zeros(bound.account_count)
    for code in np.unique(bound.book.mode):
        result = compute(MODES_BY_CODE[int(code)].value)
        rows = bound.book.mode == code
        initial[rows] = result.initial_margin[rows]
        maintenance[rows] = result.maintenance_margin[rows]
        adjusted[rows] = result.adjusted_equity(equity)[rows]
    return initial, maintenance, adjusted


def run_models(bound: BoundBook, config: RiskConfig, models: Sequence[str],
               built: Mapping[str, MarginModel] | None = None) -> ModelRun:
    """Run the named models (``account``: the account modes); ``built`` supplies models
    constructed with data (sensitivity with a parameter file, var with its history)."""
    names = list(MODEL_NAMES) if BY_ACCOUNT_MODE in models else list(dict.fromkeys(models))
    return ModelRun(
        bound=bound, config=config, built=dict(built or {}),
        results={name: get_model(name, built).compute(bound, config) for name in names},
        equity=bound.equity(),
        gross_notional=bound.account_gross_notional(),
        greeks=account_greeks(bound),
    )


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _component(key: str, value: float) -> float | str | None:
    """Model components are numbers, except days (UTC day numbers) shown as dates."""
    if key.endswith("_day") and math.isfinite(value):
        return ns_to_iso(int(value) * 86_400_000_000_000)[:10]
    return _number(value)


def liquidation_by_model(run: ModelRun, models: Sequence[str]
                         ) -> dict[str, LiquidationLevels]:
    """Per model, both liquidation levels of every account and underlying."""
    from margin_engine.liquidation.price import liquidation_levels

    return {m: liquidation_levels(run.bound, m, run.config, models=run.built)
            for m in dict.fromkeys(models)}


def _level(price: float, index: float) -> dict[str, float] | None:
    if not math.isfinite(price):
        return None
    return {"price": price, "distance_pct": 100.0 * (price / index - 1.0)}


def account_summary(run: ModelRun, account: int, model: str,
                    liquidation: dict[str, LiquidationLevels] | None = None) -> dict[str, Any]:
    """Headline numbers of one account under one model."""
    result = run.results[model]
    equity = float(run.equity[account])
    adjusted = float(result.adjusted_equity(run.equity)[account])
    initial = float(result.initial_margin[account])
    maintenance = float(result.maintenance_margin[account])
    gross = float(run.gross_notional[account])
    return {
        "equity": equity,
        "adjusted_equity": adjusted,
        "initial_margin": initial,
        "maintenance_margin": maintenance,
        "excess": adjusted - initial,
        "margin_ratio": maintenance / adjusted if adjusted > 0.0 else None,
        "health": adjusted / maintenance if maintenance > 0.0 else None,
        "gross_notional": gross,
        "efficiency": gross / initial if initial > 0.0 else None,
        "underlyings": underlying_breakdown(run, account, model, liquidation),
        **({"components": {k: _component(k, float(v[account]))
                           for k, v in result.per_account.items()}}
           if result.per_account else {}),
    }


def underlying_breakdown(run: ModelRun, account: int, model: str,
                         liquidation: dict[str, LiquidationLevels] | None = None) -> dict[str, Any]:
    result = run.results[model]
    out: dict[str, Any] = {}
    for u_idx, u in enumerate(run.bound.underlyings):
        if not result.active[account, u_idx] and run.bound.collateral_exposure[account, u_idx] == 0:
            continue
        cell: dict[str, Any] = {}
        for key, values in result.per_underlying.items():
            if key == "worst_scenario":
                s = int(values[account, u_idx])
                move, shock, _ = result.scenarios[s] if s >= 0 else (0.0, 0.0, 0.0)
                cell[key] = {"price_move": move, "vol_shock": shock}
            else:
                cell[key] = _number(float(values[account, u_idx]))
        for key, values in run.greeks.items():
            cell[key] = _number(float(values[account, u_idx]))
        if liquidation is not None:
            levels, index = liquidation[model], float(run.bound.index[u_idx])
            cell["liquidation_price"] = _number(float(levels.nearest[account, u_idx]))
            cell["liquidation_prices"] = {
                "down": _level(float(levels.down[account, u_idx]), index),
                "up": _level(float(levels.up[account, u_idx]), index)}
        out[u] = cell
    return out


LIQUIDATION_PRICE_LIMIT = 10_000  # accounts; above it liquidation prices are opt-in


def compute_document(run: ModelRun, requested: str,
                     with_liquidation: bool = True) -> dict[str, Any]:
    """The ``compute --json`` document (``liquidation_price`` only ``with_liquidation``)."""
    book = run.bound.book
    used = [run.model_of(a, requested) for a in range(book.account_count)]
    liquidation = liquidation_by_model(run, used) if with_liquidation else None
    accounts = []
    for a, account_id in enumerate(book.account_ids):
        model = run.model_of(a, requested)
        entry: dict[str, Any] = {"id": account_id,
                                 "mode": MODES_BY_CODE[int(book.mode[a])].value,
                                 "model": model}
        entry.update(account_summary(run, a, model, liquidation))
        accounts.append(entry)
    return {"model": requested, "timestamp": ns_to_iso(run.bound.timestamp_ns),
            "accounts": accounts}


def compare_document(run: ModelRun, with_liquidation: bool = True) -> dict[str, Any]:
    """The ``compare --json`` document: every model per account."""
    book = run.bound.book
    liquidation = liquidation_by_model(run, list(run.results)) if with_liquidation else None
    accounts = []
    for a, account_id in enumerate(book.account_ids):
        accounts.append({
            "id": account_id,
            "mode": MODES_BY_CODE[int(book.mode[a])].value,
            "models": {name: account_summary(run, a, name, liquidation)
                       for name in run.results},
        })
    return {"timestamp": ns_to_iso(run.bound.timestamp_ns), "models": list(run.results),
            "accounts": accounts}


def efficiency(run: ModelRun, model: str) -> FloatArray:
    """Gross notional / IM per account (NaN where IM = 0)."""
    initial = run.results[model].initial_margin
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(initial > 0.0, run.gross_notional / initial, np.nan)

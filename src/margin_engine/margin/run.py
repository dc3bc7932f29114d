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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from margin_engine.book.bound import BoundBook
from margin_engine.book.columnar import MODES_BY_CODE
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.core.types import FloatArray
from margin_engine.liquidation.price import LiquidationLevels
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.greeks import account_greeks
from margin_engine.margin.protocol import MarginModel, MarginResult
from margin_engine.margin.registry import MODEL_NAMES, ModelSelection, get_model
from margin_engine.margin.results import (
    AccountMargin,
    LiquidationLevel,
    LiquidationPrices,
    MarginReport,
    PositionMargin,
    UnderlyingMargin,
    WorstScenario,
)

BY_ACCOUNT_MODE = ModelSelection.ACCOUNT
# The models of the account modes, in mode-code order.
MODE_MODELS: tuple[str, ...] = tuple(mode.value for mode in MODES_BY_CODE.values())


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
    adjusted_equity: dict[str, FloatArray]  # per model: equity after its collateral haircuts

    def model_of(self, account: int, requested: str) -> str:
        if requested != BY_ACCOUNT_MODE:
            return requested
        return MODES_BY_CODE[int(self.bound.book.mode[account])].value


@dataclass(frozen=True, slots=True)
class AccountMargins:
    """Per account IM, MM and equity after haircuts under the model each account is margined
    by, and the maintenance gap (< 0: liquidatable) at any margin multiplier."""

    initial: FloatArray
    maintenance: FloatArray
    adjusted_equity: FloatArray
    parts: tuple[tuple[np.ndarray, MarginResult], ...]  # (account rows, the result for them)
    bound: BoundBook
    equity: FloatArray  # mark-to-market

    def shared_gap(self) -> bool:
        """Whether every account's gap is adjusted equity - multiplier x MM (no model
        margins positions on their own equity)."""
        return all(result.position_equity is None for _, result in self.parts)

    def gap(self, multiplier: float = 1.0) -> FloatArray:
        if self.shared_gap():
            shared: FloatArray = self.adjusted_equity - multiplier * self.maintenance
            return shared
        out = np.zeros(self.bound.account_count)
        for rows, result in self.parts:
            out[rows] = result.maintenance_gap(self.equity, self.bound.position_account,
                                               multiplier)[rows]
        return out

    def standing(self) -> tuple[np.ndarray, np.ndarray]:
        """(liquidatable, in a margin call) per account: a maintenance gap < 0, and adjusted
        equity below IM without being liquidatable."""
        liquidatable = self.gap(1.0) < 0.0
        return liquidatable, (self.adjusted_equity < self.initial) & ~liquidatable


def margins_by_mode(bound: BoundBook, model: str,
                    compute: Callable[[str], MarginResult]) -> AccountMargins:
    """Margins per account under ``model``, or, for ``account``, under each account's own
    mode; ``compute`` runs a model by name on ``bound``."""
    equity = bound.equity()
    n = bound.account_count
    if model != BY_ACCOUNT_MODE:
        result = compute(model)
        return AccountMargins(result.initial_margin, result.maintenance_margin,
                              result.adjusted_equity(equity),
                              ((np.ones(n, dtype=np.bool_), result),), bound, equity)
    initial, maintenance, adjusted = np.zeros(n), np.zeros(n), np.zeros(n)
    parts = []
    for code in np.unique(bound.book.mode):
        result = compute(MODES_BY_CODE[int(code)].value)
        rows = bound.book.mode == code
        initial[rows] = result.initial_margin[rows]
        maintenance[rows] = result.maintenance_margin[rows]
        adjusted[rows] = result.adjusted_equity(equity)[rows]
        parts.append((rows, result))
    return AccountMargins(initial, maintenance, adjusted, tuple(parts), bound, equity)


def run_models(bound: BoundBook, config: RiskConfig, models: Sequence[str],
               built: Mapping[str, MarginModel] | None = None) -> ModelRun:
    """Run the named models (``account``: the account modes); ``built`` supplies models
    constructed with data (sensitivity with a parameter file, var with its history)."""
    names = list(MODEL_NAMES) if BY_ACCOUNT_MODE in models else list(dict.fromkeys(models))
    results = {name: get_model(name, built).compute(bound, config) for name in names}
    equity = bound.equity()
    return ModelRun(
        bound=bound, config=config, built=dict(built or {}), results=results, equity=equity,
        gross_notional=bound.account_gross_notional(),
        greeks=account_greeks(bound),
        adjusted_equity={name: r.adjusted_equity(equity) for name, r in results.items()},
    )


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _component(key: str, value: float) -> float | str | None:
    """Model components are numbers, except days (UTC day numbers) shown as dates."""
    if key.endswith("_day") and math.isfinite(value):
        return ns_to_iso(int(value) * 86_400_000_000_000)[:10]
    return _number(value)


def liquidation_by_model(run: ModelRun, models: Sequence[str], per_account: bool = False
                         ) -> dict[str, LiquidationLevels]:
    """Per model, both liquidation levels of every account and underlying (``per_account``:
    ``models`` is each account's model, and only its own model's levels are searched)."""
    from margin_engine.liquidation.price import liquidation_levels

    return {m: liquidation_levels(run.bound, m, run.config, models=run.built,
                                  accounts=_of(models, m) if per_account else None)
            for m in dict.fromkeys(models)}


def position_levels_by_model(run: ModelRun, models: Sequence[str], per_account: bool = False
                             ) -> dict[str, LiquidationLevels]:
    """Per model, the liquidation levels of every position on its own margin."""
    from margin_engine.liquidation.price import position_liquidation_levels

    return {m: position_liquidation_levels(run.bound, m, run.config, models=run.built,
                                           accounts=_of(models, m) if per_account else None)
            for m in dict.fromkeys(models) if run.results[m].position_equity is not None}


def _of(models: Sequence[str], model: str) -> np.ndarray:
    return np.array([m == model for m in models], dtype=np.bool_)


def _level(price: float, index: float) -> LiquidationLevel | None:
    if not math.isfinite(price):
        return None
    return LiquidationLevel(price=price, distance_pct=100.0 * (price / index - 1.0))


def _prices(nearest: float, down: float, up: float, index: float) -> LiquidationPrices:
    return LiquidationPrices(nearest=_number(nearest), down=_level(down, index),
                             up=_level(up, index))


def account_margin(run: ModelRun, account: int, model: str,
                   liquidation: dict[str, LiquidationLevels] | None = None,
                   positions: dict[str, LiquidationLevels] | None = None) -> AccountMargin:
    """Headline numbers of one account under one model."""
    result = run.results[model]
    equity = float(run.equity[account])
    adjusted = float(run.adjusted_equity[model][account])
    initial = float(result.initial_margin[account])
    maintenance = float(result.maintenance_margin[account])
    gross = float(run.gross_notional[account])
    return AccountMargin(
        id=run.bound.book.account_ids[account],
        mode=MODES_BY_CODE[int(run.bound.book.mode[account])].value, model=model,
        equity=equity, adjusted_equity=adjusted, initial_margin=initial,
        maintenance_margin=maintenance, excess=adjusted - initial,
        margin_ratio=maintenance / adjusted if adjusted > 0.0 else None,
        health=adjusted / maintenance if maintenance > 0.0 else None,
        gross_notional=gross, efficiency=gross / initial if initial > 0.0 else None,
        underlyings=underlying_margins(run, account, model, liquidation),
        components={k: _component(k, float(v[account])) for k, v in result.per_account.items()}
        if result.per_account else None,
        positions=own_margin_positions(run, account, model, positions)
        if result.position_equity is not None else None)


def own_margin_positions(run: ModelRun, account: int, model: str,
                         levels: dict[str, LiquidationLevels] | None
                         ) -> tuple[PositionMargin, ...]:
    """Positions on their own (isolated) margin: margin held, equity, IM, MM, health and,
    with ``levels``, each one's liquidation prices."""
    result, book = run.results[model], run.bound.book
    per = result.per_position
    out = []
    for row in range(int(book.offsets[account]), int(book.offsets[account + 1])):
        inst = int(book.position_instrument[row])
        mm = float(per["maintenance_margin"][row])
        equity = float(per["equity"][row])
        prices = None
        if levels is not None:
            found = levels[model]
            index = float(run.bound.index[int(book.instruments.underlying[inst])])
            prices = _prices(float(found.nearest[0, row]), float(found.down[0, row]),
                             float(found.up[0, row]), index)
        out.append(PositionMargin(
            instrument=book.instruments.instruments[inst].name, size=float(book.size[row]),
            margin_held=float(per["margin_held"][row]), equity=equity,
            initial_margin=float(per["initial_margin"][row]), maintenance_margin=mm,
            health=equity / mm if mm > 0.0 else None, liquidation=prices))
    return tuple(out)


def underlying_margins(run: ModelRun, account: int, model: str,
                       liquidation: dict[str, LiquidationLevels] | None = None
                       ) -> dict[str, UnderlyingMargin]:
    """Per underlying the account holds (or holds as collateral): the model's terms, its worst
    scenario, the Greeks and, with ``liquidation``, both liquidation levels."""
    result = run.results[model]
    out: dict[str, UnderlyingMargin] = {}
    for u_idx, u in enumerate(run.bound.underlyings):
        if not result.active[account, u_idx] and run.bound.collateral_exposure[account, u_idx] == 0:
            continue
        terms: dict[str, float | None] = {}
        worst = None
        for key, values in result.per_underlying.items():
            if key == "worst_scenario":
                s = int(values[account, u_idx])
                move, shock, _ = result.scenarios[s] if s >= 0 else (0.0, 0.0, 0.0)
                worst = WorstScenario(price_move=move, vol_shock=shock)
            else:
                terms[key] = _number(float(values[account, u_idx]))
        greeks = {key: _number(float(values[account, u_idx]))
                  for key, values in run.greeks.items()}
        prices = None
        if liquidation is not None:
            levels = liquidation[model]
            prices = _prices(float(levels.nearest[account, u_idx]),
                             float(levels.down[account, u_idx]),
                             float(levels.up[account, u_idx]), float(run.bound.index[u_idx]))
        out[u] = UnderlyingMargin(underlying=u, terms=terms, worst_scenario=worst,
                                  delta=greeks.get("delta"), gamma=greeks.get("gamma"),
                                  vega=greeks.get("vega"), liquidation=prices)
    return out


LIQUIDATION_PRICE_LIMIT = 10_000  # accounts; above it liquidation prices are opt-in
# ... and when every model's levels are searched in one compiled pass (liquidation/price.py)
VECTOR_LIQUIDATION_LIMIT = 1_000_000


def liquidation_limit(models: Sequence[str],
                      built: Mapping[str, MarginModel] | None = None) -> int:
    """The most accounts ``auto`` searches liquidation prices for under ``models``
    (``account``: the account modes)."""
    from margin_engine.liquidation.vector_levels import supports

    names = [m for name in models for m in
             (MODE_MODELS if name == BY_ACCOUNT_MODE else (name,))]
    fast = all(supports(m, built) for m in dict.fromkeys(names))
    return VECTOR_LIQUIDATION_LIMIT if fast else LIQUIDATION_PRICE_LIMIT


def account_margins(run: ModelRun, requested: str,
                    with_liquidation: bool = True) -> Iterator[AccountMargin]:
    """Every account under ``requested`` (``account``: its own mode's model), with both
    liquidation levels per underlying (and per isolated position) ``with_liquidation``: the
    levels are searched at once, the accounts made one at a time as they are taken."""
    book = run.bound.book
    used = [run.model_of(a, requested) for a in range(book.account_count)]
    liquidation = liquidation_by_model(run, used, per_account=True) if with_liquidation \
        else None
    positions = position_levels_by_model(run, used, per_account=True) if with_liquidation \
        else None
    return (account_margin(run, a, used[a], liquidation, positions)
            for a in range(book.account_count))


def margin_report(run: ModelRun, requested: str,
                  with_liquidation: bool = True) -> MarginReport:
    """``account_margins`` with the market's time."""
    return MarginReport(model=requested, timestamp=ns_to_iso(run.bound.timestamp_ns),
                        accounts=tuple(account_margins(run, requested, with_liquidation)))


def account_comparisons(run: ModelRun, with_liquidation: bool = True
                        ) -> Iterator[dict[str, AccountMargin]]:
    """Every model per account, side by side: the levels searched at once, the accounts made
    one at a time as they are taken."""
    liquidation = liquidation_by_model(run, list(run.results)) if with_liquidation else None
    return ({name: account_margin(run, a, name, liquidation) for name in run.results}
            for a in range(run.bound.account_count))



def efficiency(run: ModelRun, model: str) -> FloatArray:
    """Gross notional / IM per account (NaN where IM = 0)."""
    initial = run.results[model].initial_margin
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(initial > 0.0, run.gross_notional / initial, np.nan)

"""Typed results of a margin run: what ``margin/run.py`` builds from the models' arrays, what
``margin_engine.compute`` returns, and what the CLI's ``compute --json`` and the HTTP service
serialise (``to_json``) at the edge.

``from_json(document)`` reads that JSON contract back (for clients of the JSON); the objects
hold exactly its numbers, so ``MarginReport.from_json(doc).to_json() == doc``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from margin_engine.core.errors import InputError

Number = float | None
GREEKS = ("delta", "gamma", "vega")


def _float(value: Any) -> float:
    return float(value)


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class LiquidationLevel:
    """An index level where adjusted equity = MM, and its distance from today's index in %."""

    price: float
    distance_pct: float

    @staticmethod
    def from_json(data: Mapping[str, Any] | None) -> LiquidationLevel | None:
        if data is None:
            return None
        return LiquidationLevel(price=_float(data["price"]),
                                distance_pct=_float(data["distance_pct"]))

    def to_json(self) -> dict[str, float]:
        return {"price": self.price, "distance_pct": self.distance_pct}


@dataclass(frozen=True, slots=True, kw_only=True)
class LiquidationPrices:
    """The nearest liquidation level, and the closest one at or below today's index (``down``)
    and above it (``up``); None where there is none within (0, 10 x index]."""

    nearest: float | None
    down: LiquidationLevel | None
    up: LiquidationLevel | None

    @staticmethod
    def from_cell(cell: Mapping[str, Any]) -> LiquidationPrices | None:
        if "liquidation_prices" not in cell:
            return None
        levels = cell["liquidation_prices"]
        return LiquidationPrices(nearest=_optional(cell["liquidation_price"]),
                                 down=LiquidationLevel.from_json(levels["down"]),
                                 up=LiquidationLevel.from_json(levels["up"]))

    def to_cell(self) -> dict[str, Any]:
        return {"liquidation_price": self.nearest, "liquidation_prices": {
            "down": None if self.down is None else self.down.to_json(),
            "up": None if self.up is None else self.up.to_json()}}

    @property
    def nearest_distance_pct(self) -> float | None:
        """The distance of the nearest level in % of the index (negative: below)."""
        for level in (self.down, self.up):
            if level is not None and level.price == self.nearest:
                return level.distance_pct
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorstScenario:
    price_move: float
    vol_shock: float


@dataclass(frozen=True, slots=True, kw_only=True)
class UnderlyingMargin:
    """One underlying of an account: the model's own terms (``terms``: scan risk, contingency,
    ...), its worst scenario, the Greeks and the liquidation prices."""

    underlying: str
    terms: Mapping[str, float | None]
    worst_scenario: WorstScenario | None = None
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    liquidation: LiquidationPrices | None = None

    @staticmethod
    def from_json(underlying: str, cell: Mapping[str, Any]) -> UnderlyingMargin:
        worst = cell.get("worst_scenario")
        skip = {"worst_scenario", "liquidation_price", "liquidation_prices", *GREEKS}
        return UnderlyingMargin(
            underlying=underlying,
            terms={k: _optional(v) for k, v in cell.items() if k not in skip},
            worst_scenario=None if worst is None else WorstScenario(
                price_move=_float(worst["price_move"]), vol_shock=_float(worst["vol_shock"])),
            delta=_optional(cell.get("delta")), gamma=_optional(cell.get("gamma")),
            vega=_optional(cell.get("vega")),
            liquidation=LiquidationPrices.from_cell(cell))

    def to_json(self) -> dict[str, Any]:
        cell: dict[str, Any] = dict(self.terms)
        if self.worst_scenario is not None:
            cell["worst_scenario"] = {"price_move": self.worst_scenario.price_move,
                                      "vol_shock": self.worst_scenario.vol_shock}
        cell.update(delta=self.delta, gamma=self.gamma, vega=self.vega)
        if self.liquidation is not None:
            cell.update(self.liquidation.to_cell())
        return cell


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionMargin:
    """A position on its own (isolated) margin."""

    instrument: str
    size: float
    margin_held: float
    equity: float
    initial_margin: float
    maintenance_margin: float
    health: float | None
    liquidation: LiquidationPrices | None = None

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> PositionMargin:
        return PositionMargin(
            instrument=str(data["instrument"]), size=_float(data["size"]),
            margin_held=_float(data["margin_held"]), equity=_float(data["equity"]),
            initial_margin=_float(data["initial_margin"]),
            maintenance_margin=_float(data["maintenance_margin"]),
            health=_optional(data["health"]), liquidation=LiquidationPrices.from_cell(data))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "instrument": self.instrument, "size": self.size, "margin_held": self.margin_held,
            "equity": self.equity, "initial_margin": self.initial_margin,
            "maintenance_margin": self.maintenance_margin, "health": self.health}
        if self.liquidation is not None:
            out.update(self.liquidation.to_cell())
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class CollateralLine:
    """One collateral balance: value and the haircut taken off it (parts when haircuts are
    on)."""

    asset: str
    amount: float
    price: float
    value: float
    haircut: float
    haircut_usd: float
    volatility: float | None = None
    liquidity: float | None = None
    chain: float | None = None
    volatility_in_scenarios: bool | None = None

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> CollateralLine:
        in_scenarios = data.get("volatility_in_scenarios")
        return CollateralLine(
            asset=str(data["asset"]), amount=_float(data["amount"]),
            price=_float(data["price"]), value=_float(data["value"]),
            haircut=_float(data["haircut"]), haircut_usd=_float(data["haircut_usd"]),
            volatility=_optional(data.get("volatility")),
            liquidity=_optional(data.get("liquidity")), chain=_optional(data.get("chain")),
            volatility_in_scenarios=None if in_scenarios is None else bool(in_scenarios))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"asset": self.asset, "amount": self.amount, "price": self.price,
                               "value": self.value, "haircut": self.haircut,
                               "haircut_usd": self.haircut_usd}
        if self.volatility_in_scenarios is not None:
            out.update(volatility=self.volatility, liquidity=self.liquidity, chain=self.chain,
                       volatility_in_scenarios=self.volatility_in_scenarios)
        return out


_EXPLANATION_KEYS = ("account", "model", "equity", "adjusted_equity", "collateral")


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    """Every contribution to one account's margin: the collateral lines, and the model's own
    terms (``terms``: per underlying scenarios, tiers, sensitivities, ... as the model lays
    them out; see ``margin/explain.py``)."""

    account: str
    model: str
    equity: float
    adjusted_equity: float
    collateral: tuple[CollateralLine, ...]
    terms: Mapping[str, Any] = field(default_factory=dict)

    @property
    def initial_margin(self) -> float | None:
        return _optional(self.terms.get("initial_margin"))

    @property
    def maintenance_margin(self) -> float | None:
        return _optional(self.terms.get("maintenance_margin"))

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Explanation:
        return Explanation(
            account=str(data["account"]), model=str(data["model"]),
            equity=_float(data["equity"]), adjusted_equity=_float(data["adjusted_equity"]),
            collateral=tuple(CollateralLine.from_json(c) for c in data["collateral"]),
            terms={k: v for k, v in data.items() if k not in _EXPLANATION_KEYS})

    def to_json(self) -> dict[str, Any]:
        return {"account": self.account, "model": self.model, **self.terms,
                "collateral": [c.to_json() for c in self.collateral], "equity": self.equity,
                "adjusted_equity": self.adjusted_equity}


_ACCOUNT_KEYS = frozenset({
    "id", "mode", "model", "equity", "adjusted_equity", "initial_margin", "maintenance_margin",
    "excess", "margin_ratio", "health", "gross_notional", "efficiency", "underlyings",
    "components", "positions", "explain"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountMargin:
    """One account under one model. ``equity`` is mark-to-market; ``adjusted_equity`` is after
    collateral haircuts, what IM and MM are compared with; ``excess`` = adjusted equity - IM;
    ``margin_ratio`` = MM / adjusted equity; ``health`` = adjusted equity / MM; ``efficiency`` =
    gross notional / IM (None where undefined)."""

    id: str
    mode: str
    model: str
    equity: float
    adjusted_equity: float
    initial_margin: float
    maintenance_margin: float
    excess: float
    margin_ratio: float | None
    health: float | None
    gross_notional: float
    efficiency: float | None
    underlyings: Mapping[str, UnderlyingMargin]
    components: Mapping[str, float | str | None] | None = None
    positions: tuple[PositionMargin, ...] | None = None
    explanation: Explanation | None = None

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> AccountMargin:
        unknown = set(data) - _ACCOUNT_KEYS
        if unknown:
            raise InputError(f"the fields of an account result {sorted(_ACCOUNT_KEYS)}",
                             field="accounts[]", value=sorted(unknown))
        components = data.get("components")
        positions = data.get("positions")
        explanation = data.get("explain")
        return AccountMargin(
            id=str(data["id"]), mode=str(data["mode"]), model=str(data["model"]),
            equity=_float(data["equity"]), adjusted_equity=_float(data["adjusted_equity"]),
            initial_margin=_float(data["initial_margin"]),
            maintenance_margin=_float(data["maintenance_margin"]),
            excess=_float(data["excess"]), margin_ratio=_optional(data["margin_ratio"]),
            health=_optional(data["health"]), gross_notional=_float(data["gross_notional"]),
            efficiency=_optional(data["efficiency"]),
            underlyings={u: UnderlyingMargin.from_json(u, cell)
                         for u, cell in data["underlyings"].items()},
            components=None if components is None else {
                k: v if v is None or isinstance(v, str) else float(v)
                for k, v in components.items()},
            positions=None if positions is None else tuple(
                PositionMargin.from_json(p) for p in positions),
            explanation=None if explanation is None else Explanation.from_json(explanation))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "mode": self.mode, "model": self.model, "equity": self.equity,
            "adjusted_equity": self.adjusted_equity, "initial_margin": self.initial_margin,
            "maintenance_margin": self.maintenance_margin, "excess": self.excess,
            "margin_ratio": self.margin_ratio, "health": self.health,
            "gross_notional": self.gross_notional, "efficiency": self.efficiency,
            "underlyings": {u: cell.to_json() for u, cell in self.underlyings.items()}}
        if self.components is not None:
            out["components"] = dict(self.components)
        if self.positions is not None:
            out["positions"] = [p.to_json() for p in self.positions]
        if self.explanation is not None:
            out["explain"] = self.explanation.to_json()
        return out

    def liquidation_prices(self) -> dict[str, LiquidationPrices]:
        """Per underlying, the account's liquidation prices (where they were computed)."""
        return {u: cell.liquidation for u, cell in self.underlyings.items()
                if cell.liquidation is not None}


@dataclass(frozen=True, slots=True, kw_only=True)
class MarginReport:
    """Every account of a book under the requested model (``account``: each account's own
    mode) at the market's ``timestamp`` (ISO-8601 UTC)."""

    model: str
    timestamp: str
    accounts: tuple[AccountMargin, ...]

    def account(self, account_id: str) -> AccountMargin:
        for item in self.accounts:
            if item.id == account_id:
                return item
        raise InputError(f"an account of this book ({len(self.accounts)} accounts)",
                         field="account", value=account_id)

    @staticmethod
    def from_json(document: Mapping[str, Any]) -> MarginReport:
        return MarginReport(model=str(document["model"]), timestamp=str(document["timestamp"]),
                            accounts=tuple(AccountMargin.from_json(a)
                                           for a in document["accounts"]))

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "timestamp": self.timestamp,
                "accounts": [a.to_json() for a in self.accounts]}


def comparison_row(by_model: Mapping[str, AccountMargin]) -> dict[str, Any]:
    """One account of the ``compare --json`` document (every model's results of the account,
    ``by_model``): its id and mode, then each model's numbers."""
    first = next(iter(by_model.values()))
    return {"id": first.id, "mode": first.mode, "models": {
        name: {k: v for k, v in margin.to_json().items() if k not in ("id", "mode", "model")}
        for name, margin in by_model.items()}}

"""Risk configuration: frozen, typed, unknown fields refused, round-trips through JSON and TOML.

Defaults are those of SPEC 3.1-3.3 and the foundation conventions.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from margin_engine.collateral.haircuts import AssetHaircut, ChainTier, CollateralConfig
from margin_engine.core.bounds import (
    DAMPENING,
    EWMA_DECAY,
    FRACTION,
    MAINTENANCE_SHARE,
    REFERENCE_DAYS,
    VOL_LEVEL,
    VOL_SHOCK,
    Bounds,
)
from margin_engine.core.errors import ConfigError, InputError
from margin_engine.core.numbers import parse_float


class VolDynamics(StrEnum):
    """How implied vols follow a price move in the portfolio scenarios."""

    STICKY_STRIKE = "sticky_strike"
    STICKY_MONEYNESS = "sticky_moneyness"


class TailMeasure(StrEnum):
    """The var model's tail measure."""

    ES = "es"  # expected shortfall
    VAR = "var"


class ApcRule(StrEnum):
    """Anti-procyclicality of the var model (EMIR RTS 153/2013 art. 28)."""

    NONE = "none"
    BUFFER = "buffer"
    STRESSED_WEIGHT = "stressed_weight"
    FLOOR = "floor"


class ShortfallRule(StrEnum):
    """Who pays bad debt the insurance fund cannot."""

    ADL = "adl"  # auto-deleveraging of the most profitable opposite positions
    SOCIALISED = "socialised"


class AdlRanking(StrEnum):
    """How auto-deleveraging ranks the positions it closes."""

    PROFIT_X_LEVERAGE = "profit_x_leverage"
    PROFIT = "profit"


_Choice = TypeVar("_Choice", bound=StrEnum)


def choice(kind: type[_Choice], value: Any, *, field: str) -> _Choice:
    """``value`` as a member of ``kind``; an InputError naming ``field``, the value and the
    allowed values otherwise."""
    try:
        return kind(value)
    except (ValueError, TypeError):
        raise InputError(f"one of {[member.value for member in kind]}", field=field,
                         value=value) from None


def _check_choices(config: Any, kinds: Mapping[str, type[StrEnum]]) -> None:
    """Replace each named string field of a frozen ``config`` by its enum member."""
    for name, kind in kinds.items():
        object.__setattr__(config, name, choice(kind, getattr(config, name), field=name))


@dataclass(frozen=True, slots=True, kw_only=True)
class Tier:
    """A marginal notional bracket: rates apply to the part of notional below ``up_to`` USD."""

    up_to: float  # math.inf for the last bracket
    initial_rate: float
    maintenance_rate: float


DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier(up_to=1_000_000.0, initial_rate=0.02, maintenance_rate=0.01),
    Tier(up_to=5_000_000.0, initial_rate=0.04, maintenance_rate=0.02),
    Tier(up_to=20_000_000.0, initial_rate=0.10, maintenance_rate=0.05),
    Tier(up_to=math.inf, initial_rate=0.25, maintenance_rate=0.125),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class IsolatedConfig:
    """SPEC 3.1. Short option IM = max(base - OTM/S, floor) x S + mark; MM = mm_rate x S + mark."""

    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    tiers_by_underlying: Mapping[str, tuple[Tier, ...]] = field(default_factory=dict)
    option_initial_base: float = 0.15
    option_initial_floor: float = 0.10
    option_maintenance_rate: float = 0.075

    def tiers_for(self, underlying: str) -> tuple[Tier, ...]:
        return self.tiers_by_underlying.get(underlying, self.tiers)


@dataclass(frozen=True, slots=True, kw_only=True)
class CrossConfig:
    """SPEC 3.2: rates on the hedged (offsetting) linear notional of an underlying."""

    hedge_initial_rate: float = 0.01
    hedge_maintenance_rate: float = 0.005


@dataclass(frozen=True, slots=True, kw_only=True)
class PortfolioConfig:
    """SPEC 3.3 scenario grid, contingencies and cross-underlying aggregation."""

    price_moves: tuple[float, ...] = (-0.16, -0.12, -0.08, -0.04, 0.0, 0.04, 0.08, 0.12, 0.16)
    vol_shocks: tuple[float, ...] = (-0.25, 0.0, 0.50)
    extended_moves: tuple[float, ...] = (-0.33, 0.50)
    extended_vol_shock: float = 0.50
    extended_weight: float = 1.0 / 3.0
    vol_shock_reference_days: float = 30.0
    vol_shock_power_short: float = 0.30
    vol_shock_power_long: float = 0.13
    vol_floor: float = 0.01
    option_contingency_rate: float = 0.01
    linear_contingency_rate: float = 0.01
    max_cross_offset: float = 0.5
    maintenance_fraction: float = 0.8
    vol_dynamics: VolDynamics = VolDynamics.STICKY_STRIKE

    def __post_init__(self) -> None:
        _check_choices(self, {"vol_dynamics": VolDynamics})


@dataclass(frozen=True, slots=True, kw_only=True)
class VarConfig:
    """SPEC 3.5: filtered historical simulation, EMIR RTS 153/2013 art. 28 APC options."""

    confidence: float = 0.99
    measure: TailMeasure = TailMeasure.ES
    mpor_days: float = 1.0
    ewma_lambda: float = 0.94
    scenarios: float = 1000.0  # the most recent h-day windows used
    apc: ApcRule = ApcRule.NONE
    apc_buffer: float = 0.25
    stressed_weight: float = 0.25
    stressed_window_days: float = 250.0
    floor_years: float = 10.0
    vol_floor: float = 0.01
    maintenance_fraction: float = 0.8

    def __post_init__(self) -> None:
        _check_choices(self, {"measure": TailMeasure, "apc": ApcRule})


# The enum-valued fields of the config sections, by field name.
STRING_CHOICES: dict[str, type[StrEnum]] = {
    "vol_dynamics": VolDynamics,
    "measure": TailMeasure,
    "apc": ApcRule,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """Velocity = |P_t / P_{t - window} - 1| over the liquidation-latency window. When it exceeds
    ``mm_buffer`` (the move maintenance margin is sized to absorb), margin requirements are
    multiplied by min(max_multiplier, velocity / mm_buffer); once calm the multiplier decays to 1
    with ``half_life_seconds``."""

    enabled: bool = False
    mm_buffer: float = 0.01
    max_multiplier: float = 2.0
    half_life_seconds: float = 1800.0
    off_threshold: float = 1.01  # the breaker reports off once the multiplier decays below this


PENALTY_RATE_MAX = 1.0  # a penalty of the whole closed notional: no venue charges more


@dataclass(frozen=True, slots=True, kw_only=True)
class LiquidationConfig:
    penalty_rate: float = 0.01  # of the closed notional, to the insurance fund
    target_buffer: float = 1.0  # close until equity >= IM x target_buffer
    latency_seconds: float = 60.0  # from trigger to execution
    shortfall: ShortfallRule = ShortfallRule.ADL
    adl_ranking: AdlRanking = AdlRanking.PROFIT_X_LEVERAGE
    insurance_fund: float = 0.0  # initial fund, USD
    settlement_asset: str = "USD"
    breaker: BreakerConfig = field(default_factory=BreakerConfig)

    def __post_init__(self) -> None:
        _check_choices(self, {"shortfall": ShortfallRule, "adl_ranking": AdlRanking})


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorConfig:
    """``[monitor]``: tick admission and status hysteresis of the real-time monitor.

    * ``max_seq_gap``: a tick whose sequence is more than this past the last accepted one is
      rejected (the first tick counts from 0). A million leaves room for any feed restart or
      batch while one forged sequence (+2e9) can no longer turn every later tick into an
      out-of-order one.
    * ``max_clock_skew_seconds``: a tick dated more than this after max(wall clock, the newest
      applied tick) is rejected; a minute covers clock drift and feed latency, a tick dated 2200
      is refused instead of freezing its symbol.
    * ``jump_sigmas``: a move |ln(p / p_last)| > jump_sigmas x sigma x
      sqrt(max(dt, jump_min_seconds) / year) is quarantined (sigma: the symbol's ATM implied
      vol, else its haircut vol; ``"inf"`` turns the check off). 120 is 1.5x the largest real
      move in ../shared/data, each measured at the Deribit DVOL open of its day: bar high-low
      (a move within one bar) 78.7 sigma, BTCUSDT perp 5m 2025-10-10 21:15 (9.64 % at DVOL
      39.7 %); close-to-close 65.9 sigma, the same bar (8.07 %). The 1m Binance.US files
      (2023-03, DVOL 53-62 %): close-to-close 21.9 (BTCUSD), 20.9 (BTCUSDT), 25.4 (BTCUSDC);
      high-low 36.5 / 28.9 (the thin BTCUSDC pair's single-print wicks, up to 207 sigma to a
      round 31,000.0 and back in the minute while BTCUSD moved 0.15 %, are what the
      quarantine is for). 15m 2024-08-05: BTC 13.5 / 24.9, ETH 23.7 / 50.5; 15m 2025-10-10:
      BTC 12.6 / 48.6, ETH 15.8 / 31.4; 5m 2025-10-10 ETH perp 34.4 / 53.1, spot BTC 62.2 /
      65.8, ETH 32.1 / 61.8 (tests/unit/test_tick_guard.py re-measures them).
    * ``jump_min_seconds``: the floor of dt, so two ticks at the same instant still get a
      bound (one second: the finest time step of the feeds).
    * ``confirm_ticks``: a quarantined price is applied after this many consecutive ticks of
      its symbol from its source that agree (within the oracle's max deviation), or at once
      when another source agrees; three rules out a single bad print and a retransmission of
      it, and costs three ticks of delay on a real jump that no other source reports.
    * ``hysteresis_band``: statuses worsen at their thresholds but improve only past them by
      this fraction: liquidation ends at equity >= MM x (1 + band), a margin call at equity >=
      IM x (1 + band) (breaker multiplier included); 0 is the bare thresholds. 10 %: leaving
      liquidation means leaving the monitor's near-liquidation zone (equity < 1.1 x MM), and
      at the 1 % MM tier it is 0.1 % of notional, several times the price noise of a live
      feed's ticks. 20,000 seeded accounts through the 2024-08-05 15m window: 204,542 status
      events at 0, 152,347 at 0.1 (at most 215 and 101 for one account).
    """

    max_seq_gap: int = 1_000_000
    max_clock_skew_seconds: float = 60.0
    jump_sigmas: float = 120.0
    jump_min_seconds: float = 1.0
    confirm_ticks: int = 3
    hysteresis_band: float = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskConfig:
    isolated: IsolatedConfig = field(default_factory=IsolatedConfig)
    cross: CrossConfig = field(default_factory=CrossConfig)
    portfolio: PortfolioConfig = field(default_factory=PortfolioConfig)
    liquidation: LiquidationConfig = field(default_factory=LiquidationConfig)
    var: VarConfig = field(default_factory=VarConfig)
    haircuts: CollateralConfig = field(default_factory=CollateralConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = _to_plain(self)
        return plain

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_toml(self) -> str:
        return _toml_dump(self.to_dict())

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> RiskConfig:
        try:
            return _build_risk_config(data)
        except InputError as exc:
            raise ConfigError(exc.expected, field=exc.field, value=exc.value) from None

    @staticmethod
    def load(path: str | Path) -> RiskConfig:
        """Read a JSON (``.json``) or TOML (any other suffix) risk configuration file."""
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"a readable risk configuration file ({exc.strerror})",
                              source=source) from None
        from margin_engine.io.jsonfields import loads_unique

        try:
            data = loads_unique(text) if source.endswith(".json") else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"valid {'JSON' if source.endswith('.json') else 'TOML'} ({exc})",
                              source=source) from None
        except InputError as exc:
            raise ConfigError(exc.expected, field=exc.field, value=exc.value,
                              source=source) from None
        try:
            return RiskConfig.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(exc.expected, field=exc.field, value=exc.value,
                              source=source) from None


def _to_plain(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return value


def _check_keys(data: Any, cls: type, path: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InputError("a table/object", field=path or "config", value=data)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise InputError(f"one of the known fields {sorted(known)}",
                             field=f"{path}.{key}" if path else key, value="unknown field")
    return data


def _tiers(data: Any, path: str) -> tuple[Tier, ...]:
    if not isinstance(data, list) or not data:
        raise InputError("a non-empty list of tiers", field=path, value=data)
    tiers: list[Tier] = []
    previous = 0.0
    for i, raw in enumerate(data):
        where = f"{path}[{i}]"
        item = _check_keys(raw, Tier, where)
        up_to_raw = item.get("up_to", "inf")
        up_to = math.inf if up_to_raw in ("inf", None) else parse_float(
            up_to_raw, field=f"{where}.up_to", strictly_positive=True)
        if up_to <= previous:
            raise InputError(f"an ascending bound > {previous:g}", field=f"{where}.up_to",
                             value=up_to_raw)
        initial = parse_float(item.get("initial_rate"), field=f"{where}.initial_rate",
                              minimum=0.0, maximum=1.0)
        maintenance = parse_float(item.get("maintenance_rate", initial / 2),
                                  field=f"{where}.maintenance_rate", minimum=0.0, maximum=initial)
        tiers.append(Tier(up_to=up_to, initial_rate=initial, maintenance_rate=maintenance))
        previous = up_to
    if not math.isinf(tiers[-1].up_to):
        raise InputError("a last tier without bound (up_to = 'inf')", field=f"{path}[-1].up_to",
                         value=tiers[-1].up_to)
    return tuple(tiers)


def _scalars(data: Mapping[str, Any], cls: type, path: str, base: Any) -> Any:
    """Replace the float and float-tuple fields of ``base`` with values from ``data``."""
    updates: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data or f.name in ("tiers", "tiers_by_underlying"):
            continue
        value = data[f.name]
        where = f"{path}.{f.name}"
        if f.name in STRING_CHOICES:
            updates[f.name] = choice(STRING_CHOICES[f.name], value, field=where)
        elif isinstance(getattr(base, f.name), tuple):
            if not isinstance(value, list) or not value:
                raise InputError("a non-empty list of numbers", field=where, value=value)
            updates[f.name] = tuple(parse_float(v, field=f"{where}[{i}]")
                                    for i, v in enumerate(value))
        else:
            updates[f.name] = parse_float(value, field=where, minimum=0.0 if f.name not in
                                          ("extended_vol_shock",) else -1.0)
    return replace(base, **updates)


def _build_risk_config(data: Mapping[str, Any]) -> RiskConfig:
    _check_keys(data, RiskConfig, "")
    iso_raw = _check_keys(data.get("isolated", {}), IsolatedConfig, "isolated")
    isolated = _scalars(iso_raw, IsolatedConfig, "isolated", IsolatedConfig())
    if "tiers" in iso_raw:
        isolated = replace(isolated, tiers=_tiers(iso_raw["tiers"], "isolated.tiers"))
    by_und = iso_raw.get("tiers_by_underlying", {})
    if not isinstance(by_und, Mapping):
        raise InputError("a table of underlying -> tiers", field="isolated.tiers_by_underlying",
                         value=by_und)
    isolated = replace(isolated, tiers_by_underlying={
        u: _tiers(t, f"isolated.tiers_by_underlying.{u}") for u, t in by_und.items()})
    cross = _scalars(_check_keys(data.get("cross", {}), CrossConfig, "cross"), CrossConfig,
                     "cross", CrossConfig())
    portfolio = _scalars(_check_keys(data.get("portfolio", {}), PortfolioConfig, "portfolio"),
                         PortfolioConfig, "portfolio", PortfolioConfig())
    if not 0.0 <= portfolio.max_cross_offset <= 1.0:
        raise InputError("a value in [0, 1]", field="portfolio.max_cross_offset",
                         value=portfolio.max_cross_offset)
    if not 0.0 < portfolio.maintenance_fraction <= 1.0:
        raise InputError("a value in (0, 1]", field="portfolio.maintenance_fraction",
                         value=portfolio.maintenance_fraction)
    for name in ("price_moves", "extended_moves"):
        moves = getattr(portfolio, name)
        if any(m <= -1.0 for m in moves):
            raise InputError("price moves > -1 (a price cannot fall 100 %)",
                             field=f"portfolio.{name}", value=list(moves))
        if list(moves) != sorted(moves):
            raise InputError("ascending price moves", field=f"portfolio.{name}",
                             value=list(moves))
    var = _scalars(_check_keys(data.get("var", {}), VarConfig, "var"), VarConfig, "var",
                   VarConfig())
    _check_bounds({"isolated": isolated, "cross": cross, "portfolio": portfolio, "var": var})
    if cross.hedge_maintenance_rate > cross.hedge_initial_rate:
        raise InputError(f"a rate <= hedge_initial_rate ({cross.hedge_initial_rate:g}): MM "
                         "above IM", field="cross.hedge_maintenance_rate",
                         value=cross.hedge_maintenance_rate)
    if not 0.5 < var.confidence < 1.0:
        raise InputError("a confidence in (0.5, 1)", field="var.confidence", value=var.confidence)
    if var.mpor_days < 1 or var.mpor_days != int(var.mpor_days):
        raise InputError("a whole number of days >= 1", field="var.mpor_days",
                         value=var.mpor_days)
    return RiskConfig(isolated=isolated, cross=cross, portfolio=portfolio,
                      liquidation=_liquidation(data.get("liquidation", {})), var=var,
                      haircuts=_haircuts(data.get("haircuts", {})),
                      monitor=_monitor(data.get("monitor", {})))


# (section, field, bounds): model numbers a configuration may set only within what they mean
# (beyond, a rate would charge more than the notional, a vol shock would make a volatility
# negative, a weight would count a scenario more than whole)
_INDEX_FRACTION = replace(FRACTION, meaning="a fraction of the index")
_BOUNDED: tuple[tuple[str, str, Bounds], ...] = (
    ("isolated", "option_initial_base", _INDEX_FRACTION),
    ("isolated", "option_initial_floor", _INDEX_FRACTION),
    ("isolated", "option_maintenance_rate", _INDEX_FRACTION),
    ("cross", "hedge_initial_rate", FRACTION),
    ("cross", "hedge_maintenance_rate", FRACTION),
    ("portfolio", "vol_shocks", VOL_SHOCK),
    ("portfolio", "extended_vol_shock", VOL_SHOCK),
    ("portfolio", "extended_weight", FRACTION),
    ("portfolio", "vol_shock_reference_days", REFERENCE_DAYS),
    ("portfolio", "vol_shock_power_short", DAMPENING),
    ("portfolio", "vol_shock_power_long", DAMPENING),
    ("portfolio", "vol_floor", VOL_LEVEL),
    ("portfolio", "option_contingency_rate", _INDEX_FRACTION),
    ("portfolio", "linear_contingency_rate", FRACTION),
    ("var", "ewma_lambda", EWMA_DECAY),
    ("var", "stressed_weight", FRACTION),
    ("var", "vol_floor", VOL_LEVEL),
    ("var", "maintenance_fraction", MAINTENANCE_SHARE),
    ("var", "scenarios", Bounds(1.0, 1e7, "a count of h-day windows")),
    ("var", "stressed_window_days", Bounds(1.0, 36500.0, "a window in days")),
    ("var", "floor_years", Bounds(0.0, 100.0, "a lookback in years", low_open=True)),
    ("var", "apc_buffer", FRACTION),
)
_LIQUIDATION_BOUNDED: tuple[tuple[str, str, Bounds], ...] = (
    ("liquidation", "target_buffer",
     Bounds(0.0, 100.0, "the multiple of IM a partial liquidation restores", low_open=True)),
    ("liquidation.breaker", "mm_buffer",
     Bounds(0.0, 1.0, "the move MM absorbs, as a fraction (velocity / mm_buffer)",
            low_open=True)),
    ("liquidation.breaker", "max_multiplier",
     Bounds(1.0, 1000.0, "the most the breaker multiplies margins by (below 1 it would lower "
            "them in a crash)")),
    ("liquidation.breaker", "half_life_seconds",
     Bounds(0.0, 1e9, "the decay's half-life in seconds", low_open=True)),
    ("liquidation.breaker", "off_threshold",
     Bounds(1.0, 1000.0, "the multiplier below which the breaker is off")),
)


def _check_bounds(sections: Mapping[str, Any],
                  table: tuple[tuple[str, str, Bounds], ...] = _BOUNDED) -> None:
    """Refuse a number of ``table`` outside its bounds (each element of a list)."""
    for section, name, bounds in table:
        value = getattr(sections[section], name)
        if not all(bounds.holds(v) for v in (value if isinstance(value, tuple) else (value,))):
            raise InputError(bounds.expected(), field=f"{section}.{name}",
                             value=list(value) if isinstance(value, tuple) else value)


def _number_or_inf(value: Any, field: str) -> float:
    return math.inf if value == "inf" else parse_float(value, field=field, minimum=0.0)


def _haircuts(data: Any) -> CollateralConfig:
    """``[haircuts]``: scalars, ``stablecoins``, and tables ``assets``, ``chains``, ``chain_of``
    merged over the defaults (an asset or chain given replaces only the fields it names)."""
    raw = dict(_check_keys(data, CollateralConfig, "haircuts"))
    base = CollateralConfig()
    updates: dict[str, Any] = {}
    if "enabled" in raw:
        if not isinstance(raw["enabled"], bool):
            raise InputError("true or false", field="haircuts.enabled", value=raw["enabled"])
        updates["enabled"] = raw["enabled"]
    for name, low, high in (("mpor_days", 0.0, None), ("confidence", 0.5, 0.999999),
                            ("depeg_price", 0.0, 1.0), ("depeg_weight", 0.0, 1.0)):
        if name in raw:
            updates[name] = parse_float(raw[name], field=f"haircuts.{name}", minimum=low,
                                        maximum=high)
    if "unknown_chain_tier" in raw:
        updates["unknown_chain_tier"] = raw["unknown_chain_tier"]
    if "stablecoins" in raw:
        coins = raw["stablecoins"]
        if not isinstance(coins, list) or not all(isinstance(c, str) and c for c in coins):
            raise InputError("a list of asset symbols", field="haircuts.stablecoins",
                             value=coins)
        updates["stablecoins"] = tuple(coins)
    assets = dict(base.assets)
    for asset, spec in _table(raw.get("assets", {}), "haircuts.assets").items():
        where = f"haircuts.assets.{asset}"
        item = _check_keys(spec, AssetHaircut, where)
        current = assets.get(asset)
        if current is None and not {"annual_vol", "average_daily_volume_usd"} <= set(item):
            raise InputError("annual_vol and average_daily_volume_usd for a new asset",
                             field=where, value=sorted(item))
        values = {k: _number_or_inf(v, f"{where}.{k}") for k, v in item.items()}
        _check_rates(values, where)
        assets[asset] = replace(current, **values) if current else AssetHaircut(**values)
    chains = dict(base.chains)
    for chain, spec in _table(raw.get("chains", {}), "haircuts.chains").items():
        where = f"haircuts.chains.{chain}"
        item = _check_keys(spec, ChainTier, where)
        tier = chains.get(chain)
        if tier is None and set(item) != {"haircut", "finality_seconds"}:
            raise InputError("haircut and finality_seconds for a new chain tier", field=where,
                             value=sorted(item))
        numbers = {k: parse_float(v, field=f"{where}.{k}", minimum=0.0) for k, v in item.items()}
        _check_rates(numbers, where)
        chains[chain] = replace(tier, **numbers) if tier else ChainTier(**numbers)
    chain_of = {str(k): v for k, v in _table(raw.get("chain_of", {}), "haircuts.chain_of").items()}
    for chain, tier in chain_of.items():
        if tier not in chains:
            raise InputError(f"a chain tier of {sorted(chains)}",
                             field=f"haircuts.chain_of.{chain}", value=tier)
    if "default_asset" in raw:
        item = _check_keys(raw["default_asset"], AssetHaircut, "haircuts.default_asset")
        values = {k: _number_or_inf(v, f"haircuts.default_asset.{k}") for k, v in item.items()}
        _check_rates(values, "haircuts.default_asset")
        updates["default_asset"] = replace(base.default_asset, **values)
    tier_name = updates.get("unknown_chain_tier", base.unknown_chain_tier)
    if tier_name not in chains:
        raise InputError(f"a chain tier of {sorted(chains)}",
                         field="haircuts.unknown_chain_tier", value=tier_name)
    return replace(base, assets=assets, chains=chains, chain_of=chain_of, **updates)


def _check_rates(values: Mapping[str, float], where: str) -> None:
    """Haircut rates are fractions of the value: in [0, 1]; an annual vol is a volatility."""
    for name in ("haircut", "max_haircut"):
        if name in values and not 0.0 <= values[name] <= 1.0:
            raise InputError("a fraction in [0, 1]", field=f"{where}.{name}", value=values[name])
    if "annual_vol" in values and not VOL_LEVEL.holds(values["annual_vol"]):
        raise InputError(VOL_LEVEL.expected(), field=f"{where}.annual_vol",
                         value=values["annual_vol"])


def _table(data: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InputError("a table", field=field, value=data)
    return data


def _whole(value: Any, field: str, maximum: int) -> int:
    """A JSON integer in [1, maximum] (a float such as 3.0 is refused: counts are exact)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InputError(f"a whole number in [1, {maximum}]", field=field, value=value)
    return value


def _monitor(data: Any) -> MonitorConfig:
    """``[monitor]``: counts are whole numbers >= 1; ``jump_sigmas`` and
    ``max_clock_skew_seconds`` may be ``"inf"`` (check off); the band is in [0, 1)."""
    raw = _check_keys(data, MonitorConfig, "monitor")
    base = MonitorConfig()
    updates: dict[str, Any] = {}
    for name in ("max_seq_gap", "confirm_ticks"):
        if name in raw:
            updates[name] = _whole(raw[name], f"monitor.{name}", 2**62)
    for name in ("max_clock_skew_seconds", "jump_sigmas"):
        if name in raw:
            value = raw[name]
            updates[name] = math.inf if value == "inf" else parse_float(
                value, field=f"monitor.{name}", strictly_positive=True)
    if "jump_min_seconds" in raw:
        updates["jump_min_seconds"] = parse_float(raw["jump_min_seconds"],
                                                  field="monitor.jump_min_seconds",
                                                  strictly_positive=True)
    if "hysteresis_band" in raw:
        band = parse_float(raw["hysteresis_band"], field="monitor.hysteresis_band",
                           minimum=0.0)
        if band >= 1.0:
            raise InputError("a fraction in [0, 1)", field="monitor.hysteresis_band",
                             value=raw["hysteresis_band"])
        updates["hysteresis_band"] = band
    return replace(base, **updates)


def _liquidation(data: Any) -> LiquidationConfig:
    raw = dict(_check_keys(data, LiquidationConfig, "liquidation"))
    breaker_raw = dict(_check_keys(raw.pop("breaker", {}), BreakerConfig, "liquidation.breaker"))
    enabled = breaker_raw.pop("enabled", False)
    if not isinstance(enabled, bool):
        raise InputError("true or false", field="liquidation.breaker.enabled", value=enabled)
    breaker = replace(_scalars(breaker_raw, BreakerConfig, "liquidation.breaker",
                               BreakerConfig()), enabled=enabled)
    choices: dict[str, type[StrEnum]] = {"shortfall": ShortfallRule, "adl_ranking": AdlRanking}
    texts: dict[str, Any] = {}
    for name in ("shortfall", "adl_ranking", "settlement_asset"):
        if name in raw:
            value = raw.pop(name)
            if name in choices:
                texts[name] = choice(choices[name], value, field=f"liquidation.{name}")
            elif isinstance(value, str):
                texts[name] = value
            else:
                raise InputError("one of ['an asset symbol']", field=f"liquidation.{name}",
                                 value=value)
    numbers: LiquidationConfig = _scalars(raw, LiquidationConfig, "liquidation",
                                          LiquidationConfig())
    _check_bounds({"liquidation": numbers, "liquidation.breaker": breaker},
                  _LIQUIDATION_BOUNDED)
    if numbers.penalty_rate > PENALTY_RATE_MAX:
        raise InputError(f"a fraction of the closed notional in [0, {PENALTY_RATE_MAX:g}]",
                         field="liquidation.penalty_rate", value=numbers.penalty_rate)
    return replace(numbers, breaker=breaker, **texts)


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list) and all(not isinstance(v, dict) for v in value):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_dump(data: Mapping[str, Any]) -> str:
    """Minimal TOML writer for the config's shape: one table per section, inline tables inside."""
    lines: list[str] = []
    for section, body in data.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in body.items())
        lines.append("")
    return "\n".join(lines)

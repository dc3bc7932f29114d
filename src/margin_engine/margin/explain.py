"""Explanations: every contribution to one account's margin, as plain data.

The portfolio and sensitivity explanations are recomputed here from scratch (one account, plain
Python, scalar Black-76), binding the book to the market snapshot themselves, so they double as
the slow references the fused kernels are tested against; the isolated and cross explanations
read the per-position and per-underlying arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook
from margin_engine.domain.instruments import (
    Instrument,
    InstrumentKind,
    OptionRight,
    Settlement,
    resolve_name,
)
from margin_engine.margin.config import RiskConfig, VolDynamics
from margin_engine.margin.portfolio_kernel import TIE_TOLERANCE
from margin_engine.margin.protocol import MarginModel, MarginResult
from margin_engine.margin.scenarios import linear_moves, scenario_table
from margin_engine.margin.tiers import tiered_charge
from margin_engine.market.snapshot import MarketSnapshot
from margin_engine.pricing.reference import black76_price


def _rows(bound: BoundBook, account: int) -> range:
    return range(int(bound.book.offsets[account]), int(bound.book.offsets[account + 1]))


def explain_account(bound: BoundBook, config: RiskConfig, result: MarginResult,
                    account: int, model: MarginModel | None = None) -> dict[str, Any]:
    """The model's own explanation of ``account`` plus its collateral lines and equity;
    ``model``: the model that produced ``result`` (by default the registered one of its name)."""
    from margin_engine.margin.registry import get_model

    chosen = model if model is not None else get_model(result.model)
    explanation = chosen.explain(bound, config, result, account)
    explanation["collateral"] = collateral_lines(bound, config, account, chosen.revalues_coins,
                                                 "depeg" in result.per_account)
    equity = float(bound.equity()[account])
    explanation["equity"] = equity
    explanation["adjusted_equity"] = equity - sum(
        line["haircut_usd"] for line in explanation["collateral"])
    return explanation


def collateral_lines(bound: BoundBook, config: RiskConfig, account: int, revalues_coins: bool,
                     depegs_stablecoins: bool) -> list[dict[str, Any]]:
    """Each collateral balance of the account: amount, price, value, haircut parts and the
    USD taken off (scalar, one balance at a time)."""
    from margin_engine.collateral.haircuts import haircut

    cfg = config.haircuts
    lines = []
    for col, key in enumerate(bound.book.assets):
        amount = float(bound.book.collateral[account, col])
        if amount == 0.0:
            continue
        asset = key.partition("@")[0]
        price = float(bound.market.asset_prices[asset])
        line: dict[str, Any] = {"asset": key, "amount": amount, "price": price,
                                "value": amount * price, "haircut": 0.0, "haircut_usd": 0.0}
        if cfg.enabled and amount > 0.0:
            revalued = (revalues_coins and asset in bound.underlyings) or (
                depegs_stablecoins and asset in cfg.stablecoins)
            part = haircut(key, amount, price, cfg, revalued=revalued)
            line.update(volatility=part.volatility, liquidity=part.liquidity,
                        chain=part.chain_haircut, haircut=part.haircut,
                        haircut_usd=part.gross_value - part.counted_value,
                        volatility_in_scenarios=revalued)
        lines.append(line)
    return lines


def _position_line(bound: BoundBook, row: int) -> dict[str, Any]:
    inst = int(bound.book.position_instrument[row])
    return {"instrument": bound.book.instruments.instruments[inst].name,
            "size": float(bound.book.size[row]),
            "notional": float(bound.signed_notional[row]),
            "mark": float(bound.mark[inst])}


def explain_isolated(bound: BoundBook, result: MarginResult, account: int) -> dict[str, Any]:
    """Each position's own charges (the isolated model's per-position arrays)."""
    table = bound.book.instruments
    lines = []
    for row in _rows(bound, account):
        line = _position_line(bound, row)
        inst = int(bound.book.position_instrument[row])
        if table.is_option[inst]:
            rule = ("short option: max(base - OTM/S, floor) x S + mark" if
                    bound.quantity[row] < 0 else "long option: premium paid, no margin")
        else:
            rule = "delta-one: marginal notional tiers"
        line.update(rule=rule,
                    initial_margin=float(result.per_position["initial_margin"][row]),
                    maintenance_margin=float(result.per_position["maintenance_margin"][row]))
        if "margin_held" in result.per_position:  # the position's own margin and equity
            line.update(margin_held=float(result.per_position["margin_held"][row]),
                        position_equity=float(result.per_position["equity"][row]))
        lines.append(line)
    return {"account": bound.book.account_ids[account], "model": "isolated", "positions": lines,
            "initial_margin": float(result.initial_margin[account]),
            "maintenance_margin": float(result.maintenance_margin[account])}


def explain_cross(bound: BoundBook, config: RiskConfig, result: MarginResult,
                  account: int) -> dict[str, Any]:
    """Per underlying, the netted linear charge and its isolated cap, and the options."""
    table = bound.book.instruments
    per_u = result.per_underlying
    underlyings: dict[str, Any] = {}
    for u_idx, u in enumerate(bound.underlyings):
        if not result.active[account, u_idx]:
            continue
        net = float(per_u["net_notional"][account, u_idx])
        hedged = float(per_u["hedged_notional"][account, u_idx])
        tiered, _ = tiered_charge(np.array([net]), config.isolated.tiers_for(u))
        options = []
        for row in _rows(bound, account):
            inst = int(bound.book.position_instrument[row])
            if table.underlying[inst] == u_idx and table.is_option[inst]:
                line = _position_line(bound, row)
                line["initial_margin"] = float(result.per_position["initial_margin"][row])
                line["maintenance_margin"] = float(result.per_position["maintenance_margin"][row])
                options.append(line)
        underlyings[u] = {
            "net_linear_notional": net,
            "hedged_linear_notional": hedged,
            "tiered_on_net": float(tiered[0]),
            "hedge_charge": config.cross.hedge_initial_rate * hedged,
            "isolated_cap": float(per_u["isolated_linear_initial_margin"][account, u_idx]),
            "linear_initial_margin": float(per_u["linear_initial_margin"][account, u_idx]),
            "options": options,
            "initial_margin": float(per_u["initial_margin"][account, u_idx]),
            "maintenance_margin": float(per_u["maintenance_margin"][account, u_idx]),
        }
    return {"account": bound.book.account_ids[account], "model": "cross",
            "underlyings": underlyings,
            "initial_margin": float(result.initial_margin[account]),
            "maintenance_margin": float(result.maintenance_margin[account])}


@dataclass(frozen=True, slots=True)
class _Priced:
    """One instrument bound to the market by the rules of SPEC 2 and book/bound.py, in scalars."""

    instrument: Instrument
    live: bool  # not dated, or expiring after the snapshot
    years: float
    sigma: float  # NaN unless a live option
    base: float  # moves by (1 + m): mark (delta-one), forward (option); settlement if settled
    mark: float  # USD per coin


def _declared(bound: BoundBook) -> dict[str, Instrument]:
    return {i.name: i for i in bound.book.instruments.instruments}


def _expiry_forward(market: MarketSnapshot, declared: Mapping[str, Instrument],
                    underlying: str, expiry_ns: int) -> float | None:
    """The mark of a future on the same underlying and expiry (linear before inverse, then by
    name), or None."""
    best: tuple[tuple[bool, str], float] | None = None
    for name, value in market.marks.items():
        future = resolve_name(name, declared)
        if future is None or future.kind is not InstrumentKind.FUTURE or \
                future.underlying != underlying or future.expiry_ns != expiry_ns:
            continue
        rank = (future.settlement is Settlement.INVERSE, name)
        if best is None or rank < best[0]:
            best = (rank, float(value))
    return None if best is None else best[1]


def _surface_vol(market: MarketSnapshot, underlying: str, years: float, strike: float) -> float:
    surface = market.underlyings[underlying].vol
    if surface is None:
        return math.nan
    return float(surface.sigma(market.vol_years(np.array([years])), np.array([strike]))[0])


def _price(market: MarketSnapshot, declared: Mapping[str, Instrument],
           instrument: Instrument) -> _Priced:
    u = instrument.underlying
    index = market.underlyings[u].index
    expiry = instrument.expiry_ns
    years = 0.0 if expiry is None else (expiry - market.timestamp_ns) / 1e9 / (365 * 86400)
    if expiry is not None and expiry <= market.timestamp_ns:  # settled: cash at settlement
        settle = market.settlements.get((u, expiry), index)
        mark = settle
        if instrument.strike is not None:
            sign = 1.0 if instrument.right is OptionRight.CALL else -1.0
            mark = max(0.0, sign * (settle - instrument.strike))
        return _Priced(instrument=instrument, live=False, years=years,
                       sigma=math.nan, base=settle, mark=mark)
    if instrument.strike is None:
        price = float(market.marks.get(instrument.name, index))
        return _Priced(instrument=instrument, live=True, years=years,
                       sigma=math.nan, base=price, mark=price)
    assert expiry is not None  # options are dated
    forward = _expiry_forward(market, declared, u, expiry)
    forward = index if forward is None else forward
    sigma = _surface_vol(market, u, years, instrument.strike)
    return _Priced(instrument=instrument, live=True, years=years, sigma=sigma,
                   base=forward, mark=black76_price(forward, instrument.strike, years, sigma,
                                                    instrument.right is OptionRight.CALL))


def _quantity_and_notional(priced: _Priced, size: float, entry: float) -> tuple[float, float]:
    """q (USD P&L per USD of price move) and signed notional at mark of one position."""
    instrument = priced.instrument
    amount = size * instrument.contract_size  # coins, or USD contracts if inverse
    if instrument.settlement is Settlement.INVERSE and not instrument.is_option:
        quantity, notional = amount / entry, amount
    else:
        quantity, notional = amount, amount * priced.mark
    return quantity, notional if priced.live else 0.0


@dataclass(frozen=True, slots=True)
class _Holding:
    row: int
    priced: _Priced
    quantity: float
    notional: float


def _account_holdings(bound: BoundBook, account: int
                      ) -> tuple[list[str], dict[str, list[_Holding]], dict[str, float]]:
    """The account's underlyings (in binding order), positions by underlying and USD value of
    coin collateral by underlying, all from the book and the market snapshot."""
    book, market = bound.book, bound.market
    declared = _declared(bound)
    instruments = book.instruments.instruments
    order = sorted({i.underlying for i in instruments})
    coins = sorted({a.partition("@")[0] for a in book.assets} & set(market.underlyings))
    order += [c for c in coins if c not in order]
    priced: dict[int, _Priced] = {}
    held: dict[str, list[_Holding]] = {}
    for row in _rows(bound, account):
        inst = int(book.position_instrument[row])
        if inst not in priced:
            priced[inst] = _price(market, declared, instruments[inst])
        q, notional = _quantity_and_notional(priced[inst], float(book.size[row]),
                                             float(book.entry_price[row]))
        held.setdefault(instruments[inst].underlying, []).append(
            _Holding(row=row, priced=priced[inst], quantity=q, notional=notional))
    exposure: dict[str, float] = {}
    for col, asset in enumerate(book.assets):
        coin = asset.partition("@")[0]
        if coin in market.underlyings:
            exposure[coin] = exposure.get(coin, 0.0) + \
                float(book.collateral[account, col]) * market.asset_prices[coin]
    return order, held, exposure


def _holding_line(bound: BoundBook, holding: _Holding) -> dict[str, Any]:
    return {"instrument": holding.priced.instrument.name,
            "size": float(bound.book.size[holding.row]),
            "notional": holding.notional, "mark": holding.priced.mark}


def _scenario_changes(market: MarketSnapshot, config: RiskConfig, priced: _Priced,
                      scenarios: tuple[tuple[float, float, float], ...]) -> list[float]:
    """USD value change per unit quantity of one instrument in each scenario."""
    cfg, instrument = config.portfolio, priced.instrument
    if not priced.live:
        return [0.0] * len(scenarios)  # settled: a fixed cash value
    if instrument.strike is None:
        return [priced.base * move for move in linear_moves(cfg)]
    strike, is_call = instrument.strike, instrument.right is OptionRight.CALL
    t_days = max(1.0, priced.years * 365.0)
    power = cfg.vol_shock_power_short if t_days < cfg.vol_shock_reference_days else \
        cfg.vol_shock_power_long
    scale = (cfg.vol_shock_reference_days / t_days) ** power
    changes = []
    for move, shock, _ in scenarios:
        before = priced.sigma
        if cfg.vol_dynamics is VolDynamics.STICKY_MONEYNESS:
            before = _surface_vol(market, instrument.underlying, priced.years,
                                  strike / (1.0 + move))
        shocked = max(cfg.vol_floor, before * (1.0 + shock * scale))
        changes.append(black76_price(priced.base * (1.0 + move), strike, priced.years, shocked,
                                     is_call) - priced.mark)
    return changes


def explain_portfolio(bound: BoundBook, config: RiskConfig, account: int) -> dict[str, Any]:
    """Scalar recomputation of SPEC 3.3 for one account, with every contribution listed.

    Reads only the book and the market snapshot (bound.book, bound.market), never the kernel's
    bound arrays, so a mistake in the market binding shows as a difference from the kernel."""
    cfg, market = config.portfolio, bound.market
    scenarios = scenario_table(cfg)
    collateral_moves = linear_moves(cfg)
    order, held, exposures = _account_holdings(bound, account)
    underlyings: dict[str, Any] = {}
    levels: dict[str, tuple[float, float]] = {}
    for u in order:
        holdings = held.get(u, [])
        exposure = exposures.get(u, 0.0)
        if not holdings and exposure == 0.0:
            continue
        changes = [_scenario_changes(market, config, h.priced, scenarios) for h in holdings]
        pnl = [exposure * move for move in collateral_moves]
        for h, change in zip(holdings, changes, strict=True):
            for s, c in enumerate(change):
                pnl[s] += h.quantity * c
        weighted = [w * p for (_, _, w), p in zip(scenarios, pnl, strict=True)]
        worst = 0
        for s in range(1, len(weighted)):
            if weighted[s] < weighted[worst] - TIE_TOLERANCE * max(1.0, abs(weighted[worst])):
                worst = s
        scan = max(0.0, -weighted[worst])
        nets: dict[tuple[int | None, float | None], float] = {}  # (expiry, strike)
        longs = shorts = 0.0
        for h in holdings:
            instrument = h.priced.instrument
            if instrument.is_option:  # calls and puts of one strike and expiry net
                if h.priced.live:
                    key = (instrument.expiry_ns, instrument.strike)
                    nets[key] = nets.get(key, 0.0) + h.quantity
            elif h.notional > 0:
                longs += h.notional
            else:
                shorts -= h.notional
        option_cont = cfg.option_contingency_rate * market.underlyings[u].index * sum(
            max(0.0, -net) for net in nets.values())
        linear_cont = cfg.linear_contingency_rate * min(longs, shorts)
        level = scan + option_cont + linear_cont
        move, shock, weight = scenarios[worst]
        direction = float(np.sign(move))
        levels[u] = (level, direction)
        positions = [{**_holding_line(bound, h),
                      "pnl_in_worst_scenario": h.quantity * change[worst]}
                     for h, change in zip(holdings, changes, strict=True)]
        underlyings[u] = {
            "scan_risk": scan,
            "worst_scenario": {"price_move": move, "vol_shock": shock, "weight": weight,
                               "pnl": pnl[worst]},
            "option_contingency": option_cont,
            "linear_contingency": linear_cont,
            "contingency": option_cont + linear_cont,
            "level": level,
            "direction": direction,
            "collateral_pnl_in_worst_scenario": exposure * collateral_moves[worst],
            "positions": positions,
        }
    total = sum(level for level, _ in levels.values())
    quad = sum(level * level for level, _ in levels.values())
    for a, (la, da) in levels.items():
        for b, (lb, db) in levels.items():
            if a != b:
                quad += market.correlation_of(a, b) * da * la * db * lb
    aggregated = math.sqrt(max(0.0, quad))
    floor = (1.0 - cfg.max_cross_offset) * total
    scanned = max(aggregated, floor)
    depeg = _depeg_scenario(bound, config, account)
    initial = scanned + depeg
    return {
        "account": bound.book.account_ids[account], "model": "portfolio",
        "underlyings": underlyings, "sum_of_levels": total, "aggregated": aggregated,
        "offset_floor": floor, "correlation_offset": total - scanned,
        "stablecoin_depeg": depeg,
        "initial_margin": initial, "maintenance_margin": cfg.maintenance_fraction * initial,
    }


def _depeg_scenario(bound: BoundBook, config: RiskConfig, account: int) -> float:
    """depeg_weight x the loss of the account's stablecoins revalued at the depeg price."""
    cfg = config.haircuts
    if not cfg.enabled:
        return 0.0
    loss = 0.0
    for col, key in enumerate(bound.book.assets):
        asset = key.partition("@")[0]
        amount = float(bound.book.collateral[account, col])
        if asset in cfg.stablecoins and amount > 0.0:
            loss += amount * max(0.0, float(bound.market.asset_prices[asset]) - cfg.depeg_price)
    return cfg.depeg_weight * loss


def explain_sensitivity(bound: BoundBook, account: int, params: Any = None) -> dict[str, Any]:
    """Scalar recomputation of SPEC 3.4 for one account: WS, VR and CVR by underlying and tenor,
    from the book and the market snapshot with Greeks by bump-and-reprice (no kernel arrays)."""
    from margin_engine.margin.sensitivity_params import SensitivityParams
    from margin_engine.margin.sensitivity_reference import (
        Z99,
        option_sensitivities,
        simm_aggregate,
        tenor_split,
    )

    params = params or SensitivityParams.default()
    market = bound.market
    order, held, exposures = _account_holdings(bound, account)
    n_t = len(params.tenor_days)
    ws: dict[str, float] = {}
    vr: dict[str, list[float]] = {}
    cvr: dict[str, list[float]] = {}
    lines: dict[str, list[dict[str, Any]]] = {}
    for u in order:
        holdings = held.get(u, [])
        exposure = exposures.get(u, 0.0)
        if not holdings and exposure == 0.0:
            continue
        rw = params.risk_weight(u)
        sigma_u = rw / 100 * math.sqrt(365.0 / params.mpor_days) / Z99
        s = 0.01 * exposure
        by_tenor = [0.0] * n_t
        for h in holdings:
            priced, q = h.priced, h.quantity
            per_1pct, vega = 0.0, 0.0  # settled: no sensitivity left
            if priced.live and priced.instrument.strike is not None:
                per_1pct, vega = option_sensitivities(
                    priced.base, priced.instrument.strike, priced.years, priced.sigma,
                    priced.instrument.right is OptionRight.CALL)
                for t, share in enumerate(tenor_split(priced.years * 365.0, params.tenor_days)):
                    by_tenor[t] += q * vega * share
            elif priced.live:
                per_1pct = 0.01 * priced.base
            s += q * per_1pct
            lines.setdefault(u, []).append({**_holding_line(bound, h),
                                            "usd_per_1pct": q * per_1pct,
                                            "vega_per_vol_point": q * vega / 100})
        ws[u] = rw * s
        vr[u] = [params.vega_risk_weight * sigma_u * v for v in by_tenor]
        cvr[u] = [-0.5 * min(1.0, params.mpor_days / t) * sigma_u * v
                  for t, v in zip(params.tenor_days, by_tenor, strict=True)]
    gamma: dict[tuple[str, str], float] = {}
    for a in ws:
        for b in ws:
            if a != b:
                key = (a, b) if a < b else (b, a)  # the market's correlation overrides
                gamma[(a, b)] = market.correlation[key] if key in market.correlation \
                    else params.correlation(a, b)
    result = simm_aggregate(ws, vr, cvr, params.tenor_correlation.tolist(), gamma)
    underlyings = {u: {"risk_weight": params.risk_weight(u), "weighted_delta": ws[u],
                       "vega_risk_by_tenor": dict(zip(map(str, params.tenor_days), vr[u],
                                                      strict=True)),
                       "curvature_risk_by_tenor": dict(zip(map(str, params.tenor_days), cvr[u],
                                                           strict=True)),
                       "positions": lines.get(u, [])} for u in ws}
    return {"account": bound.book.account_ids[account], "model": "sensitivity",
            "underlyings": underlyings, **{k: result[k] for k in (
                "delta_margin", "vega_margin", "curvature_margin", "theta", "lambda")},
            "initial_margin": result["initial_margin"],
            "maintenance_margin": params.maintenance_fraction * result["initial_margin"]}


def explain_var(bound: BoundBook, result: MarginResult, account: int) -> dict[str, Any]:
    """The var model's components of the account (measures and the worst scenario day)."""
    from margin_engine.margin.run import _component

    return {"account": bound.book.account_ids[account], "model": "var",
            **{k: _component(k, float(v[account])) for k, v in result.per_account.items()},
            "initial_margin": float(result.initial_margin[account]),
            "maintenance_margin": float(result.maintenance_margin[account])}

"""Explanations: every contribution to one account's margin, as plain data.

The portfolio explanation is recomputed here from scratch with the scalar Black-76 reference
(one account, plain Python), so it doubles as the slow reference the fused kernel is tested
against; the isolated and cross explanations read the per-position and per-underlying arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook
from margin_engine.core.types import FloatArray
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.portfolio_kernel import TIE_TOLERANCE
from margin_engine.margin.protocol import MarginResult
from margin_engine.margin.scenarios import linear_moves, scenario_sigma, scenario_table
from margin_engine.margin.tiers import tiered_charge
from margin_engine.pricing.reference import black76_price


def _rows(bound: BoundBook, account: int) -> range:
    return range(int(bound.book.offsets[account]), int(bound.book.offsets[account + 1]))


def explain_account(bound: BoundBook, config: RiskConfig, result: MarginResult,
                    account: int, model: Any = None) -> dict[str, Any]:
    if result.model == "portfolio":
        return explain_portfolio(bound, config, account)
    if result.model == "sensitivity":
        from margin_engine.margin.sensitivity import SensitivityModel

        params = model.params if isinstance(model, SensitivityModel) else None
        return explain_sensitivity(bound, account, params)
    if result.model == "var":
        return _explain_var(bound, result, account)
    if result.model == "cross":
        return _explain_cross(bound, config, result, account)
    return _explain_isolated(bound, result, account)


def _position_line(bound: BoundBook, row: int) -> dict[str, Any]:
    inst = int(bound.book.position_instrument[row])
    return {"instrument": bound.book.instruments.instruments[inst].name,
            "size": float(bound.book.size[row]),
            "notional": float(bound.signed_notional[row]),
            "mark": float(bound.mark[inst])}


def _explain_isolated(bound: BoundBook, result: MarginResult, account: int) -> dict[str, Any]:
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
        lines.append(line)
    return {"account": bound.book.account_ids[account], "model": "isolated", "positions": lines,
            "initial_margin": float(result.initial_margin[account]),
            "maintenance_margin": float(result.maintenance_margin[account])}


def _explain_cross(bound: BoundBook, config: RiskConfig, result: MarginResult,
                   account: int) -> dict[str, Any]:
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


def _scenario_changes(bound: BoundBook, config: RiskConfig, inst: int,
                      scenarios: tuple[tuple[float, float, float], ...],
                      sigma_before: FloatArray) -> list[float]:
    """USD value change per unit quantity of one instrument in each scenario (scalar)."""
    table, cfg = bound.book.instruments, config.portfolio
    if not bound.live[inst]:
        return [0.0] * len(scenarios)  # settled: a fixed cash value
    if not table.is_option[inst]:
        return [float(bound.base_price[inst]) * move for move in linear_moves(cfg)]
    years = float(bound.years[inst])
    t_days = max(1.0, years * 365.0)
    power = cfg.vol_shock_power_short if t_days < cfg.vol_shock_reference_days else \
        cfg.vol_shock_power_long
    scale = (cfg.vol_shock_reference_days / t_days) ** power
    sigma = float(bound.sigma[inst])
    forward = float(bound.base_price[inst])  # the expiry's forward, moving with the index
    strike, is_call = float(table.strike[inst]), bool(table.is_call[inst])
    now = black76_price(forward, strike, years, sigma, is_call)
    return [black76_price(forward * (1.0 + move), strike, years,
                          max(cfg.vol_floor, float(base) * (1.0 + shock * scale)), is_call) - now
            for (move, shock, _), base in zip(scenarios, sigma_before, strict=True)]


def explain_portfolio(bound: BoundBook, config: RiskConfig, account: int) -> dict[str, Any]:
    """Scalar recomputation of SPEC 3.3 for one account, with every contribution listed."""
    cfg, table = config.portfolio, bound.book.instruments
    scenarios = scenario_table(cfg)
    sigma_before = scenario_sigma(bound, cfg)
    underlyings: dict[str, Any] = {}
    levels: dict[int, tuple[float, float]] = {}
    for u_idx, u in enumerate(bound.underlyings):
        rows = [r for r in _rows(bound, account)
                if table.underlying[int(bound.book.position_instrument[r])] == u_idx]
        exposure = float(bound.collateral_exposure[account, u_idx])
        if not rows and exposure == 0.0:
            continue
        changes = {r: _scenario_changes(bound, config, int(bound.book.position_instrument[r]),
                                        scenarios, sigma_before[bound.book.position_instrument[r]])
                   for r in rows}
        collateral_moves = linear_moves(cfg)
        pnl = [exposure * move for move in collateral_moves]
        for r in rows:
            q = float(bound.quantity[r])
            for s, change in enumerate(changes[r]):
                pnl[s] += q * change
        weighted = [w * p for (_, _, w), p in zip(scenarios, pnl, strict=True)]
        worst = 0
        for s in range(1, len(weighted)):
            if weighted[s] < weighted[worst] - TIE_TOLERANCE * max(1.0, abs(weighted[worst])):
                worst = s
        scan = max(0.0, -weighted[worst])
        nets: dict[int, float] = {}
        longs = shorts = 0.0
        for r in rows:
            inst = int(bound.book.position_instrument[r])
            if table.is_option[inst] and bound.live[inst]:
                group = int(bound.contingency_group[inst])
                nets[group] = nets.get(group, 0.0) + float(bound.quantity[r])
            elif bound.signed_notional[r] > 0:
                longs += float(bound.signed_notional[r])
            else:
                shorts -= float(bound.signed_notional[r])
        option_cont = cfg.option_contingency_rate * float(bound.index[u_idx]) * sum(
            max(0.0, -net) for net in nets.values())
        linear_cont = cfg.linear_contingency_rate * min(longs, shorts)
        level = scan + option_cont + linear_cont
        move, shock, weight = scenarios[worst]
        direction = float(np.sign(move))
        levels[u_idx] = (level, direction)
        positions = []
        for r in rows:
            line = _position_line(bound, r)
            line["pnl_in_worst_scenario"] = float(bound.quantity[r]) * changes[r][worst]
            positions.append(line)
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
    for i, (li, di) in levels.items():
        for j, (lj, dj) in levels.items():
            if i != j:
                quad += float(bound.correlation[i, j]) * di * li * dj * lj
    aggregated = math.sqrt(max(0.0, quad))
    floor = (1.0 - cfg.max_cross_offset) * total
    initial = max(aggregated, floor)
    return {
        "account": bound.book.account_ids[account], "model": "portfolio",
        "underlyings": underlyings, "sum_of_levels": total, "aggregated": aggregated,
        "offset_floor": floor, "correlation_offset": total - initial,
        "initial_margin": initial, "maintenance_margin": cfg.maintenance_fraction * initial,
    }


def explain_sensitivity(bound: BoundBook, account: int, params: Any = None) -> dict[str, Any]:
    """Scalar recomputation of SPEC 3.4 for one account: WS, VR and CVR by underlying and tenor."""
    from margin_engine.margin.sensitivity import Z99, instrument_sensitivities, underlying_gamma
    from margin_engine.margin.sensitivity_params import SensitivityParams
    from margin_engine.margin.sensitivity_reference import simm_aggregate

    params = params or SensitivityParams.default()
    delta_1pct, vega, tenor_lo, weight_lo = instrument_sensitivities(bound, params)
    gamma_matrix = underlying_gamma(bound, params)
    n_t = len(params.tenor_days)
    ws: dict[str, float] = {}
    vr: dict[str, list[float]] = {}
    cvr: dict[str, list[float]] = {}
    lines: dict[str, list[dict[str, Any]]] = {}
    for u_idx, u in enumerate(bound.underlyings):
        rows = [r for r in _rows(bound, account)
                if bound.book.instruments.underlying[int(bound.book.position_instrument[r])]
                == u_idx]
        exposure = float(bound.collateral_exposure[account, u_idx])
        if not rows and exposure == 0.0:
            continue
        rw = params.risk_weight(u)
        sigma_u = rw / 100 * math.sqrt(365.0 / params.mpor_days) / Z99
        s = 0.01 * exposure
        by_tenor = [0.0] * n_t
        for r in rows:
            inst = int(bound.book.position_instrument[r])
            q = float(bound.quantity[r])
            s += q * float(delta_1pct[inst])
            lo = int(tenor_lo[inst])
            by_tenor[lo] += q * float(vega[inst]) * float(weight_lo[inst])
            if lo + 1 < n_t:
                by_tenor[lo + 1] += q * float(vega[inst]) * (1 - float(weight_lo[inst]))
            lines.setdefault(u, []).append({**_position_line(bound, r),
                                            "usd_per_1pct": q * float(delta_1pct[inst]),
                                            "vega_per_vol_point": q * float(vega[inst]) / 100})
        ws[u] = rw * s
        vr[u] = [params.vega_risk_weight * sigma_u * v for v in by_tenor]
        cvr[u] = [-0.5 * min(1.0, params.mpor_days / t) * sigma_u * v
                  for t, v in zip(params.tenor_days, by_tenor, strict=True)]
    gamma = {(a, b): float(gamma_matrix[i, j]) for i, a in enumerate(bound.underlyings)
             for j, b in enumerate(bound.underlyings) if i != j}
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


def _explain_var(bound: BoundBook, result: MarginResult, account: int) -> dict[str, Any]:
    from margin_engine.margin.run import _component

    return {"account": bound.book.account_ids[account], "model": "var",
            **{k: _component(k, float(v[account])) for k, v in result.per_account.items()},
            "initial_margin": float(result.initial_margin[account]),
            "maintenance_margin": float(result.maintenance_margin[account])}

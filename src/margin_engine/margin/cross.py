"""`cross` (SPEC 3.2): one collateral pool; delta-one positions netted per underlying.

Per account and underlying u, over its delta-one positions with signed notional n_p at mark:
    net = |sum n_p|,  hedged = min(sum of long n_p, sum of short |n_p|)
    IM_u = min( tiered_IM(net) + hedge_initial_rate x hedged,  sum of isolated IM of those rows )
    MM_u = min( tiered_MM(net) + hedge_maintenance_rate x hedged, sum of isolated MM )
Options are charged as in `isolated`. The cap makes cross <= isolated by construction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook
from margin_engine.margin.common import active_cells, collateral_haircuts, per_underlying_sum
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.isolated import position_charges
from margin_engine.margin.protocol import MarginResult, ModelDefaults
from margin_engine.margin.tiers import tiered_charge


class CrossModel(ModelDefaults):
    name = "cross"
    revalues_coins = False

    def explain(self, bound: BoundBook, config: RiskConfig, result: MarginResult,
                account: int) -> dict[str, Any]:
        """Per underlying, the netted linear charge against its isolated cap."""
        from margin_engine.margin.explain import explain_cross

        return explain_cross(bound, config, result, account)

    def compute(self, bound: BoundBook, config: RiskConfig) -> MarginResult:
        table = bound.book.instruments
        iso_initial, iso_maintenance = position_charges(bound, config)
        linear = ~table.is_option[bound.book.position_instrument]
        notional = bound.signed_notional
        net = per_underlying_sum(bound, notional, linear)
        longs = per_underlying_sum(bound, np.maximum(notional, 0.0), linear)
        shorts = per_underlying_sum(bound, np.maximum(-notional, 0.0), linear)
        hedged = np.minimum(longs, shorts)
        cap_initial = per_underlying_sum(bound, iso_initial, linear)
        cap_maintenance = per_underlying_sum(bound, iso_maintenance, linear)

        linear_initial = np.empty_like(net)
        linear_maintenance = np.empty_like(net)
        for u_idx, u in enumerate(bound.underlyings):
            tiers = config.isolated.tiers_for(u)
            im, mm = tiered_charge(net[:, u_idx], tiers)
            linear_initial[:, u_idx] = im + config.cross.hedge_initial_rate * hedged[:, u_idx]
            linear_maintenance[:, u_idx] = (mm + config.cross.hedge_maintenance_rate
                                            * hedged[:, u_idx])
        linear_initial = np.minimum(linear_initial, cap_initial)
        linear_maintenance = np.minimum(linear_maintenance, cap_maintenance)

        option_initial = per_underlying_sum(bound, iso_initial, ~linear)
        option_maintenance = per_underlying_sum(bound, iso_maintenance, ~linear)
        initial_u = linear_initial + option_initial
        maintenance_u = linear_maintenance + option_maintenance
        return MarginResult(
            model=self.name,
            initial_margin=initial_u.sum(axis=1),
            maintenance_margin=maintenance_u.sum(axis=1),
            active=active_cells(bound),
            per_underlying={
                "initial_margin": initial_u, "maintenance_margin": maintenance_u,
                "net_notional": net, "hedged_notional": hedged,
                "linear_initial_margin": linear_initial,
                "isolated_linear_initial_margin": cap_initial,
                "option_initial_margin": option_initial,
            },
            per_position={"initial_margin": np.where(linear, 0.0, iso_initial),
                          "maintenance_margin": np.where(linear, 0.0, iso_maintenance),
                          "isolated_initial_margin": iso_initial},
            collateral_haircut=collateral_haircuts(bound, config, frozenset()).deduction,
        )

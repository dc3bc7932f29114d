"""`isolated` (SPEC 3.1): every position margined alone.

Delta-one (spot, perp, future): IM/MM = tiered charge on |notional at mark|.
Short option, per coin of underlying (S = index, OTM = max(0, K - S) call, max(0, S - K) put):
    IM = max(base - OTM / S, floor) x S + mark,   MM = maintenance_rate x S + mark.
Long option: premium already paid, IM = MM = 0.
Settled (expired) positions carry no margin: zero notional, and no option charge.
"""

from __future__ import annotations

import numpy as np

from margin_engine.book.bound import BoundBook
from margin_engine.core.types import FloatArray
from margin_engine.margin.common import active_cells, collateral_haircuts, per_underlying_sum
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.protocol import MarginResult
from margin_engine.margin.tiers import tiered_charge


def position_charges(bound: BoundBook, config: RiskConfig) -> tuple[FloatArray, FloatArray]:
    """Isolated (initial, maintenance) margin of every position row."""
    book, table, cfg = bound.book, bound.book.instruments, config.isolated
    inst = book.position_instrument
    is_option = table.is_option[inst]
    initial = np.zeros(book.position_count)
    maintenance = np.zeros(book.position_count)

    for u_idx, u in enumerate(table.underlyings):
        rows = np.nonzero(~is_option & (table.underlying[inst] == u_idx))[0]
        if rows.size:
            im, mm = tiered_charge(bound.signed_notional[rows], cfg.tiers_for(u))
            initial[rows], maintenance[rows] = im, mm

    short = np.nonzero(is_option & bound.live[inst] & (bound.quantity < 0.0))[0]
    if short.size:
        i = inst[short]
        spot = bound.index[table.underlying[i]]
        strike = table.strike[i]
        otm = np.where(table.is_call[i], np.maximum(0.0, strike - spot),
                       np.maximum(0.0, spot - strike))
        coins = np.abs(bound.quantity[short])
        rate = np.maximum(cfg.option_initial_base - otm / spot, cfg.option_initial_floor)
        initial[short] = coins * (rate * spot + bound.mark[i])
        maintenance[short] = coins * (cfg.option_maintenance_rate * spot + bound.mark[i])
    return initial, maintenance


class IsolatedModel:
    name = "isolated"
    revalues_coins = False

    def compute(self, bound: BoundBook, config: RiskConfig) -> MarginResult:
        initial, maintenance = position_charges(bound, config)
        return MarginResult(
            model=self.name,
            initial_margin=bound.account_sum(initial),
            maintenance_margin=bound.account_sum(maintenance),
            active=active_cells(bound),
            per_underlying={"initial_margin": per_underlying_sum(bound, initial),
                            "maintenance_margin": per_underlying_sum(bound, maintenance)},
            per_position={"initial_margin": initial, "maintenance_margin": maintenance},
            collateral_haircut=collateral_haircuts(bound, config, frozenset()).deduction,
        )

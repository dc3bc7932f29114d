"""`isolated` (SPEC 3.1): every position margined alone.

Delta-one (spot, perp, future): IM/MM = tiered charge on |notional at mark|.
Short option, per coin of underlying (S = index, OTM = max(0, K - S) call, max(0, S - K) put):
    IM = max(base - OTM / S, floor) x S + mark,   MM = maintenance_rate x S + mark.
Long option: premium already paid, IM = MM = 0.
Settled (expired) positions carry no margin: zero notional, and no option charge.

Each position carries its own margin m_p (USD at market) and is liquidated alone when its
equity e_p = m_p x (1 - h) + unrealised P&L_p falls below its MM, h being the account's
collateral haircut as a fraction of its collateral value. m_p is the position's ``margin``, or
its entry notional / ``leverage``; positions given neither share what is left of the account's
collateral value in proportion to their IM (delta-one: on the entry notional), so a
one-position account holds all of it.
Collateral not held by a position is the account's free balance; a position can lose m_p and
no more (beyond it is bad debt).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from margin_engine.book.bound import BoundBook
from margin_engine.core.errors import InputError
from margin_engine.core.types import FloatArray
from margin_engine.margin.common import active_cells, collateral_haircuts, per_underlying_sum
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.protocol import MarginResult, ModelDefaults
from margin_engine.margin.tiers import tiered_charge


def position_charges(bound: BoundBook, config: RiskConfig, notional: FloatArray | None = None
                     ) -> tuple[FloatArray, FloatArray]:
    """Isolated (initial, maintenance) margin of every position row; ``notional`` replaces the
    signed notional at mark of delta-one rows (e.g. the entry notional)."""
    book, table, cfg = bound.book, bound.book.instruments, config.isolated
    inst = book.position_instrument
    is_option = table.is_option[inst]
    initial = np.zeros(book.position_count)
    maintenance = np.zeros(book.position_count)

    for u_idx, u in enumerate(table.underlyings):
        rows = np.nonzero(~is_option & (table.underlying[inst] == u_idx))[0]
        if rows.size:
            signed = bound.signed_notional if notional is None else notional
            im, mm = tiered_charge(signed[rows], cfg.tiers_for(u))
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


def asked_margins(bound: BoundBook) -> FloatArray:
    """Per position, the isolated margin asked for in USD (``margin``, or entry notional /
    ``leverage``); NaN where neither is given."""
    book = bound.book
    held = np.full(book.position_count, np.nan)
    if book.position_margin is not None:
        held = book.position_margin.copy()
    if book.position_leverage is not None:
        rows = np.isnan(held) & np.isfinite(book.position_leverage)
        entry_notional = np.abs(bound.quantity * bound.entry_usd)
        held[rows] = entry_notional[rows] / book.position_leverage[rows]
    return held


def check_asked_margins(bound: BoundBook, config: RiskConfig) -> None:
    """Refuse an account whose asked-for isolated margins exceed its collateral value, its
    stablecoins counted at face (a margin is posted in them: 120,000 asked on 120,000 USDC is
    accepted with USDC at 0.9995); input validation, the model itself holds what was asked
    for."""
    if bound.book.position_margin is None and bound.book.position_leverage is None:
        return  # nothing asked for
    held = asked_margins(bound)
    asked_sum = bound.account_sum(np.where(np.isfinite(held), held, 0.0))
    pool = _value_at_face(bound, config)
    over = np.nonzero((asked_sum > 0.0) & (asked_sum > pool * (1 + 1e-12) + 1e-9))[0]
    if over.size:
        a = int(over[0])
        raise InputError(f"isolated margins within the account's collateral value "
                         f"({pool[a]:,.2f} USD)", field="margin",
                         value=f"{asked_sum[a]:,.2f} USD", account=bound.book.account_ids[a])


def _value_at_face(bound: BoundBook, config: RiskConfig) -> FloatArray:
    """Per account, the collateral value with each stablecoin worth at least 1 USD a unit."""
    from margin_engine.book.bound import asset_prices
    from margin_engine.collateral.haircuts import split_collateral_key

    book = bound.book
    if not book.assets:
        return bound.collateral_value
    amounts = np.asarray(book.collateral, dtype=np.float64).reshape(bound.account_count,
                                                                    len(book.assets))
    stable = np.array([split_collateral_key(a)[0] in config.haircuts.stablecoins
                       for a in book.assets])
    below_par = np.where(stable, np.maximum(0.0, 1.0 - asset_prices(book, bound.market)), 0.0)
    face: FloatArray = bound.collateral_value + np.maximum(amounts, 0.0) @ below_par
    return face


def isolated_allocation(bound: BoundBook, initial: FloatArray, pool: FloatArray) -> FloatArray:
    """Margin held by every position (USD): what it asked for, else the account's ``pool``
    less what was asked for, split in proportion to ``initial``."""
    held = asked_margins(bound)
    asked = np.isfinite(held)
    asked_sum = bound.account_sum(np.where(asked, held, 0.0))
    weights = np.where(asked, 0.0, initial)
    weight_sum = bound.account_sum(weights)
    share = np.divide(np.maximum(pool - asked_sum, 0.0), weight_sum,
                      out=np.zeros_like(pool), where=weight_sum > 0.0)
    allocated: FloatArray = np.where(asked, held, weights * share[bound.position_account])
    return allocated


class IsolatedModel(ModelDefaults):
    name = "isolated"
    revalues_coins = False

    def explain(self, bound: BoundBook, config: RiskConfig, result: MarginResult,
                account: int) -> dict[str, Any]:
        """Each position's charges, margin held and equity."""
        from margin_engine.margin.explain import explain_isolated

        return explain_isolated(bound, result, account)

    def compute(self, bound: BoundBook, config: RiskConfig,
                allocation: FloatArray | None = None) -> MarginResult:
        """``allocation``: margin held per position, fixed (e.g. while searching a position's
        liquidation price); by default from the book and today's prices."""
        initial, maintenance = position_charges(bound, config)
        haircut = collateral_haircuts(bound, config, frozenset()).deduction
        if allocation is None:
            # Shares in proportion to IM on the entry notional (options: today's IM), so that
            # a price move of one position does not shift another's margin.
            live = bound.live[bound.book.position_instrument]
            entry_notional = np.where(live, bound.quantity * bound.entry_usd, 0.0)
            at_entry, _ = position_charges(bound, config, entry_notional)
            allocation = isolated_allocation(bound, at_entry, bound.collateral_value)
        kept = 1.0 - np.divide(haircut, bound.collateral_value,
                               out=np.zeros_like(haircut), where=bound.collateral_value > 0.0)
        pnl = bound.quantity * (bound.mark[bound.book.position_instrument] - bound.entry_usd)
        position_equity = allocation * kept[bound.position_account] + pnl
        return MarginResult(
            model=self.name,
            initial_margin=bound.account_sum(initial),
            maintenance_margin=bound.account_sum(maintenance),
            active=active_cells(bound),
            per_underlying={"initial_margin": per_underlying_sum(bound, initial),
                            "maintenance_margin": per_underlying_sum(bound, maintenance)},
            per_position={"initial_margin": initial, "maintenance_margin": maintenance,
                          "margin_held": allocation, "equity": position_equity,
                          "unrealised_pnl": pnl},
            collateral_haircut=haircut,
            position_equity=position_equity,
        )

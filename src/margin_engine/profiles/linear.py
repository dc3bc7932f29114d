"""Venues that margin delta-one positions by notional brackets (Binance USD-M and PM, dYdX v4,
Hyperliquid): the shared computation.

Per position p with notional N_p = |q_p| x mark_p (USD) in its symbol's bracket table:
    IM_p = N_p / max_leverage,   MM_p = N_p x mmr - cum        (brackets.py)
Cross accounts share one equity E = sum_assets amount x price x collateral_rate + sum_p P&L_p
and are liquidated when E < ratio x sum_p MM_p (ratio 1, Binance PM 1.05). An account in
``isolated`` mode holds one margin m_p per position (the engine's split, isolated.py) and
position p is liquidated when m_p + P&L_p < MM_p. Holding the other positions at their marks,
the level S where E(S) = ratio x MM(S) is exactly the exchanges' published liquidation-price
formula, e.g. Binance USD-M (one-way mode):

    LP = (WB - TMM_1 + UPNL_1 + cum_1 - side_1 x pos_1 x EP_1) / (pos_1 x mmr_1 - side_1 x pos_1)

with TMM_1, UPNL_1 the other contracts' MM and unrealised P&L (both 0 when isolated).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from margin_engine.core.bounds import AT_LEAST_ONE, COLLATERAL_RATE, bounded
from margin_engine.core.types import FloatArray, IntArray
from margin_engine.domain.instruments import InstrumentKind, MarginMode
from margin_engine.margin.isolated import isolated_allocation
from margin_engine.pricing.black76 import price as black76_price
from margin_engine.profiles.base import (
    ProfileBook,
    ProfileInfo,
    Requirement,
    State,
    Term,
    Unsupported,
    first_reason,
    kind_flags,
)
from margin_engine.profiles.brackets import BracketTable
from margin_engine.profiles.scenarios import legs_of


@dataclass(frozen=True, slots=True, kw_only=True)
class LinearVenue:
    """Parameters of a bracket-margined venue."""

    tables: Mapping[str, BracketTable]  # by underlying
    default_table: BracketTable
    lists_dated_futures: bool = True
    stable_collateral_only: bool = False
    collateral_rates: Mapping[str, float] = bounded(COLLATERAL_RATE,
                                                    default_factory=dict)  # asset -> rate
    liquidation_ratio: float = bounded(AT_LEAST_ONE, 1.0)  # liquidated below ratio x MM
    # the most a liquidation charges, as a fraction of the notional it closes (dYdX's cap)
    liquidation_fee_cap: float | None = None
    # below this fraction of MM the venue's backstop takes the account over (Hyperliquid)
    backstop_fraction: float | None = None


def binance_liquidation_price(*, wallet: float, other_maintenance: float, other_pnl: float,
                              maintenance_amount: float, side: int, size: float,
                              entry: float, maintenance_rate: float) -> float:
    """Binance USD-M's published formula for one contract in one-way mode (the slow, obvious
    reference the vectorised root search is checked against)."""
    return ((wallet - other_maintenance + other_pnl + maintenance_amount - side * size * entry)
            / (size * maintenance_rate - side * size))


# the venue parameters a profile file may set (bracket tables come from leverage-tier files)
SETTABLE = ("collateral_rates", "liquidation_ratio")


class LinearProfile:
    """A bracket-margined venue; ``info`` and ``venue`` describe which one."""

    uses_brackets = True

    def __init__(self, info: ProfileInfo, venue: LinearVenue) -> None:
        self.info = info
        self.venue = venue

    def configured(self, parameters: Mapping[str, Any], tiers: Mapping[str, BracketTable],
                   source: str) -> LinearProfile:
        """The same venue with a profile file's tables (by underlying) and parameters."""
        from margin_engine.profiles.files import override

        venue = replace(self.venue, tables={**self.venue.tables, **tiers})
        return LinearProfile(self.info, override(venue, parameters, where="parameters",
                                                 source=source, settable=SETTABLE))

    def parameters(self) -> dict[str, Any]:
        from margin_engine.profiles.files import parameters_of

        return parameters_of(self.venue, SETTABLE)

    def table_for(self, underlying: str) -> BracketTable:
        return self.venue.tables.get(underlying, self.venue.default_table)

    def unsupported(self, pb: ProfileBook) -> list[Unsupported | None]:
        checks = [(pb.option, Unsupported.OPTIONS),
                  (pb.inverse & ~pb.option, Unsupported.INVERSE),
                  (kind_flags(pb, InstrumentKind.SPOT), Unsupported.SPOT)]
        if not self.venue.lists_dated_futures:
            checks.append((kind_flags(pb, InstrumentKind.FUTURE) & pb.live,
                           Unsupported.DATED_FUTURES))
        if self.venue.stable_collateral_only:
            other = (pb.non_stable_non_coin > 0.0) | (pb.coin_exposure.sum(axis=1) != 0.0)
            checks.append((other, Unsupported.COLLATERAL))
        return first_reason(pb, checks)

    def _charges(self, pb: ProfileBook, state: State) -> tuple[FloatArray, FloatArray]:
        """Per position (IM, MM) at the state, (positions, k)."""
        notional = np.abs(pb.quantity[:, None] * state.mark)
        notional = np.where((pb.option | ~pb.live)[:, None], 0.0, notional)
        initial = np.zeros_like(notional)
        maintenance = np.zeros_like(notional)
        for u_idx, u in enumerate(pb.underlyings):
            rows = pb.underlying == u_idx
            if rows.any():
                table = self.table_for(u)
                initial[rows] = table.initial(notional[rows])
                maintenance[rows] = table.maintenance(notional[rows])
        return initial, maintenance

    def _equity(self, pb: ProfileBook, state: State) -> FloatArray:
        """Venue equity: collateral x collateral rate + unrealised P&L, (accounts, k)."""
        rates = self.venue.collateral_rates
        book = pb.bound.book
        collateral = state.collateral.copy()
        if rates and book.assets:
            from margin_engine.book.bound import asset_prices

            prices = asset_prices(book, pb.bound.market)
            for col, key in enumerate(book.assets):
                asset = key.partition("@")[0]
                rate = rates.get(asset, 1.0)
                if rate == 1.0:
                    continue
                value = book.collateral[:, col] * prices[col]
                if asset in pb.underlyings:
                    value = value[:, None] * state.coin_factor[:, pb.underlyings.index(asset), :]
                else:
                    value = np.broadcast_to(value[:, None], collateral.shape)
                collateral -= (1.0 - rate) * np.maximum(value, 0.0)
        equity: FloatArray = collateral + pb.account_sum(state.pnl)
        return equity

    def requirement(self, pb: ProfileBook, state: State) -> Requirement:
        initial_p, maintenance_p = self._charges(pb, state)
        initial = pb.account_sum(initial_p)
        maintenance = pb.account_sum(maintenance_p)
        equity = self._equity(pb, state)
        position_gap = None
        isolated = pb.is_mode(MarginMode.ISOLATED)
        if isolated.any():
            # Each isolated position holds its own margin, fixed at today's split (on the
            # entry notional) so that moving one position's price does not move another's.
            entry_notional = np.where(pb.option | ~pb.live, 0.0, np.abs(pb.quantity
                                                                         * pb.entry_usd))
            weights = np.zeros_like(entry_notional)
            for u_idx, u in enumerate(pb.underlyings):
                rows = pb.underlying == u_idx
                if rows.any():
                    weights[rows] = self.table_for(u).initial(entry_notional[rows])
            held = isolated_allocation(pb.bound, weights, pb.bound.collateral_value)
            gap = held[:, None] + state.pnl - maintenance_p
            position_gap = np.where(isolated[pb.account][:, None], gap, np.nan)
        return Requirement(
            initial=initial, maintenance=maintenance, equity=equity,
            threshold=self.venue.liquidation_ratio * maintenance,
            terms={Term.LINEAR_TIERS: initial},
            details=self._details(pb, state, initial, maintenance),
            position_gap=position_gap)

    def _details(self, pb: ProfileBook, state: State, initial: FloatArray,
                 maintenance: FloatArray) -> dict[str, FloatArray]:
        """The liquidation ratio, and where the venue publishes them: the most its
        liquidation can charge (fee cap x the delta-one notional it would close) and the
        equity below which its backstop takes over (fraction x MM)."""
        details = {"maintenance_ratio_threshold": np.full_like(
            initial, self.venue.liquidation_ratio)}
        if self.venue.liquidation_fee_cap is not None:
            notional = np.where((pb.option | ~pb.live)[:, None], 0.0,
                                np.abs(pb.quantity[:, None] * state.mark))
            details["liquidation_fee_cap"] = self.venue.liquidation_fee_cap * \
                pb.account_sum(notional)
        if self.venue.backstop_fraction is not None:
            details["backstop_threshold"] = self.venue.backstop_fraction * maintenance
        return details

    def moved_gap(self, pb: ProfileBook, u: int
                  ) -> Callable[[IntArray, FloatArray], FloatArray]:
        """``evaluate(accounts, levels)``: the part of equity - ratio x MM that moves with
        underlying ``u`` at those (account, level) pairs of accounts sharing one equity
        (``requirement`` gives the rest; isolated positions are searched through it):

            G = C_u (r - 1) - sum_c (1 - rate_c) max(v_c r, 0)
                + sum_u [q (M0 r - entry) - ratio x MM(|q M0 r|)],

        r = level / index, C_u the coin collateral of u, v_c its columns with a rate below 1.
        """
        legs = legs_of(pb, u)
        table = self.table_for(pb.underlyings[u])
        index = float(pb.index[u])
        exposure = pb.coin_exposure[:, u]
        haircut, held = self._haircut_columns(pb, pb.underlyings[u])
        ratio = self.venue.liquidation_ratio

        def evaluate(accounts: IntArray, levels: FloatArray) -> FloatArray:
            r = levels / index
            first = legs.start[accounts]
            counts = legs.start[accounts + 1] - first
            query = np.repeat(np.arange(accounts.size), counts)
            rows = first[query] + np.arange(query.size) - np.repeat(np.cumsum(counts) - counts,
                                                                    counts)
            mark = legs.mark[rows] * r[query]
            option = legs.option[rows]
            if option.any():
                mark[option] = black76_price(legs.forward[rows][option] * r[query][option],
                                             legs.strike[rows][option],
                                             legs.years[rows][option],
                                             legs.sigma[rows][option],
                                             legs.is_call[rows][option])
            notional = np.where(option, 0.0, np.abs(legs.quantity[rows] * mark))
            per_leg = legs.quantity[rows] * (mark - legs.entry[rows]) - ratio * \
                table.maintenance(notional)
            out: FloatArray = exposure[accounts] * (r - 1.0) + np.bincount(
                query, weights=per_leg, minlength=accounts.size)
            if haircut.size:
                out -= (haircut * np.maximum(held[accounts] * r[:, None], 0.0)).sum(axis=1)
            return out

        return evaluate

    def _haircut_columns(self, pb: ProfileBook, asset: str) -> tuple[FloatArray, FloatArray]:
        """(1 - rate) per collateral column of ``asset`` with a rate below 1 and its USD
        values today, (accounts, columns)."""
        rates = self.venue.collateral_rates
        book = pb.bound.book
        cols = [c for c, key in enumerate(book.assets)
                if key.partition("@")[0] == asset and rates.get(asset, 1.0) != 1.0]
        if not cols:
            return np.zeros(0), np.zeros((pb.accounts, 0))
        from margin_engine.book.bound import asset_prices

        prices = asset_prices(book, pb.bound.market)
        return (np.full(len(cols), 1.0 - rates[asset]),
                book.collateral[:, cols] * prices[cols])

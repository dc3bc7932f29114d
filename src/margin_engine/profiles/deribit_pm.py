"""`deribit-pm`: Deribit portfolio margin, per settlement currency (S:PM) and across currencies
(X:PM).

Cells: each account's positions are grouped by settlement currency and underlying: inverse
(coin-settled) contracts of underlying u form u's coin cell, scanned in coin; linear (USDC)
contracts of u form u's USD cell, scanned in USD. Per cell:

* price moves: 9 evenly spaced buckets over +/- range (BTC 16 %, ETH 18 %), each with vol
  up / same / down (``scenarios.shocked_sigma``: range up 0.5, down 0.25, powers 0.30 / 0.13,
  vol up floored at 0.5 for BTC-style parameters as published for the price-range family);
* extended table: -66 %, -33 %, +50 %, +100 %, ..., +500 %, vol up, options only (delta-one
  positions move to the range end of the same sign), each loss dampened;
* scan loss R = max(0, -min_s w_s P(s));
* roll shock: every delta-one position shocked against it by ``roll_rate`` (0.5 %) of its
  exposure (not netted);
* contingency: 0.01 coin (or 0.01 x index USD) per net short option contract per strike and
  expiry, and 1 % of the offsetting delta-one exposure;
* IM_cell = R + roll + contingency; MM = 0.8 x IM.

Coin cell P&L is in coin: an inverse perp or future of N USD moving from M to M (1 + m) gains
N (1/M - 1/(M (1 + m))) coin (so a short loses m / (1 + m) of its coin exposure N / M: at
+18 %, 0.152542 per coin); an inverse option's P&L is q (V1/F1 - V0/F0). A coin cell's IM is
converted to USD at the (moved) index.
X:PM adds every cell's IM in USD and compares it with the account's USD equity across
currencies; its P&L offset: coin collateral of an underlying is revalued in that underlying's
USD cell where that lowers the cell's loss (1 BTC held against a short BTC-USDC perp leaves no
USD risk; collateral alone is never charged here, its price risk is the venue's haircut).
S:PM is the same cells read one by one (``details`` carry every coin cell's IM in coin).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numba import njit

from margin_engine.core.bounds import FRACTION, MAINTENANCE_SHARE, PRICE_RANGE, bounded
from margin_engine.core.types import BoolArray, FloatArray, IntArray
from margin_engine.profiles.base import (
    ProfileBook,
    ProfileInfo,
    Requirement,
    Source,
    State,
    Term,
    Unsupported,
)
from margin_engine.profiles.files import ScenarioParameters
from margin_engine.profiles.scenarios import (
    Grid,
    Scenario,
    VolShock,
    VolShockParams,
    leg_mark,
    leg_scenarios,
    legs_of,
    net_short_option_contracts,
    option_scenarios,
    revalue,
    standard_buckets,
    worst,
    worst_loss,
)

READ = "2026-12-02"
SUPPORT = Source(title="Deribit Support: Portfolio Margin (S:PM and X:PM; price range, 9 "
                       "buckets, vol range up/down, extended table with dampener)",
                 url="https://support.deribit.com/hc/en-us/articles/25944756247837-Portfolio-"
                     "Margin", published="undated (updated)", read=READ)
LEGACY = Source(title="Deribit: Portfolio Margin (contingency 0.01 per net short option per "
                      "strike; 1 % of offsetting futures)",
                url="https://www.deribit.com/pages/docs/portfoliomargin", published="undated",
                read=READ)
PARAMS = Source(title="Published Deribit BTC parameters (priceRange 0.16, volRangeUp 0.5, "
                      "volRangeDown 0.25, minVolForShockUp 0.5, vega powers 0.3 / 0.13)",
                url="https://docs.oreome.com/docs/scenario/risk-scenario-advanced",
                published="undated", read=READ)
EXAMPLE = Source(title="Deribit X:PM margin page, short 1 ETH-PERPETUAL, index 1949.34, mark "
                       "1949.49: IM 0.157462 ETH, MM 0.125969 ETH (worst case 0.152464 at "
                       "+18 % plus roll shock 0.004997)", url="https://www.deribit.com/",
                 published="2026-02-15", read=READ)

# Tail moves and their dampeners. Deribit publishes the moves and that a dampener applies but
# not its values; these are Derive's published tail dampeners for the same moves.
EXTENDED = ((-0.66, 0.21), (-0.33, 0.42), (0.50, 0.27), (1.0, 0.13), (2.0, 0.069),
            (3.0, 0.046), (4.0, 0.034), (5.0, 0.027))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeribitParams:
    ranges: Mapping[str, float] = bounded(PRICE_RANGE,
                                          default_factory=lambda: {"BTC": 0.16, "ETH": 0.18})
    default_range: float = bounded(PRICE_RANGE, 0.18)
    vol: VolShockParams = VolShockParams(range_up=0.5, range_down=0.25, min_vol_up=0.5)
    roll_rate: float = bounded(FRACTION, 0.005)
    option_contingency: float = bounded(FRACTION, 0.01)  # coin per net short contract
    linear_contingency: float = bounded(FRACTION, 0.01)  # of offsetting delta-one exposure
    maintenance_fraction: float = bounded(MAINTENANCE_SHARE, 0.8)
    cross_collateral: bool = True  # X:PM (False: S:PM cells, no coin-collateral offset)

    def grid(self) -> Grid:
        scenarios = standard_buckets(4) + tuple(
            Scenario(move=m, vol=VolShock.UP, weight=w, scaled=False, extended=True)
            for m, w in EXTENDED)
        return Grid(scenarios=scenarios, ranges=self.ranges, default_range=self.default_range,
                    vol=self.vol)


INFO = ProfileInfo(
    name="deribit-pm", venue="Deribit portfolio margin (X:PM)",
    summary="Scenario risk matrix per settlement currency and underlying (BTC +/-16 %, ETH "
            "+/-18 % in 9 buckets x vol up/same/down, dampened extended table for options), "
            "roll shock and contingencies, MM = 0.8 x IM; coin-settled cells in coin.",
    parameters_as_of="2026-02-15",
    sources=(SUPPORT, LEGACY, PARAMS, EXAMPLE),
    leaves_out=("the extended table's own dampener values (Derive's published ones are used)",
                "the delta shock", "the roll shock's term structure: a flat 0.5 % of each "
                "delta-one position's exposure, inferred from the published ETH-PERPETUAL "
                "example", "cross-currency netting of scenario P&L beyond coin collateral",
                "collateral haircuts of X:PM", "open orders"))


class DeribitPortfolioMargin(ScenarioParameters):
    def __init__(self, params: DeribitParams | None = None) -> None:
        self.params = params or DeribitParams()
        self.grid = self.params.grid()
        self.info = INFO

    def unsupported(self, pb: ProfileBook) -> list[Unsupported | None]:
        return [None] * pb.accounts

    def requirement(self, pb: ProfileBook, state: State) -> Requirement:
        p, grid = self.params, self.grid
        n_u = len(pb.underlyings)
        reval = revalue(pb, state, grid)
        usd_pnl = reval.pnl  # (P, k, S)
        coin_pnl = np.zeros_like(usd_pnl)
        inv_lin = pb.inverse & ~pb.option & pb.live
        if inv_lin.any():
            m = reval.move[inv_lin][:, None, :]
            mark = state.mark[inv_lin][:, :, None]
            coin_pnl[inv_lin] = pb.size_cs[inv_lin, None, None] * (1.0 / mark
                                                                    - 1.0 / (mark * (1 + m)))
        inv_opt = pb.inverse & pb.option
        if inv_opt.any():
            f0 = state.forward[inv_opt][:, :, None]
            f1 = f0 * (1.0 + reval.move[inv_opt][:, None, :])
            coin_pnl[inv_opt] = pb.quantity[inv_opt, None, None] * (
                reval.option_value[inv_opt] / f1 - state.mark[inv_opt][:, :, None] / f0)
        coin_cell = pb.inverse
        # cell id: underlying (coin cell) or n_u + underlying (USD cell)
        cell = np.where(coin_cell, pb.underlying, n_u + pb.underlying)
        values = np.where(coin_cell[:, None, None], coin_pnl, usd_pnl)
        k = state.k
        cells = pb.cell_sum(values, cell, 2 * n_u)
        loss, at = worst(cells, grid)  # (a, cells, k)
        if p.cross_collateral:  # coin collateral may offset its underlying's USD cell
            ranges = np.array([grid.range_of(u) for u in pb.underlyings])
            lin = np.array([[s.move * r if s.scaled else (np.sign(s.move) * r if s.extended
                                                           else s.move)
                             for s in grid.scenarios] for r in ranges])  # (u, S)
            exposure = pb.coin_exposure[:, :, None] * state.coin_factor  # (a, u, k)
            offset_cells = cells.copy()
            offset_cells[:, n_u:] += exposure[:, :, :, None] * lin[None, :, None, :]
            offset_loss, offset_at = worst(offset_cells, grid)
            better = offset_loss < loss  # the offset only ever lowers a cell's loss
            loss = np.where(better, offset_loss, loss)
            at = np.where(better, offset_at, at)
        extended = np.array([s.extended for s in grid.scenarios])[at]

        # roll shock and contingencies, per cell
        coin_per_usd = np.zeros_like(state.mark)  # 1 / mark on inverse delta-one rows only
        np.divide(1.0, state.mark, out=coin_per_usd, where=inv_lin[:, None])
        expo_coin = np.abs(pb.size_cs)[:, None] * coin_per_usd
        lin_lin = ~pb.inverse & ~pb.option & pb.live
        expo_usd = np.where(lin_lin[:, None], np.abs(pb.quantity[:, None] * state.mark), 0.0)
        roll = pb.cell_sum(p.roll_rate * (expo_coin + expo_usd), cell, 2 * n_u)
        signed_coin = pb.size_cs[:, None] * coin_per_usd
        signed_usd = np.where(lin_lin[:, None], pb.quantity[:, None] * state.mark, 0.0)
        signed = signed_coin + signed_usd
        longs = pb.cell_sum(np.maximum(signed, 0.0), cell, 2 * n_u)
        shorts = pb.cell_sum(np.maximum(-signed, 0.0), cell, 2 * n_u)
        contingency = p.linear_contingency * np.minimum(longs, shorts)
        short_opts = self._net_short_by_cell(pb, cell, 2 * n_u)  # (a, cells) coins
        index_cell = np.concatenate([np.ones(n_u), pb.index])  # coin cells: 1 coin per contract
        moved_index = np.concatenate([state.coin_factor, state.coin_factor], axis=1) * \
            index_cell[None, :, None]
        contingency = contingency + p.option_contingency * short_opts[:, :, None] * moved_index

        cell_im = loss + roll + contingency
        to_usd = np.concatenate([pb.index[None, :, None] * state.coin_factor,
                                 np.ones((pb.accounts, n_u, k))], axis=1)
        usd = cell_im * to_usd
        initial = usd.sum(axis=1)
        scan_usd = loss * to_usd
        details: dict[str, FloatArray] = {}
        for u_idx, u in enumerate(pb.underlyings):
            details[f"im_coin_{u}"] = cell_im[:, u_idx]
            details[f"scan_coin_{u}"] = loss[:, u_idx]
            details[f"roll_coin_{u}"] = roll[:, u_idx]
        return Requirement(
            initial=initial, maintenance=p.maintenance_fraction * initial,
            equity=state.collateral + pb.account_sum(state.pnl),
            threshold=p.maintenance_fraction * initial,
            terms={Term.PRICE_SCENARIOS: np.where(extended, 0.0, scan_usd).sum(axis=1),
                   Term.EXTENDED_MOVES: np.where(extended, scan_usd, 0.0).sum(axis=1),
                   Term.BASIS: (roll * to_usd).sum(axis=1),
                   Term.CONTINGENCY: (contingency * to_usd).sum(axis=1)},
            details=details)

    @staticmethod
    def _net_short_by_cell(pb: ProfileBook, cell: np.ndarray, n_cells: int) -> FloatArray:
        """Net short option coins per (account, cell): calls and puts at one strike net."""
        out = np.zeros((pb.accounts, n_cells))
        n_u = len(pb.underlyings)
        for coin in (True, False):
            sub = pb.inverse == coin
            per_u = net_short_option_contracts(pb, sub)
            cols = np.arange(n_u) if coin else n_u + np.arange(n_u)
            out[:, cols] += per_u
        return out


    def moved_gap(self, pb: ProfileBook, u: int
                  ) -> Callable[[IntArray, FloatArray], FloatArray]:
        """``evaluate(accounts, levels)``: the part of equity - threshold that moves with
        underlying ``u`` at those (account, level) pairs (``requirement`` gives the rest):

            G = C_u x (r - 1) + sum_u P&L - mm x (IM_coin x index x r + IM_usd),

        r = level / index, C_u the account's coin collateral of u (USD today), IM_cell =
        scan loss + roll + contingency of u's two cells as in ``requirement``."""
        p = self.params
        legs = legs_of(pb, u)
        sc = leg_scenarios(legs, self.grid, pb.underlyings[u])
        n_u = len(pb.underlyings)
        short = self._net_short_by_cell(pb, np.zeros(0), 2 * n_u)
        short_coin = np.ascontiguousarray(short[:, u])
        short_usd = np.ascontiguousarray(short[:, n_u + u])
        exposure = np.ascontiguousarray(pb.coin_exposure[:, u])
        index = float(pb.index[u])

        def evaluate(accounts: IntArray, levels: FloatArray) -> FloatArray:
            out = np.empty(accounts.size)
            _deribit_part_nb(legs.start, legs.quantity, legs.size_cs, legs.mark, legs.forward,
                             legs.entry, legs.option, legs.inverse, legs.strike,
                             legs.log_strike, legs.years, legs.sigma, legs.is_call, sc.root,
                             sc.growth, sc.log_growth, sc.lin, sc.weight, short_coin,
                             short_usd, exposure, index, p.roll_rate, p.linear_contingency,
                             p.option_contingency, p.maintenance_fraction,
                             p.cross_collateral, accounts.astype(np.int64),
                             levels / index, out)
            return out

        return evaluate


@njit(cache=True)
def _deribit_part_nb(start: IntArray, quantity: FloatArray, size_cs: FloatArray,
                     mark: FloatArray, forward: FloatArray, entry: FloatArray,
                     option: BoolArray, inverse: BoolArray, strike: FloatArray,
                     log_strike: FloatArray, years: FloatArray, sigma: FloatArray,
                     is_call: BoolArray, root: FloatArray, growth: FloatArray,
                     log_growth: FloatArray, lin: FloatArray, weight: FloatArray,
                     short_coin: FloatArray, short_usd: FloatArray, exposure: FloatArray,
                     index: float, roll_rate: float, lin_cont: float, opt_cont: float,
                     mm: float, cross: bool, accounts: IntArray, ratios: FloatArray,
                     out: FloatArray) -> None:
    """out[j] = moved part of the gap of account accounts[j] at index ratio ratios[j]
    (see ``DeribitPortfolioMargin.moved_gap``). Coin cell P&L: options q (V_s / F_s - V / F),
    delta-one N (1 / M - 1 / (M (1 + m_s))); USD cell: options q (V_s - V), delta-one
    q M m_s, plus (X:PM) the coin collateral C r m_s where that lowers the loss."""
    n_s = weight.shape[0]
    for j in range(accounts.shape[0]):
        a, r = accounts[j], ratios[j]
        coin, usd, value = np.zeros(n_s), np.zeros(n_s), np.empty(n_s)
        pnl = roll_c = roll_u = long_c = short_c = long_u = short_u = 0.0
        for i in range(start[a], start[a + 1]):
            f, m = leg_mark(forward[i], strike[i], years[i], sigma[i], is_call[i], option[i],
                            mark[i], r)
            q = quantity[i]
            pnl += q * (m - entry[i])
            if option[i]:
                option_scenarios(f, strike[i], log_strike[i], is_call[i], root[i], growth,
                                 log_growth, value)
                if inverse[i]:
                    for s in range(n_s):
                        coin[s] += q * (value[s] / (f * growth[s]) - m / f)
                else:
                    for s in range(n_s):
                        usd[s] += q * (value[s] - m)
            elif inverse[i]:
                n = size_cs[i]
                for s in range(n_s):
                    coin[s] += n * (1.0 / m - 1.0 / (m * (1.0 + lin[s])))
                signed = n * (1.0 / m)
                roll_c += roll_rate * abs(signed)
                long_c += max(signed, 0.0)
                short_c += max(-signed, 0.0)
            else:
                signed = q * m
                for s in range(n_s):
                    usd[s] += signed * lin[s]
                roll_u += roll_rate * abs(signed)
                long_u += max(signed, 0.0)
                short_u += max(-signed, 0.0)
        loss_c = worst_loss(coin, weight)
        loss_u = worst_loss(usd, weight)
        if cross:
            held = exposure[a] * r
            for s in range(n_s):
                usd[s] += held * lin[s]
            loss_u = min(loss_u, worst_loss(usd, weight))
        im_c = loss_c + roll_c + (lin_cont * min(long_c, short_c) + opt_cont * short_coin[a] * r)
        im_u = loss_u + roll_u + (lin_cont * min(long_u, short_u)
                                  + opt_cont * short_usd[a] * (r * index))
        out[j] = exposure[a] * (r - 1.0) + pnl - mm * (im_c * (index * r) + im_u)


def profile(params: DeribitParams | None = None) -> DeribitPortfolioMargin:
    return DeribitPortfolioMargin(params)

"""`okx-pm`: OKX portfolio margin mode, one risk unit per underlying (USD).

    MR1 spot shock: worst loss at moves +/-4, 8, 12 % (BTC, ETH; others +/-8, 16, 25 %),
        vols unchanged, coin collateral of the unit included
    MR2 time value: one day of option time decay lost (net, floored at 0)
    MR3 volatility: worst loss of vol up / down (the Deribit-family term-scaled shock) at the
        unchanged price
    MR4 basis: 5 % annualised x |dated future notional| x years to expiry (min one day)
    MR6 extreme move: worst loss at +/-24 % (others +/-50 %) with vol up, counted at 1/3
    MR7 minimum charge: 0.2 % of the unit's gross notional
    MMR = sum over units of max(MR1 + MR2 + MR3 + MR4, MR6, MR7);  IMR = 1.3 x MMR.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
from numba import njit

from margin_engine.core.bounds import (
    ANNUAL_RATE,
    FRACTION,
    IM_MULTIPLE,
    PRICE_RANGE,
    bounded,
)
from margin_engine.core.types import BoolArray, FloatArray, IntArray
from margin_engine.domain.instruments import InstrumentKind
from margin_engine.pricing.black76 import price_scalar_nb
from margin_engine.profiles.base import (
    ProfileBook,
    ProfileInfo,
    Requirement,
    Source,
    State,
    Term,
    Unsupported,
    kind_flags,
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
    option_scenarios,
    revalue,
    worst,
    worst_loss,
)

READ = "2026-12-02"
PARAMETERS = Source(title="OKX: OKX will further adjust portfolio margin parameters (MR1 "
                          "+/-4/8/12 %, MR6 +/-24 %, MR4 5 % annualised, MR7 tiers)",
                    url="https://www.okx.com/help/okx-will-further-adjust-portfolio-margin-"
                        "parameters", published="2025-01-02", read=READ)
RULES = Source(title="OKX: OKX will update margin calculation rules for the portfolio margin "
                     "mode (risk units merged per underlying; MR9)",
               url="https://www.okx.com/help/okx-will-update-margin-calculation-rules-for-the-"
                   "portfolio-margin-mode", published="2024-12", read=READ)


@dataclass(frozen=True, slots=True, kw_only=True)
class OkxParams:
    spot_ranges: Mapping[str, float] = bounded(
        PRICE_RANGE, default_factory=lambda: {"BTC": 0.12, "ETH": 0.12})
    default_spot_range: float = bounded(PRICE_RANGE, 0.25)
    extreme: Mapping[str, float] = bounded(
        PRICE_RANGE, default_factory=lambda: {"BTC": 0.24, "ETH": 0.24})
    default_extreme: float = bounded(PRICE_RANGE, 0.50)
    extreme_weight: float = bounded(FRACTION, 1.0 / 3.0)
    basis_annual: Mapping[str, float] = bounded(
        ANNUAL_RATE, default_factory=lambda: {"BTC": 0.05, "ETH": 0.05})
    default_basis_annual: float = bounded(ANNUAL_RATE, 0.30)
    vol: VolShockParams = VolShockParams(range_up=0.5, range_down=0.25)
    minimum_rate: float = bounded(FRACTION, 0.002)
    initial_multiplier: float = bounded(IM_MULTIPLE, 1.3)

    def spot_grid(self) -> Grid:
        return Grid(scenarios=tuple(Scenario(move=j / 3, vol=VolShock.SAME)
                                    for j in range(-3, 4)),
                    ranges=self.spot_ranges, default_range=self.default_spot_range,
                    vol=self.vol)

    def vol_grid(self) -> Grid:
        return Grid(scenarios=(Scenario(move=0.0, vol=VolShock.UP),
                               Scenario(move=0.0, vol=VolShock.DOWN)),
                    ranges={}, default_range=0.0, vol=self.vol)

    def extreme_grid(self) -> Grid:
        return Grid(scenarios=(Scenario(move=-1.0, vol=VolShock.UP, weight=self.extreme_weight),
                               Scenario(move=1.0, vol=VolShock.UP, weight=self.extreme_weight)),
                    ranges=self.extreme, default_range=self.default_extreme, vol=self.vol)


INFO = ProfileInfo(
    name="okx-pm", venue="OKX portfolio margin mode",
    summary="Per underlying: spot shock (+/-12 %), time value, vol shock and basis units added, "
            "against the extreme move (+/-24 % at 1/3) and a minimum charge; IMR = 1.3 x MMR.",
    parameters_as_of="2025-01-15",
    sources=(PARAMETERS, RULES),
    leaves_out=("MR5 interest rate, MR8 borrowing and MR9 stablecoin-decoupling units",
                "MR7's tier multipliers (a flat 0.2 % of gross notional)",
                "OKX's own vol-shock table: the Deribit-family term-scaled shock is used",
                "the 1/3 weight of MR6 and IMR = 1.3 x MMR are this profile's reading, not "
                "numbers from the pages read"))


class OkxPortfolioMargin(ScenarioParameters):
    def __init__(self, params: OkxParams | None = None) -> None:
        self.params = params or OkxParams()
        self.info = INFO
        self._spot, self._vol = self.params.spot_grid(), self.params.vol_grid()
        self._extreme = self.params.extreme_grid()

    def unsupported(self, pb: ProfileBook) -> list[Unsupported | None]:
        return [None] * pb.accounts

    def _unit_loss(self, pb: ProfileBook, state: State, grid: Grid,
                   with_collateral: bool) -> np.ndarray:
        n_u = len(pb.underlyings)
        reval = revalue(pb, state, grid)
        cells = pb.cell_sum(reval.pnl, pb.underlying, n_u)
        if with_collateral:
            ranges = np.array([grid.range_of(u) for u in pb.underlyings])
            moves = np.array([s.move for s in grid.scenarios])[None, :] * ranges[:, None]
            exposure = pb.coin_exposure[:, :, None] * state.coin_factor
            cells += exposure[:, :, :, None] * moves[None, :, None, :]
        loss, _ = worst(cells, grid)
        return loss

    def requirement(self, pb: ProfileBook, state: State) -> Requirement:
        p = self.params
        n_u = len(pb.underlyings)
        mr1 = self._unit_loss(pb, state, self._spot, True)
        mr3 = self._unit_loss(pb, state, self._vol, False)
        mr6 = self._unit_loss(pb, state, self._extreme, True)
        # MR2: one day of decay at today's vols and the state's forwards
        day = 1.0 / 365.0
        later = replace(pb, years=np.maximum(pb.years - day, 0.0))
        decay = np.zeros((pb.accounts, n_u, state.k))
        if pb.option.any():
            aged = later_marks(later, state)
            decay = pb.cell_sum(np.where(pb.option[:, None], pb.quantity[:, None]
                                         * (aged - state.mark), 0.0), pb.underlying, n_u)
        mr2 = np.maximum(0.0, -decay)
        future = kind_flags(pb, InstrumentKind.FUTURE) & pb.live
        rate = np.array([p.basis_annual.get(u, p.default_basis_annual)
                         for u in pb.underlyings])[pb.underlying]
        basis_p = np.where(future[:, None], (rate * np.maximum(pb.years, day))[:, None]
                           * np.abs(pb.quantity[:, None] * state.mark), 0.0)
        mr4 = pb.cell_sum(basis_p, pb.underlying, n_u)
        gross = pb.cell_sum(np.where(pb.live[:, None], np.abs(pb.size_cs)[:, None] * state.index
                                     * np.where(pb.inverse & ~pb.option, 0.0, 1.0)[:, None]
                                     + np.where((pb.inverse & ~pb.option)[:, None],
                                                np.abs(pb.size_cs)[:, None], 0.0), 0.0),
                            pb.underlying, n_u)
        mr7 = p.minimum_rate * gross
        additive = mr1 + mr2 + mr3 + mr4
        unit = np.maximum(np.maximum(additive, mr6), mr7)
        mmr = unit.sum(axis=1)
        which_add = (additive >= mr6) & (additive >= mr7)
        which_ext = ~which_add & (mr6 >= mr7)
        which_min = ~which_add & ~which_ext
        m = p.initial_multiplier
        return Requirement(
            initial=m * mmr, maintenance=mmr,
            equity=state.collateral + pb.account_sum(state.pnl), threshold=mmr,
            terms={Term.PRICE_SCENARIOS: m * np.where(which_add, mr1, 0.0).sum(axis=1),
                   Term.VOLATILITY: m * np.where(which_add, mr2 + mr3, 0.0).sum(axis=1),
                   Term.BASIS: m * np.where(which_add, mr4, 0.0).sum(axis=1),
                   Term.EXTENDED_MOVES: m * np.where(which_ext, mr6, 0.0).sum(axis=1),
                   Term.MINIMUM_CHARGE: m * np.where(which_min, mr7, 0.0).sum(axis=1)},
            details={"mr1": mr1.sum(axis=1), "mr2": mr2.sum(axis=1), "mr3": mr3.sum(axis=1),
                     "mr4": mr4.sum(axis=1), "mr6": mr6.sum(axis=1), "mr7": mr7.sum(axis=1)})


    def moved_gap(self, pb: ProfileBook, u: int
                  ) -> Callable[[IntArray, FloatArray], FloatArray]:
        """``evaluate(accounts, levels)``: the part of equity - MMR that moves with underlying
        ``u`` at those (account, level) pairs (``requirement`` gives the rest):

            G = C_u (r - 1) + sum_u P&L - max(MR1 + MR2 + MR3 + MR4, MR6, MR7) of unit u,

        r = level / index, C_u the account's coin collateral of u (USD today)."""
        p = self.params
        legs = legs_of(pb, u)
        name = pb.underlyings[u]
        grids = [leg_scenarios(legs, g, name) for g in (self._spot, self._vol, self._extreme)]
        bounds = np.cumsum([0] + [g.weight.size for g in grids]).astype(np.int64)
        root = np.ascontiguousarray(np.concatenate([g.root for g in grids], axis=1))
        growth, log_growth, lin, weight = (np.concatenate([getattr(g, f) for g in grids])
                                           for f in ("growth", "log_growth", "lin", "weight"))
        day = 1.0 / 365.0
        aged = np.maximum(legs.years - day, 0.0)
        future = legs.kind == int(InstrumentKind.FUTURE)
        rate = p.basis_annual.get(name, p.default_basis_annual)
        basis = rate * np.maximum(legs.years, day)
        inv_lin = legs.inverse & ~legs.option
        gross_scale = np.where(inv_lin, 0.0, 1.0)
        gross_add = np.where(inv_lin, np.abs(legs.size_cs), 0.0)
        exposure = np.ascontiguousarray(pb.coin_exposure[:, u])
        index = float(pb.index[u])

        def evaluate(accounts: IntArray, levels: FloatArray) -> FloatArray:
            out = np.empty(accounts.size)
            _okx_part_nb(legs.start, legs.quantity, legs.size_cs, legs.mark, legs.forward,
                         legs.entry, legs.option, future, legs.strike, legs.log_strike,
                         legs.years, aged, legs.sigma, legs.is_call, basis, gross_scale,
                         gross_add, root, growth, log_growth, lin, weight, bounds, exposure,
                         index, p.minimum_rate, accounts.astype(np.int64), levels / index,
                         out)
            return out

        return evaluate


@njit(cache=True)
def _okx_part_nb(start: IntArray, quantity: FloatArray, size_cs: FloatArray, mark: FloatArray,
                 forward: FloatArray, entry: FloatArray, option: BoolArray, future: BoolArray,
                 strike: FloatArray, log_strike: FloatArray, years: FloatArray,
                 aged: FloatArray, sigma: FloatArray, is_call: BoolArray, basis: FloatArray,
                 gross_scale: FloatArray, gross_add: FloatArray, root: FloatArray,
                 growth: FloatArray, log_growth: FloatArray, lin: FloatArray,
                 weight: FloatArray, bounds: IntArray, exposure: FloatArray, index: float,
                 minimum_rate: float, accounts: IntArray, ratios: FloatArray,
                 out: FloatArray) -> None:
    """out[j] = moved part of the gap of account accounts[j] at index ratio ratios[j]
    (see ``OkxPortfolioMargin.moved_gap``). Scenarios: spot, vol and extreme grids one after
    the other (``bounds``); coin collateral C r m_s enters the spot and extreme grids."""
    n_s = weight.shape[0]
    spot0, vol0, ext0, end = bounds[0], bounds[1], bounds[2], bounds[3]
    for j in range(accounts.shape[0]):
        a, r = accounts[j], ratios[j]
        cell, value = np.zeros(n_s), np.empty(n_s)
        pnl = decay = mr4 = gross = 0.0
        for i in range(start[a], start[a + 1]):
            f, m = leg_mark(forward[i], strike[i], years[i], sigma[i], is_call[i], option[i],
                            mark[i], r)
            q = quantity[i]
            pnl += q * (m - entry[i])
            gross += abs(size_cs[i]) * (index * r) * gross_scale[i] + gross_add[i]
            if option[i]:
                option_scenarios(f, strike[i], log_strike[i], is_call[i], root[i], growth,
                                 log_growth, value)
                for s in range(n_s):
                    cell[s] += q * (value[s] - m)
                decay += q * (price_scalar_nb(f, strike[i], aged[i], sigma[i], is_call[i]) - m)
            else:
                notional = q * m
                for s in range(n_s):
                    cell[s] += notional * lin[s]
                if future[i]:
                    mr4 += basis[i] * abs(notional)
        mr3 = worst_loss(cell[vol0:ext0], weight[vol0:ext0])
        held = exposure[a] * r
        for s in range(n_s):
            if s < vol0 or s >= ext0:
                cell[s] += held * lin[s]
        mr1 = worst_loss(cell[spot0:vol0], weight[spot0:vol0])
        mr6 = worst_loss(cell[ext0:end], weight[ext0:end])
        additive = mr1 + max(0.0, -decay) + mr3 + mr4
        unit = max(max(additive, mr6), minimum_rate * gross)
        out[j] = exposure[a] * (r - 1.0) + pnl - unit


def later_marks(pb: ProfileBook, state: State) -> np.ndarray:
    """Option marks at the state's forwards with ``pb.years`` (aged); others unchanged."""
    from margin_engine.pricing.black76 import price

    out = state.mark.copy()
    opt = np.nonzero(pb.option)[0]
    out[opt] = price(state.forward[opt], pb.strike[opt, None], pb.years[opt, None],
                     pb.sigma[opt, None], pb.is_call[opt, None])
    return out


def profile(params: OkxParams | None = None) -> OkxPortfolioMargin:
    return OkxPortfolioMargin(params)

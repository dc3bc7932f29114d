"""Greeks per (account, underlying): positions plus collateral held in the underlying's coin.

Taken with respect to the index S; an option's forward moves with it, F = b x S with b = F / S:
delta = sum q x dV/dF x b (coins; a delta-one position has 1, collateral counts its coins),
gamma = sum q x d2V/dF2 x b^2 (coins per USD), vega = sum q x dV/dsigma / 100 (USD per vol point).
"""

from __future__ import annotations

import numpy as np

from margin_engine.book.bound import BoundBook
from margin_engine.core.kept import KEPT
from margin_engine.core.types import FloatArray
from margin_engine.margin.common import per_underlying_sum
from margin_engine.pricing.black76 import greeks


def account_greeks(bound: BoundBook) -> dict[str, FloatArray]:
    table = bound.book.instruments
    inst_delta, inst_gamma, inst_vega = KEPT.get(
        (table, bound.market), "greeks", lambda: instrument_greeks(bound),
        len(table.instruments))
    inst = bound.book.position_instrument
    q = bound.quantity
    delta = per_underlying_sum(bound, q * inst_delta[inst])
    delta += bound.collateral_exposure / bound.index[np.newaxis, :]
    return {
        "delta": delta,
        "gamma": per_underlying_sum(bound, q * inst_gamma[inst]),
        "vega": per_underlying_sum(bound, q * inst_vega[inst] / 100.0),
    }


def instrument_greeks(bound: BoundBook) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per instrument: delta and gamma with respect to the index, vega per unit of vol."""
    table = bound.book.instruments
    n_inst = len(table.instruments)
    inst_delta = np.ones(n_inst)
    inst_gamma = np.zeros(n_inst)
    inst_vega = np.zeros(n_inst)
    inst_delta[~bound.live] = 0.0  # settled: cash, no exposure
    rows = np.nonzero(table.is_option & bound.live)[0]
    if rows.size:
        forward = bound.base_price[rows]
        basis = forward / bound.index[table.underlying[rows]]
        g = greeks(forward, table.strike[rows], bound.years[rows], bound.sigma[rows],
                   table.is_call[rows])
        inst_delta[rows] = g["delta"] * basis
        inst_gamma[rows] = g["gamma"] * basis * basis
        inst_vega[rows] = g["vega"]
    return inst_delta, inst_gamma, inst_vega

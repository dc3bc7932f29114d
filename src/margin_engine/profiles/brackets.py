"""Exchange leverage brackets with maintenance amounts (the "cum" of Binance's tables).

A bracket table is a list of notional ranges [floor, cap) with a maintenance margin rate and a
maximum leverage. The maintenance margin of a position of notional N in bracket n is

    MM(N) = N x mmr_n - cum_n,
    cum_n = floor_n x (mmr_n - mmr_{n-1}) + cum_{n-1},  cum_1 = 0,

the exchange's own "maintenance amount" formula, which makes MM continuous in N at every
bracket floor. Initial margin at the bracket's maximum leverage is N / max_leverage_n (the
least a position may post; a user may choose lower leverage and post more).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from margin_engine.core.errors import InputError
from margin_engine.core.numbers import parse_float
from margin_engine.core.types import FloatArray


@dataclass(frozen=True, slots=True, kw_only=True)
class Bracket:
    floor: float
    cap: float  # math.inf for the last bracket
    maintenance_rate: float
    max_leverage: float
    maintenance_amount: float  # "cum", USD


@dataclass(frozen=True, slots=True, kw_only=True)
class BracketTable:
    symbol: str
    brackets: tuple[Bracket, ...]

    def locate(self, notional: FloatArray) -> np.ndarray:
        """Bracket index of each |notional| (floor inclusive)."""
        floors = np.array([b.floor for b in self.brackets])
        found = np.searchsorted(floors, np.abs(notional), side="right") - 1
        clipped: np.ndarray = np.clip(found, 0, len(self.brackets) - 1)
        return clipped

    def maintenance(self, notional: FloatArray) -> FloatArray:
        """MM = |N| x mmr - cum of the bracket |N| falls in."""
        n = np.abs(notional)
        at = self.locate(n)
        rate = np.array([b.maintenance_rate for b in self.brackets])[at]
        cum = np.array([b.maintenance_amount for b in self.brackets])[at]
        mm: FloatArray = np.maximum(n * rate - cum, 0.0)
        return mm

    def rates(self, notional: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(maintenance rate, maintenance amount) of each notional's bracket."""
        at = self.locate(np.abs(notional))
        return (np.array([b.maintenance_rate for b in self.brackets])[at],
                np.array([b.maintenance_amount for b in self.brackets])[at])

    def initial(self, notional: FloatArray) -> FloatArray:
        """|N| / max leverage of its bracket."""
        at = self.locate(np.abs(notional))
        lev = np.array([b.max_leverage for b in self.brackets])[at]
        im: FloatArray = np.abs(notional) / lev
        return im


def build_table(symbol: str, rows: Sequence[tuple[float, float, float]],
                amounts: Sequence[float] | None = None, *, source: str = "brackets"
                ) -> BracketTable:
    """A table from (floor, maintenance rate, max leverage) rows in ascending floor; caps
    are the next floor. ``amounts``: published maintenance amounts, checked against the
    continuity formula (a table whose amounts disagree is refused)."""
    if not rows:
        raise InputError("at least one bracket", field=f"{symbol}", source=source)
    out: list[Bracket] = []
    cum = 0.0
    previous_rate = 0.0
    for i, (floor, rate, leverage) in enumerate(rows):
        where = f"{symbol}[{i}]"
        if i == 0 and floor != 0.0:
            raise InputError("a first bracket starting at notional 0", field=f"{where}.floor",
                             value=floor, source=source)
        if i and floor <= rows[i - 1][0]:
            raise InputError(f"an ascending floor > {rows[i - 1][0]:g}",
                             field=f"{where}.floor", value=floor, source=source)
        if not 0.0 <= rate <= 1.0:
            raise InputError("a maintenance margin rate in [0, 1] (a decimal, 0.004 for "
                             "0.4 %)", field=f"{where}.maintenanceMarginRate", value=rate,
                             source=source)
        if not leverage >= 1.0:
            raise InputError("a maximum leverage >= 1", field=f"{where}.maxLeverage",
                             value=leverage, source=source)
        if rate > (1.0 / leverage) * (1.0 + 1e-12):
            raise InputError(f"a maintenance margin rate at most the bracket's initial rate "
                             f"1 / maxLeverage = {1.0 / leverage:.6g} (else MM exceeds IM)",
                             field=f"{where}.maintenanceMarginRate", value=rate, source=source)
        cum = floor * (rate - previous_rate) + cum if i else 0.0
        if amounts is not None and not math.isclose(amounts[i], cum, rel_tol=1e-9,
                                                    abs_tol=1e-6):
            raise InputError(f"a maintenance amount equal to floor x (mmr_n - mmr_n-1) + "
                             f"cum_n-1 = {cum:,.6g}", field=f"{where}.cum", value=amounts[i],
                             source=source)
        if amounts is not None:
            cum = amounts[i]  # the published amount (it agrees with the formula)
        cap = rows[i + 1][0] if i + 1 < len(rows) else math.inf
        out.append(Bracket(floor=floor, cap=cap, maintenance_rate=rate, max_leverage=leverage,
                           maintenance_amount=cum))
        previous_rate = rate
    return BracketTable(symbol=symbol, brackets=tuple(out))


def flat_table(symbol: str, maintenance_rate: float, max_leverage: float) -> BracketTable:
    return build_table(symbol, [(0.0, maintenance_rate, max_leverage)])


def table_from_ccxt(symbol: str, tiers: Any, *, source: str) -> BracketTable:
    """A table from ccxt's ``fetch_leverage_tiers`` list for one symbol: dicts with
    ``minNotional``, ``maxNotional``, ``maintenanceMarginRate``, ``maxLeverage`` (and, for
    Binance, ``info.cum``, checked against the continuity formula)."""
    if not isinstance(tiers, list) or not tiers:
        raise InputError("a non-empty list of leverage tiers", field=symbol, value=tiers,
                         source=source)
    rows: list[tuple[float, float, float]] = []
    amounts: list[float] = []
    has_amounts = True
    for i, tier in enumerate(tiers):
        where = f"{symbol}[{i}]"
        if not isinstance(tier, Mapping):
            raise InputError("a leverage tier object", field=where, value=tier, source=source)
        for key in ("minNotional", "maintenanceMarginRate", "maxLeverage"):
            if tier.get(key) is None:
                raise InputError(f"a number in {key!r}", field=f"{where}.{key}",
                                 value="missing", source=source)
        floor = parse_float(tier["minNotional"], field=f"{where}.minNotional", minimum=0.0)
        rate = parse_float(tier["maintenanceMarginRate"],
                           field=f"{where}.maintenanceMarginRate", minimum=0.0, maximum=1.0)
        leverage = parse_float(tier["maxLeverage"], field=f"{where}.maxLeverage", minimum=1.0)
        if i and tier.get("minNotional") is not None:
            previous_cap = tiers[i - 1].get("maxNotional")
            if previous_cap is not None and not math.isclose(
                    parse_float(previous_cap, field=f"{symbol}[{i - 1}].maxNotional"), floor):
                raise InputError(f"tiers without gaps (minNotional = the previous tier's "
                                 f"maxNotional {previous_cap})", field=f"{where}.minNotional",
                                 value=tier["minNotional"], source=source)
        rows.append((floor, rate, leverage))
        info = tier.get("info")
        cum = info.get("cum") if isinstance(info, Mapping) else None
        if cum is None:
            has_amounts = False
        else:
            amounts.append(parse_float(cum, field=f"{where}.info.cum", minimum=0.0))
    return build_table(symbol, rows, amounts if has_amounts else None, source=source)

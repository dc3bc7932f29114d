"""Bind a columnar book to a market snapshot: everything market-dependent, validated once.

Per instrument: years to expiry T, vol sigma, scenario base price (perp/future/spot: its mark,
else the index; option: its expiry's forward F), mark in USD (options at the Black-76 price on F,
r = 0). SPEC 2: F is the mark of the future on the same underlying and expiry when the market
gives one (linear futures first, then inverse, each in name order), else the index; every
scenario moves F with the index, F x (1 + m), so the basis scales with the index.

Expiry (08:00 UTC on the expiry date): at and after it a future or option is settled, not live.
Its price is fixed at the settlement price (the market's ``settlements`` entry for the
underlying and expiry, else the index at the snapshot): a future at that price, an option at its
intrinsic value max(0, +/-(S_settle - K)). It keeps that cash value in equity and carries no
margin: zero notional, no scenario P&L, no contingency, no Greeks.
Per position: the *quantity* q that turns a USD price change into USD P&L,

    linear (any kind), inverse option:  q = size x contract_size            (coins)
    inverse perpetual / future:         q = size x contract_size / entry    (USD P&L per USD move)

so unrealised P&L = q x (mark - entry_usd), with entry_usd = entry x index for inverse options
(their premium is quoted in coin). Signed notional at mark: q x mark (linear), size x
contract_size (inverse perps/futures, USD contracts). Gross notional at index: |size| x
contract_size x index (linear), |size| x contract_size (inverse perps/futures).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from margin_engine.book.columnar import ColumnarBook, InstrumentTable
from margin_engine.book.kernels import position_arrays_nb
from margin_engine.core.errors import InputError
from margin_engine.core.types import BoolArray, FloatArray, IntArray
from margin_engine.domain.instruments import InstrumentKind, Settlement, resolve_name
from margin_engine.market.snapshot import MarketSnapshot, VolSurface
from margin_engine.pricing.black76 import greeks


@dataclass(frozen=True, slots=True, kw_only=True)
class BoundBook:
    book: ColumnarBook
    market: MarketSnapshot
    timestamp_ns: int
    underlyings: tuple[str, ...]  # instrument underlyings, then collateral-only underlyings
    index: FloatArray  # per underlying
    correlation: FloatArray  # underlyings x underlyings, 1 on the diagonal
    surfaces: tuple[VolSurface | None, ...]  # per underlying
    # per instrument
    years: FloatArray
    sigma: FloatArray  # NaN for non-options
    base_price: FloatArray  # price that moves by (1 + m): mark (delta-one), forward (option)
    mark: FloatArray  # USD per coin
    contingency_group: IntArray  # options sharing (underlying, expiry, strike); -1 otherwise
    live: BoolArray  # False for futures and options at or past expiry (settled)
    # per position
    position_account: IntArray
    quantity: FloatArray
    entry_usd: FloatArray
    signed_notional: FloatArray
    gross_notional: FloatArray
    # per account
    collateral_value: FloatArray
    collateral_exposure: FloatArray  # accounts x underlyings: USD value of collateral in u

    @property
    def account_count(self) -> int:
        return self.book.account_count

    def account_sum(self, per_position: FloatArray) -> FloatArray:
        """Segment sum of a per-position array into accounts."""
        return np.bincount(self.position_account, weights=per_position,
                           minlength=self.account_count).astype(np.float64)

    def equity(self) -> FloatArray:
        """Collateral x asset price + sum of q x (mark - entry_usd)."""
        from margin_engine.book.kernels import unrealised_pnl_nb

        pnl: FloatArray = unrealised_pnl_nb(self.book.offsets, self.book.position_instrument,
                                            self.quantity, self.mark, self.entry_usd)
        return self.collateral_value + pnl

    def account_gross_notional(self) -> FloatArray:
        return self.account_sum(self.gross_notional)


def bind_market(book: ColumnarBook, market: MarketSnapshot) -> BoundBook:
    """Validate the book against the market and compute every market-dependent array."""
    table = book.instruments
    _check_underlyings(book, market)
    coins = {a.partition("@")[0] for a in book.assets}
    extra = tuple(sorted(c for c in coins if c in market.underlyings
                         and c not in table.underlyings))
    underlyings = table.underlyings + extra
    n_inst = len(table.instruments)

    years = np.array([(e - market.timestamp_ns) / 1e9 / (365 * 86400) if e else 0.0
                      for e in table.expiry_ns.tolist()], dtype=np.float64)
    live = instruments_live(book, market.timestamp_ns)
    is_option = table.is_option & live
    _check_options(book, market, is_option)
    sigma = np.full(n_inst, np.nan)
    for u_idx, u in enumerate(table.underlyings):
        rows = np.nonzero(is_option & (table.underlying == u_idx))[0]
        surface = market.underlyings[u].vol
        if rows.size and surface is not None:
            sigma[rows] = surface.sigma(market.vol_years(years[rows]), table.strike[rows])

    _check_marks(book, market)
    _check_asset_prices(book, market)
    priced = _priced(book, market, underlyings, years, sigma, live)

    n_u = len(underlyings)
    rho = np.eye(n_u)
    for i in range(n_u):
        for j in range(n_u):
            if i != j:
                rho[i, j] = market.correlation_of(underlyings[i], underlyings[j])

    return BoundBook(
        book=book, market=market, timestamp_ns=market.timestamp_ns, underlyings=underlyings,
        correlation=rho, surfaces=tuple(market.underlyings[u].vol for u in underlyings),
        years=years, sigma=sigma, live=live,
        contingency_group=_contingency_groups(book),
        position_account=book.position_account(), **priced,
    )


def reprice(bound: BoundBook, market: MarketSnapshot) -> BoundBook:
    """The same book at new prices (index levels, marks, asset prices), everything else kept:
    the fast path of a monitor tick. The market's timestamp and vols must be unchanged."""
    return replace(bound, market=market, **_priced(bound.book, market, bound.underlyings,
                                                   bound.years, bound.sigma, bound.live))


def pinned_settlements(bound: BoundBook) -> MarketSnapshot:
    """The bound market with the settlement price of every settled expiry written out, so that
    moving the index (which stands in for a missing settlement) leaves settled cash alone."""
    table = bound.book.instruments
    settlements = dict(bound.market.settlements)
    for row in np.nonzero(~bound.live)[0].tolist():
        key = (bound.underlyings[int(table.underlying[row])], int(table.expiry_ns[row]))
        settlements.setdefault(key, float(bound.base_price[row]))
    return replace(bound.market, settlements=settlements)


def settled_at_index(bound: BoundBook) -> list[tuple[str, int]]:
    """(underlying, expiry ns) of every expiry the book's positions hold that is settled with
    no ``settlements`` entry in the market: settled at the snapshot's index (a stand-in a
    caller should say it used), in order."""
    table = bound.book.instruments
    held = np.zeros(len(table.instruments), dtype=np.bool_)
    held[bound.book.position_instrument] = True
    rows = np.nonzero(held & ~bound.live)[0].tolist()
    keys = {(bound.underlyings[int(table.underlying[r])], int(table.expiry_ns[r])) for r in rows}
    return sorted(keys - set(bound.market.settlements))


def asset_prices(book: ColumnarBook, market: MarketSnapshot) -> FloatArray:
    """USD price of each collateral column (``ASSET@CHAIN`` is priced as ``ASSET``)."""
    return np.array([market.asset_prices[a.partition("@")[0]] for a in book.assets],
                    dtype=np.float64)


def instruments_live(book: ColumnarBook, timestamp_ns: int) -> BoolArray:
    """Per instrument: not dated, or expiring strictly after ``timestamp_ns``."""
    expiry = book.instruments.expiry_ns
    live: BoolArray = (expiry == 0) | (expiry > timestamp_ns)
    return live


def resized(bound: BoundBook, book: ColumnarBook) -> BoundBook:
    """``bound`` with ``book`` instead: the same accounts, instruments (the same instrument
    table) and collateral assets, other position sizes, entry prices or collateral amounts.
    The per-instrument prices are kept; the position and collateral arrays are computed
    again (what ``bind_market(book, bound.market)`` gives, without checking or pricing the
    instruments again)."""
    if book.instruments is not bound.book.instruments or book.assets != bound.book.assets or \
            book.account_ids != bound.book.account_ids:
        raise ValueError("resized: the same accounts, instrument table and assets")
    inst_index = bound.index[book.instruments.underlying] if len(book.instruments.instruments) \
        else np.zeros(0)
    return replace(bound, book=book, **_positions_priced(book, bound.market, bound.underlyings,
                                                         bound.live, inst_index, bound.mark))


def _priced(book: ColumnarBook, market: MarketSnapshot, underlyings: tuple[str, ...],
            years: FloatArray, sigma: FloatArray, live: BoolArray) -> dict[str, Any]:
    """Every price-dependent array of a bound book (index, marks, position quantities and
    notionals, collateral value and exposure), from the market's prices."""
    table = book.instruments
    index = np.array([market.underlyings[u].index for u in underlyings], dtype=np.float64)
    inst_index = index[table.underlying] if len(table.instruments) else np.zeros(0)
    base = inst_index.copy()
    for name, value in market.marks.items():  # (the market's few marks, not every row)
        rows = table.rows_by_name.get(name)
        if rows is not None:
            base[rows] = value
    live_options = table.is_option & live
    rows = np.nonzero(live_options)[0]
    if rows.size:
        _set_by_expiry(base, live_options, expiry_forwards(book, market), table, underlyings)
    base[~live] = inst_index[~live]  # a settled future's old mark does not count
    _set_by_expiry(base, ~live, market.settlements, table, underlyings)
    settled = np.nonzero(~live)[0]
    mark = base.copy()
    if rows.size:
        mark[rows] = greeks(base[rows], table.strike[rows], years[rows], sigma[rows],
                            table.is_call[rows])["price"]
    settled_options = settled[table.is_option[settled]]
    if settled_options.size:
        direction = np.where(table.is_call[settled_options], 1.0, -1.0)
        mark[settled_options] = np.maximum(
            0.0, direction * (base[settled_options] - table.strike[settled_options]))
    return {"index": index, "base_price": base, "mark": mark,
            **_positions_priced(book, market, underlyings, live, inst_index, mark)}


def _positions_priced(book: ColumnarBook, market: MarketSnapshot, underlyings: tuple[str, ...],
                      live: BoolArray, inst_index: FloatArray, mark: FloatArray
                      ) -> dict[str, Any]:
    """The per-position and per-account arrays of a bound book (quantities, notionals,
    collateral value and exposure) from the instruments' index and marks."""
    table = book.instruments
    settled = np.nonzero(~live)[0]
    n_pos = book.position_count
    quantity, entry_usd = np.empty(n_pos), np.empty(n_pos)
    signed_notional, gross_notional = np.empty(n_pos), np.empty(n_pos)
    position_arrays_nb(book.position_instrument, book.size, book.entry_price,
                       table.contract_size, table.inverse, table.is_option, inst_index, mark,
                       quantity, entry_usd, signed_notional, gross_notional)
    if settled.size:  # a settled position is cash: no exposure left
        dead = ~live[book.position_instrument]
        signed_notional[dead] = 0.0
        gross_notional[dead] = 0.0
    prices = asset_prices(book, market)
    collateral_value = book.collateral @ prices if book.assets else np.zeros(book.account_count)
    exposure = np.zeros((book.account_count, len(underlyings)))
    for col, asset in enumerate(book.assets):
        coin = asset.partition("@")[0]  # ASSET@CHAIN is priced and moved as ASSET
        if coin in underlyings:
            exposure[:, underlyings.index(coin)] += book.collateral[:, col] * prices[col]
    return {"quantity": quantity, "entry_usd": entry_usd, "signed_notional": signed_notional,
            "gross_notional": gross_notional,
            "collateral_value": np.asarray(collateral_value, dtype=np.float64),
            "collateral_exposure": exposure}


def _set_by_expiry(values: FloatArray, rows: BoolArray,
                   by_expiry: Mapping[tuple[str, int], float], table: InstrumentTable,
                   underlyings: tuple[str, ...]) -> None:
    """values[i] = by_expiry[(underlying, expiry) of i] for the ``rows`` that have an entry
    (the others keep theirs: the index)."""
    for (u, expiry), value in by_expiry.items():
        if u in underlyings:
            values[rows & (table.underlying == underlyings.index(u))
                   & (table.expiry_ns == expiry)] = value


def expiry_forwards(book: ColumnarBook, market: MarketSnapshot) -> dict[tuple[str, int], float]:
    """(underlying, expiry ns) -> forward: the market's mark of a future of that underlying and
    expiry. Mark names resolve through the book's declared instruments, then shorthand names;
    where several futures share an expiry, a linear one wins, then the first name in order."""
    declared = book.instruments.by_name
    candidates: list[tuple[bool, str, tuple[str, int], float]] = []
    for name, value in market.marks.items():
        instrument = resolve_name(name, declared)
        if instrument is None or instrument.kind is not InstrumentKind.FUTURE:
            continue
        assert instrument.expiry_ns is not None  # futures are dated
        candidates.append((instrument.settlement is Settlement.INVERSE, name,
                           (instrument.underlying, instrument.expiry_ns), float(value)))
    forwards: dict[tuple[str, int], float] = {}
    for _, _, key, value in sorted(candidates):
        forwards.setdefault(key, value)
    return forwards


def _first_position_of(book: ColumnarBook, instrument_rows: IntArray) -> int:
    hits = np.nonzero(np.isin(book.position_instrument, instrument_rows))[0]
    return int(hits[0])


def _refuse_position(book: ColumnarBook, instrument_rows: IntArray, expected: str) -> None:
    row = _first_position_of(book, instrument_rows)
    account, position = book.locate(row)
    name = book.instruments.instruments[int(book.position_instrument[row])].name
    raise InputError(expected, field="instrument", value=name, account=account, position=position)


def _check_underlyings(book: ColumnarBook, market: MarketSnapshot) -> None:
    table = book.instruments
    for u_idx, u in enumerate(table.underlyings):
        if u not in market.underlyings:
            rows = np.nonzero(table.underlying == u_idx)[0]
            known = sorted(market.underlyings)
            _refuse_position(book, rows, f"an underlying priced in the market {known} "
                             f"(no index for {u!r})")


def _check_options(book: ColumnarBook, market: MarketSnapshot, is_option: np.ndarray) -> None:
    """Live options need a vol surface for their underlying."""
    table = book.instruments
    for u_idx, u in enumerate(table.underlyings):
        rows = np.nonzero(is_option & (table.underlying == u_idx))[0]
        if rows.size and market.underlyings[u].vol is None:
            _refuse_position(book, rows, f"a vol for underlying {u!r} in the market "
                             "(options need 'underlyings.<U>.vol'; missing vol)")


MAX_MARK_RATIO = 2.0  # a perp/future/spot mark within this factor of its index (a typo guard)


def _check_marks(book: ColumnarBook, market: MarketSnapshot) -> None:
    """Marks are for delta-one instruments, and within a factor 2 of their underlying's index:
    a future's mark is also the forward of every option of its expiry, so a typo (0.0001 for
    66,800) would silently reprice them all."""
    declared = book.instruments.by_name
    for name, value in market.marks.items():
        instrument = resolve_name(name, declared)
        if instrument is not None and instrument.kind is InstrumentKind.OPTION:
            raise InputError("marks for perpetuals, futures or spot only; options are marked "
                             "at their Black-76 price", field=f"marks.{name}", value=name)
        if instrument is None or instrument.underlying not in market.underlyings:
            continue
        index = market.underlyings[instrument.underlying].index
        if not index / MAX_MARK_RATIO <= value <= index * MAX_MARK_RATIO:
            raise InputError(f"a mark within a factor {MAX_MARK_RATIO:g} of the "
                             f"{instrument.underlying} index {index:,.2f}",
                             field=f"marks.{name}", value=value)


def _check_asset_prices(book: ColumnarBook, market: MarketSnapshot) -> None:
    """Every collateral asset (``ASSET`` or ``ASSET@CHAIN``) must have a price."""
    for col, asset in enumerate(book.assets):
        if asset.partition("@")[0] not in market.asset_prices:
            holders = np.nonzero(book.collateral[:, col] != 0.0)[0]
            account = book.account_ids[int(holders[0])] if holders.size else None
            raise InputError(f"an asset priced in the market's 'assets' "
                             f"{sorted(market.asset_prices)}",
                             field=f"collateral.{asset}", value=asset, account=account)

def _contingency_groups(book: ColumnarBook) -> IntArray:
    """Options on the same underlying, expiry and strike share a group id (calls net puts),
    numbered in the order of their first row (the order the passes net them in): the rows
    sorted by key, a group per run of equal keys, the groups ranked by their first row."""
    table = book.instruments
    groups = np.full(len(table.instruments), -1, dtype=np.int64)
    rows = np.nonzero(table.is_option)[0]
    if rows.size == 0:
        return groups
    keys = (np.asarray(table.underlying)[rows], np.asarray(table.expiry_ns)[rows],
            np.asarray(table.strike, dtype=np.float64)[rows])
    order = np.lexsort((rows, *reversed(keys)))  # by key, then by row
    rows = rows[order]
    new_key = np.zeros(rows.size, dtype=np.bool_)
    new_key[0] = True
    for key in keys:
        ranked = key[order]
        new_key[1:] |= ranked[1:] != ranked[:-1]
    run = np.cumsum(new_key) - 1  # the run (key) of each sorted row
    first_row = rows[new_key]  # each run's first row (rows ascend within a run)
    rank = np.empty(first_row.size, dtype=np.int64)
    rank[np.argsort(first_row)] = np.arange(first_row.size)
    groups[rows] = rank[run]
    return groups

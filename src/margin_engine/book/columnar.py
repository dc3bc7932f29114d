"""Resolve a portfolio once into dense arrays.

Positions of account ``a`` are rows ``offsets[a]:offsets[a+1]`` (CSR). Instruments are rows of
an ``InstrumentTable``; ``position_instrument`` indexes it. Collateral is a dense
``accounts x assets`` matrix (assets are few).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

from margin_engine.core.types import BoolArray, FloatArray, Int32Array, IntArray
from margin_engine.domain.accounts import Portfolio
from margin_engine.domain.instruments import (
    Instrument,
    InstrumentKind,
    MarginMode,
    OptionRight,
    Settlement,
)

MODE_CODES = {MarginMode.ISOLATED: 0, MarginMode.CROSS: 1, MarginMode.PORTFOLIO: 2}
MODES_BY_CODE = {code: mode for mode, code in MODE_CODES.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class InstrumentTable:
    """One row per distinct instrument; ``expiry_ns`` is 0 and ``strike`` NaN where absent."""

    instruments: tuple[Instrument, ...]
    underlyings: tuple[str, ...]
    underlying: Int32Array
    kind: Int32Array
    inverse: BoolArray
    contract_size: FloatArray
    expiry_ns: IntArray
    strike: FloatArray
    is_call: BoolArray
    is_option: BoolArray = field(init=False)  # kind is option (from ``kind``, computed once)
    # instrument name -> its rows, and -> its instrument (the last of that name), computed once:
    # a monitor tick looks up the market's marks by name
    rows_by_name: Mapping[str, IntArray] = field(init=False, repr=False, compare=False)
    by_name: Mapping[str, Instrument] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_option", np.asarray(self.kind == int(InstrumentKind.OPTION)))
        rows: dict[str, list[int]] = {}
        for row, instrument in enumerate(self.instruments):
            rows.setdefault(instrument.name, []).append(row)
        object.__setattr__(self, "rows_by_name", {
            name: np.array(found, dtype=np.int64) for name, found in rows.items()})
        object.__setattr__(self, "by_name", {i.name: i for i in self.instruments})

    @staticmethod
    def build(instruments: Sequence[Instrument]) -> InstrumentTable:
        underlyings = tuple(sorted({i.underlying for i in instruments}))
        und_index = {u: k for k, u in enumerate(underlyings)}
        return InstrumentTable(
            instruments=tuple(instruments),
            underlyings=underlyings,
            underlying=np.array([und_index[i.underlying] for i in instruments], dtype=np.int32),
            kind=np.array([int(i.kind) for i in instruments], dtype=np.int32),
            inverse=np.array([i.settlement is Settlement.INVERSE for i in instruments],
                             dtype=np.bool_),
            contract_size=np.array([i.contract_size for i in instruments], dtype=np.float64),
            expiry_ns=np.array([i.expiry_ns or 0 for i in instruments], dtype=np.int64),
            strike=np.array([np.nan if i.strike is None else i.strike for i in instruments],
                            dtype=np.float64),
            is_call=np.array([i.right is OptionRight.CALL for i in instruments], dtype=np.bool_),
        )


class TextColumn(Sequence[str]):
    """Account ids held as an Arrow string array (as a bulk file gives them), turned into
    Python strings on first use: a margin run reads the ids only to name accounts, so a big
    book need not build a million strings it may never show. Equal to any sequence of the
    same strings (a tuple of them included)."""

    __slots__ = ("_array", "_strings")

    def __init__(self, array: Any) -> None:
        self._array = array  # pyarrow StringArray (or LargeStringArray), no nulls
        self._strings: tuple[str, ...] | None = None

    @property
    def arrow(self) -> Any:
        """The ids as the Arrow array they were read as (no copy)."""
        return self._array

    def strings(self) -> tuple[str, ...]:
        if self._strings is None:
            self._strings = tuple(self._array.to_pylist())
        return self._strings

    def __len__(self) -> int:
        return len(self._array)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...

    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return self.strings()[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self.strings())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TextColumn) and self._array.equals(other._array):
            return True
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and self.strings() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.strings())

    def __repr__(self) -> str:
        return f"TextColumn({len(self)} ids)"

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return TextColumn, (self._array,)


@dataclass(frozen=True, slots=True, kw_only=True)
class ColumnarBook:
    account_ids: tuple[str, ...] | TextColumn  # a TextColumn from bulk files
    mode: Int32Array  # MODE_CODES
    instruments: InstrumentTable
    offsets: IntArray  # length accounts + 1
    position_instrument: Int32Array
    size: FloatArray
    entry_price: FloatArray
    assets: tuple[str, ...]
    collateral: FloatArray  # accounts x assets, amounts in asset units
    # Per position, the isolated margin asked for: USD (``margin``) or a leverage on the entry
    # notional; NaN where not given (the account's collateral is then split, see isolated.py).
    position_margin: FloatArray | None = None
    position_leverage: FloatArray | None = None

    @property
    def account_count(self) -> int:
        return len(self.account_ids)

    @property
    def position_count(self) -> int:
        return int(self.position_instrument.shape[0])

    def position_account(self) -> IntArray:
        """Account index of every position row."""
        from margin_engine.book.kernels import position_account_nb

        result: IntArray = position_account_nb(self.offsets)
        return result

    def locate(self, position_row: int) -> tuple[str, int]:
        """Account id and index-within-account of a position row (for error messages)."""
        account = int(np.searchsorted(self.offsets, position_row, side="right")) - 1
        return self.account_ids[account], position_row - int(self.offsets[account])


def book_subset(book: ColumnarBook, accounts: Sequence[int] | IntArray) -> ColumnarBook:
    """The same book restricted to some accounts (in the given order)."""
    index = np.asarray(accounts, dtype=np.int64).reshape(-1)
    starts = book.offsets[index]
    counts = book.offsets[index + 1] - starts
    offsets = np.zeros(index.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    # the position rows of each account in turn: starts[k] + 0, 1, ..., counts[k] - 1
    take = np.arange(int(offsets[-1]), dtype=np.int64) + np.repeat(starts - offsets[:-1],
                                                                    counts)
    ids = book.account_ids
    return ColumnarBook(
        account_ids=tuple([ids[a] for a in index.tolist()]), mode=book.mode[index],
        instruments=book.instruments, offsets=offsets,
        position_instrument=book.position_instrument[take], size=book.size[take],
        entry_price=book.entry_price[take], assets=book.assets,
        collateral=book.collateral[index],
        position_margin=None if book.position_margin is None else book.position_margin[take],
        position_leverage=None if book.position_leverage is None
        else book.position_leverage[take],
    )


def with_instrument_rows(book: ColumnarBook, rows: IntArray | Int32Array) -> ColumnarBook:
    """The same book with its instrument table made of ``rows`` of today's, in that order
    (every instrument a position holds among them): a table in name order, or of the held
    instruments only."""
    from dataclasses import replace

    rank = np.full(len(book.instruments.instruments), -1, dtype=np.int32)
    rank[rows] = np.arange(len(rows), dtype=np.int32)
    table = InstrumentTable.build([book.instruments.instruments[k] for k in rows.tolist()])
    return replace(book, instruments=table, position_instrument=rank[book.position_instrument])


def book_from_portfolio(portfolio: Portfolio) -> ColumnarBook:
    """Resolve a parsed portfolio (file-sized) into a columnar book."""
    names = sorted(portfolio.instruments)
    table = InstrumentTable.build([portfolio.instruments[n] for n in names])
    row_of = {n: k for k, n in enumerate(names)}
    assets = tuple(sorted({a for acc in portfolio.accounts for a in acc.collateral}))
    asset_col = {a: k for k, a in enumerate(assets)}
    accounts = portfolio.accounts
    counts = [len(acc.positions) for acc in accounts]
    offsets = np.zeros(len(accounts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    positions = [p for acc in accounts for p in acc.positions]
    margin = np.array([np.nan if p.margin is None else p.margin for p in positions],
                      dtype=np.float64)
    leverage = np.array([np.nan if p.leverage is None else p.leverage for p in positions],
                        dtype=np.float64)
    collateral = np.zeros((len(accounts), len(assets)), dtype=np.float64)
    for a, acc in enumerate(accounts):
        for asset, amount in acc.collateral.items():
            collateral[a, asset_col[asset]] = amount
    return ColumnarBook(
        account_ids=tuple(acc.id for acc in accounts),
        mode=np.array([MODE_CODES[acc.mode] for acc in accounts], dtype=np.int32),
        instruments=table,
        offsets=offsets,
        position_instrument=np.array([row_of[p.instrument] for p in positions], dtype=np.int32),
        size=np.array([p.size for p in positions], dtype=np.float64),
        entry_price=np.array([p.entry_price for p in positions], dtype=np.float64),
        assets=assets,
        collateral=collateral,
        position_margin=margin if np.isfinite(margin).any() else None,
        position_leverage=leverage if np.isfinite(leverage).any() else None,
    )


def book_from_columns(
    *,
    account_ids: Sequence[str],
    mode: Int32Array,
    instruments: Sequence[Instrument],
    position_account: IntArray,
    position_instrument: Int32Array,
    size: FloatArray,
    entry_price: FloatArray,
    assets: Sequence[str] = (),
    collateral: FloatArray | None = None,
    position_margin: FloatArray | None = None,
    position_leverage: FloatArray | None = None,
) -> ColumnarBook:
    """Build a book from per-position columns (any row order); rows are grouped by account
    with a stable sort, so positions keep their order within each account."""
    from margin_engine.book.kernels import OUT_OF_RANGE, UNGROUPED, grouped_offsets_nb

    n_accounts = len(account_ids)
    account_col = np.asarray(position_account)
    if account_col.dtype.kind != "i":
        account_col = account_col.astype(np.int64)
    offsets, status = grouped_offsets_nb(account_col, n_accounts)
    if status == OUT_OF_RANGE:
        raise ValueError(f"every position's account must lie in [0, {n_accounts})")
    if status == UNGROUPED:  # a stable sort keeps each account's rows in their order
        order = np.argsort(account_col, kind="stable")
        position_instrument = position_instrument[order]
        size = size[order]
        entry_price = entry_price[order]
        position_margin = None if position_margin is None else position_margin[order]
        position_leverage = None if position_leverage is None else position_leverage[order]
    return ColumnarBook(
        account_ids=account_ids if isinstance(account_ids, TextColumn) else tuple(account_ids),
        mode=np.asarray(mode, dtype=np.int32),
        instruments=InstrumentTable.build(instruments),
        offsets=offsets,
        position_instrument=np.asarray(position_instrument, dtype=np.int32),
        size=np.asarray(size, dtype=np.float64),
        entry_price=np.asarray(entry_price, dtype=np.float64),
        assets=tuple(assets),
        collateral=(np.zeros((n_accounts, 0)) if collateral is None
                    else np.asarray(collateral, dtype=np.float64)),
        position_margin=None if position_margin is None
        else np.asarray(position_margin, dtype=np.float64),
        position_leverage=None if position_leverage is None
        else np.asarray(position_leverage, dtype=np.float64),
    )

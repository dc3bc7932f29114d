"""Bulk books from CSV or Parquet (millions of rows), resolved column-wise.

positions file: columns ``account, instrument, size, entry_price`` (one row per position),
optionally ``margin`` (USD) or ``leverage`` per row: an isolated position's own margin.
accounts file (optional): ``account, mode`` and one ``collateral_<ASSET>`` column per asset (an
empty cell holds none of that asset); without it every account is in ``default_mode`` with no
collateral.
Checks match the JSON reader: finite numbers in plain ASCII notation of magnitude at most
``MAX_MAGNITUDE``, non-negative collateral, entry prices > 0 but for options, known instruments,
one row per (account, instrument), known accounts, at least one account; the first bad row is
named.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from margin_engine.book.columnar import MODE_CODES, ColumnarBook, book_from_columns
from margin_engine.core.errors import InputError
from margin_engine.core.numbers import MAX_MAGNITUDE, PLAIN_NOTATION, PLAIN_NUMBER
from margin_engine.domain.instruments import Instrument, MarginMode
from margin_engine.io.portfolio_file import resolve_instrument_name


def _read_table(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pq.read_table(path)
        # only an empty cell is missing: words such as "nan" or "NULL" are values, and refused
        return pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(null_values=[""]))
    except FileNotFoundError:
        raise InputError("an existing file", source=str(path), value=str(path)) from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"a readable CSV/Parquet table ({exc})", source=str(path)) from None


def _column(table: Any, name: str, source: str) -> Any:
    if name not in table.column_names:
        raise InputError(f"a column named {name!r} (columns: {table.column_names})",
                         source=source, field=name)
    return table.column(name)


def _first(mask: np.ndarray) -> int:
    return int(np.nonzero(mask)[0][0])


def _numbers(table: Any, name: str, source: str, account_of: Callable[[int], str],
             field: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A numeric column as float64 (NaN where empty) and its mask of empty cells; cells given as
    text are numbers in plain ASCII notation, as in the JSON files. ``field`` names the column
    in errors (default: the column and row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = _column(table, name, source)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        text = pc.utf8_trim_whitespace(column)
        text = pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)
        plain = pc.match_substring_regex(text, f"^(?:{PLAIN_NUMBER})$").fill_null(True)
        bad = ~np.asarray(plain.to_numpy(zero_copy_only=False), dtype=bool)
        if bad.any():
            row = _first(bad)
            raise InputError(f"a finite number {PLAIN_NOTATION}", source=source,
                             account=account_of(row), field=field or f"{name} (row {row + 1})",
                             value=column[row].as_py())
        column = text
    try:
        values = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"numbers in column {name!r} ({exc})", source=source, field=name) from None
    missing = np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64), missing


def _optional_numbers(table: Any, name: str, source: str,
                      account_of: Callable[[int], str]) -> np.ndarray:
    """An optional numeric column (NaN where absent or empty); NaN written out is refused."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    values, missing = _numbers(table, name, source, account_of)
    written_nan = np.isnan(values) & ~missing
    if written_nan.any():
        row = _first(written_nan)
        raise InputError("an empty cell or a finite number", source=source,
                         field=f"{name} (row {row + 1})", value=float(values[row]),
                         account=account_of(row))
    return values


def _strings(table: Any, name: str, source: str) -> tuple[list[str], np.ndarray]:
    """Dictionary-encode a string column: (unique values, code per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        column = pc.cast(_column(table, name, source), pa.string()).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"text in column {name!r} ({exc})", source=source, field=name) from None
    blank = pc.equal(pc.utf8_trim_whitespace(column), "").fill_null(True)
    if pc.any(blank).as_py():
        row = _first(np.asarray(blank.to_numpy(zero_copy_only=False), dtype=bool))
        raise InputError(f"a value on every row (row {row + 1} is empty)", source=source,
                         field=name)
    encoded = column.dictionary_encode()
    return ([str(v) for v in encoded.dictionary.to_pylist()],
            encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64))


def read_bulk_book(
    positions_path: str | Path,
    accounts_path: str | Path | None = None,
    *,
    declared: Mapping[str, Instrument] | None = None,
    default_mode: MarginMode = MarginMode.PORTFOLIO,
) -> ColumnarBook:
    positions_path = Path(positions_path)
    source = str(positions_path)
    table = _read_table(positions_path)
    names, inst_codes = _strings(table, "instrument", source)
    account_names, account_codes = _strings(table, "account", source)

    def account_of(row: int) -> str:
        return account_names[int(account_codes[row])]

    size, _ = _numbers(table, "size", source, account_of)
    entry, _ = _numbers(table, "entry_price", source, account_of)
    margin = _optional_numbers(table, "margin", source, account_of)
    leverage = _optional_numbers(table, "leverage", source, account_of)

    instruments: list[Instrument] = []
    for k, name in enumerate(names):
        try:
            instruments.append(resolve_instrument_name(name, declared or {}))
        except ValueError as exc:
            row = _first(inst_codes == k)
            raise InputError(str(exc), source=source, field=f"instrument (row {row + 1})",
                             value=name) from None
    is_option = np.array([i.is_option for i in instruments], dtype=bool)[inst_codes]
    too_large = f"of magnitude <= {MAX_MAGNITUDE:g}"
    for label, values, bad, expected in (
        ("size", size, ~np.isfinite(size), "a finite number"),
        ("size", size, np.abs(size) > MAX_MAGNITUDE, f"a finite number {too_large}"),
        ("entry_price", entry, ~(np.isfinite(entry) & (entry >= 0.0)), "a finite number >= 0"),
        ("entry_price", entry, entry > MAX_MAGNITUDE, f"a finite number >= 0 {too_large}"),
        ("entry_price", entry, (entry == 0.0) & ~is_option,
         "an entry price > 0 for a spot, perpetual or future"),
        ("margin", margin, ~np.isnan(margin) & ~((margin >= 0.0) & (margin <= MAX_MAGNITUDE)),
         f"an empty cell or a finite number >= 0 {too_large}"),
        ("leverage", leverage, ~np.isnan(leverage) & ~((leverage > 0.0)
                                                       & (leverage <= MAX_MAGNITUDE)),
         f"an empty cell or a finite number > 0 {too_large}"),
        ("margin", margin, ~np.isnan(margin) & ~np.isnan(leverage),
         "either margin or leverage on a row, not both"),
    ):
        if bad.any():
            row = _first(bad)
            raise InputError(expected, source=source, field=f"{label} (row {row + 1})",
                             value=float(values[row]), account=account_of(row))
    key = account_codes * max(len(names), 1) + inst_codes
    sorted_key = np.sort(key)
    repeated = np.nonzero(sorted_key[1:] == sorted_key[:-1])[0]
    if repeated.size:
        dup = sorted_key[repeated[0]]
        raise InputError("each instrument once per account (merge the rows)", source=source,
                         field="instrument", value=names[int(dup % max(len(names), 1))],
                         account=account_names[int(dup // max(len(names), 1))])

    if accounts_path is None:
        account_ids = account_names
        mode = np.full(len(account_ids), MODE_CODES[default_mode], dtype=np.int32)
        assets: list[str] = []
        collateral = np.zeros((len(account_ids), 0))
        position_account = account_codes
    else:
        account_ids, mode, assets, collateral = _read_accounts(Path(accounts_path))
        index_of = {a: k for k, a in enumerate(account_ids)}
        missing = [a for a in account_names if a not in index_of]
        if missing:
            raise InputError(f"an account listed in {accounts_path}", source=source,
                             field="account", value=missing[0])
        remap = np.array([index_of[a] for a in account_names], dtype=np.int64)
        position_account = remap[account_codes]
    if not account_ids:
        raise InputError("a portfolio with at least one account", field="account",
                         value="no rows", source=source if accounts_path is None
                         else str(accounts_path))
    return book_from_columns(
        account_ids=account_ids, mode=mode, instruments=instruments,
        position_account=position_account, position_instrument=inst_codes.astype(np.int32),
        size=size, entry_price=entry, assets=assets, collateral=collateral,
        position_margin=margin if np.isfinite(margin).any() else None,
        position_leverage=leverage if np.isfinite(leverage).any() else None,
    )


def _read_accounts(path: Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    source = str(path)
    table = _read_table(path)
    unique_ids, id_codes = _strings(table, "account", source)
    ids = [unique_ids[c] for c in id_codes]
    if len(unique_ids) != len(ids):
        seen: set[str] = set()
        dup = next(a for a in ids if a in seen or seen.add(a))  # type: ignore[func-returns-value]
        raise InputError("a unique account id per row", source=source, field="account", value=dup)
    modes_text, mode_codes = _strings(table, "mode", source)
    known = {m.value: MODE_CODES[m] for m in MarginMode}
    for k, text in enumerate(modes_text):
        if text not in known:
            row = _first(mode_codes == k)
            raise InputError(f"one of {sorted(known)}", source=source, account=ids[row],
                             field="mode", value=text)
    mode = np.array([known[t] for t in modes_text], dtype=np.int32)[mode_codes]
    assets = [c[len("collateral_"):] for c in table.column_names if c.startswith("collateral_")]
    unknown = [c for c in table.column_names
               if c not in ("account", "mode") and not c.startswith("collateral_")]
    if unknown:
        raise InputError("columns account, mode, collateral_<ASSET>", source=source,
                         field=unknown[0], value="unknown column")
    collateral = np.zeros((len(ids), len(assets)))
    for col, asset in enumerate(assets):
        values, empty = _numbers(table, f"collateral_{asset}", source, ids.__getitem__,
                                 field=f"collateral.{asset}")
        values = np.where(empty, 0.0, values)  # an empty cell holds none of that asset
        for bad, expected in (
            (~(np.isfinite(values) & (values >= 0.0)), "a finite amount >= 0"),
            (values > MAX_MAGNITUDE, f"a finite amount >= 0 of magnitude <= {MAX_MAGNITUDE:g}"),
        ):
            if bad.any():
                row = _first(bad)
                raise InputError(expected, source=source, account=ids[row],
                                 field=f"collateral.{asset}", value=float(values[row]))
        collateral[:, col] = values
    return ids, mode, assets, collateral

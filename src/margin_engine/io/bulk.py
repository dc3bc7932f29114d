"""Bulk books from CSV or Parquet (millions of rows), resolved column-wise.

positions file: columns ``account, instrument, size, entry_price`` (one row per position).
accounts file (optional): ``account, mode`` and one ``collateral_<ASSET>`` column per asset;
without it every account is in ``default_mode`` with no collateral.
Checks match the JSON reader: finite numbers, non-negative collateral, known instruments, one row
per (account, instrument), known accounts; the first bad row is named.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from margin_engine.book.columnar import MODE_CODES, ColumnarBook, book_from_columns
from margin_engine.core.errors import InputError
from margin_engine.domain.instruments import Instrument, MarginMode
from margin_engine.io.portfolio_file import resolve_instrument_name


def _read_table(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pq.read_table(path)
        return pa_csv.read_csv(path)
    except FileNotFoundError:
        raise InputError("an existing file", source=str(path), value=str(path)) from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"a readable CSV/Parquet table ({exc})", source=str(path)) from None


def _column(table: Any, name: str, source: str) -> Any:
    if name not in table.column_names:
        raise InputError(f"a column named {name!r} (columns: {table.column_names})",
                         source=source, field=name)
    return table.column(name)


def _numbers(table: Any, name: str, source: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = _column(table, name, source)
    try:
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"numbers in column {name!r} ({exc})", source=source, field=name) from None
    return np.asarray(values, dtype=np.float64)


def _strings(table: Any, name: str, source: str) -> tuple[list[str], np.ndarray]:
    """Dictionary-encode a string column: (unique values, code per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = pc.cast(_column(table, name, source), pa.string()).combine_chunks()
    if column.null_count:
        row = int(np.nonzero(column.is_null().to_numpy(zero_copy_only=False))[0][0])
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
    size = _numbers(table, "size", source)
    entry = _numbers(table, "entry_price", source)

    instruments: list[Instrument] = []
    for k, name in enumerate(names):
        try:
            instruments.append(resolve_instrument_name(name, declared or {}))
        except ValueError as exc:
            row = int(np.nonzero(inst_codes == k)[0][0])
            raise InputError(str(exc), source=source, field=f"instrument (row {row + 1})",
                             value=name) from None
    for label, values, minimum in (("size", size, None), ("entry_price", entry, 0.0)):
        bad = ~np.isfinite(values) if minimum is None else ~(np.isfinite(values) &
                                                             (values >= minimum))
        if bad.any():
            row = int(np.nonzero(bad)[0][0])
            raise InputError("a finite number" + ("" if minimum is None else " >= 0"),
                             source=source, field=f"{label} (row {row + 1})",
                             value=float(values[row]), account=account_names[account_codes[row]])
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
    return book_from_columns(
        account_ids=account_ids, mode=mode, instruments=instruments,
        position_account=position_account, position_instrument=inst_codes.astype(np.int32),
        size=size, entry_price=entry, assets=assets, collateral=collateral,
    )


def _read_accounts(path: Path) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    source = str(path)
    table = _read_table(path)
    ids = [str(v) for v in _column(table, "account", source).to_pylist()]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(a for a in ids if a in seen or seen.add(a))  # type: ignore[func-returns-value]
        raise InputError("a unique account id per row", source=source, field="account", value=dup)
    modes_text = [str(v) for v in _column(table, "mode", source).to_pylist()]
    known = {m.value: MODE_CODES[m] for m in MarginMode}
    mode = np.empty(len(ids), dtype=np.int32)
    for row, text in enumerate(modes_text):
        if text not in known:
            raise InputError(f"one of {sorted(known)}", source=source, account=ids[row],
                             field="mode", value=text)
        mode[row] = known[text]
    assets = [c[len("collateral_"):] for c in table.column_names if c.startswith("collateral_")]
    unknown = [c for c in table.column_names
               if c not in ("account", "mode") and not c.startswith("collateral_")]
    if unknown:
        raise InputError("columns account, mode, collateral_<ASSET>", source=source,
                         field=unknown[0], value="unknown column")
    collateral = np.zeros((len(ids), len(assets)))
    for col, asset in enumerate(assets):
        values = np.nan_to_num(_numbers(table, f"collateral_{asset}", source), nan=0.0,
                               posinf=np.inf, neginf=-np.inf)
        bad = ~(np.isfinite(values) & (values >= 0.0))
        if bad.any():
            row = int(np.nonzero(bad)[0][0])
            raise InputError("a finite amount >= 0", source=source, account=ids[row],
                             field=f"collateral.{asset}", value=float(values[row]))
        collateral[:, col] = values
    return ids, mode, assets, collateral

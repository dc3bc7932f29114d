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
from numba import njit

from margin_engine.book.columnar import MODE_CODES, ColumnarBook, TextColumn, book_from_columns
from margin_engine.core.errors import InputError
from margin_engine.core.names import (
    EXPECTED_ACCOUNT_ID,
    MAX_NAME_LENGTH,
    account_id_problem,
    check_name,
)
from margin_engine.core.numbers import MAX_MAGNITUDE, PLAIN_NOTATION, PLAIN_NUMBER
from margin_engine.core.threads import in_threads
from margin_engine.domain.instruments import Instrument, MarginMode
from margin_engine.io.portfolio_file import resolve_instrument_name

REQUIRED = ("account", "instrument", "size", "entry_price")  # of a positions file
OPTIONAL = ("margin", "leverage")


def _read_table(path: Path, wanted: tuple[str, ...] = ()) -> Any:
    """The table of a CSV or Parquet file. Of a Parquet file with every ``REQUIRED`` column,
    only the ``wanted`` columns are decoded (else all, so that the error lists them all)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            columns = None
            names = pq.read_schema(path, memory_map=True).names
            _refuse_repeated_columns(names, path)
            if wanted:
                present = [n for n in names if n in wanted]
                if set(REQUIRED) <= set(present):
                    columns = present
            table = pq.read_table(path, columns=columns, memory_map=True)
        else:
            # only an empty cell is missing: words such as "nan" or "NULL" are values, refused
            table = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(
                null_values=[""]))
    except FileNotFoundError:
        raise InputError("an existing file", source=str(path), value=str(path)) from None
    except (pa.ArrowInvalid, OSError) as exc:
        reason = " ".join(str(exc).split())  # one line (Arrow's messages hold schemas)
        raise InputError(f"a readable CSV/Parquet table ({reason})", source=str(path)) from None
    _refuse_repeated_columns(table.column_names, path)
    return table


def _refuse_repeated_columns(names: list[str], path: Path) -> None:
    """A column name given twice: which of the two would be read is nobody's guess."""
    repeated = next((n for k, n in enumerate(names) if n in names[:k]), None)
    if repeated is not None:
        raise InputError("each column once", source=str(path), field=repeated,
                         value=f"{names.count(repeated)} columns of that name")


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
    text are numbers in plain ASCII notation, as in the JSON files; 4-byte floats are read as
    the shortest decimal that names each. ``field`` names the column in errors
    (default: the column and row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = _column(table, name, source)
    if pa.types.is_boolean(column.type):  # (a CSV reader reads true/false cells as these)
        filled = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        row = _first(filled) if filled.any() else 0
        raise InputError("a finite number, not true or false", source=source,
                         account=account_of(row), field=field or f"{name} (row {row + 1})",
                         value=column[row].as_py())
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
    elif pa.types.is_float32(column.type):
        # the shortest decimal that names each value, as its writer gave it (a size of 1.1 in
        # 4 bytes is 1.10000002384185791015625: read as 1.1, not as that)
        column = pc.cast(column, pa.string())
    try:
        values = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"numbers in column {name!r} ({exc})", source=source, field=name) from None
    missing = np.zeros(len(values), dtype=bool) if values.null_count == 0 \
        else np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64), missing


def _required_numbers(table: Any, name: str, source: str,
                      account_of: Callable[[int], str]) -> np.ndarray:
    """A numeric column with a number on every row: an empty cell is refused by its row (it
    would otherwise read as NaN, reported as a NaN written out)."""
    values, missing = _numbers(table, name, source, account_of)
    if missing.any():
        row = _first(missing)
        raise InputError("a finite number on every row (this cell is empty)", source=source,
                         account=account_of(row), field=f"{name} (row {row + 1})")
    return values


def _optional_numbers(table: Any, name: str, source: str,
                      account_of: Callable[[int], str]) -> np.ndarray | None:
    """An optional numeric column (None when absent, NaN where empty); NaN written out is
    refused."""
    if name not in table.column_names:
        return None
    values, missing = _numbers(table, name, source, account_of)
    written_nan = np.isnan(values) & ~missing
    if written_nan.any():
        row = _first(written_nan)
        raise InputError("an empty cell or a finite number", source=source,
                         field=f"{name} (row {row + 1})", value=float(values[row]),
                         account=account_of(row))
    return values


def _strings(table: Any, name: str, source: str,
             dtype: type[np.signedinteger[Any]] = np.int64) -> tuple[list[str], np.ndarray]:
    """Dictionary-encode a string column: (distinct values, code per row)."""
    values, codes = _codes(table, name, source, dtype=dtype)
    return [str(v) for v in values.to_pylist()], codes


def _codes(table: Any, name: str, source: str, *, distinct: bool = True,
           dtype: type[np.signedinteger[Any]] = np.int64) -> tuple[Any, np.ndarray]:
    """A text column as (its values, an Arrow string array, each used by some row; the code
    of every row, of ``dtype``). A dictionary column (Parquet written from Arrow) is read
    through its dictionaries, so each value is checked once and no row is cast to text; other
    columns are cast to text and encoded. ``distinct=False``: the values may repeat (a
    dictionary holding a value twice, or the dictionaries of several row groups sharing one),
    for a caller that looks them up by value. Empty or blank cells are refused, naming the
    first such row."""
    import pyarrow as pa

    column = _column(table, name, source)
    merged = _dictionary_codes(column, distinct, dtype) \
        if pa.types.is_dictionary(column.type) else None
    if merged is None:
        values, codes = _encoded_codes(column, name, source)
        return values, codes.astype(dtype, copy=False)
    dictionary, codes, used = merged
    if column.null_count:
        _refuse_blank(np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool),
                      name, source)
    if (_blank(dictionary) & used).any():
        _refuse_blank(_blank(dictionary)[codes], name, source)
    if not used.all():
        codes = (np.cumsum(used) - 1).astype(dtype)[codes]
        dictionary = dictionary.filter(pa.array(used))
    return dictionary, codes


def _dictionary_codes(column: Any, distinct: bool, dtype: type[np.signedinteger[Any]]
                      ) -> tuple[Any, np.ndarray, np.ndarray] | None:
    """(values, code per row, whether a row has the value) of a dictionary column of text, or
    None for another value type. Chunks sharing a dictionary (one Parquet row group) share it
    here; distinct dictionaries are merged by encoding their values (not the rows) once,
    unless ``distinct`` is False. The codes are mapped in one compiled pass a chunk."""
    import pyarrow as pa

    value_type = column.type.value_type
    if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)):
        return None
    dictionaries: list[Any] = []
    where: dict[tuple[int, ...], int] = {}  # buffers of a dictionary -> its offset in the merge
    bases, parts = [], []
    total = 0
    for chunk in column.chunks:
        dictionary = chunk.dictionary
        key = tuple(b.address if b is not None else 0 for b in dictionary.buffers())
        if key not in where:
            where[key] = total
            dictionaries.append(dictionary.cast(pa.string()))
            total += len(dictionary)
        bases.append(where[key])
        indices = chunk.indices.fill_null(0) if chunk.null_count else chunk.indices
        part = indices.to_numpy(zero_copy_only=False)
        parts.append(part if part.dtype.kind == "i" else part.astype(np.int64))
    values = pa.concat_arrays(dictionaries) if dictionaries else pa.array([], type=pa.string())
    mapping = np.arange(len(values), dtype=dtype)
    if distinct and dictionaries:
        # a value in two dictionaries (or twice in one): one code
        encoded = values.dictionary_encode()
        if len(encoded.dictionary) < len(values):  # else the merge is the identity
            mapping = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=dtype)
            values = encoded.dictionary
    starts = np.concatenate(([0], np.cumsum([len(p) for p in parts], dtype=np.int64)))
    codes = np.empty(int(starts[-1]), dtype=dtype)
    used_by: dict[int, np.ndarray] = {}

    def mapped(first: int, last: int) -> None:  # chunk by chunk: no concatenated copy
        used_by[first] = used = np.zeros(len(values), dtype=np.bool_)
        for c in range(first, last):
            _mapped_codes_nb(parts[c], bases[c], mapping, codes[starts[c]:starts[c + 1]], used)

    if codes.size >= THREADED_ROWS:  # a few chunks a thread (each marks the codes it gives)
        in_threads(len(parts), mapped, pieces_per_thread=1, least=2)
    else:
        mapped(0, len(parts))
    used = np.logical_or.reduce(list(used_by.values())) if used_by else \
        np.zeros(len(values), dtype=np.bool_)
    return values, codes, used


THREADED_ROWS = 1_000_000  # rows from which the codes are mapped on several threads


@njit(cache=True, nogil=True)
def _mapped_codes_nb(indices: np.ndarray, base: int, mapping: np.ndarray, codes: np.ndarray,
                     used: np.ndarray) -> None:
    """``codes[r] = mapping[base + indices[r]]`` of the rows of one chunk; ``used`` set for
    every code given to a row."""
    for r in range(indices.shape[0]):
        k = mapping[base + indices[r]]
        codes[r] = k
        used[k] = True


def text_buffers(text: Any) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, bytes) of an Arrow string or large string array, without a copy."""
    import pyarrow as pa

    _, offsets_buffer, data_buffer = text.buffers()
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(offsets_buffer, dtype=width, count=text.offset + len(text) + 1
                            )[text.offset:] if offsets_buffer is not None \
        else np.zeros(len(text) + 1, dtype=width)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None \
        else np.zeros(0, dtype=np.uint8)
    return offsets, data


def _repeats_text(text: Any) -> bool:
    """Whether a string array holds some value twice (no nulls): its rows hashed and
    partitioned by hash, then each part checked in a small hash table (a table over all rows
    would miss the cache on nearly every row)."""
    return bool(_repeats_text_nb(*text_buffers(text)))


@njit(cache=True, nogil=True)
def _repeats_text_nb(offsets: np.ndarray, data: np.ndarray) -> bool:
    n = offsets.shape[0] - 1
    hashes = np.empty(n, dtype=np.uint64)
    for r in range(n):  # FNV-1a over the bytes, then the murmur3 finaliser
        h = np.uint64(14695981039346656037)
        for b in range(offsets[r], offsets[r + 1]):
            h = (h ^ np.uint64(data[b])) * np.uint64(1099511628211)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        hashes[r] = h | np.uint64(1)  # 0 marks an empty slot
    bits = 1  # parts of about 2,048 rows: their table stays in the cache
    while (n >> bits) > 2048:
        bits += 1
    shift = np.uint64(64 - bits)
    parts = np.zeros((1 << bits) + 1, dtype=np.int64)
    for r in range(n):
        parts[(hashes[r] >> shift) + np.uint64(1)] += 1
    largest = 0
    for p in range(1 << bits):
        largest = max(largest, parts[p + 1])
        parts[p + 1] += parts[p]
    order = np.empty(n, dtype=np.int64)  # rows part by part, and their hashes
    ordered = np.empty(n, dtype=np.uint64)
    fill = parts[:-1].copy()
    for r in range(n):
        p = hashes[r] >> shift
        order[fill[p]] = r
        ordered[fill[p]] = hashes[r]
        fill[p] += 1
    size = 2
    while size < 2 * largest:
        size *= 2
    mask = np.uint64(size - 1)
    table = np.zeros(size, dtype=np.uint64)
    rows = np.zeros(size, dtype=np.int64)
    for p in range(1 << bits):
        for k in range(parts[p], parts[p + 1]):
            h = ordered[k]
            j = h & mask
            while table[j] != 0:
                if table[j] == h:
                    r, s = order[k], rows[j]
                    length = offsets[r + 1] - offsets[r]
                    if offsets[s + 1] - offsets[s] == length:
                        same = True
                        for i in range(length):
                            if data[offsets[s] + i] != data[offsets[r] + i]:
                                same = False
                                break
                        if same:
                            return True
                j = (j + np.uint64(1)) & mask
            table[j] = h
            rows[j] = order[k]
        for k in range(parts[p], parts[p + 1]):  # empty the table for the next part
            j = ordered[k] & mask
            while table[j] != 0:
                table[j] = 0
                j = (j + np.uint64(1)) & mask
    return False


def _blank(values: Any) -> np.ndarray:
    """Whether each value is null, empty or white space only."""
    import pyarrow.compute as pc

    if values.null_count == 0 and _printable_starts_nb(*text_buffers(values)):
        return np.zeros(len(values), dtype=bool)  # each starts with a visible ASCII character
    blank = pc.equal(pc.utf8_trim_whitespace(values), "").fill_null(True)
    return np.asarray(blank.to_numpy(zero_copy_only=False), dtype=bool)


@njit(cache=True, nogil=True)
def _printable_starts_nb(offsets: np.ndarray, data: np.ndarray) -> bool:
    """Whether every value starts with a visible ASCII character (so none is blank)."""
    for r in range(offsets.shape[0] - 1):
        if offsets[r + 1] == offsets[r] or not 0x21 <= data[offsets[r]] <= 0x7E:
            return False
    return True


def _refuse_bad_names(values: Any, name: str, source: str, row_of: Callable[[int], int]) -> None:
    """Refuse a value of a string array (no nulls) that is not an account id
    (``core.names.account_id_problem``: a name, without spaces at its ends, which the portfolio
    reader strips: a book read here and the same book written as a portfolio document must
    name the same accounts), naming its row (``row_of``: the file row of a value's index).
    Values of printable ASCII within the length that neither start nor end with a space are
    passed by one compiled scan of the bytes; only the others are read as text."""
    for k in np.flatnonzero(_unplain_nb(*text_buffers(values), MAX_NAME_LENGTH)).tolist():
        text = str(values[k].as_py())
        problem = account_id_problem(text)
        if problem is not None:  # the row is looked up for a refusal only
            raise InputError(f"{EXPECTED_ACCOUNT_ID}; {problem}",
                             field=f"{name} (row {row_of(k) + 1})", value=text, source=source)


@njit(cache=True, nogil=True)
def _unplain_nb(offsets: np.ndarray, data: np.ndarray, max_length: int) -> np.ndarray:
    """Whether each value holds a byte outside printable ASCII (0x20-0x7E) or more than
    ``max_length`` bytes, or starts or ends with a space: the values a name check must read."""
    n = offsets.shape[0] - 1
    out = np.zeros(n, dtype=np.bool_)
    for r in range(n):
        start, stop = offsets[r], offsets[r + 1]
        if stop - start > max_length or (stop > start and (data[start] == 0x20
                                                           or data[stop - 1] == 0x20)):
            out[r] = True
            continue
        for b in range(start, stop):
            if not 0x20 <= data[b] <= 0x7E:
                out[r] = True
                break
    return out


def _refuse_blank(blank: np.ndarray, name: str, source: str) -> None:
    if blank.any():
        row = _first(blank)
        raise InputError(f"a value on every row (row {row + 1} is empty)", source=source,
                         field=name)


def _text(column: Any, name: str, source: str) -> Any:
    """A column cast to one Arrow string array, no cell empty or blank."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        text = pc.cast(column, pa.string()).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"text in column {name!r} ({exc})", source=source, field=name) from None
    _refuse_blank(_blank(text), name, source)
    return text


def _encoded_codes(column: Any, name: str, source: str) -> tuple[Any, np.ndarray]:
    """Cast to text and dictionary-encode (plain text columns)."""
    encoded = _text(column, name, source).dictionary_encode()
    return encoded.dictionary, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def read_bulk_book(
    positions_path: str | Path,
    accounts_path: str | Path | None = None,
    *,
    declared: Mapping[str, Instrument] | None = None,
    default_mode: MarginMode = MarginMode.PORTFOLIO,
) -> ColumnarBook:
    """The book of a positions file (and its accounts file); its account ids are a
    ``TextColumn`` (Arrow text, Python strings only once a caller reads them). The accounts
    file is read on a second thread while the positions are decoded (the decoding kernels
    release the GIL); a bad positions file is reported before a bad accounts file."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        accounts = None if accounts_path is None else \
            pool.submit(_read_accounts, Path(accounts_path))
        return _read_positions(Path(positions_path), accounts, accounts_path, declared,
                               default_mode)


def _read_positions(positions_path: Path, accounts: Any, accounts_path: str | Path | None,
                    declared: Mapping[str, Instrument] | None,
                    default_mode: MarginMode) -> ColumnarBook:
    """``read_bulk_book`` with the accounts file's reading (``_read_accounts``) under way as
    the future ``accounts`` (None: no accounts file)."""
    source = str(positions_path)
    table = _read_table(positions_path, REQUIRED + OPTIONAL)
    names, inst_codes = _strings(table, "instrument", source, dtype=np.int32)
    account_values, account_codes = _codes(
        table, "account", source, distinct=accounts_path is None,
        dtype=np.int32 if table.num_rows < np.iinfo(np.int32).max else np.int64)

    _refuse_bad_names(account_values, "account", source,
                      lambda k: _first(account_codes == k))

    def account_of(row: int) -> str:
        return str(account_values[int(account_codes[row])].as_py())

    size = _required_numbers(table, "size", source, account_of)
    entry = _required_numbers(table, "entry_price", source, account_of)
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
    is_option = np.array([i.is_option for i in instruments], dtype=bool)
    _check_rows(size, entry, margin, leverage, is_option, inst_codes, source, account_of)
    if accounts is None:
        account_ids = TextColumn(account_values)
        mode = np.full(len(account_ids), MODE_CODES[default_mode], dtype=np.int32)
        assets: list[str] = []
        collateral = np.zeros((len(account_ids), 0))
        position_account = account_codes
    else:
        account_ids, mode, assets, collateral, id_values = accounts.result()
        rows = _account_rows(account_values, id_values, source, str(accounts_path))
        position_account = account_codes if rows is None else rows[account_codes]
    if not len(account_ids):
        raise InputError("a portfolio with at least one account", field="account",
                         value="no rows", source=source if accounts_path is None
                         else str(accounts_path))
    book = book_from_columns(
        account_ids=account_ids, mode=mode, instruments=instruments,
        position_account=position_account, position_instrument=inst_codes,
        size=size, entry_price=entry, assets=assets, collateral=collateral,
        position_margin=margin if margin is not None and np.isfinite(margin).any() else None,
        position_leverage=leverage if leverage is not None and np.isfinite(leverage).any()
        else None,
    )
    _refuse_repeats(book, source)
    return book


def _check_rows(size: np.ndarray, entry: np.ndarray, margin: np.ndarray | None,
                leverage: np.ndarray | None, inst_is_option: np.ndarray,
                inst_codes: np.ndarray, source: str, account_of: Callable[[int], str]) -> None:
    """The per-row checks of the JSON reader (``io.row_checks``); the first check that fails
    is reported at its first row."""
    from margin_engine.io.row_checks import first_bad_rows_nb

    too_large = f"of magnitude <= {MAX_MAGNITUDE:g}"
    none = np.zeros(0)
    first = first_bad_rows_nb(size, entry, none if margin is None else margin,
                              none if leverage is None else leverage, inst_codes,
                              inst_is_option, MAX_MAGNITUDE)
    checks = (
        ("size", size, "a finite number"),
        ("size", size, f"a finite number {too_large}"),
        ("entry_price", entry, "a finite number >= 0"),
        ("entry_price", entry, f"a finite number >= 0 {too_large}"),
        ("entry_price", entry, "an entry price > 0 for a spot, perpetual or future"),
        ("margin", margin, f"an empty cell or a finite number >= 0 {too_large}"),
        ("leverage", leverage, f"an empty cell or a finite number > 0 {too_large}"),
        ("margin", margin, "either margin or leverage on a row, not both"))
    for (label, values, expected), row in zip(checks, first.tolist(), strict=True):
        if row >= 0 and values is not None:
            raise InputError(expected, source=source, field=f"{label} (row {row + 1})",
                             value=float(values[row]), account=account_of(row))


def _account_rows(position_ids: Any, account_ids: Any, source: str,
                  accounts_source: str) -> np.ndarray | None:
    """Row of the accounts file of every account value of the positions file; None for the
    identity (both list the same ids in the same order)."""
    import pyarrow.compute as pc

    if position_ids.equals(account_ids):
        return None
    rows = pc.index_in(position_ids, value_set=account_ids)
    if rows.null_count:
        missing = position_ids.filter(rows.is_null())[0].as_py()
        raise InputError(f"an account listed in {accounts_source}", source=source,
                         field="account", value=missing)
    return np.asarray(rows.to_numpy(zero_copy_only=False), dtype=np.int64)


def _refuse_repeats(book: ColumnarBook, source: str) -> None:
    """Each instrument at most once per account (the first repeat in book order is named)."""
    from margin_engine.book.kernels import first_repeat_nb

    row = int(first_repeat_nb(book.offsets, book.position_instrument,
                              len(book.instruments.instruments)))
    if row >= 0:
        account, _ = book.locate(row)
        name = book.instruments.instruments[int(book.position_instrument[row])].name
        raise InputError("each instrument once per account (merge the rows)", source=source,
                         field="instrument", value=name, account=account)


def _read_accounts(path: Path) -> tuple[TextColumn, np.ndarray, list[str], np.ndarray, Any]:
    """(account ids, mode codes, assets, collateral, the ids as an Arrow array)."""
    source = str(path)
    table = _read_table(path)
    id_text = _text(_column(table, "account", source), "account", source)
    _refuse_bad_names(id_text, "account", source, int)
    ids = TextColumn(id_text)  # Python strings only when a result or an error names one
    if _repeats_text(id_text):
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
    for asset in assets:
        check_name(asset, field=f"collateral_{asset}", source=source)
        if asset != asset.strip():  # the portfolio reader strips an asset's name
            raise InputError("an asset name without spaces at its ends",
                             field=f"collateral_{asset}", source=source)
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
    return ids, mode, assets, collateral, id_text

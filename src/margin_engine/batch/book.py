"""A partitioned Parquet bulk book: the bulk files of ``io.bulk`` cut into partitions of
accounts, so that a batch reads one partition at a time (on one machine or many).

Layout of a book folder::

    BOOK/
      positions/part-00000.parquet   account, instrument, size, entry_price [, margin, leverage]
      accounts/part-00000.parquet    account, mode, collateral_<ASSET> ...
      positions/part-00001.parquet   (the next accounts)
      accounts/part-00001.parquet
      ...
      instruments.json               optional: {"NAME": {"kind": ..., ...}} as in a portfolio file

Each ``positions`` part holds the positions of exactly the accounts of the ``accounts`` part of
the same name, or of the same name but for a writer's job id (``paired_parts``; every
column as in the bulk files; string columns may be dictionary-encoded), so
a partition is read and margined alone. Partition order is the order of the names. Parts may
lie in subfolders (``positions/day=2026-12-02/part-0.parquet``, named by that path); files
under a name starting with ``_`` or ``.`` are not parts; a part with no rows at all is empty.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from margin_engine.book.columnar import MODES_BY_CODE, ColumnarBook
from margin_engine.core.errors import InputError
from margin_engine.domain.instruments import Instrument

POSITIONS = "positions"
ACCOUNTS = "accounts"
INSTRUMENTS = "instruments.json"


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition of a book folder: its name and its two files."""

    name: str
    positions: str
    accounts: str


def partitions(folder: str | Path) -> list[Partition]:
    """The partitions of a book folder, in name order (nothing is read but the listing).
    A part is any ``*.parquet`` file under ``positions/``, in subfolders too (a Hive-style
    ``positions/day=2026-12-02/part-0.parquet``), named by its path there without the suffix;
    its accounts are the file of the same path under ``accounts/`` (or that path but for a
    writer's job id: ``paired_parts``). Files and folders whose
    names start with ``_`` or ``.`` (``_SUCCESS``, ``_metadata``, temporaries) are not parts."""
    root = Path(folder)
    if not (root / POSITIONS).is_dir() or not (root / ACCOUNTS).is_dir():
        raise InputError(f"a partitioned book folder with '{POSITIONS}/' and '{ACCOUNTS}/' "
                         "subfolders of Parquet parts", source=str(root), value=str(root))
    parts = parquet_parts(root / POSITIONS)
    if not parts:
        raise InputError("at least one positions/*.parquet part", source=str(root))
    accounts = parquet_parts(root / ACCOUNTS)
    pairs = paired_parts(parts, accounts)
    missing = [name for name in parts if name not in pairs]
    if missing:
        raise InputError(f"an accounts part for every positions part ({ACCOUNTS}/{missing[0]} "
                         "is missing)", source=str(root), value=missing[0])
    alone = sorted(set(accounts) - set(pairs.values()))
    if alone:  # its accounts would not be margined: a positions part without rows says none
        raise InputError(f"a positions part for every accounts part ({POSITIONS}/{alone[0]} "
                         "is missing; a part of accounts without positions holds an empty "
                         "positions file)", source=str(root), value=alone[0])
    return [Partition(name=name.removesuffix(".parquet"),
                      positions=str(root / POSITIONS / name),
                      accounts=str(root / ACCOUNTS / pairs[name])) for name in parts]


# a writer's job id in its part names: Spark's part-00000-<uuid>-c000.snappy.parquet, pyarrow's
# (and pandas') write_to_dataset <uuid as 32 hex digits>-0.parquet
_JOB_ID = re.compile(r"-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                     r"|(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])", re.IGNORECASE)


def paired_parts(positions: list[str], accounts: list[str]) -> dict[str, str]:
    """positions part -> accounts part: the same name, else the same name but for a writer's
    job id (two Spark jobs name their part 0 ``part-00000-<their own uuid>-c000``, two calls
    of pyarrow's ``write_to_dataset`` theirs ``<own uuid hex>-0``), where that pairs exactly
    one with one; parts without a pair are left out."""
    named = set(accounts)
    pairs = {name: name for name in positions if name in named}
    by_key: dict[str, list[str]] = {}
    for name in accounts:
        if name not in pairs:
            by_key.setdefault(_JOB_ID.sub("", name), []).append(name)
    left = {name: _JOB_ID.sub("", name) for name in positions if name not in pairs}
    wanted = Counter(left.values())
    for name, key in left.items():
        if wanted[key] == 1 and len(by_key.get(key, ())) == 1:
            pairs[name] = by_key[key][0]
    return pairs


def parquet_parts(folder: Path) -> list[str]:
    """The ``*.parquet`` files under ``folder`` (subfolders included, symbolic links to
    folders followed, each real folder once) as POSIX paths relative to it, in name order
    (the name without its suffix); none under a name starting with ``_`` or ``.``."""
    found = []
    seen: set[str] = set()
    for top, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a link back up the tree
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = sorted(f for f in folders if not f.startswith(("_", ".")))
        here = Path(top).relative_to(folder)
        found += [(here / name).as_posix() for name in files
                  if name.endswith(".parquet") and not name.startswith(("_", "."))
                  and os.path.isfile(os.path.join(top, name))]
    return sorted(found, key=lambda name: name.removesuffix(".parquet"))


def is_empty(partition: Partition) -> bool:
    """Whether the partition holds no account and no position (a partitioned writer's empty
    part: its result part is empty). Positions without accounts are not empty: they are
    refused when the part is read."""
    import pyarrow.parquet as pq

    try:
        return all(pq.ParquetFile(path).metadata.num_rows == 0
                   for path in (partition.accounts, partition.positions))
    except (OSError, ValueError):  # not Parquet: reading the part says what is wrong
        return False


def declared_instruments(folder: str | Path) -> dict[str, Any]:
    """The book's ``instruments.json`` (name -> instrument object), or nothing."""
    path = Path(folder) / INSTRUMENTS
    if not path.is_file():
        return {}
    from margin_engine.io.jsonfields import loads_unique

    try:
        document = loads_unique(path.read_text())
    except InputError as exc:
        raise exc.located(source=str(path)) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"a JSON object of name -> instrument ({exc})",
                         source=str(path)) from None
    if not isinstance(document, dict):
        raise InputError("a JSON object of name -> instrument", source=str(path))
    return document


def parse_declared(document: Mapping[str, Any]) -> dict[str, Instrument]:
    """Declared instruments as the portfolio reader resolves them."""
    from margin_engine.io.portfolio_file import parse_portfolio

    if not document:
        return {}
    return dict(parse_portfolio({"schema": "margin-engine/portfolio/v1",
                                 "instruments": dict(document),
                                 "accounts": [{"id": "-", "mode": "cross"}]}).instruments)


def read_partition(partition: Partition, declared: Mapping[str, Instrument]) -> ColumnarBook:
    """One partition as a columnar book (the bulk reader's checks and resolution), its
    instruments in name order."""
    from margin_engine.io.bulk import read_bulk_book

    return by_name(read_bulk_book(partition.positions, partition.accounts, declared=declared))


def by_name(book: ColumnarBook) -> ColumnarBook:
    """The same book with its instrument table in name order (as a portfolio file's): a
    partition and the whole book then list shared instruments in the same order, so every
    account's arithmetic is the same in both."""
    from margin_engine.book.columnar import with_instrument_rows

    names = [i.name for i in book.instruments.instruments]
    order = np.argsort(np.array(names, dtype=object), kind="stable")
    if np.array_equal(order, np.arange(len(names))):
        return book
    return with_instrument_rows(book, order)


def read_bulk_path(path: str | Path, accounts_path: str | Path | None = None) -> ColumnarBook:
    """The book at ``path``: a CSV/Parquet positions file with its accounts file, or a book
    folder of partitions (``positions/`` and ``accounts/`` parts, its ``instruments.json``)
    read whole, as the batch's single-process check reads it."""
    from margin_engine.io.bulk import read_bulk_book

    path = Path(path)
    if not path.is_dir():
        return read_bulk_book(path, accounts_path)
    if accounts_path is not None:
        raise InputError("no --accounts with a book folder (its accounts are its accounts/ "
                         "parts)", field="--accounts", value=str(accounts_path))
    return read_book(path)


def read_book(folder: str | Path) -> ColumnarBook:
    """The whole book of a folder in one columnar book (every partition, in order): the
    single-process run a batch is checked against."""
    from margin_engine.batch.ids import id_hashes, refuse_shared, shared_accounts
    from margin_engine.book.columnar import book_from_columns

    declared = parse_declared(declared_instruments(folder))
    parts = [p for p in partitions(folder) if not is_empty(p)]
    if not parts:
        raise InputError("a book with at least one account (every part is empty)",
                         source=str(folder))
    books = [read_partition(p, declared) for p in parts]
    refuse_shared(shared_accounts([id_hashes(b.account_ids) for b in books]),
                  [p.name for p in parts], lambda k: books[k].account_ids)
    names = sorted({i.name: i for b in books for i in b.instruments.instruments}.items())
    row = {name: k for k, (name, _) in enumerate(names)}
    assets = sorted({a for b in books for a in b.assets})
    collateral = np.zeros((sum(b.account_count for b in books), len(assets)))
    start = 0
    for b in books:
        for c, asset in enumerate(b.assets):
            collateral[start:start + b.account_count, assets.index(asset)] = b.collateral[:, c]
        start += b.account_count
    firsts = np.cumsum([0] + [b.account_count for b in books])
    margins = [b.position_margin for b in books]
    leverages = [b.position_leverage for b in books]

    def joined(parts: list[np.ndarray | None], sizes: list[int]) -> np.ndarray | None:
        if all(p is None for p in parts):
            return None
        return np.concatenate([np.full(n, np.nan) if p is None else p
                               for p, n in zip(parts, sizes, strict=True)])

    sizes = [b.position_count for b in books]
    return book_from_columns(
        account_ids=[a for b in books for a in b.account_ids],
        mode=np.concatenate([b.mode for b in books]),
        instruments=[i for _, i in names],
        position_account=np.concatenate([b.position_account() + firsts[k]
                                         for k, b in enumerate(books)]),
        position_instrument=np.concatenate([
            np.array([row[i.name] for i in b.instruments.instruments],
                     dtype=np.int32)[b.position_instrument] for b in books]),
        size=np.concatenate([b.size for b in books]),
        entry_price=np.concatenate([b.entry_price for b in books]),
        assets=assets, collateral=collateral,
        position_margin=joined(margins, sizes), position_leverage=joined(leverages, sizes))


def write_partitioned_book(book: ColumnarBook, folder: str | Path, parts: int,
                           instruments: Mapping[str, Any] | None = None) -> list[Partition]:
    """Write ``book`` as a book folder of ``parts`` partitions of consecutive accounts
    (account and instrument columns dictionary-encoded); returns the partitions."""
    root = Path(folder)
    if instruments:
        root.mkdir(parents=True, exist_ok=True)
        (root / INSTRUMENTS).write_text(json.dumps(dict(instruments), indent=1))
    n = book.account_count
    bounds = np.linspace(0, n, max(1, min(parts, n)) + 1).astype(np.int64)
    for k in range(len(bounds) - 1):
        write_part(book, root, part_name(k), int(bounds[k]), int(bounds[k + 1]))
    return partitions(root)


def part_name(k: int) -> str:
    return f"part-{k:05d}"


def write_part(book: ColumnarBook, folder: str | Path, name: str, first: int = 0,
               stop: int | None = None) -> Partition:
    """Accounts ``first:stop`` of ``book`` as partition ``name`` of a book folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(folder)
    (root / POSITIONS).mkdir(parents=True, exist_ok=True)
    (root / ACCOUNTS).mkdir(parents=True, exist_ok=True)
    a0, a1 = first, book.account_count if stop is None else stop
    p0, p1 = int(book.offsets[a0]), int(book.offsets[a1])
    names = pa.array([i.name for i in book.instruments.instruments], type=pa.string())
    modes = pa.array([MODES_BY_CODE[c].value for c in sorted(MODES_BY_CODE)], type=pa.string())
    ids = pa.array(book.account_ids[a0:a1], type=pa.string())
    counts = np.diff(book.offsets[a0:a1 + 1])
    local = np.repeat(np.arange(a1 - a0, dtype=np.int32), counts)
    columns: dict[str, Any] = {
        "account": pa.DictionaryArray.from_arrays(pa.array(local), ids),
        "instrument": pa.DictionaryArray.from_arrays(
            pa.array(book.position_instrument[p0:p1]), names),
        "size": book.size[p0:p1], "entry_price": book.entry_price[p0:p1]}
    for key, values in (("margin", book.position_margin),
                        ("leverage", book.position_leverage)):
        if values is not None:  # NaN (none asked) is an empty cell
            part = values[p0:p1]
            columns[key] = pa.array(part, mask=np.isnan(part))
    file = f"{name}.parquet"
    pq.write_table(pa.table(columns), root / POSITIONS / file)
    pq.write_table(pa.table({
        "account": ids,
        "mode": pa.DictionaryArray.from_arrays(pa.array(book.mode[a0:a1]), modes),
        **{f"collateral_{asset}": book.collateral[a0:a1, c]
           for c, asset in enumerate(book.assets)}}), root / ACCOUNTS / file)
    return Partition(name=name, positions=str(root / POSITIONS / file),
                     accounts=str(root / ACCOUNTS / file))

"""Portfolio documents (``margin-engine/portfolio/v1``) with their books already resolved.

The monitor keeps its setup as a portfolio document: restarts, ``replay`` and the service parse
it back. A book that did not come from a document is written as one, and the book it parses to
rides along, so the monitor that starts from it need not parse what it has just written: a
generated population as a document (``ResolvedPortfolio``), a CSV/Parquet bulk book of any
size in the form its text parses to (``BookDocument``: the text is written only when a store
is started; a restart compares the book's digest).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from margin_engine.book.columnar import (
    MODES_BY_CODE,
    ColumnarBook,
    TextColumn,
    with_instrument_rows,
)
from margin_engine.core.collector import no_cycle_collection
from margin_engine.io.bulk import text_buffers
from margin_engine.io.portfolio_file import PORTFOLIO_SCHEMA, instrument_spec, resolves_by_name

_BLOCK = 20_000  # accounts whose document objects are made at a time


class ResolvedPortfolio(dict[str, Any]):
    """A portfolio document with ``book``: the columnar book that
    ``book_from_portfolio(parse_portfolio(document))`` gives, or None where the document would
    not parse (the parser then says why). ``book`` describes the document as made: a changed
    document must be copied into a plain dict (``dict(document)``) first."""

    book: ColumnarBook | None = None


@dataclass(frozen=True, slots=True)
class BookDocument:
    """A book to be written as the text of a portfolio document, in the form that text parses
    to (``book_from_portfolio(parse_portfolio(json.loads(text())))``: the instruments held in
    name order, only the assets some account holds, in name order)."""

    book: ColumnarBook

    def text(self) -> str:
        """``json.dumps(document, sort_keys=True)``: each account's id, mode, non-zero
        collateral and positions (instrument name, size, entry price, and the asked isolated
        margin or leverage where one is given), in the book's order; instruments by their
        names, declared where the name alone would not resolve to the book's instrument (a
        book folder's ``instruments.json``, inverse contracts). Encoded a few thousand
        accounts at a time (a million accounts' text is about 1 GB, their dicts whole were
        3 GB more)."""
        from margin_engine.io.json_stream import json_document_text

        book = self.book
        head: dict[str, Any] = {"schema": PORTFOLIO_SCHEMA}
        if declared := _declared(book):
            head["instruments"] = declared
        with no_cycle_collection():  # thousands of acyclic dicts a chunk
            return "".join(json_document_text(head, "accounts", _accounts(book), None,
                                              sort_keys=True))

    def digest(self) -> str:
        """sha256 over everything ``text`` is made from, taken from the columns (0.3 s for a
        million accounts, the text 27 s): equal digests, equal texts."""
        book = self.book
        digest = hashlib.sha256(b"margin-engine book digest 1\0")
        ids = book.account_ids.arrow if isinstance(book.account_ids, TextColumn) \
            else pa.array(list(book.account_ids), type=pa.string())
        offsets, data = text_buffers(ids)
        digest.update(np.ascontiguousarray(offsets - offsets[0], dtype=np.int64).tobytes())
        digest.update(data[int(offsets[0]):int(offsets[-1])].tobytes())
        instruments = [(i.name, instrument_spec(i)) for i in book.instruments.instruments]
        digest.update(json.dumps([instruments, list(book.assets)]).encode())
        for column in (book.mode, book.offsets, book.position_instrument, book.size,
                       book.entry_price, book.collateral, book.position_margin,
                       book.position_leverage):
            if column is None:
                digest.update(b"\0none")
            else:  # dtype and shape, then the values
                digest.update(f"\0{column.dtype.str}{column.shape}".encode())
                digest.update(np.ascontiguousarray(column).tobytes())
        return digest.hexdigest()


def book_document(book: ColumnarBook) -> BookDocument:
    """``book`` as a document (``BookDocument``): its parsed form."""
    names = [i.name for i in book.instruments.instruments]
    held = np.flatnonzero(np.any(book.collateral != 0.0, axis=0))
    assets = sorted((book.assets[k] for k in held.tolist()), key=str)
    return BookDocument(_parsed_form(book, names, assets, [book.assets.index(a)
                                                           for a in assets]))


def _declared(book: ColumnarBook) -> dict[str, dict[str, Any]]:
    """The instruments held whose names alone would not resolve to them, as the document
    declares them (only held ones: the parser lists every declared instrument)."""
    return {i.name: instrument_spec(i) for i in book.instruments.instruments
            if not resolves_by_name(i)}


def _accounts(book: ColumnarBook) -> Iterator[dict[str, Any]]:
    """The accounts' document objects, made a block of accounts at a time."""
    names = [i.name for i in book.instruments.instruments]
    modes = [MODES_BY_CODE[c].value for c in range(len(MODES_BY_CODE))]
    offsets = book.offsets
    for first in range(0, book.account_count, _BLOCK):
        last = min(first + _BLOCK, book.account_count)
        start = int(offsets[first])
        positions = _positions(book, names, start, int(offsets[last]))
        ends = (offsets[first:last + 1] - start).tolist()
        for k, (account, code, row) in enumerate(zip(
                book.account_ids[first:last], book.mode[first:last].tolist(),
                book.collateral[first:last].tolist(), strict=True)):
            yield {"id": account, "mode": modes[code],
                   "collateral": {a: x for a, x in zip(book.assets, row, strict=True)
                                  if x != 0.0},
                   "positions": positions[ends[k]:ends[k + 1]]}


def _positions(book: ColumnarBook, names: list[str], start: int,
               stop: int) -> list[dict[str, Any]]:
    rows = [{"instrument": names[i], "size": s, "entry_price": e} for i, s, e in zip(
        book.position_instrument[start:stop].tolist(), book.size[start:stop].tolist(),
        book.entry_price[start:stop].tolist(), strict=True)]
    for key, column in (("margin", book.position_margin), ("leverage", book.position_leverage)):
        if column is not None:
            part = column[start:stop]
            for k in np.flatnonzero(np.isfinite(part)).tolist():
                rows[k][key] = float(part[k])
    return rows


def _parsed_form(book: ColumnarBook, names: list[str], assets: list[str],
                 columns: list[int]) -> ColumnarBook:
    """``book`` as the parser resolves its document: the instruments held in name order, the
    collateral columns of the held assets in name order."""
    used = np.unique(book.position_instrument)
    order = used[np.argsort(np.array([names[k] for k in used.tolist()], dtype=object),
                            kind="stable")]
    return replace(with_instrument_rows(book, order), assets=tuple(assets),
                   collateral=np.ascontiguousarray(book.collateral[:, columns]))

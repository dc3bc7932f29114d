"""Portfolio documents (``margin-engine/portfolio/v1``) with their books already resolved.

The monitor keeps its setup as a portfolio document: restarts, ``replay`` and the service parse
it back. A book that did not come from a document is written as one, and the book it parses to
rides along, so the monitor that starts from it need not parse what it has just written: a
generated population as a document (``ResolvedPortfolio``), a CSV/Parquet bulk book of any
size as its text (``BookDocument``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from margin_engine.book.columnar import MODES_BY_CODE, ColumnarBook, InstrumentTable
from margin_engine.core.collector import no_cycle_collection
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
    """A book written as the text of a portfolio document, and the book that text parses to."""

    text: str  # ``json.dumps(document, sort_keys=True)``: the monitor's stored setup
    book: ColumnarBook  # ``book_from_portfolio(parse_portfolio(json.loads(text)))``


def book_document(book: ColumnarBook) -> BookDocument:
    """The book as a portfolio document: each account's id, mode, non-zero collateral and
    positions (instrument name, size, entry price, and the asked isolated margin or leverage
    where one is given), in the book's order; instruments by their names, declared where the
    name alone would not resolve to the book's instrument (a book folder's ``instruments.json``,
    inverse contracts). Encoded a few thousand accounts at a time (a million accounts' text is
    about 1 GB, their dicts whole were 3 GB more). ``book`` is the same book in the
    document's parsed form: the instruments held in name order, only the assets some account
    holds, in name order."""
    from margin_engine.io.json_stream import json_document_text

    names = [i.name for i in book.instruments.instruments]
    held = np.flatnonzero(np.any(book.collateral != 0.0, axis=0))
    assets = sorted((book.assets[k] for k in held.tolist()), key=str)
    columns = [book.assets.index(a) for a in assets]
    with no_cycle_collection():  # thousands of acyclic dicts a chunk
        head: dict[str, Any] = {"schema": PORTFOLIO_SCHEMA}
        traded = [book.instruments.instruments[k]
                  for k in np.unique(book.position_instrument).tolist()]
        if declared := {i.name: instrument_spec(i) for i in traded if not resolves_by_name(i)}:
            head["instruments"] = declared  # only held ones: the parser lists every declared
        text = "".join(json_document_text(head, "accounts",
                                          _accounts(book, names, assets, columns), None,
                                          sort_keys=True))
    return BookDocument(text, _parsed_form(book, names, assets, columns))


def _accounts(book: ColumnarBook, names: list[str], assets: list[str],
              columns: list[int]) -> Iterator[dict[str, Any]]:
    """The accounts' document objects, made a block of accounts at a time."""
    modes = [MODES_BY_CODE[c].value for c in range(len(MODES_BY_CODE))]
    offsets = book.offsets
    for first in range(0, book.account_count, _BLOCK):
        last = min(first + _BLOCK, book.account_count)
        start = int(offsets[first])
        positions = _positions(book, names, start, int(offsets[last]))
        ends = (offsets[first:last + 1] - start).tolist()
        for k, (account, code, row) in enumerate(zip(
                book.account_ids[first:last], book.mode[first:last].tolist(),
                book.collateral[first:last, columns].tolist(), strict=True)):
            yield {"id": account, "mode": modes[code],
                   "collateral": {a: x for a, x in zip(assets, row, strict=True) if x != 0.0},
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
    rank = np.full(len(names), -1, dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    table = InstrumentTable.build([book.instruments.instruments[k] for k in order.tolist()])
    return replace(book, instruments=table, position_instrument=rank[book.position_instrument],
                   assets=tuple(assets),
                   collateral=np.ascontiguousarray(book.collateral[:, columns]))

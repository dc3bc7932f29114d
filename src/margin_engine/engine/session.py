"""Start or resume a monitor on a store: the setup is stored once; on restart the stored ticks
are replayed (no commits) to rebuild the state, and the feed resumes after the last one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from margin_engine.book.columnar import MODES_BY_CODE, ColumnarBook, book_from_portfolio
from margin_engine.book.document import BookDocument, ResolvedPortfolio
from margin_engine.core.collector import no_cycle_collection
from margin_engine.core.errors import InputError
from margin_engine.engine.monitor import Monitor
from margin_engine.io.market_file import parse_market
from margin_engine.io.portfolio_file import parse_portfolio
from margin_engine.margin.config import RiskConfig
from margin_engine.store.base import EventKind, Repository, new_store_id

_SAVED_BLOCK = 50_000  # accounts whose rows are made at a time when a store is started
FEED_KINDS = frozenset({EventKind.FEED_DOWN, EventKind.FEED_UP})  # of the feed, not the log


class SetupValues(dict[str, str]):
    """The stored setup (``portfolio``, ``market``, ``config``, ``model``, ``fingerprint``),
    with the portfolio's columnar book when it is already resolved (a generated population, a
    bulk book): the first monitor built from these values takes it instead of parsing
    ``portfolio`` back. A bulk book's ``portfolio`` text is written only when a store is
    started (``stored``): its fingerprint is taken from the book's digest, so a restart on
    the same files does not write it again."""

    def __init__(self, values: dict[str, str], book: ColumnarBook | None = None,
                 document: BookDocument | None = None) -> None:
        super().__init__(values)
        self._book = book
        self._document = document

    def take_book(self) -> ColumnarBook | None:
        """The resolved book, once (a monitor owns its book; the next one parses)."""
        book, self._book = self._book, None
        return book

    def stored(self) -> dict[str, str]:
        """The values a new store keeps: with the portfolio's text."""
        if "portfolio" in self or self._document is None:
            return dict(self)
        return {**self, "portfolio": self._document.text()}


def setup_values(portfolio: dict[str, Any] | BookDocument, market: dict[str, Any],
                 config: RiskConfig, model: str) -> SetupValues:
    """The setup strings and their fingerprint (sha256 over them in key order; for a
    ``BookDocument``, over its digest in place of its text, written later if at all); the
    book of a ``ResolvedPortfolio`` or a ``BookDocument`` rides along."""
    values = {"market": json.dumps(market, sort_keys=True, default=str),
              "config": config.to_json(),
              "model": model}
    document = portfolio if isinstance(portfolio, BookDocument) else None
    if document is None:
        values["portfolio"] = json.dumps(portfolio, sort_keys=True, default=str)
    fingerprinted = values if document is None else \
        {**values, "portfolio": f"book digest {document.digest()}"}
    digest = hashlib.sha256()
    for key in sorted(fingerprinted):
        digest.update(fingerprinted[key].encode())
    values["fingerprint"] = digest.hexdigest()
    book = portfolio.book if isinstance(portfolio, BookDocument | ResolvedPortfolio) else None
    return SetupValues(values, book, document)


def monitor_from_setup(values: dict[str, str], store: Repository | None = None,
                       portfolio: dict[str, Any] | None = None) -> Monitor:
    """The monitor of a stored setup; ``portfolio``: its document already parsed from the
    setup's text (the service reads its declared instruments too)."""
    book = values.take_book() if isinstance(values, SetupValues) else None
    if book is None:
        text = values.stored()["portfolio"] if isinstance(values, SetupValues) \
            else values["portfolio"]
        with no_cycle_collection():  # millions of acyclic objects made: no passes over them
            document = json.loads(text) if portfolio is None else portfolio
            book = book_from_portfolio(parse_portfolio(document))
    market = parse_market(json.loads(values["market"]))
    config = RiskConfig.from_dict(json.loads(values["config"]))
    return Monitor(book, market, config, model=values["model"], store=store,
                   insurance_fund=config.liquidation.insurance_fund)


def open_session(store: Repository, values: dict[str, str],
                 say: Callable[[str], None] | None = None) -> tuple[Monitor, int]:
    """A monitor with the state of everything the store holds, and the last tick's seq. Takes
    the store's writer lease first: a second monitor on the same store is refused. ``say`` is
    told each step (a status line)."""
    tell = say or (lambda _text: None)
    store.take_writer_lease()
    stored = store.load_setup()
    if stored and stored.get("fingerprint") != values["fingerprint"]:
        raise InputError("the same book, market, config and model the store was started with "
                         "(use a new store)", field="--store")
    tell("monitor: margining the book")
    monitor = monitor_from_setup(values, store)
    if not stored:
        tell(f"monitor: writing the set-up of {monitor.book.account_count:,} accounts")
        complete = values.stored() if isinstance(values, SetupValues) else values
        tell(f"monitor: saving the set-up and {monitor.book.account_count:,} accounts' rows "
             "in the store")
        # one transaction: setup and book, or nothing
        _save_start(store, monitor, {**complete, "store_id": new_store_id()})
        del complete
    last = store.last_tick_seq()
    if last:
        tell(f"monitor: applying the stored ticks again, up to {last:,}")
    monitor.run(store.ticks(), commit=False)  # rebuild the state from the log
    return monitor, last


def _save_start(store: Repository, monitor: Monitor, values: dict[str, str]) -> None:
    """The book's rows (accounts, positions, non-zero collateral), made column-wise a block
    of accounts at a time as the store takes them (a million accounts' rows made whole were
    3.6 GB)."""
    book = monitor.book
    ids = np.array(book.account_ids, dtype=object)
    modes = np.array([MODES_BY_CODE[c].value for c in range(len(MODES_BY_CODE))],
                     dtype=object)
    names = np.array([i.name for i in book.instruments.instruments], dtype=object)
    assets = np.array(book.assets, dtype=object)
    blocks = range(0, book.account_count, _SAVED_BLOCK)

    def accounts() -> Iterator[tuple[str, str]]:
        for first in blocks:
            last = first + _SAVED_BLOCK
            yield from zip(ids[first:last].tolist(), modes[book.mode[first:last]].tolist(),
                           strict=True)

    def positions() -> Iterator[tuple[str, str, float, float]]:
        owner = book.position_account()
        for first in blocks:
            start, stop = book.offsets[first], book.offsets[min(first + _SAVED_BLOCK,
                                                                book.account_count)]
            yield from zip(ids[owner[start:stop]].tolist(),
                           names[book.position_instrument[start:stop]].tolist(),
                           book.size[start:stop].tolist(), book.entry_price[start:stop].tolist(),
                           strict=True)

    def collateral() -> Iterator[tuple[str, str, float]]:
        for first in blocks:
            amounts = book.collateral[first:first + _SAVED_BLOCK]
            held, column = np.nonzero(amounts)  # row-major: account by account, asset order
            yield from zip(ids[first + held].tolist(), assets[column].tolist(),
                           amounts[held, column].tolist(), strict=True)

    store.save_start(values, accounts(), positions(), collateral())


def transcript_of_store(store: Repository) -> str:
    """sha256 over the stored ticks, events and metrics in the monitor's transcript order."""
    digest = hashlib.sha256()
    events: dict[int, list[Any]] = {}
    for _, event in store.events():
        if event.kind not in FEED_KINDS:
            events.setdefault(event.tick_seq, []).append(event)
    metrics = dict(store.metrics())
    for tick in store.ticks():
        digest.update(f"T|{tick.seq}|{tick.time_ns}|{tick.symbol}|{tick.price!r}|"
                      f"{tick.source}\n".encode())
        for e in events.get(tick.seq, []):
            digest.update(f"E|{e.tick_seq}|{e.kind}|{e.account}|{e.payload}\n".encode())
        digest.update(f"M|{tick.seq}|{metrics[tick.seq]}\n".encode())
    return digest.hexdigest()


def replay_store(store: Repository) -> dict[str, Any]:
    values = store.load_setup()
    if not values:
        raise InputError("a store written by `margin-engine monitor`", field="--store")
    monitor = monitor_from_setup(values)
    monitor.run(store.ticks(), commit=False)
    stored = transcript_of_store(store)
    replayed = monitor.transcript.hexdigest()
    gaps = sequence_gaps(store)
    return {"ticks": store.count("ticks"), "events": store.count("events"),
            "rejections": store.count("rejections"),
            "stored_log_hash": stored, "replayed_log_hash": replayed,
            "equal": stored == replayed, "gaps": gaps, "complete": not gaps,
            "state_hash": monitor.state_hash()}


def sequence_gaps(store: Repository, limit: int = 20) -> list[tuple[int, int]]:
    """Ranges of sequence numbers between the first and the last one seen that the store holds
    neither as an applied tick nor as a rejection: ticks that were never applied (the first
    ``limit`` ranges)."""
    seen = sorted({t.seq for t in store.ticks()} | {seq for seq, _, _ in store.rejections()})
    gaps: list[tuple[int, int]] = []
    for low, high in zip(seen, seen[1:], strict=False):
        if high > low + 1:
            gaps.append((low + 1, high - 1))
            if len(gaps) == limit:
                break
    return gaps

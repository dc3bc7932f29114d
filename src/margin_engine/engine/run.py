"""What `margin-engine monitor` and `replay` do (no CLI types here)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from margin_engine.book.document import BookDocument
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.engine.monitor import Monitor, TickOutcome, TickStatus
from margin_engine.engine.session import open_session, replay_store, setup_values
from margin_engine.feeds.base import FileReplayFeed
from margin_engine.io.jsonfields import read_json
from margin_engine.margin.config import RiskConfig
from margin_engine.market.documents import flat_market_document
from margin_engine.store.base import Event, Repository, Tick, masked, open_store

# a status line for a stage of work: entered with its first text, it yields the function that
# changes the text (``cli.console.stage_status``)
StageStatus = Callable[[str], AbstractContextManager[Callable[[str], None]]]


def run_monitor(*, feed: str, store_spec: str, book: Path | None, population: int | None,
                seed: int, market: Path | None, config: RiskConfig, model: str, speed: float,
                max_ticks: int | None, idle_seconds: float, live: bool,
                max_outage_seconds: float = 60.0, accounts: Path | None = None,
                status: StageStatus | None = None) -> dict[str, Any]:
    """Watch a book on a feed; ``status`` (a terminal's status line) is told each stage of the
    set-up, which takes minutes on a million accounts, and closed before the ticks."""
    from margin_engine.liquidation.population import leveraged_population

    file_feed = FileReplayFeed.parse(feed, speed, max_ticks) if feed.startswith("file:") \
        else None
    if file_feed is None and not feed.startswith("nats://"):
        raise InputError("file:SYMBOL=PATH,... or nats://HOST:PORT", field="--feed", value=feed)
    if file_feed is None:
        from margin_engine.feeds.nats import parse_feed

        parse_feed(feed)  # refuse bad feed options before anything is opened
    if market is not None:
        market_doc = read_json(market)
    elif file_feed is not None:
        market_doc = flat_market_document(file_feed.first_prices(), file_feed.rows[0][0])
    else:
        raise InputError("--market MARKET with a NATS feed", field="--market")
    if (book is None) == (population is None):
        raise InputError("exactly one of --book PORTFOLIO or --population N", field="--book")
    setup_started = time.perf_counter()  # the book's reading (a bulk book's writing) too
    stage = status or _silent
    with stage("monitor: reading the book") as say:
        if book is not None:
            portfolio_doc = _book_document(book, accounts)
        elif accounts is not None:
            raise InputError("--accounts only with a CSV/Parquet positions file as --book",
                             field="--accounts", value=str(accounts))
        else:
            index = {u: float(v["index"]) for u, v in market_doc["underlyings"].items()}
            portfolio_doc = leveraged_population(int(population or 0), seed, index)
        values = setup_values(portfolio_doc, market_doc, config, model)
        del portfolio_doc  # its text is in the values
        say("monitor: opening the store")
        store = open_store(store_spec)
    try:
        with stage("monitor: opening the store") as say:
            monitor, last = open_session(store, values, say)
        del values
        setup_seconds = time.perf_counter() - setup_started
        view = _View(monitor) if live else None
        started = time.perf_counter()
        latencies: list[float] = []
        unreadable = [0]
        statuses = dict.fromkeys(TickStatus, 0)

        def on_tick(tick: Tick, outcome: TickOutcome) -> None:
            statuses[outcome.status] += 1
            if outcome.status is TickStatus.APPLIED:
                latencies.append(outcome.seconds)
            elif outcome.status is TickStatus.REJECTED:
                store.record_rejection(tick, outcome.reason or "", "tick")
            if view is not None:
                view.update(tick, outcome)

        if file_feed is not None:
            if view is not None:
                with view.live():
                    monitor.run(file_feed.ticks(after_seq=last), on_tick=on_tick)
            else:
                monitor.run(file_feed.ticks(after_seq=last), on_tick=on_tick)
        else:
            unreadable[0] = _run_nats(monitor, store, feed, idle_seconds, max_outage_seconds,
                                      on_tick)
        elapsed = time.perf_counter() - started
        return {"store": masked(store_spec), "resumed_after_tick": last,
                "setup_seconds": round(setup_seconds, 2),
                "this_run": {**{f"ticks_{status}": n for status, n in statuses.items()},
                             "ticks_unreadable": unreadable[0],
                             "seconds": round(elapsed, 2), **_latency_ms(latencies)},
                "store_totals": {"ticks": store.count("ticks"),
                                 "rejections": store.count("rejections"),
                                 "events": store.count("events"),
                                 "events_by_kind": store.event_counts()},
                "end_state": {"accounts": monitor.book.account_count,
                              "in_margin_call": int(np.sum(monitor.status == 1)),
                              "liquidatable": int(np.sum(monitor.status == 2)),
                              "breaker_multiplier": round(monitor.multiplier, 6)},
                "state_hash": monitor.state_hash(),
                "rejections": [{"seq": t.seq, "symbol": t.symbol, "reason": r}
                               for t, r in monitor.rejected[:20]]}
    finally:
        store.close()


def _book_document(book: Path, accounts: Path | None) -> dict[str, Any] | BookDocument:
    """The portfolio document of ``--book``: a portfolio JSON as it is; a CSV/Parquet positions
    file (with its ``--accounts`` file) or a book folder of partitions written as one, its
    resolved book riding along."""
    from margin_engine.io.portfolio_file import check_portfolio_size, is_portfolio_file

    if is_portfolio_file(book):  # as compute tells them apart
        if accounts is not None:
            raise InputError("--accounts only with a CSV/Parquet positions file",
                             field="--accounts", value=str(accounts))
        check_portfolio_size(book)  # as compute: larger books in the bulk form
        document: dict[str, Any] = read_json(book)
        return document
    from margin_engine.batch.book import read_bulk_path
    from margin_engine.book.document import book_document

    return book_document(read_bulk_path(book, accounts))


@contextmanager
def _silent(_text: str) -> Iterator[Callable[[str], None]]:
    yield lambda _new: None


def _latency_ms(latencies: list[float]) -> dict[str, float | None]:
    """Tick-to-last-event latency percentiles in ms, 2 decimals (None without ticks)."""
    if not latencies:
        return {"latency_p50_ms": None, "latency_p99_ms": None}
    lat = np.array(latencies) * 1e3
    return {"latency_p50_ms": round(float(np.percentile(lat, 50)), 2),
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 2)}


def _run_nats(monitor: Monitor, store: Repository, feed: str, idle_seconds: float,
              max_outage_seconds: float, on_tick: Any) -> int:
    """Consume the NATS feed; returns the number of unreadable messages."""
    from margin_engine.feeds.nats import ReconnectPolicy, consume, parse_feed

    unreadable = 0

    def handle(item: Tick | str, seq: int) -> list[Event]:
        nonlocal unreadable
        if isinstance(item, str):  # unreadable: recorded under its stream sequence
            unreadable += 1
            tick = Tick(seq, 0, "?", float("nan"), "nats")
            monitor.rejected.append((tick, item))
            store.record_rejection(tick, item, "unreadable")
            return []
        if monitor.last_seq == 0:
            # Stream sequences are the server's: a stream whose oldest message is past
            # max_seq_gap (limits removed the rest) starts where it starts.
            monitor.guard.last_seq = seq - 1
        outcome = monitor.process(item)
        on_tick(item, outcome)
        return outcome.events

    server, topology = parse_feed(feed)
    asyncio.run(consume(server, handle, idle_seconds, topology, store=store,
                        reconnect=ReconnectPolicy(max_outage_seconds=max_outage_seconds)))
    return unreadable


def run_replay(store_spec: str) -> dict[str, Any]:
    store = open_store(store_spec)
    try:
        return replay_store(store)
    finally:
        store.close()


class _View:
    """A live rich view: accounts at risk, pool health, the last events."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.last_events: list[str] = []
        self.tick: Tick | None = None
        self.metrics: dict[str, Any] = {}
        self.count = 0
        self._live: Any = None

    def live(self) -> Any:
        from rich.live import Live

        self._live = Live(self._render(), refresh_per_second=4, transient=False)
        return self._live

    def update(self, tick: Tick, outcome: TickOutcome) -> None:
        self.count += 1
        self.tick = tick
        if outcome.accepted:
            self.metrics = outcome.metrics
        for event in outcome.events:
            self.last_events.append(f"{ns_to_iso(tick.time_ns)} {describe(event)}")
        if outcome.status in (TickStatus.REJECTED, TickStatus.QUARANTINED):
            self.last_events.append(f"tick {tick.seq} {outcome.status}: {outcome.reason}")
        self.last_events = self.last_events[-10:]
        if self._live is not None and self.count % 20 == 0:
            self._live.update(self._render())

    def _render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table(title="margin-engine monitor", title_justify="left")
        table.add_column("measure")
        table.add_column("value", justify="right")
        tick = self.tick
        table.add_row("ticks", str(self.count))
        if tick is not None:
            table.add_row("last tick", f"{tick.symbol} {tick.price:,.2f} at "
                          f"{ns_to_iso(tick.time_ns)}")
        m = self.metrics
        for key in ("margin_calls", "liquidatable", "near_liquidation", "coverage_ratio",
                    "concentration", "multiplier"):
            if key in m:
                value = m[key]
                table.add_row(key, "-" if value is None else
                              (f"{value:,.3f}" if isinstance(value, float) else str(value)))
        for line in self.last_events:
            table.add_row("event", Text(line))  # as written: account ids are no rich markup
        return table


def describe(event: Event) -> str:
    """One readable line per event."""
    data = json.loads(event.payload)
    if event.account is not None:
        return (f"{event.kind} {event.account}: equity {data['equity']:,.2f}, IM "
                f"{data['initial_margin']:,.2f}, MM {data['maintenance_margin']:,.2f}")
    details = ", ".join(f"{k} {v:,.4g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in sorted(data.items()))
    return f"{event.kind}: {details}"

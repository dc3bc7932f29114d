"""Monitor benchmark: tick -> all events, on the seeded random book, and snapshot write
throughput of the SQLite and PostgreSQL stores.

Ticks alternate BTC and ETH on a seeded random walk (0.3 % a tick); each is processed in memory
(no store) and timed from arrival to its last event, and, interleaved tick by tick so both see
the same machine load, by a second monitor that commits to a SQLite store and publishes its
events through the outbox to NATS JetStream (``with_store_and_outbox``, with the ratio of the
p99s); then ``rows`` snapshot rows are written in one batch to each store (executemany for
SQLite, COPY for PostgreSQL).

``setup_seconds`` is the in-memory monitor's construction on that book. Each store also gets the
set-up of ``margin-engine monitor --population N`` on a new store (``store_setup_seconds``): the
seeded leveraged population of ``accounts`` accounts, its setup values and fingerprint, the
monitor, the setup and book rows in one transaction and the rebuild from the (empty) tick log,
i.e. everything from the start to the first tick but the process start and imports.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from typing import Any

import numpy as np

from margin_engine.bench.run import instrument_names, random_book_columns
from margin_engine.book.columnar import MODE_CODES, book_from_columns
from margin_engine.core.errors import InputError
from margin_engine.demo.market import demo_market_document
from margin_engine.domain.instruments import MarginMode, parse_shorthand
from margin_engine.engine.monitor import Monitor
from margin_engine.io.market_file import parse_market
from margin_engine.margin.config import RiskConfig
from margin_engine.store.base import SnapshotRow, Tick, open_store

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
NATS_URL = "nats://127.0.0.1:4222"


def run_monitor_bench(*, accounts: int, positions: int, ticks: int, rows: int,
                      seed: int = 1, postgres: str | None = PG_URL,
                      nats: str | None = NATS_URL) -> dict[str, Any]:
    names = instrument_names(2400)
    columns = random_book_columns(accounts, positions, names, seed)
    instruments = [parse_shorthand(n) for n in names]
    book = book_from_columns(
        account_ids=columns["account_ids"],
        mode=np.full(accounts, MODE_CODES[MarginMode.PORTFOLIO], dtype=np.int32),
        instruments=[i for i in instruments if i is not None],
        position_account=columns["position_account"],
        position_instrument=columns["position_instrument"], size=columns["size"],
        entry_price=columns["entry_price"], assets=("BTC", "USDC"),
        collateral=columns["collateral"])
    market = parse_market(demo_market_document())
    started = time.perf_counter()
    monitor = Monitor(book, market, RiskConfig())
    setup_seconds = time.perf_counter() - started
    rng = np.random.default_rng(seed)
    level = {"BTC": 65000.0, "ETH": 2500.0}
    t0 = market.timestamp_ns
    path = []
    for k in range(ticks):
        symbol = "BTC" if k % 2 == 0 else "ETH"
        level[symbol] *= float(np.exp(rng.normal(0, 0.003)))
        path.append(Tick(k + 1, t0 + (k + 1) * 10**9, symbol, level[symbol]))
    with tempfile.TemporaryDirectory() as folder:
        durable = open_store(f"sqlite:{os.path.join(folder, 'ticks.db')}")
        durable.save_start({"store_id": uuid.uuid4().hex[:16]}, [], [], [])
        stored = Monitor(book, market, RiskConfig(), store=durable)
        wall = time.perf_counter()
        memory, committed, outbox = asyncio.run(_paired(monitor, stored, path, nats))
        wall = time.perf_counter() - wall
        durable.close()
    lat, with_store = np.array(memory) * 1e3, np.array(committed) * 1e3
    report: dict[str, Any] = {
        "accounts": accounts, "positions_per_account": positions, "ticks": ticks,
        "setup_seconds": setup_seconds, "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p99_ms": float(np.percentile(lat, 99)),
        "latency_max_ms": float(lat.max()), "ticks_per_second": 2 * ticks / wall,
        "events": outbox["events"],
        "with_store_and_outbox": {
            "store": "sqlite", "outbox": outbox["where"],
            "events_all_acknowledged": outbox["all_acknowledged"],
            "latency_p50_ms": float(np.percentile(with_store, 50)),
            "latency_p99_ms": float(np.percentile(with_store, 99)),
            "latency_max_ms": float(with_store.max()),
            "p99_ratio_to_in_memory": float(np.percentile(with_store, 99)
                                            / np.percentile(lat, 99))},
        "stores": {}}
    snapshot = [SnapshotRow(1, f"a{k}", 1.0 + k, 2.0, 3.0) for k in range(rows)]
    with tempfile.TemporaryDirectory() as folder:
        specs = {"sqlite": f"sqlite:{os.path.join(folder, 'bench.db')}"}
        if postgres:
            specs["postgresql"] = f"{postgres}?schema=me_bench_{uuid.uuid4().hex[:8]}"
        for name, spec in specs.items():
            try:
                store = open_store(spec)
            except InputError as exc:
                report["stores"][name] = {"error": str(exc)}
                continue
            begin = time.perf_counter()
            store.bulk_snapshots(snapshot)
            seconds = time.perf_counter() - begin
            report["stores"][name] = {"rows": rows, "seconds": seconds,
                                      "rows_per_second": rows / seconds}
            if name == "postgresql":
                store.drop()  # type: ignore[attr-defined]
            store.close()
            report["stores"][name]["store_setup_seconds"] = store_setup_seconds(
                spec + ("-setup" if name == "sqlite" else "_setup"), accounts, seed,
                drop=name == "postgresql")
    return report


async def _paired(memory: Monitor, stored: Monitor, path: list[Tick],
                  nats: str | None) -> tuple[list[float], list[float], dict[str, Any]]:
    """Each tick through the in-memory monitor (today's path) and then through the one that
    commits to its store and publishes its events through the outbox (NATS JetStream with
    message ids; the store only when no server answers), so both see the same machine load.
    Latency: tick arrival to its last event committed and handed to NATS (acknowledgements
    are collected in order without blocking the tick path; all of them are checked at the
    end)."""
    from margin_engine.core.errors import InputError
    from margin_engine.feeds.nats import EventOutbox, NatsTopology, connect, ensure_stream

    js = nc = topology = None
    if nats:
        run = uuid.uuid4().hex[:10]
        # subjects of its own too: JetStream gives a subject to one stream, and a monitor
        # on this server may hold the default ones
        topology = NatsTopology(stream=f"BENCH_PRICES_{run}", prices=f"bench.{run}.prices",
                                events=f"bench.{run}.events",
                                events_stream=f"BENCH_EVENTS_{run}")
        try:
            nc = await connect(nats)
            js = nc.jetstream()
            await ensure_stream(js, topology)
        except InputError:
            js = nc = None
    assert stored.store is not None
    outbox = EventOutbox(stored.store, topology) if js is not None and topology else None
    memory_lat, stored_lat = [], []
    for tick in path:
        memory_lat.append(memory.process(tick, commit=False).seconds)
        started = time.perf_counter()
        stored.process(tick)
        if outbox is not None:
            await outbox.send(js)
        stored_lat.append(time.perf_counter() - started)
    acknowledged = await outbox.flush(js) if outbox is not None else False
    info: dict[str, Any] = {"where": "nats" if outbox else "none (no NATS server)",
                            "events": stored.store.count("events"),
                            "all_acknowledged": acknowledged}
    if nc is not None and topology is not None:
        for name in (topology.stream, topology.events_stream):
            await nc.jetstream().delete_stream(name)
        await nc.close()
    return memory_lat, stored_lat, info


def store_setup_seconds(spec: str, accounts: int, seed: int, *, drop: bool = False) -> float:
    """Seconds from nothing to a monitor ready for its first tick on the new store ``spec``
    (what ``margin-engine monitor --population ACCOUNTS --store SPEC`` does before it)."""
    from margin_engine.engine.session import open_session, setup_values
    from margin_engine.liquidation.population import leveraged_population
    from margin_engine.market.documents import flat_market_document

    index = {"BTC": 65000.0, "ETH": 2500.0}
    market = flat_market_document(index, parse_market(demo_market_document()).timestamp_ns)
    store = open_store(spec)
    try:
        started = time.perf_counter()
        values = setup_values(leveraged_population(accounts, seed, index), market,
                              RiskConfig(), "account")
        monitor, _ = open_session(store, values)
        seconds = time.perf_counter() - started
        if store.count("accounts") != monitor.book.account_count:
            raise RuntimeError("the store does not hold every account")
        if drop:
            store.drop()  # type: ignore[attr-defined]
    finally:
        store.close()
    return seconds

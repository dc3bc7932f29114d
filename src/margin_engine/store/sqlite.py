"""SQLite repository (stdlib sqlite3, WAL journal: a committed tick survives a killed process)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

from margin_engine.core.errors import InputError
from margin_engine.store.base import TABLES, Event, SnapshotRow, Tick

SCHEMA = """
CREATE TABLE IF NOT EXISTS setup (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, mode TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS positions (account TEXT NOT NULL, instrument TEXT NOT NULL,
    size REAL NOT NULL, entry_price REAL NOT NULL, PRIMARY KEY (account, instrument));
CREATE TABLE IF NOT EXISTS collateral (account TEXT NOT NULL, asset TEXT NOT NULL,
    amount REAL NOT NULL, PRIMARY KEY (account, asset));
CREATE TABLE IF NOT EXISTS ticks (seq INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL,
    symbol TEXT NOT NULL, price REAL NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tick_seq INTEGER NOT NULL, kind TEXT NOT NULL, account TEXT, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS metrics (tick_seq INTEGER PRIMARY KEY, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (tick_seq INTEGER NOT NULL, account TEXT NOT NULL,
    equity REAL NOT NULL, initial_margin REAL NOT NULL, maintenance_margin REAL NOT NULL);
"""


class SqliteRepository:
    def __init__(self, path: str) -> None:
        try:
            self.connection = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise InputError(f"a writable SQLite file ({exc})", field="--store",
                             value=path) from None
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.initialise()

    def initialise(self) -> None:
        self.connection.executescript(SCHEMA)

    def save_start(self, setup: dict[str, str], accounts: Sequence[tuple[str, str]],
                   positions: Sequence[tuple[str, str, float, float]],
                   collateral: Sequence[tuple[str, str, float]]) -> None:
        """The setup and the book, in one transaction."""
        with self._transaction():
            self.connection.executemany("INSERT INTO setup VALUES (?, ?)", sorted(setup.items()))
            self.connection.executemany("INSERT INTO accounts VALUES (?, ?)", accounts)
            self.connection.executemany("INSERT INTO positions VALUES (?, ?, ?, ?)", positions)
            self.connection.executemany("INSERT INTO collateral VALUES (?, ?, ?)", collateral)

    def load_setup(self) -> dict[str, str]:
        return dict(self.connection.execute("SELECT key, value FROM setup").fetchall())

    def commit_tick(self, tick: Tick, events: Sequence[Event], metrics: str,
                    snapshots: Sequence[SnapshotRow]) -> None:
        with self._transaction():
            self.connection.execute("INSERT INTO ticks VALUES (?, ?, ?, ?, ?)",
                                    (tick.seq, tick.time_ns, tick.symbol, tick.price,
                                     tick.source))
            self.connection.executemany(
                "INSERT INTO events (tick_seq, kind, account, payload) VALUES (?, ?, ?, ?)",
                [(e.tick_seq, e.kind, e.account, e.payload) for e in events])
            self.connection.execute("INSERT INTO metrics VALUES (?, ?)", (tick.seq, metrics))
            self._insert_snapshots(snapshots)

    def _insert_snapshots(self, rows: Sequence[SnapshotRow]) -> None:
        self.connection.executemany(
            "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?)",
            [(r.tick_seq, r.account, r.equity, r.initial_margin, r.maintenance_margin)
             for r in rows])

    def bulk_snapshots(self, rows: Sequence[SnapshotRow]) -> None:
        with self._transaction():
            self._insert_snapshots(rows)

    def last_tick_seq(self) -> int:
        row = self.connection.execute("SELECT MAX(seq) FROM ticks").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def ticks(self) -> Iterator[Tick]:
        for row in self.connection.execute(
                "SELECT seq, time_ns, symbol, price, source FROM ticks ORDER BY seq"):
            yield Tick(*row)

    def events(self) -> Iterator[tuple[int, Event]]:
        for seq, tick_seq, kind, account, payload in self.connection.execute(
                "SELECT seq, tick_seq, kind, account, payload FROM events ORDER BY seq"):
            yield seq, Event(tick_seq, kind, account, payload)

    def metrics(self) -> Iterator[tuple[int, str]]:
        yield from self.connection.execute(
            "SELECT tick_seq, payload FROM metrics ORDER BY tick_seq")

    def count(self, table: str) -> int:
        if table not in TABLES:
            raise ValueError(table)
        return int(self.connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def close(self) -> None:
        self.connection.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self.connection)


class _Transaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")

"""SQLite repository (stdlib sqlite3, WAL journal: a committed tick survives a killed process).
The writer lease is an exclusive ``flock`` on ``PATH.lock``, released by the kernel when the
process dies however it dies."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence

from margin_engine.core.errors import InputError, StoreError
from margin_engine.store.base import OUTBOX, TABLES, Event, SnapshotRow, Tick
from margin_engine.store.service import (
    KEY_COLUMNS,
    AccountRows,
    BookWrite,
    KeyRow,
    book_statements,
    key_row_of,
    key_values,
)

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
CREATE TABLE IF NOT EXISTS cursors (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rejections (seq INTEGER NOT NULL, time_ns INTEGER NOT NULL,
    symbol TEXT NOT NULL, price TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL,
    reason TEXT NOT NULL, PRIMARY KEY (seq, symbol, source, time_ns));
"""


class SqliteRepository:
    def __init__(self, path: str) -> None:
        self.path = path
        self.stream: str | None = None
        self._lease: int | None = None
        try:
            self.connection = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise InputError(f"a writable SQLite file ({exc})", field="--store",
                             value=path) from None
        try:
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            self.initialise()
        except sqlite3.DatabaseError as exc:  # another kind of file at the path
            self.connection.close()
            raise InputError(f"a SQLite database file ({exc})", field="--store",
                             value=path) from None

    def initialise(self) -> None:
        self.connection.executescript(SCHEMA)

    def save_start(self, setup: dict[str, str], accounts: Iterable[tuple[str, str]],
                   positions: Iterable[tuple[str, str, float, float]],
                   collateral: Iterable[tuple[str, str, float]]) -> None:
        """The setup and the book, in one transaction."""
        with self._transaction():
            self.connection.executemany("INSERT INTO setup VALUES (?, ?)", sorted(setup.items()))
            self.connection.executemany("INSERT INTO accounts VALUES (?, ?)", accounts)
            self.connection.executemany("INSERT INTO positions VALUES (?, ?, ?, ?)", positions)
            self.connection.executemany("INSERT INTO collateral VALUES (?, ?, ?)", collateral)

    def take_writer_lease(self) -> None:
        """Refuse a second writer on the same file (two monitors would corrupt the log)."""
        if self._lease is not None:
            return
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError("a store no other monitor is writing (another monitor holds "
                             f"{self.path}.lock; stop it or use another store)",
                             field="--store", value=f"sqlite:{self.path}") from None
        self._lease = fd

    def follow(self, stream: str) -> None:
        """Ticks committed from now on advance ``stream``'s cursor in their transaction."""
        self.stream = stream

    def cursor(self, stream: str) -> int:
        row = self.connection.execute("SELECT seq FROM cursors WHERE stream = ?",
                                      (stream,)).fetchone()
        return int(row[0]) if row else 0

    def store_id(self) -> str:
        row = self.connection.execute("SELECT value FROM setup WHERE key = 'store_id'")\
            .fetchone()
        return str(row[0]) if row else ""

    def events_after(self, seq: int, limit: int) -> list[tuple[int, Event]]:
        return [(int(r[0]), Event(int(r[1]), r[2], r[3], r[4])) for r in self.connection.execute(
            "SELECT seq, tick_seq, kind, account, payload FROM events WHERE seq > ? "
            "ORDER BY seq LIMIT ?", (seq, limit))]

    def mark_published(self, seq: int) -> None:
        with self._transaction():
            self._set_cursor(OUTBOX, seq)

    def _set_cursor(self, stream: str, seq: int) -> None:
        self.connection.execute("INSERT INTO cursors VALUES (?, ?) ON CONFLICT (stream) "
                                "DO UPDATE SET seq = MAX(seq, excluded.seq)", (stream, seq))

    def record_events(self, events: Sequence[Event]) -> None:
        with self._transaction():
            self._insert_events(events)

    def _insert_events(self, events: Sequence[Event]) -> None:
        self.connection.executemany(
            "INSERT INTO events (tick_seq, kind, account, payload) VALUES (?, ?, ?, ?)",
            [(e.tick_seq, e.kind, e.account, e.payload) for e in events])

    def record_rejection(self, tick: Tick, reason: str, kind: str) -> None:
        with self._transaction():
            self.connection.execute(
                "INSERT OR IGNORE INTO rejections VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tick.seq, tick.time_ns, tick.symbol, repr(tick.price), tick.source, kind,
                 reason))

    def rejections(self) -> Iterator[tuple[int, str, str]]:
        yield from self.connection.execute(
            "SELECT seq, kind, reason FROM rejections ORDER BY seq")

    def load_setup(self) -> dict[str, str]:
        return dict(self.connection.execute("SELECT key, value FROM setup").fetchall())

    def commit_tick(self, tick: Tick, events: Sequence[Event], metrics: str,
                    snapshots: Sequence[SnapshotRow]) -> None:
        try:
            self._commit_tick(tick, events, metrics, snapshots)
        except sqlite3.Error as exc:
            raise StoreError(f"the store refused tick {tick.seq} ({exc}); nothing of it was "
                             "kept: restart the monitor to resume") from exc

    def _commit_tick(self, tick: Tick, events: Sequence[Event], metrics: str,
                     snapshots: Sequence[SnapshotRow]) -> None:
        with self._transaction():
            self.connection.execute("INSERT INTO ticks VALUES (?, ?, ?, ?, ?)",
                                    (tick.seq, tick.time_ns, tick.symbol, tick.price,
                                     tick.source))
            self._insert_events(events)
            self.connection.execute("INSERT INTO metrics VALUES (?, ?)", (tick.seq, metrics))
            if self.stream is not None:
                self._set_cursor(self.stream, tick.seq)
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

    def event_counts(self) -> dict[str, int]:
        return {kind: int(n) for kind, n in self.connection.execute(
            "SELECT kind, COUNT(*) FROM events GROUP BY kind ORDER BY kind")}

    def close(self) -> None:
        self.connection.close()
        if self._lease is not None:
            os.close(self._lease)  # closing the descriptor releases the lock
            self._lease = None

    def _transaction(self) -> _Transaction:
        return _Transaction(self.connection)


    # ------------------------------------------------------------------ the HTTP service
    def initialise_service(self) -> None:
        """The service's tables (API keys) and the indexes its reads use."""
        self.connection.executescript(SERVICE_SCHEMA)

    def insert_key(self, row: KeyRow, event: Event) -> None:
        with self._transaction():
            self.connection.execute(f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES "
                                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", key_values(row))
            self._insert_events([event])

    def key_row(self, key_id: str) -> KeyRow | None:
        row = self.connection.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?",
                                      (key_id,)).fetchone()
        return None if row is None else key_row_of(row)

    def key_rows(self) -> list[KeyRow]:
        return [key_row_of(r) for r in self.connection.execute(
            f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_ns, key_id")]

    def revoke_key(self, key_id: str, when_ns: int, event: Event) -> bool:
        """Mark a key revoked (kept for the audit trail); False if none is live."""
        with self._transaction():
            done = self.connection.execute(
                "UPDATE api_keys SET revoked_ns = ? WHERE key_id = ? AND revoked_ns IS NULL",
                (when_ns, key_id)).rowcount
            if done:
                self._insert_events([event])
        return bool(done)

    def account_rows(self, account: str) -> AccountRows | None:
        """One account's rows (one read transaction), None if there is no such account."""
        self.connection.execute("BEGIN")
        try:
            row = self.connection.execute("SELECT mode FROM accounts WHERE id = ?",
                                          (account,)).fetchone()
            if row is None:
                return None
            positions = tuple((str(i), float(s), float(e)) for i, s, e in
                              self.connection.execute(
                                  "SELECT instrument, size, entry_price FROM positions "
                                  "WHERE account = ? ORDER BY instrument", (account,)))
            collateral = tuple((str(a), float(x)) for a, x in self.connection.execute(
                "SELECT asset, amount FROM collateral WHERE account = ? ORDER BY asset",
                (account,)))
        finally:
            self.connection.execute("COMMIT")
        return AccountRows(account=account, mode=str(row[0]), positions=positions,
                           collateral=collateral)

    def account_list(self, after: str, limit: int) -> list[tuple[str, str]]:
        return [(str(i), str(m)) for i, m in self.connection.execute(
            "SELECT id, mode FROM accounts WHERE id > ? ORDER BY id LIMIT ?", (after, limit))]

    def book_rows(self) -> tuple[list[tuple[str, str]], list[tuple[str, str, float, float]],
                                 list[tuple[str, str, float]]]:
        """Every account, position and collateral row, by account id (one read transaction)."""
        self.connection.execute("BEGIN")  # deferred: a read snapshot, no write lock
        try:
            accounts = self.connection.execute(
                "SELECT id, mode FROM accounts ORDER BY id").fetchall()
            positions = self.connection.execute(
                "SELECT account, instrument, size, entry_price FROM positions "
                "ORDER BY account, instrument").fetchall()
            collateral = self.connection.execute(
                "SELECT account, asset, amount FROM collateral ORDER BY account, asset")\
                .fetchall()
        finally:
            self.connection.execute("COMMIT")
        return accounts, positions, collateral

    def change_book(self, writes: Sequence[BookWrite], event: Event) -> int:
        """Apply the writes and append their audit event in one transaction; the event's
        sequence number."""
        tables = {name: name for name in ("accounts", "positions", "collateral")}
        with self._transaction():
            for write in writes:
                for sql, params in book_statements(write, tables, "?"):
                    self.connection.execute(sql, params)
            cursor = self.connection.execute(
                "INSERT INTO events (tick_seq, kind, account, payload) VALUES (?, ?, ?, ?)",
                (event.tick_seq, event.kind, event.account, event.payload))
        return int(cursor.lastrowid or 0)

    def ticks_after(self, seq: int, limit: int) -> list[Tick]:
        return [Tick(*row) for row in self.connection.execute(
            "SELECT seq, time_ns, symbol, price, source FROM ticks WHERE seq > ? ORDER BY seq "
            "LIMIT ?", (seq, limit))]

    def metrics_after(self, seq: int, limit: int) -> list[tuple[int, str]]:
        return [(int(s), str(p)) for s, p in self.connection.execute(
            "SELECT tick_seq, payload FROM metrics WHERE tick_seq > ? ORDER BY tick_seq "
            "LIMIT ?", (seq, limit))]

    def last_metrics(self) -> tuple[int, str] | None:
        row = self.connection.execute(
            "SELECT tick_seq, payload FROM metrics ORDER BY tick_seq DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def last_event_seq(self) -> int:
        row = self.connection.execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def account_events_after(self, account: str, seq: int,
                             limit: int) -> list[tuple[int, Event]]:
        return [(int(r[0]), Event(int(r[1]), r[2], r[3], r[4])) for r in self.connection.execute(
            "SELECT seq, tick_seq, kind, account, payload FROM events WHERE account = ? AND "
            "seq > ? ORDER BY seq LIMIT ?", (account, seq, limit))]

    def last_events_of(self, kinds: Sequence[str], limit: int) -> list[tuple[int, Event]]:
        """The last ``limit`` events of these kinds, newest first."""
        marks = ", ".join("?" for _ in kinds)
        return [(int(r[0]), Event(int(r[1]), r[2], r[3], r[4])) for r in self.connection.execute(
            f"SELECT seq, tick_seq, kind, account, payload FROM events WHERE kind IN ({marks}) "
            "ORDER BY seq DESC LIMIT ?", (*kinds, limit))]

class _Transaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")


SERVICE_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (key_id TEXT PRIMARY KEY, salt BLOB NOT NULL,
    digest BLOB NOT NULL, scopes TEXT NOT NULL, account TEXT, label TEXT NOT NULL,
    created_ns INTEGER NOT NULL, revoked_ns INTEGER, rate_per_second REAL, burst REAL);
CREATE INDEX IF NOT EXISTS events_by_account ON events (account, seq);
CREATE INDEX IF NOT EXISTS events_by_kind ON events (kind, seq);
"""

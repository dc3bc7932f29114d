"""PostgreSQL repository (psycopg 3); the schema is created by the project; COPY for bulk rows.

The URL may end in ``?schema=NAME`` (default ``margin_engine``) so several stores share a
database; ``public`` and ``pg_*`` are refused (the project drops and owns its schema). The writer
lease is a session advisory lock keyed on the schema, released when the connection ends.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from margin_engine.core.errors import InputError, StoreError
from margin_engine.store.base import OUTBOX, TABLES, Event, SnapshotRow, Tick, masked
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
CREATE TABLE IF NOT EXISTS {s}.setup (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.accounts (id TEXT PRIMARY KEY, mode TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.positions (account TEXT NOT NULL, instrument TEXT NOT NULL,
    size DOUBLE PRECISION NOT NULL, entry_price DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (account, instrument));
CREATE TABLE IF NOT EXISTS {s}.collateral (account TEXT NOT NULL, asset TEXT NOT NULL,
    amount DOUBLE PRECISION NOT NULL, PRIMARY KEY (account, asset));
CREATE TABLE IF NOT EXISTS {s}.ticks (seq BIGINT PRIMARY KEY, time_ns BIGINT NOT NULL,
    symbol TEXT NOT NULL, price DOUBLE PRECISION NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.events (seq BIGSERIAL PRIMARY KEY, tick_seq BIGINT NOT NULL,
    kind TEXT NOT NULL, account TEXT, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.metrics (tick_seq BIGINT PRIMARY KEY, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.snapshots (tick_seq BIGINT NOT NULL, account TEXT NOT NULL,
    equity DOUBLE PRECISION NOT NULL, initial_margin DOUBLE PRECISION NOT NULL,
    maintenance_margin DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.cursors (stream TEXT PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.rejections (seq BIGINT NOT NULL, time_ns BIGINT NOT NULL,
    symbol TEXT NOT NULL, price TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL,
    reason TEXT NOT NULL, PRIMARY KEY (seq, symbol, source, time_ns));
"""


def split_schema(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    schema = query.pop("schema", ["margin_engine"])[0]
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise InputError("a schema name of lower-case letters, digits and _",
                         field="--store schema", value=schema)
    if schema == "public" or schema.startswith(("pg_", "information_schema")):
        raise InputError("a schema of the project's own (not public, pg_* or "
                         "information_schema)", field="--store schema", value=schema)
    rest = urlencode({k: v[0] for k, v in query.items()})
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


class PostgresRepository:
    def __init__(self, url: str) -> None:
        import psycopg

        dsn, self.schema = split_schema(url)
        self.stream: str | None = None
        self.leased = False
        try:
            self.connection = psycopg.connect(dsn, autocommit=False, connect_timeout=5)
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())[:200]  # one line (libpq adds hints below)
            password = urlsplit(dsn).password
            if password:
                reason = reason.replace(password, "***")
            raise InputError(f"a reachable PostgreSQL server ({reason})",
                             field="--store", value=masked(dsn)) from None
        self.initialise()

    def initialise(self) -> None:
        with self.connection.cursor() as cur:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            cur.execute(SCHEMA.format(s=self.schema))
        self.connection.commit()

    def _table(self, name: str) -> str:
        return f"{self.schema}.{name}"

    def save_start(self, setup: dict[str, str], accounts: Iterable[tuple[str, str]],
                   positions: Iterable[tuple[str, str, float, float]],
                   collateral: Iterable[tuple[str, str, float]]) -> None:
        """The setup and the book in one transaction, binary COPY for the book's tables (books
        run to millions of positions; the server parses no text)."""
        try:
            with self.connection.cursor() as cur:
                cur.executemany(f"INSERT INTO {self._table('setup')} VALUES (%s, %s)",
                                sorted(setup.items()))
                for table, columns, types, rows in (
                        ("accounts", "id, mode", ("text", "text"), accounts),
                        ("positions", "account, instrument, size, entry_price",
                         ("text", "text", "float8", "float8"), positions),
                        ("collateral", "account, asset, amount", ("text", "text", "float8"),
                         collateral)):
                    with cur.copy(f"COPY {self._table(table)} ({columns}) FROM STDIN "
                                  "(FORMAT BINARY)") as copy:
                        copy.set_types(types)
                        for row in rows:
                            copy.write_row(row)
            self.connection.commit()
        except Exception:
            self.connection.rollback()
            raise

    def take_writer_lease(self) -> None:
        """Refuse a second writer on the same schema (a session advisory lock)."""
        if self.leased:
            return
        row = self._select(f"SELECT pg_try_advisory_lock({self._lease_key()})")
        if not row[0][0]:
            raise InputError(f"a store no other monitor is writing (another monitor holds "
                             f"schema {self.schema}; stop it or use another schema)",
                             field="--store", value=self.schema)
        self.leased = True

    def _lease_key(self) -> str:
        """The SQL of the writer lease's advisory-lock key (one per schema)."""
        return f"hashtext('margin_engine.' || '{self.schema}')"

    def follow(self, stream: str) -> None:
        """Ticks committed from now on advance ``stream``'s cursor in their transaction."""
        self.stream = stream

    def cursor(self, stream: str) -> int:
        with self.connection.cursor() as cur:
            cur.execute(f"SELECT seq FROM {self._table('cursors')} WHERE stream = %s",
                        (stream,))
            row = cur.fetchone()
        self.connection.commit()
        return int(row[0]) if row else 0

    def store_id(self) -> str:
        return self.load_setup().get("store_id", "")

    def events_after(self, seq: int, limit: int) -> list[tuple[int, Event]]:
        with self.connection.cursor() as cur:
            cur.execute(f"SELECT seq, tick_seq, kind, account, payload FROM "
                        f"{self._table('events')} WHERE seq > %s ORDER BY seq LIMIT %s",
                        (seq, limit))
            rows = cur.fetchall()
        self.connection.commit()
        return [(int(r[0]), Event(int(r[1]), r[2], r[3], r[4])) for r in rows]

    def _set_cursor(self, cur: Any, stream: str, seq: int) -> None:
        cur.execute(f"INSERT INTO {self._table('cursors')} AS c VALUES (%s, %s) "
                    "ON CONFLICT (stream) DO UPDATE SET seq = GREATEST(c.seq, EXCLUDED.seq)",
                    (stream, seq))

    def _write(self, action: Any) -> None:
        try:
            with self.connection.cursor() as cur:
                action(cur)
            self.connection.commit()
        except Exception:
            self.connection.rollback()
            raise

    def mark_published(self, seq: int) -> None:
        self._write(lambda cur: self._set_cursor(cur, OUTBOX, seq))

    def _insert_events(self, cur: Any, events: Sequence[Event]) -> None:
        if events:
            cur.executemany(
                f"INSERT INTO {self._table('events')} (tick_seq, kind, account, payload) "
                "VALUES (%s, %s, %s, %s)",
                [(e.tick_seq, e.kind, e.account, e.payload) for e in events])

    def record_events(self, events: Sequence[Event]) -> None:
        self._write(lambda cur: self._insert_events(cur, events))

    def record_rejection(self, tick: Tick, reason: str, kind: str) -> None:
        self._write(lambda cur: cur.execute(
            f"INSERT INTO {self._table('rejections')} VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING", (tick.seq, tick.time_ns, tick.symbol, repr(tick.price),
                                       tick.source, kind, reason)))

    def rejections(self) -> Iterator[tuple[int, str, str]]:
        for seq, kind, reason in self._select(
                f"SELECT seq, kind, reason FROM {self._table('rejections')} ORDER BY seq"):
            yield int(seq), kind, reason

    def load_setup(self) -> dict[str, str]:
        with self.connection.cursor() as cur:
            cur.execute(f"SELECT key, value FROM {self._table('setup')}")
            rows = cur.fetchall()
        self.connection.commit()
        return {k: v for k, v in rows}

    def commit_tick(self, tick: Tick, events: Sequence[Event], metrics: str,
                    snapshots: Sequence[SnapshotRow]) -> None:
        try:
            with self.connection.cursor() as cur:
                cur.execute(f"INSERT INTO {self._table('ticks')} VALUES (%s, %s, %s, %s, %s)",
                            (tick.seq, tick.time_ns, tick.symbol, tick.price, tick.source))
                self._insert_events(cur, events)
                cur.execute(f"INSERT INTO {self._table('metrics')} VALUES (%s, %s)",
                            (tick.seq, metrics))
                if self.stream is not None:
                    self._set_cursor(cur, self.stream, tick.seq)
                self._copy_snapshots(cur, snapshots)
            self.connection.commit()
        except Exception as exc:
            with contextlib.suppress(Exception):  # a lost connection cannot roll back
                self.connection.rollback()
            raise StoreError(f"the store refused tick {tick.seq} ({str(exc).strip()[:200]}); "
                             "nothing of it was kept: restart the monitor to resume") from exc

    def _copy_snapshots(self, cur: Any, rows: Sequence[SnapshotRow]) -> None:
        if not rows:
            return
        with cur.copy(f"COPY {self._table('snapshots')} (tick_seq, account, equity, "
                      "initial_margin, maintenance_margin) FROM STDIN") as copy:
            for r in rows:
                copy.write_row((r.tick_seq, r.account, r.equity, r.initial_margin,
                                r.maintenance_margin))

    def bulk_snapshots(self, rows: Sequence[SnapshotRow]) -> None:
        with self.connection.cursor() as cur:
            self._copy_snapshots(cur, rows)
        self.connection.commit()

    def last_tick_seq(self) -> int:
        with self.connection.cursor() as cur:
            cur.execute(f"SELECT MAX(seq) FROM {self._table('ticks')}")
            row = cur.fetchone()
        self.connection.commit()
        return int(row[0]) if row and row[0] is not None else 0

    def _select(self, sql: str) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
        self.connection.commit()
        return rows

    def ticks(self) -> Iterator[Tick]:
        for seq, time_ns, symbol, price, source in self._select(
                f"SELECT seq, time_ns, symbol, price, source FROM {self._table('ticks')} "
                "ORDER BY seq"):
            yield Tick(int(seq), int(time_ns), symbol, float(price), source)

    def events(self) -> Iterator[tuple[int, Event]]:
        for seq, tick_seq, kind, account, payload in self._select(
                f"SELECT seq, tick_seq, kind, account, payload FROM {self._table('events')} "
                "ORDER BY seq"):
            yield int(seq), Event(int(tick_seq), kind, account, payload)

    def metrics(self) -> Iterator[tuple[int, str]]:
        for tick_seq, payload in self._select(
                f"SELECT tick_seq, payload FROM {self._table('metrics')} ORDER BY tick_seq"):
            yield int(tick_seq), payload

    def count(self, table: str) -> int:
        if table not in TABLES:
            raise ValueError(table)
        return int(self._select(f"SELECT COUNT(*) FROM {self._table(table)}")[0][0])

    def event_counts(self) -> dict[str, int]:
        return {kind: int(n) for kind, n in self._select(
            f"SELECT kind, COUNT(*) FROM {self._table('events')} GROUP BY kind ORDER BY kind")}

    def drop(self) -> None:
        with self.connection.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.connection.commit()

    def close(self) -> None:
        """Ends the connection, giving the writer lease back first: the server frees a closed
        connection's locks only once its backend has exited, after ``close`` returns, and a
        monitor opened right then was refused."""
        import psycopg

        if self.leased and not self.connection.closed:
            with contextlib.suppress(psycopg.Error):  # a broken connection frees it by ending
                self.connection.rollback()
                self._select(f"SELECT pg_advisory_unlock({self._lease_key()})")
            self.leased = False
        self.connection.close()

    # ------------------------------------------------------------------ the HTTP service
    def initialise_service(self) -> None:
        """The service's tables (API keys) and the indexes its reads use."""
        with self.connection.cursor() as cur:
            cur.execute(SERVICE_SCHEMA.format(s=self.schema))
        self.connection.commit()

    def insert_key(self, row: KeyRow, event: Event) -> None:
        def write(cur: Any) -> None:
            cur.execute(f"INSERT INTO {self._table('api_keys')} ({KEY_COLUMNS}) VALUES "
                        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", key_values(row))
            self._insert_events(cur, [event])

        self._write(write)

    def key_row(self, key_id: str) -> KeyRow | None:
        with self.connection.cursor() as cur:
            cur.execute(f"SELECT {KEY_COLUMNS} FROM {self._table('api_keys')} "
                        "WHERE key_id = %s", (key_id,))
            row = cur.fetchone()
        self.connection.commit()
        return None if row is None else key_row_of(row)

    def key_rows(self) -> list[KeyRow]:
        return [key_row_of(r) for r in self._select(
            f"SELECT {KEY_COLUMNS} FROM {self._table('api_keys')} ORDER BY created_ns, key_id")]

    def revoke_key(self, key_id: str, when_ns: int, event: Event) -> bool:
        """Mark a key revoked (kept for the audit trail); False if none is live."""
        done = [0]

        def write(cur: Any) -> None:
            cur.execute(f"UPDATE {self._table('api_keys')} SET revoked_ns = %s "
                        "WHERE key_id = %s AND revoked_ns IS NULL", (when_ns, key_id))
            done[0] = cur.rowcount
            if done[0]:
                self._insert_events(cur, [event])

        self._write(write)
        return bool(done[0])

    def account_rows(self, account: str) -> AccountRows | None:
        """One account's rows (one read transaction), None if there is no such account."""
        with self.connection.cursor() as cur:
            cur.execute(f"SELECT mode FROM {self._table('accounts')} WHERE id = %s", (account,))
            row = cur.fetchone()
            positions: list[Any] = []
            collateral: list[Any] = []
            if row is not None:
                cur.execute(f"SELECT instrument, size, entry_price FROM "
                            f"{self._table('positions')} WHERE account = %s ORDER BY instrument",
                            (account,))
                positions = cur.fetchall()
                cur.execute(f"SELECT asset, amount FROM {self._table('collateral')} "
                            "WHERE account = %s ORDER BY asset", (account,))
                collateral = cur.fetchall()
        self.connection.commit()
        if row is None:
            return None
        return AccountRows(account=account, mode=str(row[0]),
                           positions=tuple((str(i), float(s), float(e))
                                           for i, s, e in positions),
                           collateral=tuple((str(a), float(x)) for a, x in collateral))

    def account_list(self, after: str, limit: int) -> list[tuple[str, str]]:
        with self.connection.cursor() as cur:
            cur.execute(f"SELECT id, mode FROM {self._table('accounts')} WHERE id > %s "
                        "ORDER BY id LIMIT %s", (after, limit))
            rows = cur.fetchall()
        self.connection.commit()
        return [(str(i), str(m)) for i, m in rows]

    def book_rows(self) -> tuple[list[tuple[str, str]], list[tuple[str, str, float, float]],
                                 list[tuple[str, str, float]]]:
        """Every account, position and collateral row, by account id (one transaction)."""
        with self.connection.cursor() as cur:
            cur.execute(f"SELECT id, mode FROM {self._table('accounts')} ORDER BY id")
            accounts = cur.fetchall()
            cur.execute(f"SELECT account, instrument, size, entry_price FROM "
                        f"{self._table('positions')} ORDER BY account, instrument")
            positions = cur.fetchall()
            cur.execute(f"SELECT account, asset, amount FROM {self._table('collateral')} "
                        "ORDER BY account, asset")
            collateral = cur.fetchall()
        self.connection.commit()
        return accounts, positions, collateral

    def change_book(self, writes: Sequence[BookWrite], event: Event) -> int:
        """Apply the writes and append their audit event in one transaction; the event's
        sequence number."""
        tables = {name: self._table(name) for name in ("accounts", "positions", "collateral")}
        seq = [0]

        def write(cur: Any) -> None:
            for item in writes:
                for sql, params in book_statements(item, tables, "%s"):
                    cur.execute(sql, params)
            cur.execute(f"INSERT INTO {self._table('events')} (tick_seq, kind, account, "
                        "payload) VALUES (%s, %s, %s, %s) RETURNING seq",
                        (event.tick_seq, event.kind, event.account, event.payload))
            seq[0] = int(cur.fetchone()[0])

        self._write(write)
        return seq[0]

    def ticks_after(self, seq: int, limit: int) -> list[Tick]:
        with self.connection.cursor() as cur:
            cur.execute(f"SELECT seq, time_ns, symbol, price, source FROM "
                        f"{self._table('ticks')} WHERE seq > %s ORDER BY seq LIMIT %s",
                        (seq, limit))
            rows = cur.fetchall()
        self.connection.commit()
        return [Tick(int(s), int(t), sym, float(p), src) for s, t, sym, p, src in rows]

    def metrics_after(self, seq: int, limit: int) -> list[tuple[int, str]]:
        with self.connection.cursor() as cur:
            cur.execute(f"SELECT tick_seq, payload FROM {self._table('metrics')} "
                        "WHERE tick_seq > %s ORDER BY tick_seq LIMIT %s", (seq, limit))
            rows = cur.fetchall()
        self.connection.commit()
        return [(int(s), str(p)) for s, p in rows]

    def last_metrics(self) -> tuple[int, str] | None:
        rows = self._select(f"SELECT tick_seq, payload FROM {self._table('metrics')} "
                            "ORDER BY tick_seq DESC LIMIT 1")
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def last_event_seq(self) -> int:
        row = self._select(f"SELECT MAX(seq) FROM {self._table('events')}")[0]
        return int(row[0]) if row[0] is not None else 0

    def account_events_after(self, account: str, seq: int,
                             limit: int) -> list[tuple[int, Event]]:
        with self.connection.cursor() as cur:
            cur.execute(f"SELECT seq, tick_seq, kind, account, payload FROM "
                        f"{self._table('events')} WHERE account = %s AND seq > %s ORDER BY seq "
                        "LIMIT %s", (account, seq, limit))
            rows = cur.fetchall()
        self.connection.commit()
        return [(int(r[0]), Event(int(r[1]), r[2], r[3], r[4])) for r in rows]

    def last_events_of(self, kinds: Sequence[str], limit: int) -> list[tuple[int, Event]]:
        """The last ``limit`` events of these kinds, newest first."""
        with self.connection.cursor() as cur:
            cur.execute(f"SELECT seq, tick_seq, kind, account, payload FROM "
                        f"{self._table('events')} WHERE kind = ANY(%s) ORDER BY seq DESC "
                        "LIMIT %s", (list(kinds), limit))
            rows = cur.fetchall()
        self.connection.commit()
        return [(int(r[0]), Event(int(r[1]), r[2], r[3], r[4])) for r in rows]


SERVICE_SCHEMA = """
CREATE TABLE IF NOT EXISTS {s}.api_keys (key_id TEXT PRIMARY KEY, salt BYTEA NOT NULL,
    digest BYTEA NOT NULL, scopes TEXT NOT NULL, account TEXT, label TEXT NOT NULL,
    created_ns BIGINT NOT NULL, revoked_ns BIGINT, rate_per_second DOUBLE PRECISION,
    burst DOUBLE PRECISION);
CREATE INDEX IF NOT EXISTS events_by_account ON {s}.events (account, seq);
CREATE INDEX IF NOT EXISTS events_by_kind ON {s}.events (kind, seq);
"""

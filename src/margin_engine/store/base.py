"""The repository protocol and the records it keeps.

Tables: ``setup`` (the book, market, config and model the monitor started from, and the store's
own id), ``accounts``, ``positions`` and ``collateral`` (the book, one row each), ``ticks``
(every accepted price tick, by sequence number, append-only), ``events`` (margin events with a
global sequence number, append-only: the outbox), ``metrics`` (pool health per tick),
``snapshots`` (account margin rows), ``cursors`` (the last tick sequence applied from each feed
stream, and ``outbox``: the last event sequence the event stream acknowledged) and
``rejections`` (ticks refused, with the reason). One tick is committed in one transaction with
its events, metrics and stream cursor, so a crash leaves either all of it or none; the state is a
function of the tick log. A store has one writer: opening it for writing takes a lease (SQLite:
an exclusive lock on ``PATH.lock``; PostgreSQL: a session advisory lock on the schema) that a
killed process releases with its connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from margin_engine.core.errors import InputError


@dataclass(frozen=True, slots=True)
class Tick:
    seq: int
    time_ns: int
    symbol: str
    price: float
    source: str = "feed"


class EventKind(StrEnum):
    """Every kind of event the monitor emits (published on ``<events prefix>.<kind>``)."""

    MARGIN_CALL = "margin_call"  # equity fell below IM
    LIQUIDATION = "liquidation"  # below MM (or an isolated position below its MM)
    RECOVERY = "recovery"  # back above IM
    BREAKER_ON = "breaker_on"
    BREAKER_OFF = "breaker_off"
    ORACLE_FLAGGED = "oracle_flagged"  # sources disagree: the median of the healthy ones used
    ORACLE_CLEARED = "oracle_cleared"
    TICK_QUARANTINED = "tick_quarantined"  # a jump beyond the bound, held until confirmed
    QUARANTINE_CONFIRMED = "quarantine_confirmed"  # applied after confirmation
    QUARANTINE_DROPPED = "quarantine_dropped"  # the next ticks went back: never applied
    FEED_DOWN = "feed_down"  # the feed connection was lost
    FEED_UP = "feed_up"  # back, with the catch-up
    SETTLEMENT = "settlement"  # dated instruments reached expiry (08:00 UTC): settled at the index
    # Audit of changes made through the HTTP service or the key commands (tick_seq 0; the
    # payload names the API key that made the change: store/service.py).
    ACCOUNT_PUT = "account_put"  # an account created or its mode changed
    ACCOUNT_DELETED = "account_deleted"
    POSITION_PUT = "position_put"
    POSITION_DELETED = "position_deleted"
    COLLATERAL_PUT = "collateral_put"
    COLLATERAL_DELETED = "collateral_deleted"
    KEY_CREATED = "key_created"
    KEY_REVOKED = "key_revoked"


@dataclass(frozen=True, slots=True)
class Event:
    tick_seq: int
    kind: str
    account: str | None
    payload: str  # canonical JSON


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    tick_seq: int
    account: str
    equity: float
    initial_margin: float
    maintenance_margin: float


class Repository(Protocol):
    def initialise(self) -> None: ...

    def take_writer_lease(self) -> None: ...

    def follow(self, stream: str) -> None: ...

    def cursor(self, stream: str) -> int: ...

    def store_id(self) -> str: ...

    def events_after(self, seq: int, limit: int) -> list[tuple[int, Event]]: ...

    def mark_published(self, seq: int) -> None: ...

    def record_events(self, events: Sequence[Event]) -> None: ...

    def record_rejection(self, tick: Tick, reason: str, kind: str) -> None: ...

    def rejections(self) -> Iterator[tuple[int, str, str]]: ...

    def save_start(self, setup: dict[str, str], accounts: Iterable[tuple[str, str]],
                   positions: Iterable[tuple[str, str, float, float]],
                   collateral: Iterable[tuple[str, str, float]]) -> None: ...

    def load_setup(self) -> dict[str, str]: ...

    def commit_tick(self, tick: Tick, events: Sequence[Event], metrics: str,
                    snapshots: Sequence[SnapshotRow]) -> None: ...

    def last_tick_seq(self) -> int: ...

    def ticks(self) -> Iterator[Tick]: ...

    def events(self) -> Iterator[tuple[int, Event]]: ...

    def metrics(self) -> Iterator[tuple[int, str]]: ...

    def bulk_snapshots(self, rows: Sequence[SnapshotRow]) -> None: ...

    def count(self, table: str) -> int: ...

    def event_counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def open_store(spec: str) -> Repository:
    """``sqlite:PATH`` or ``postgresql://...`` (``?schema=NAME`` picks the schema)."""
    if spec.startswith("sqlite:"):
        from margin_engine.store.sqlite import SqliteRepository

        path = spec[len("sqlite:"):]
        if not path:
            raise InputError("sqlite:PATH", field="--store", value=spec)
        return SqliteRepository(path)
    if spec.startswith(("postgresql://", "postgres://")):
        from margin_engine.store.postgres import PostgresRepository

        return PostgresRepository(spec)
    raise InputError("sqlite:PATH or postgresql://HOST:PORT/DB", field="--store", value=spec)


TABLES = ("setup", "accounts", "positions", "collateral", "ticks", "events", "metrics",
          "snapshots", "cursors", "rejections")
OUTBOX = "outbox"  # the cursors row holding the last event sequence published


def new_store_id() -> str:
    """A random id written once with the set-up: event message ids are ``<store id>-<event
    seq>``, unique across stores that share a NATS server."""
    import uuid

    return uuid.uuid4().hex[:16]


def masked(url: str) -> str:
    """A connection URL without its password (for messages and summaries)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))

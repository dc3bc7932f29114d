"""What the HTTP service keeps in a store besides the monitor's tables: API keys (table
``api_keys``, hashed at rest) and audited changes of the book (``accounts``, ``positions``,
``collateral``), each committed in one transaction with its event in ``events``.

Audit events carry ``tick_seq`` 0 (they belong to no tick), so the monitor's transcript and its
replay hash, which gather events by tick sequence, never see them; the outbox publishes them
like any other event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from margin_engine.store.base import Event, Repository, Tick

AUDIT_TICK = 0  # the tick_seq of events that belong to no tick (book changes, keys)


class BookOp(StrEnum):
    """One write to the book tables."""

    PUT_ACCOUNT = "put_account"  # insert or change the mode of an account
    DELETE_ACCOUNT = "delete_account"  # with its positions and collateral
    PUT_POSITION = "put_position"
    DELETE_POSITION = "delete_position"
    PUT_COLLATERAL = "put_collateral"
    DELETE_COLLATERAL = "delete_collateral"


@dataclass(frozen=True, slots=True, kw_only=True)
class BookWrite:
    """``op`` on ``account``; ``name`` is the instrument or asset; ``mode`` (accounts),
    ``size`` and ``entry_price`` (positions), ``amount`` (collateral)."""

    op: BookOp
    account: str
    name: str | None = None
    mode: str | None = None
    size: float | None = None
    entry_price: float | None = None
    amount: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRow:
    """An API key as stored: never the secret, only its scrypt hash and salt."""

    key_id: str
    salt: bytes
    digest: bytes
    scopes: str  # space separated
    account: str | None  # None: not bound to an account
    label: str
    created_ns: int
    revoked_ns: int | None = None
    rate_per_second: float | None = None  # None: the server's default
    burst: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountRows:
    """One account's rows: mode, positions (instrument, size, entry price) and collateral
    (asset, amount)."""

    account: str
    mode: str
    positions: tuple[tuple[str, float, float], ...]
    collateral: tuple[tuple[str, float], ...]


class ServiceRepository(Repository, Protocol):
    """The repository protocol plus what the service reads and writes."""

    def initialise_service(self) -> None: ...

    def insert_key(self, row: KeyRow, event: Event) -> None: ...

    def key_row(self, key_id: str) -> KeyRow | None: ...

    def key_rows(self) -> list[KeyRow]: ...

    def revoke_key(self, key_id: str, when_ns: int, event: Event) -> bool: ...

    def account_rows(self, account: str) -> AccountRows | None: ...

    def account_list(self, after: str, limit: int) -> list[tuple[str, str]]: ...

    def book_rows(self) -> tuple[list[tuple[str, str]], list[tuple[str, str, float, float]],
                                 list[tuple[str, str, float]]]: ...

    def change_book(self, writes: Sequence[BookWrite], event: Event) -> int: ...

    def ticks_after(self, seq: int, limit: int) -> list[Tick]: ...

    def metrics_after(self, seq: int, limit: int) -> list[tuple[int, str]]: ...

    def last_metrics(self) -> tuple[int, str] | None: ...

    def last_event_seq(self) -> int: ...

    def account_events_after(self, account: str, seq: int,
                             limit: int) -> list[tuple[int, Event]]: ...

    def last_events_of(self, kinds: Sequence[str], limit: int) -> list[tuple[int, Event]]: ...


def book_statements(write: BookWrite, table: dict[str, str],
                    mark: str) -> list[tuple[str, tuple[object, ...]]]:
    """The SQL of one book write (``table``: the qualified name of each table; ``mark``: the
    driver's parameter mark, ``?`` or ``%s``); SQLite and PostgreSQL share the upsert syntax."""
    a, p, c = table["accounts"], table["positions"], table["collateral"]
    m = mark
    op = write.op
    if op is BookOp.PUT_ACCOUNT:
        return [(f"INSERT INTO {a} (id, mode) VALUES ({m}, {m}) ON CONFLICT (id) "
                 "DO UPDATE SET mode = excluded.mode", (write.account, write.mode))]
    if op is BookOp.DELETE_ACCOUNT:
        return [(f"DELETE FROM {p} WHERE account = {m}", (write.account,)),
                (f"DELETE FROM {c} WHERE account = {m}", (write.account,)),
                (f"DELETE FROM {a} WHERE id = {m}", (write.account,))]
    if op is BookOp.PUT_POSITION:
        return [(f"INSERT INTO {p} (account, instrument, size, entry_price) VALUES "
                 f"({m}, {m}, {m}, {m}) ON CONFLICT (account, instrument) DO UPDATE SET "
                 "size = excluded.size, entry_price = excluded.entry_price",
                 (write.account, write.name, write.size, write.entry_price))]
    if op is BookOp.DELETE_POSITION:
        return [(f"DELETE FROM {p} WHERE account = {m} AND instrument = {m}",
                 (write.account, write.name))]
    if op is BookOp.PUT_COLLATERAL:
        return [(f"INSERT INTO {c} (account, asset, amount) VALUES ({m}, {m}, {m}) "
                 "ON CONFLICT (account, asset) DO UPDATE SET amount = excluded.amount",
                 (write.account, write.name, write.amount))]
    return [(f"DELETE FROM {c} WHERE account = {m} AND asset = {m}",
             (write.account, write.name))]


KEY_COLUMNS = ("key_id, salt, digest, scopes, account, label, created_ns, revoked_ns, "
               "rate_per_second, burst")


def key_row_of(row: Sequence[Any]) -> KeyRow:
    """A KeyRow from the columns of ``KEY_COLUMNS``."""
    rate, burst = row[8], row[9]
    return KeyRow(key_id=str(row[0]), salt=bytes(row[1]), digest=bytes(row[2]),
                  scopes=str(row[3]), account=None if row[4] is None else str(row[4]),
                  label=str(row[5]), created_ns=int(row[6]),
                  revoked_ns=None if row[7] is None else int(row[7]),
                  rate_per_second=None if rate is None else float(rate),
                  burst=None if burst is None else float(burst))


def key_values(row: KeyRow) -> tuple[object, ...]:
    return (row.key_id, row.salt, row.digest, row.scopes, row.account, row.label,
            row.created_ns, row.revoked_ns, row.rate_per_second, row.burst)

"""Values derived from immutable objects, kept per the objects' identities.

One what-if after another on the same account at the same market binds books that share the
instrument table and the market: the per-instrument columns derived from them (scenario
values, Greeks, scenario vols, the liquidation search's instrument keys) are the same each
time. Per-instrument values of a bound book are functions of its instrument table and market
(``bind_market``, and ``reprice`` at the same timestamp and vols), so they are kept under
(table, market[, config]) and a key naming what was derived. Only small tables are kept
(``SMALL_TABLE`` instruments): a large book derives them once per run anyway.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

_T = TypeVar("_T")
SMALL_TABLE = 512  # instruments: larger tables are not kept


class KeptByIdentity:
    """A least-recently-used map from (the identities of some objects, a key) to a value
    derived from them. Each entry holds its objects, so their ids cannot be reused while it
    lives. Thread-safe (the service runs what-ifs on several threads)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, tuple[tuple[Any, ...], Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, objects: tuple[Any, ...], key: Hashable, build: Callable[[], _T],
            rows: int = 0) -> _T:
        """The value kept for ``objects`` and ``key``, else ``build()`` (kept when ``rows``,
        the size of what it describes, is at most ``SMALL_TABLE``)."""
        if rows > SMALL_TABLE:
            return build()
        full = (tuple(id(o) for o in objects), key)
        with self._lock:
            found = self._items.get(full)
            if found is not None:
                self._items.move_to_end(full)
                value: _T = found[1]
                return value
        value = build()
        with self._lock:
            self._items[full] = (objects, value)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


KEPT = KeptByIdentity()


class Recent:
    """A small least-recently-used map of values kept by key (None is never kept).
    Thread-safe: the service runs what-ifs on several threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

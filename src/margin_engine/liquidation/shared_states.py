"""Instrument states on the liquidation search's grid, kept across books bound to one market.

The shared state table of a search (``vector_levels._search``) holds the state of every
instrument the book holds at every grid level: a function of the instrument, the market, the
risk config and the model alone. The parts of a batch are books of their own bound to the same
market, and each built the same rows again (about 0.7 s of a core for 2,426 instruments).
Within ``states_shared(key)``, where ``key`` is the caller's name for that market, config and
set of declared instruments, rows are kept by (model context, grid, instrument name) and a
search takes the rows of the instruments it holds from there, computing only those missing.
Rows are the same numbers computed again (the same compiled function of the same inputs), so
the levels found are unchanged. One key's rows are kept at a time: a new key drops them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

Fill = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # rows -> (states, cumulative)
REUSED = {"rows": 0, "computed": 0}  # rows taken from the kept ones / computed (for tests)


class KeptRows:
    """One key's instrument rows: (family, name) -> (states levels x width, cum levels x 2)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.rows: dict[tuple[Hashable, str], tuple[np.ndarray, np.ndarray]] = {}
        self.lock = threading.Lock()

    def table(self, names: Sequence[str], family: Hashable, held: np.ndarray,
              fill: Fill) -> tuple[np.ndarray, np.ndarray]:
        """(states, cum) of the instruments ``held`` (named ``names``), in that order: the
        kept rows, and ``fill`` of the rest (then kept)."""
        with self.lock:
            missing = np.array([k for k, name in enumerate(names)
                                if (family, name) not in self.rows], dtype=np.int64)
            if missing.size:
                states, cum = fill(held[missing])
                for m, k in enumerate(missing.tolist()):
                    self.rows[(family, names[k])] = (states[m], cum[m])
            REUSED["rows"] += len(names) - int(missing.size)
            REUSED["computed"] += int(missing.size)
            kept = [self.rows[(family, name)] for name in names]
        return np.stack([k[0] for k in kept]), np.stack([k[1] for k in kept])


_ACTIVE: ContextVar[KeptRows | None] = ContextVar("shared_states", default=None)
_LAST: list[KeptRows] = []  # the key kept between blocks (a batch worker's next part)
_LAST_LOCK = threading.Lock()


@contextmanager
def states_shared(key: str) -> Iterator[None]:
    """Within the block, searches keep and reuse instrument rows under ``key`` (the market,
    config and declared instruments every book searched in it is bound to: the caller's
    promise). The rows outlive the block until another key is asked for."""
    with _LAST_LOCK:
        if not _LAST or _LAST[0].key != key:
            _LAST[:] = [KeptRows(key)]
        kept = _LAST[0]
    token = _ACTIVE.set(kept)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def kept_rows() -> KeptRows | None:
    """The rows of the enclosing ``states_shared`` block, or None outside any."""
    return _ACTIVE.get()

"""Python's cycle collector held off while many acyclic objects are made.

A loop that makes a million small results (dicts, dataclasses) and drops them promotes each
batch to the collector's old generation before it is dropped, and every so often a full pass
walks all of them; such objects hold no reference cycles, so reference counting frees them
and the passes find nothing. ``no_cycle_collection`` turns the collector off for the loop and
back on after it (if it was on).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """The collector off inside the block, as it was after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()

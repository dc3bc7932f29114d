"""Work split over numba's thread count for kernels that release the GIL."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def in_threads(n: int, run: Callable[[int, int], None], pieces_per_thread: int = 8,
               least: int = 64) -> None:
    """run(start, stop) over [0, n) in pieces on numba's thread count (the kernels release
    the GIL); in the calling thread when that is one or n is below ``least``."""
    import numba

    threads = numba.get_num_threads()
    if threads <= 1 or n < least:
        run(0, n)
        return
    from concurrent.futures import ThreadPoolExecutor

    pieces = min(n, threads * pieces_per_thread)
    bounds = np.linspace(0, n, pieces + 1).astype(np.int64)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(lambda k: run(int(bounds[k]), int(bounds[k + 1])), range(pieces)):
            pass

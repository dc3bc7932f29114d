"""Batch benchmark (``margin-engine bench --model batch``): a seeded random book of
``accounts`` accounts (the bench book, every account in portfolio mode) written as a partitioned
Parquet book, margined on a ``LocalCluster`` of ``workers`` processes; then a sample of its
partitions margined again in this process and compared with the cluster's results.

Reported: partitions, wall time of the batch (cluster start included) and of writing the book,
accounts per second, the peak RSS of every worker, and whether the sampled partitions are
identical (every column, bit for bit). With ``liquidation_prices`` the parts hold both
liquidation levels of every account too (``batch.levels``), and the levels found are counted.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def run_batch_bench(*, accounts: int, positions: int, partitions: int, workers: int,
                    seed: int, sample: int = 2, folder: str | None = None,
                    progress: bool = True, liquidation_prices: bool = False) -> dict[str, Any]:
    from rich.console import Console

    from margin_engine.batch.book import part_name, write_part
    from margin_engine.batch.book import partitions as list_partitions
    from margin_engine.batch.run import LEVEL_COUNTS, BatchJob, margin_partition, run_batch
    from margin_engine.bench.run import _book, instrument_names, random_book_columns
    from margin_engine.demo.market import demo_market_document
    from margin_engine.margin.config import RiskConfig

    console = Console(stderr=True, quiet=not progress, markup=False)
    market = demo_market_document()
    config = RiskConfig().to_dict()
    names = instrument_names(2400)
    with tempfile.TemporaryDirectory(prefix="margin-batch-", dir=folder) as work:
        root = Path(work)
        per_part = -(-accounts // partitions)
        started = time.perf_counter()
        with console.status(f"writing {accounts:,} accounts in {partitions} partitions"):
            written = 0
            for k in range(partitions):
                n = min(per_part, accounts - written)
                if n <= 0:
                    break
                columns = random_book_columns(n, positions, names, seed + k)
                columns["account_ids"] = [f"a{written + j}" for j in range(n)]
                write_part(_book(names, columns), root / "book", part_name(k))
                written += n
        write_seconds = time.perf_counter() - started
        done = {"count": 0}

        def tick(_: dict[str, Any]) -> None:
            done["count"] += 1

        doing = "margining" + (" with liquidation prices" if liquidation_prices else "")
        with console.status(f"{doing} on a LocalCluster of {workers} workers"):
            summary = run_batch(root / "book", market, config, model="account",
                                output=root / "out", scheduler="local", workers=workers,
                                progress=tick, liquidation_prices=liquidation_prices)
        parts = list_partitions(root / "book")
        picked = [parts[int(k)] for k in np.linspace(0, len(parts) - 1, min(sample,
                                                                             len(parts)))]
        identical = True
        with console.status(f"single-process check of {len(picked)} partitions"):
            import pyarrow.parquet as pq

            job = BatchJob(market=market, config=config, model="account", instruments={},
                           output=str(root / "check"), liquidation_prices=liquidation_prices)
            (root / "check").mkdir()
            for part in picked:
                margin_partition(part, job)
                mine = pq.read_table(root / "check" / f"{part.name}.parquet")
                theirs = pq.read_table(root / "out" / f"{part.name}.parquet")
                identical = identical and mine.equals(theirs)
        book_bytes = sum(f.stat().st_size for f in (root / "book").rglob("*.parquet"))
    return {
        "accounts": summary["accounts"], "positions": summary["positions"],
        "partitions": summary["partitions"], "workers": workers,
        "write_seconds": write_seconds, "book_bytes": book_bytes,
        "batch_wall_seconds": summary["wall_seconds"],
        "accounts_per_second": summary["accounts"] / summary["wall_seconds"],
        **({key: summary[key] for key in LEVEL_COUNTS} if liquidation_prices else {}),
        "peak_rss_mb_per_worker": summary["peak_rss_mb_per_worker"],
        "sampled_partitions": [p.name for p in picked],
        "identical_to_single_process": identical,
    }

"""Vectorised liquidation levels against the per-account reference search on a random book.

    .venv/bin/python benchmarks/liquidation_equality.py --accounts 10000 [--models portfolio,cross]

The book is the seeded random book of the liquidation tests (every instrument kind, every
margin mode, coin and stablecoin collateral). Both searches run on every account; prints, per
model, the levels found, whether the same ones are missing, the largest relative difference of
down / up / nearest and both wall times. Not part of the test suite (the reference takes about
30 ms per account and model on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.level_books import random_level_book  # noqa: E402

from margin_engine.liquidation.price import (  # noqa: E402
    liquidation_levels,
    liquidation_levels_reference,
)
from margin_engine.margin.config import RiskConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--models", default="portfolio,cross,isolated,sensitivity")
    args = parser.parse_args()
    bound = random_level_book(args.accounts, seed=args.seed)
    config = RiskConfig()
    for model in args.models.split(","):
        liquidation_levels(bound, model, config)  # compile / load the kernels
        started = time.perf_counter()
        got = liquidation_levels(bound, model, config)
        vector_seconds = time.perf_counter() - started
        started = time.perf_counter()
        want = liquidation_levels_reference(bound, model, config)
        reference_seconds = time.perf_counter() - started
        row: dict[str, object] = {"model": model, "accounts": args.accounts,
                                  "vector_seconds": round(vector_seconds, 3),
                                  "reference_seconds": round(reference_seconds, 1)}
        for side in ("down", "up", "nearest"):
            g, w = getattr(got, side), getattr(want, side)
            both = np.isfinite(w)
            row[f"{side}_found"] = int(both.sum())
            row[f"{side}_same_missing"] = bool(np.array_equal(np.isnan(g), np.isnan(w)))
            row[f"{side}_max_rel_diff"] = float(np.max(np.abs(g[both] - w[both])
                                                       / np.abs(w[both]))) if both.any() else 0.0
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

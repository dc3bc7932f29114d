"""Single-account what-if with liquidation prices, in process: the compiled search against the
per-account reference search it replaced (the same run, the same account).

    .venv/bin/python benchmarks/whatif_liquidation.py [--iterations 200]

The account and order are those of ``benchmarks/service_load.py`` (a portfolio-margined account
of 10 BTC and ETH positions, USDC and BTC collateral; buy 0.5 BTC-PERP). ``margin_engine.what_if``
margins the account before and after the order with liquidation prices (both levels of each
underlying, before and after). Three ways, each timed per call:

* "warm": what-ifs one after another on the account at one market, as a pre-trade check runs:
  the margin before the orders is kept from the first call and the liquidation search reads the
  instrument states kept for the market (``forget_kept`` not called);
* "cold": every call from nothing (both kept stores emptied before each call);
* "reference": cold, with ``liquidation_levels_reference`` swapped in (one market binding and
  model run per grid level, then Brent per account on a rebound one-account book).

Prints p50 / p99 / mean milliseconds of each and the largest relative difference between the
liquidation prices of warm and cold against the reference's. One numba thread, as the service
runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from service_load import MARKET, ORDER, POSITIONS  # noqa: E402

import margin_engine  # noqa: E402
from margin_engine.app.whatif import forget_kept  # noqa: E402
from margin_engine.io.market_file import parse_market  # noqa: E402
from margin_engine.liquidation import price  # noqa: E402

ACCOUNT = {"id": "bench", "mode": "portfolio", "collateral": {"USDC": 150000, "BTC": 1.5},
           "positions": [{"instrument": n, "size": s, "entry_price": e}
                         for n, s, e in POSITIONS]}
# the same positions on little collateral: liquidation levels on both sides of both coins
LEVERAGED = {**ACCOUNT, "id": "leveraged", "collateral": {"USDC": 20000}}


def levels(result: Any) -> list[float]:
    out = []
    for side in (result.before, result.after):
        for cell in side.underlyings.values():
            if cell.liquidation is not None:
                out += [v.price if v is not None else float("nan")
                        for v in (cell.liquidation.down, cell.liquidation.up)]
    return out


def timed(account: dict[str, Any], iterations: int, cold: bool
          ) -> tuple[np.ndarray, list[float]]:
    market = parse_market(MARKET)
    order = margin_engine.Order(**ORDER)
    forget_kept()
    result = margin_engine.what_if(account, [order], market)  # compiles / loads the kernels
    seconds = []
    for _ in range(iterations):
        if cold:
            forget_kept()
        t = time.perf_counter()
        result = margin_engine.what_if(account, [order], market)
        seconds.append(time.perf_counter() - t)
    return 1e3 * np.array(seconds), levels(result)


def _summary(ms: np.ndarray) -> dict[str, float]:
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "mean": float(ms.mean())}


def _difference(found: list[float], wanted: list[float]) -> dict[str, Any]:
    a, b = np.array(found), np.array(wanted)
    both = np.isfinite(b)
    return {"levels": int(both.sum()),
            "same_missing": bool(np.array_equal(np.isnan(a), np.isnan(b))),
            "max_relative_difference": float(np.max(np.abs(a[both] - b[both])
                                                    / np.abs(b[both]))) if both.any() else 0.0}


def compare(account: dict[str, Any], iterations: int) -> dict[str, Any]:
    warm, warm_levels = timed(account, iterations, cold=False)
    cold, cold_levels = timed(account, iterations, cold=True)
    compiled = price.liquidation_levels
    price.liquidation_levels = price.liquidation_levels_reference  # type: ignore[assignment]
    try:
        reference, wanted = timed(account, max(20, iterations // 10), cold=True)
    finally:
        price.liquidation_levels = compiled  # type: ignore[assignment]
        forget_kept()
    return {
        "iterations": {"warm": len(warm), "cold": len(cold), "reference": len(reference)},
        "warm_ms": _summary(warm), "cold_ms": _summary(cold), "reference_ms": _summary(reference),
        "warm_against_reference": _difference(warm_levels, wanted),
        "cold_against_reference": _difference(cold_levels, wanted),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    report = {"load_average_before": list(os.getloadavg()),
              **{a["id"]: compare(a, args.iterations) for a in (ACCOUNT, LEVERAGED)},
              "load_average_after": list(os.getloadavg())}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

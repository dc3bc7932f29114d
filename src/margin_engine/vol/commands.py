"""The work behind `market from-deribit`, `vol plot` and `vol bench` (no CLI types here)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import ns_to_iso, parse_timestamp
from margin_engine.vol.chain_fit import SurfaceFit, fit_surface
from margin_engine.vol.deribit import read_deribit_file
from margin_engine.vol.market_builder import expiry_code
from margin_engine.vol.synthetic import synthetic_chain

SAME_SNAPSHOT_NS = 3600 * 1_000_000_000
LIQUID_DAYS = 7.0
LIQUID_QUOTES = 10


def split_spec(spec: str) -> tuple[str | None, Path]:
    """``BTC=path`` -> ("BTC", path); ``path`` -> (None, path)."""
    if "=" in spec:
        underlying, path = spec.split("=", 1)
        return underlying.strip().upper(), Path(path)
    return None, Path(spec)


def fit_files(specs: Sequence[str], *, at: str | None = None, weighting: str = "vega",
              min_days: float = 1.0, vega_cut: float = 1e-4,
              repair: bool = True) -> tuple[list[SurfaceFit], int]:
    """Fit every file; returns the fits and the common snapshot time (ns)."""
    if weighting not in ("vega", "spread"):
        raise InputError("'vega' or 'spread'", field="--weighting", value=weighting)
    quotes = [read_deribit_file(path, underlying) for underlying, path in map(split_spec, specs)]
    at_ns = parse_timestamp(at, field="--at") if at is not None else None
    if at_ns is None:
        for q in quotes:
            if q.snapshot_ns is None:
                raise InputError("the snapshot time as --at TIMESTAMP (ISO-8601 with zone): this "
                                 "chain has no snapshot-time column", field="--at",
                                 source=q.source)
        times = [q.snapshot_ns for q in quotes if q.snapshot_ns is not None]
        if max(times) - min(times) > SAME_SNAPSHOT_NS:
            listing = ", ".join(f"{q.source}: {ns_to_iso(t)}" for q, t in zip(quotes, times,
                                                                                strict=True))
            raise InputError(f"snapshots within an hour of each other, or --at ({listing})",
                             field="FILE")
        at_ns = max(times)
    fits = [fit_surface(q, at_ns=at_ns, min_days=min_days, vega_cut=vega_cut,
                        weighting=weighting, repair=repair) for q in quotes]
    return fits, at_ns


def liquid_rmse(fit: SurfaceFit) -> list[float]:
    """RMSE of the liquid expiries: at least LIQUID_DAYS out and LIQUID_QUOTES fitted quotes."""
    return [s.rmse_vol_points for s in fit.slices
            if s.years * 365 >= LIQUID_DAYS and s.quotes >= LIQUID_QUOTES]


def fit_report(fits: Sequence[SurfaceFit]) -> dict[str, Any]:
    out = []
    for fit in fits:
        report = fit.report()
        liquid = liquid_rmse(fit)
        report["median_rmse_liquid"] = float(np.median(liquid)) if liquid else None
        report["unrepaired_slices"] = [expiry_code(s.expiry_ns) for s in fit.slices
                                       if s.source == "svi-unrepaired"]
        for s, entry in zip(fit.slices, report["slices"], strict=True):
            entry["expiry"] = expiry_code(s.expiry_ns)
        out.append(report)
    return {"liquid": {"min_days": LIQUID_DAYS, "min_quotes": LIQUID_QUOTES}, "fits": out}


def print_fit_report(fits: Sequence[SurfaceFit]) -> None:
    from rich.table import Table

    from margin_engine.cli.console import make_console

    console = make_console(stderr=True)
    for fit in fits:
        table = Table(title=f"{fit.underlying} surface at {ns_to_iso(fit.snapshot_ns)} "
                      f"(index {fit.index:,.2f}, fitted in {fit.seconds:.2f} s)",
                      title_justify="left")
        for name in ("expiry", "days", "quotes", "RMSE vol pts", "slice"):
            table.add_column(name, justify="left" if name in ("expiry", "slice") else "right")
        for s in fit.slices:
            table.add_row(expiry_code(s.expiry_ns), f"{s.years * 365:.1f}", str(s.quotes),
                          f"{s.rmse_vol_points:.2f}", s.source)
        console.print(table)
        dropped = {k: v for k, v in fit.counts.items() if v and k not in ("rows",
                                                                          "fitted_quotes")}
        fitted = fit.counts.get("fitted_quotes", 0)
        console.print(f"  rows {fit.counts.get('rows', 0)}, fitted {fitted}; dropped or "
                      f"flagged: {dropped}")
        console.print(f"  arbitrage before repair {fit.arbitrage_before}, after "
                      f"{fit.arbitrage_after}")
        liquid = liquid_rmse(fit)
        if liquid:
            console.print(f"  median RMSE on liquid expiries (>= {LIQUID_DAYS:g} d, >= "
                          f"{LIQUID_QUOTES} quotes): {np.median(liquid):.2f} vol points")
        unrepaired = [expiry_code(s.expiry_ns) for s in fit.slices if s.source == "svi-unrepaired"]
        if unrepaired:
            console.print(f"  [yellow]warning[/yellow]: arbitrage left in {unrepaired}: no repair "
                          "within 1 vol point of RMSE; the slices are kept as fitted")


def vol_bench(quotes: int) -> dict[str, Any]:
    """Fit time of a seeded synthetic chain of ``quotes`` quotes (median of 3 runs)."""
    chain = synthetic_chain(quotes=quotes)
    fit_surface(chain)  # warm-up: imports and numba kernels
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        fit = fit_surface(chain)
        seconds.append(time.perf_counter() - started)
    rmse = [s.rmse_vol_points for s in fit.slices]
    return {"quotes": chain.size, "fitted_quotes": fit.counts.get("fitted_quotes", 0),
            "expiries": len(fit.slices), "seconds_median": float(np.median(seconds)),
            "seconds_runs": seconds, "median_rmse_vol_points": float(np.median(rmse)),
            "arbitrage_after": fit.arbitrage_after}

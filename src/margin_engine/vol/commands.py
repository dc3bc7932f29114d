"""The work behind `market from-deribit`, `vol plot` and `vol bench` (no CLI types here)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import NS_PER_SECOND, SECONDS_PER_YEAR, ns_to_iso, parse_timestamp
from margin_engine.pricing.black76 import greeks
from margin_engine.pricing.implied import IvReason, implied_vol_with_reason
from margin_engine.vol.chain_fit import MIN_QUOTES, SurfaceFit, fit_surface
from margin_engine.vol.deribit import OptionQuotes, read_deribit_file
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
    fits, _, at_ns = fit_files_with_rows(specs, at=at, weighting=weighting, min_days=min_days,
                                         vega_cut=vega_cut, repair=repair)
    return fits, at_ns


def fit_files_with_rows(specs: Sequence[str], *, at: str | None = None,
                        weighting: str = "vega", min_days: float = 1.0, vega_cut: float = 1e-4,
                        repair: bool = True
                        ) -> tuple[list[SurfaceFit], list[dict[str, int]], int]:
    """Fit every file; returns the fits, each file's row accounting (``row_accounting``) and
    the common snapshot time (ns)."""
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
    rows = [row_accounting(q, f, min_days=min_days, vega_cut=vega_cut)
            for q, f in zip(quotes, fits, strict=True)]
    return fits, rows, at_ns


# Every row of a file is fitted or counted under exactly one of these reasons, the first that
# applies in this order (the order in which the reader and the fit decide).
ROW_REASONS = {
    "unparsed": "not an option row (no option name, strike or maturity)",
    "censored_iv": "mark IV exactly 100 % (a capped, censored mark)",
    "too_short_dated": "expiry closer than --min-days",
    "no_vol_bad_input": "no implied vol: missing or non-positive price, forward or strike",
    "no_vol_expired": "no implied vol: expired",
    "no_vol_below_intrinsic": "no implied vol: price at or below intrinsic value",
    "no_vol_above_bound": "no implied vol: price above its no-arbitrage bound",
    "no_vol_not_bracketed": "no implied vol: would need a vol above 2,000 %",
    "no_vol_no_convergence": "no implied vol: the solver did not converge",
    "in_the_money": "in the money (only out-of-the-money quotes are fitted)",
    "one_sided": "no two-sided book (a bid and an ask)",
    "below_vega_cut": "vega below --vega-cut x forward",
    "thin_expiry": f"in an expiry with fewer than {MIN_QUOTES} usable quotes",
    "other": "not fitted for another reason",
}


def row_accounting(quotes: OptionQuotes, fit: SurfaceFit, *, min_days: float,
                   vega_cut: float) -> dict[str, int]:
    """``rows`` (the file's data rows) = ``fitted`` + one count per reason of ROW_REASONS.

    The reader's drops come from its counts; the quotes it kept are either in a fitted slice
    (``SliceFit.rows``) or classified by the fit's own tests, first reason first."""
    counts = {"rows": int(quotes.counts.get("rows", quotes.size)), "fitted": 0}
    counts["unparsed"] = int(quotes.counts.get("unparsed", 0))
    counts["censored_iv"] = int(quotes.counts.get("censored_iv", 0))
    fitted = np.zeros(quotes.size, dtype=np.bool_)
    for s in fit.slices:
        fitted[s.rows] = True
    counts["fitted"] = int(fitted.sum())
    years = (quotes.expiry_ns - fit.snapshot_ns) / NS_PER_SECOND / SECONDS_PER_YEAR
    short = years * 365 < min_days
    vol, reason = implied_vol_with_reason(quotes.mark_usd, quotes.forward, quotes.strike,
                                          np.maximum(years, 0.0), quotes.is_call)
    otm = np.where(quotes.is_call, quotes.strike >= quotes.forward,
                   quotes.strike < quotes.forward)
    with np.errstate(invalid="ignore"):
        vega = greeks(quotes.forward, quotes.strike, np.maximum(years, 1e-9),
                      np.nan_to_num(vol, nan=0.5), quotes.is_call)["vega"] / 100
    has_book = bool(np.isfinite(quotes.bid_usd).any())
    two_sided = (quotes.bid_usd > 0) & (quotes.ask_usd > quotes.bid_usd)
    usable = ~short & (reason == IvReason.OK) & otm & (vega >= vega_cut * quotes.forward) \
        & (two_sided if has_book else True)
    expiries, per_expiry = np.unique(quotes.expiry_ns[usable], return_counts=True)
    thin = np.isin(quotes.expiry_ns, expiries[per_expiry < MIN_QUOTES])
    tests: list[tuple[str, np.ndarray]] = [("too_short_dated", short)]
    tests += [(f"no_vol_{code.name.lower()}", reason == code) for code in IvReason
              if code is not IvReason.OK]
    tests += [("in_the_money", ~otm),
              ("one_sided", ~two_sided if has_book else np.zeros(quotes.size, dtype=np.bool_)),
              ("below_vega_cut", vega < vega_cut * quotes.forward), ("thin_expiry", thin)]
    left = ~fitted
    for name, test in tests:
        hit = left & test
        counts[name] = int(hit.sum())
        left &= ~hit
    counts["other"] = int(left.sum())
    counts["strike_typos_kept"] = int(quotes.counts.get("strike_typos", 0))
    return counts


def liquid_rmse(fit: SurfaceFit) -> list[float]:
    """RMSE of the liquid expiries: at least LIQUID_DAYS out and LIQUID_QUOTES fitted quotes."""
    return [s.rmse_vol_points for s in fit.slices
            if s.years * 365 >= LIQUID_DAYS and s.quotes >= LIQUID_QUOTES]


def fit_report(fits: Sequence[SurfaceFit],
               rows: Sequence[dict[str, int]] | None = None) -> dict[str, Any]:
    out = []
    for k, fit in enumerate(fits):
        report = fit.report()
        liquid = liquid_rmse(fit)
        report["median_rmse_liquid"] = float(np.median(liquid)) if liquid else None
        report["unrepaired_slices"] = [expiry_code(s.expiry_ns) for s in fit.slices
                                       if s.source == "svi-unrepaired"]
        for s, entry in zip(fit.slices, report["slices"], strict=True):
            entry["expiry"] = expiry_code(s.expiry_ns)
        if rows is not None:
            report["rows"] = rows[k]
        out.append(report)
    return {"liquid": {"min_days": LIQUID_DAYS, "min_quotes": LIQUID_QUOTES},
            "row_reasons": ROW_REASONS, "fits": out}


def print_fit_report(fits: Sequence[SurfaceFit],
                     rows: Sequence[dict[str, int]] | None = None) -> None:
    from rich.text import Text

    from margin_engine.cli.console import make_console
    from margin_engine.cli.render import heading, notes, table

    console = make_console(stderr=True)
    for k, fit in enumerate(fits):
        heading(console, f"{fit.underlying} surface at {ns_to_iso(fit.snapshot_ns)}",
                f"index {fit.index:,.2f} USD; fitted in {fit.seconds:.2f} s")
        out = table("expiry", "days", "quotes", "RMSE (vol points)", "slice", left=("slice",))
        for s in fit.slices:
            out.add_row(expiry_code(s.expiry_ns), f"{s.years * 365:.1f}", str(s.quotes),
                        f"{s.rmse_vol_points:.2f}", s.source)
        console.print(out)
        if rows is not None:
            counted = rows[k]
            out = table("what became of the file's rows", "rows")
            out.add_row("fitted", f"{counted['fitted']:,}")
            for name, label in ROW_REASONS.items():
                if counted.get(name):
                    out.add_row(f"not fitted: {label}", f"{counted[name]:,}")
            total = counted["fitted"] + sum(counted.get(name, 0) for name in ROW_REASONS)
            out.add_row(Text("total (every row of the file)", style="bold"),
                        Text(f"{total:,} of {counted['rows']:,}", style="bold"))
            console.print(out)
            if counted.get("strike_typos_kept"):
                notes(console, f"{counted['strike_typos_kept']:,} rows with a strike column "
                               "that disagrees with the option name: the name's strike is used")
        before, after = fit.arbitrage_before, fit.arbitrage_after
        console.print(f"arbitrage (butterfly slices / calendar pairs): before repair "
                      f"{before.get('butterfly_slices', 0)} / {before.get('calendar_pairs', 0)}, "
                      f"after {after.get('butterfly_slices', 0)} / "
                      f"{after.get('calendar_pairs', 0)}")
        liquid = liquid_rmse(fit)
        if liquid:
            console.print(f"median RMSE on liquid expiries (>= {LIQUID_DAYS:g} days, >= "
                          f"{LIQUID_QUOTES} quotes): {np.median(liquid):.2f} vol points")
        unrepaired = [expiry_code(s.expiry_ns) for s in fit.slices if s.source == "svi-unrepaired"]
        if unrepaired:
            console.print(Text.assemble(
                ("warning", "yellow"), f": arbitrage left in {', '.join(unrepaired)}: no "
                "repair within 1 vol point of RMSE; kept as fitted"))


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

"""Fit a vol surface to one underlying's option quotes.

1. Implied vol from each USD mark on its row's forward F (r = 0); quotes with no vol are
   dropped and counted by reason. Expiries under ``min_days`` are skipped (Deribit's own time
   measure differs from calendar time on the expiry day).
2. Out-of-the-money quotes (calls K >= F, puts K < F) with vega >= ``vega_cut`` x F per vol point
   are fitted; RMSE is reported in vol points on the same quotes.
3. Raw SVI per expiry (vega or spread weights), SSVI across expiries; butterfly and calendar
   arbitrage counted, repaired by penalised refits, then by the SSVI slice; counted again.

Slices are in forward log-moneyness k = ln(K / F), each quote at its own row's F; the slice's
``forward`` is the median F of its fitted quotes (the market builder moves it to index
log-moneyness and writes that forward as the future's mark).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import NS_PER_SECOND, SECONDS_PER_YEAR
from margin_engine.core.types import FloatArray, IntArray
from margin_engine.pricing.black76 import greeks
from margin_engine.pricing.implied import IvReason, implied_vol_with_reason
from margin_engine.vol.arbitrage import butterfly_violations, calendar_violations, moneyness_grid
from margin_engine.vol.deribit import OptionQuotes
from margin_engine.vol.ssvi import SsviSurface, fit_ssvi, monotone_thetas
from margin_engine.vol.svi import SviSlice, fit_svi

MIN_QUOTES = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceFit:
    expiry_ns: int
    years: float
    forward: float
    svi: SviSlice  # in forward log-moneyness
    quotes: int
    rmse_vol_points: float
    k: FloatArray
    market_vol: FloatArray
    weights: FloatArray
    rows: IntArray  # the fitted quotes' positions in the OptionQuotes
    source: str  # "svi", "svi-repaired", "ssvi", or "svi-unrepaired" (arbitrage left, warned)


@dataclass(frozen=True, slots=True, kw_only=True)
class SurfaceFit:
    underlying: str
    snapshot_ns: int
    index: float
    slices: tuple[SliceFit, ...]
    ssvi: SsviSurface | None
    counts: dict[str, int] = field(default_factory=dict)
    arbitrage_before: dict[str, int] = field(default_factory=dict)
    arbitrage_after: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def report(self) -> dict[str, Any]:
        return {
            "underlying": self.underlying, "counts": self.counts, "seconds": self.seconds,
            "arbitrage_before": self.arbitrage_before, "arbitrage_after": self.arbitrage_after,
            "slices": [{"expiry_ns": s.expiry_ns, "days": s.years * 365, "quotes": s.quotes,
                        "rmse_vol_points": s.rmse_vol_points, "source": s.source,
                        "params": s.svi.as_dict()} for s in self.slices],
        }


def _rmse(svi: SviSlice, k: FloatArray, years: float, vol: FloatArray) -> float:
    fitted = np.sqrt(np.maximum(svi.total_variance(k), 0.0) / years)
    return float(100 * np.sqrt(np.mean((fitted - vol) ** 2)))


def fit_surface(quotes: OptionQuotes, *, at_ns: int | None = None, min_days: float = 1.0,
                vega_cut: float = 1e-4, weighting: str = "vega",
                repair: bool = True) -> SurfaceFit:
    started = time.perf_counter()
    at = quotes.snapshot_ns if at_ns is None else at_ns
    if at is None:
        raise InputError("a snapshot time (the file has no snapshot-time column)",
                         source=quotes.source)
    years = (quotes.expiry_ns - at) / NS_PER_SECOND / SECONDS_PER_YEAR
    counts = dict(quotes.counts)
    short = years * 365 < min_days
    counts["too_short_dated"] = int(short.sum())
    vol, reason = implied_vol_with_reason(quotes.mark_usd, quotes.forward, quotes.strike,
                                          np.maximum(years, 0.0), quotes.is_call)
    for code in IvReason:
        if code is not IvReason.OK:
            counts[f"no_vol_{code.name.lower()}"] = int(np.sum((reason == code) & ~short))
    otm = np.where(quotes.is_call, quotes.strike >= quotes.forward,
                   quotes.strike < quotes.forward)
    with np.errstate(invalid="ignore"):
        vega = greeks(quotes.forward, quotes.strike, np.maximum(years, 1e-9),
                      np.nan_to_num(vol, nan=0.5), quotes.is_call)["vega"] / 100
    two_sided = (quotes.bid_usd > 0) & (quotes.ask_usd > quotes.bid_usd)
    has_book = bool(np.isfinite(quotes.bid_usd).any())
    if has_book:  # stale marks sit on one-sided strikes; fit where someone is quoting both sides
        counts["one_sided"] = int(np.sum(~short & (reason == IvReason.OK) & otm & ~two_sided))
    usable = (~short & (reason == IvReason.OK) & otm & (vega >= vega_cut * quotes.forward)
              & (two_sided if has_book else True))
    counts["fitted_quotes"] = int(usable.sum())
    counts["below_vega_cut"] = int(np.sum(~short & (reason == IvReason.OK) & otm
                                          & (vega < vega_cut * quotes.forward)))

    raw: list[SliceFit] = []
    for expiry in np.unique(quotes.expiry_ns[usable]):
        rows = np.nonzero(usable & (quotes.expiry_ns == expiry))[0]
        if rows.size < MIN_QUOTES:
            counts["thin_expiries"] = counts.get("thin_expiries", 0) + 1
            continue
        t = float(years[rows[0]])
        forward = float(np.median(quotes.forward[rows]))
        k = np.log(quotes.strike[rows] / quotes.forward[rows])
        weights = vega[rows]
        spread = quotes.ask_usd[rows] - quotes.bid_usd[rows]
        if weighting == "spread" and np.isfinite(spread).all() and (spread > 0).all():
            weights = vega[rows] ** 2 / spread**2
        svi, _ = fit_svi(k, vol[rows] ** 2 * t, t, weights)
        raw.append(SliceFit(expiry_ns=int(expiry), years=t, forward=forward, svi=svi,
                            quotes=int(rows.size), rmse_vol_points=_rmse(svi, k, t, vol[rows]),
                            k=k, market_vol=vol[rows], weights=weights, rows=rows,
                            source="svi"))

    ssvi = None
    slices = raw
    before = _arbitrage(raw)
    if raw:
        thetas = monotone_thetas(np.array([max(float(s.svi.total_variance(np.zeros(1))[0]),
                                               1e-8) for s in raw]))
        all_k = np.concatenate([s.k for s in raw])
        all_theta = np.concatenate([np.full(s.k.shape, th) for s, th in zip(raw, thetas,
                                                                              strict=True)])
        all_w = np.concatenate([s.market_vol**2 * s.years for s in raw])
        all_t = np.concatenate([np.full(s.k.shape, s.years) for s in raw])
        ssvi = fit_ssvi(all_k, all_theta, all_w, np.ones_like(all_k), all_t)
        if repair and (before["butterfly_slices"] or before["calendar_pairs"]):
            slices = _repair(raw, ssvi, thetas)
    after = _arbitrage(slices)
    return SurfaceFit(underlying=quotes.underlying, snapshot_ns=at, index=quotes.index,
                      slices=tuple(slices), ssvi=ssvi, counts=counts, arbitrage_before=before,
                      arbitrage_after=after, seconds=time.perf_counter() - started)


def _arbitrage(slices: list[SliceFit]) -> dict[str, int]:
    butterfly = [butterfly_violations(s.svi, moneyness_grid(s.k)) for s in slices]
    calendar = [calendar_violations(a.svi, b.svi, moneyness_grid(a.k, b.k))
                for a, b in zip(slices[:-1], slices[1:], strict=True)]
    return {"butterfly_slices": sum(1 for b in butterfly if b), "butterfly_points": sum(butterfly),
            "calendar_pairs": sum(1 for c in calendar if c), "calendar_points": sum(calendar)}


MAX_REPAIR_COST = 1.0  # vol points of RMSE a repair may add


def _with_svi(fit: SliceFit, svi: SviSlice, source: str) -> SliceFit:
    return SliceFit(expiry_ns=fit.expiry_ns, years=fit.years, forward=fit.forward, svi=svi,
                    quotes=fit.quotes, rmse_vol_points=_rmse(svi, fit.k, fit.years,
                                                             fit.market_vol),
                    k=fit.k, market_vol=fit.market_vol, weights=fit.weights, rows=fit.rows,
                    source=source)


def _clean(svi: SviSlice, own: SliceFit, previous: SliceFit | None) -> bool:
    """No butterfly arbitrage on its range, no calendar arbitrage against the previous slice."""
    if butterfly_violations(svi, moneyness_grid(own.k)) > 0:
        return False
    return previous is None or calendar_violations(
        previous.svi, svi, moneyness_grid(own.k, previous.k)) == 0


def _repair(raw: list[SliceFit], ssvi: SsviSurface, thetas: FloatArray) -> list[SliceFit]:
    """Slice by slice in T order. Candidates: refit this slice with a floor at the previous one
    (and no butterfly arbitrage), refit the previous slice with a ceiling at this one (keeping
    its own floor), the SSVI slice. A candidate is taken only if it leaves no violation and adds
    at most MAX_REPAIR_COST vol points of RMSE to each refitted slice; otherwise the slice stays
    as fitted and is marked ``svi-unrepaired`` (the caller warns)."""
    out: list[SliceFit] = []
    for i, fit in enumerate(raw):
        previous = out[-1] if out else None
        if _clean(fit.svi, fit, previous):
            out.append(fit)
            continue
        grid = moneyness_grid(fit.k, previous.k) if previous else moneyness_grid(fit.k)
        w = fit.market_vol**2 * fit.years
        floor = previous.svi.total_variance(grid) if previous else None
        refit, _ = fit_svi(fit.k, w, fit.years, fit.weights, penalty_k=grid,
                           floor_variance=floor, start=fit.svi)
        chosen = None
        for candidate, label in ((refit, "svi-repaired"), (ssvi.slice(float(thetas[i])), "ssvi")):
            if (_clean(candidate, fit, previous)
                    and _rmse(candidate, fit.k, fit.years, fit.market_vol)
                    <= fit.rmse_vol_points + MAX_REPAIR_COST):
                chosen = _with_svi(fit, candidate, label)
                break
        if chosen is None and previous is not None and butterfly_violations(
                fit.svi, moneyness_grid(fit.k)) == 0:
            before = out[-2] if len(out) > 1 else None
            pgrid = moneyness_grid(fit.k, previous.k, *(() if before is None else (before.k,)))
            lowered, _ = fit_svi(
                previous.k, previous.market_vol**2 * previous.years, previous.years,
                previous.weights, penalty_k=pgrid, ceiling_variance=fit.svi.total_variance(pgrid),
                floor_variance=None if before is None else before.svi.total_variance(pgrid),
                start=previous.svi)
            if (_clean(lowered, previous, before) and _clean(fit.svi, fit, _with_svi(
                    previous, lowered, "")) and _rmse(lowered, previous.k, previous.years,
                                                      previous.market_vol)
                    <= previous.rmse_vol_points + MAX_REPAIR_COST):
                out[-1] = _with_svi(previous, lowered, "svi-repaired")
                chosen = fit
        out.append(chosen if chosen is not None else _with_svi(fit, fit.svi, "svi-unrepaired"))
    return out

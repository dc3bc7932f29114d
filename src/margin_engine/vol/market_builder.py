"""Fitted surfaces -> a market snapshot document (``margin-engine/market/v1``) with SVI vols.

The engine reads sigma(T, K) at index log-moneyness k_S = ln(K / S) (S = the document's index)
and prices Black-76 on the expiry's forward F (the mark of that expiry's future, r = 0). Slices
are fitted in forward log-moneyness k_F = ln(K / F) = k_S - ln(F / S), so each is shifted by
ln(F / S): m_S = m_F + ln(F / S), and w_S(ln(K / S)) = w_F(ln(K / F)). The slice's F is written
as the future's mark (``marks["BTC-28JUN24"]``), so each option is priced on the forward its vol
was fitted against; the coin is priced at the index as a collateral asset.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import NS_PER_SECOND, ns_to_iso
from margin_engine.vol.chain_fit import SurfaceFit

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def expiry_code(expiry_ns: int) -> str:
    """ns -> Deribit code (``28JUN24``, ``7JUN24``)."""
    day = dt.datetime.fromtimestamp(expiry_ns // NS_PER_SECOND, tz=dt.UTC)
    return f"{day.day}{MONTHS[day.month - 1]}{day.year % 100:02d}"


def market_document(fits: Sequence[SurfaceFit], timestamp_ns: int) -> dict[str, Any]:
    underlyings: dict[str, Any] = {}
    assets: dict[str, Any] = {}
    marks: dict[str, float] = {}
    for fit in fits:
        if fit.underlying in underlyings:
            raise InputError("one chain per underlying", field="FILE", value=fit.underlying)
        if not fit.slices:
            raise InputError("a chain with at least one fittable expiry", field="FILE",
                             value=fit.underlying)
        slices = {}
        for s in fit.slices:
            code = expiry_code(s.expiry_ns)
            slices[code] = s.svi.shifted(math.log(s.forward / fit.index)).as_dict()
            marks[f"{fit.underlying}-{code}"] = s.forward
        underlyings[fit.underlying] = {"index": fit.index,
                                       "vol": {"type": "svi", "slices": slices}}
        assets[fit.underlying] = {"price": fit.index}
    return {"schema": "margin-engine/market/v1", "timestamp": ns_to_iso(timestamp_ns),
            "underlyings": underlyings, "assets": assets, "marks": marks}

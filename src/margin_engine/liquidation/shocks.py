"""Move one underlying's index, with everything that follows it, to a new level."""

from __future__ import annotations

from dataclasses import replace

from margin_engine.market.snapshot import MarketSnapshot


def with_index(market: MarketSnapshot, marked_underlying: dict[str, str], underlying: str,
               level: float) -> MarketSnapshot:
    """Market with ``underlying``'s index at ``level``: its perp/future/spot marks and the price
    of the coin as a collateral asset scale by level / index; vols are left as they are (sticky
    strike). ``marked_underlying`` maps mark names to their underlying."""
    old = market.underlyings[underlying]
    ratio = level / old.index
    underlyings = dict(market.underlyings)
    underlyings[underlying] = replace(old, index=level)
    assets = dict(market.asset_prices)
    if underlying in assets:
        assets[underlying] = assets[underlying] * ratio
    marks = {name: value * ratio if marked_underlying.get(name) == underlying else value
             for name, value in market.marks.items()}
    return replace(market, underlyings=underlyings, asset_prices=assets, marks=marks)


def marks_by_underlying(market: MarketSnapshot, names_to_underlying: dict[str, str]
                        ) -> dict[str, str]:
    """Underlying of every marked instrument (book instruments first, then shorthand names)."""
    from margin_engine.domain.instruments import parse_shorthand

    out: dict[str, str] = {}
    for name in market.marks:
        if name in names_to_underlying:
            out[name] = names_to_underlying[name]
            continue
        try:
            instrument = parse_shorthand(name)
        except ValueError:
            instrument = None
        if instrument is not None:
            out[name] = instrument.underlying
    return out

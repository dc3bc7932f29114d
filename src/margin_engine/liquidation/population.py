"""A seeded population of leveraged perp accounts for crash replays.

Each account holds one or two linear perps (BTC, ETH), long or short (55 / 45), at a leverage
drawn from 2-50x (60 % at 2-10x, 30 % at 10-25x, 10 % at 25-50x): collateral = gross notional /
leverage, in USDC (a quarter of the accounts hold half of it in BTC instead).

The random draws are made one account after the other, in the order of the original per-account
loop (the population of a seed never changes); only the arithmetic on the draws is done on whole
columns. The document comes with its columnar book already resolved (``ResolvedPortfolio.book``)
so that a monitor need not parse a document it generated itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from margin_engine.book.columnar import MODE_CODES, ColumnarBook, book_from_columns
from margin_engine.book.document import ResolvedPortfolio
from margin_engine.core.collector import no_cycle_collection
from margin_engine.core.numbers import MAX_MAGNITUDE
from margin_engine.core.types import BoolArray, FloatArray, IntArray
from margin_engine.domain.instruments import MarginMode
from margin_engine.io.portfolio_file import PORTFOLIO_SCHEMA

# Smallest notional drawn (exp(log 2,000), give or take an ulp): a position of an underlying
# whose index is below 2,000 / 1e-6 cannot round to a size of 0.
_MIN_NOTIONAL = 1999.0


def leveraged_population(accounts: int, seed: int, index: dict[str, float], *,
                         mode: str = "cross", btc_collateral_share: float = 0.25,
                         stable: str = "USDC", stable_price: float = 1.0) -> ResolvedPortfolio:
    """Portfolio document (``margin-engine/portfolio/v1``) of ``accounts`` accounts."""
    with no_cycle_collection():  # a million acyclic objects: no full collection on the way
        return _population(accounts, seed, index, mode=mode,
                           btc_collateral_share=btc_collateral_share, stable=stable,
                           stable_price=stable_price)


def _population(accounts: int, seed: int, index: dict[str, float], *, mode: str,
                btc_collateral_share: float, stable: str,
                stable_price: float) -> ResolvedPortfolio:
    names = sorted(index)
    levels = [index[u] for u in names]
    rng = np.random.default_rng(seed)
    random, uniform, normal = rng.random, rng.uniform, rng.normal
    low_log, high_log = np.log(2e3), np.log(2e6)
    # an underlying whose index is so high that a position may round to size 0, which is then
    # dropped before its entry price is drawn: sized one at a time, as drawn
    vanishing = [not (level > 0 and _MIN_NOTIONAL / level >= 1e-6) for level in levels]
    pick = _picker(rng, len(names))
    has_btc = "BTC" in index
    owner: list[int] = []
    underlying: list[int] = []
    draw: list[float] = []
    longs: list[bool] = []
    noise: list[float] = []
    leverage: list[float] = []
    in_btc: list[bool] = []
    for k in range(accounts):
        legs = 1 if random() < 0.7 or len(names) == 1 else 2
        for u in pick(legs):
            drawn = uniform(low_log, high_log)
            side = random() < 0.55
            if vanishing[u]:
                size = round((1.0 if side else -1.0) * float(np.exp(drawn)) / levels[u], 6)
                if size == 0:
                    continue
            owner.append(k)
            underlying.append(u)
            draw.append(drawn)
            longs.append(side)
            noise.append(normal(0, 0.003))
        bucket = random()
        low, high = (2, 10) if bucket < 0.6 else (10, 25) if bucket < 0.9 else (25, 50)
        leverage.append(uniform(low, high))
        in_btc.append(has_btc and random() < btc_collateral_share)

    level = np.array(levels, dtype=np.float64)
    position_account = np.array(owner, dtype=np.int64)
    position_underlying = np.array(underlying, dtype=np.int64)
    at = level[position_underlying]
    # the same IEEE operations, in the same order, as the scalar expressions they replace
    notional = np.exp(np.array(draw, dtype=np.float64))
    signed = np.where(np.array(longs, dtype=np.bool_), 1.0, -1.0) * notional / at
    sizes = [round(x, 6) for x in signed.tolist()]
    entries = [round(x, 2) for x in (at * (1 + np.array(noise, dtype=np.float64))).tolist()]
    gross = np.bincount(position_account, weights=np.abs(np.array(sizes, dtype=np.float64)) * at,
                        minlength=accounts) if accounts > 0 else np.zeros(0)
    collateral_usd = gross / np.array(leverage, dtype=np.float64)
    btc = np.array(in_btc, dtype=np.bool_)
    half = 0.5 * collateral_usd
    btc_amounts = [round(x, 8) for x in (half / index["BTC"]).tolist()] if has_btc \
        else [0.0] * accounts
    stable_amounts = [round(x, 2) for x in (np.where(btc, half, collateral_usd)
                                            / stable_price).tolist()]

    instrument_names = [f"{u}-PERP" for u in names]
    positions: list[list[dict[str, Any]]] = [[] for _ in range(accounts)]
    for a, u, size, entry in zip(owner, underlying, sizes, entries, strict=True):
        positions[a].append({"instrument": instrument_names[u], "size": size,
                             "entry_price": entry})
    document = ResolvedPortfolio(schema=PORTFOLIO_SCHEMA, accounts=[
        {"id": f"p{k:05d}", "mode": mode,
         "collateral": {"BTC": b, stable: s} if flag else {stable: s},
         "positions": held}
        for k, (flag, b, s, held) in enumerate(zip(in_btc, btc_amounts, stable_amounts,
                                                   positions, strict=True))])
    document.book = _book(document, instrument_names, position_account, position_underlying,
                          np.array(sizes, dtype=np.float64),
                          np.array(entries, dtype=np.float64), btc,
                          np.array(btc_amounts, dtype=np.float64),
                          np.array(stable_amounts, dtype=np.float64), mode, stable)
    return document


def _picker(rng: np.random.Generator, count: int) -> Callable[[int], Sequence[int]]:
    """``pick(legs)``: the underlyings (indices into the sorted names) of an account, drawn as
    ``rng.choice(names, size=legs, replace=False)`` draws them. With two names that is one
    bounded integer for one leg, and two for two legs (Floyd's sample, then its shuffle, which
    alone decides the order); a direct call costs 8 us, ``integers`` 2 us."""
    if count == 1:
        return lambda legs: (0,)  # a sample of the whole population of one: no draw
    if count != 2:
        return lambda legs: np.asarray(rng.choice(count, size=legs, replace=False)).tolist()
    integers = rng.integers

    def pick(legs: int) -> tuple[int, ...]:
        if legs == 1:
            return (int(integers(2)),)
        integers(2)
        return (0, 1) if integers(2) else (1, 0)

    return pick


def _book(document: dict[str, Any], instrument_names: list[str], position_account: IntArray,
          position_underlying: IntArray, size: FloatArray, entry: FloatArray, btc: BoolArray,
          btc_amount: FloatArray, stable_amount: FloatArray, mode: str,
          stable: str) -> ColumnarBook | None:
    """The book ``book_from_portfolio(parse_portfolio(document))`` resolves, from the columns;
    None wherever the parser might refuse the document or read it differently."""
    from margin_engine.io.portfolio_file import resolve_instrument_name

    accounts = len(document["accounts"])
    modes = {m.value: m for m in MarginMode}
    if (accounts == 0 or mode not in modes or not isinstance(stable, str)
            or not stable.strip() or stable != stable.strip() or stable == "BTC"):
        return None
    used = sorted({instrument_names[u] for u in set(position_underlying.tolist())})
    try:
        instruments = [resolve_instrument_name(name, {}) for name in used]
    except ValueError:
        return None
    if any(name != name.strip() or instrument.is_option
           for name, instrument in zip(used, instruments, strict=True)):
        return None
    numbers = np.concatenate([size, entry, btc_amount, stable_amount])
    if not (np.all(np.isfinite(numbers)) and np.all(np.abs(numbers) <= MAX_MAGNITUDE)
            and np.all(entry > 0.0) and np.all(btc_amount >= 0.0)
            and np.all(stable_amount >= 0.0)):
        return None
    row = {name: k for k, name in enumerate(used)}
    # per underlying -> row of its instrument (underlyings without a position map to -1)
    of_underlying = np.array([row.get(name, -1) for name in instrument_names], dtype=np.int32)
    position_instrument = of_underlying[position_underlying] if position_underlying.size \
        else np.zeros(0, dtype=np.int32)
    assets = tuple(sorted({stable} | ({"BTC"} if bool(btc.any()) else set())))
    collateral = np.zeros((accounts, len(assets)), dtype=np.float64)
    collateral[:, assets.index(stable)] = stable_amount
    if "BTC" in assets:
        collateral[btc, assets.index("BTC")] = btc_amount[btc]
    return book_from_columns(
        account_ids=[a["id"] for a in document["accounts"]],
        mode=np.full(accounts, MODE_CODES[modes[mode]], dtype=np.int32),
        instruments=instruments, position_account=position_account,
        position_instrument=position_instrument, size=size, entry_price=entry, assets=assets,
        collateral=collateral)

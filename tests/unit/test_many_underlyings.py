"""A venue of many underlyings (40 here), each account holding a few: the per-tick pass and the
portfolio model visit only the underlyings an account holds, and give the same numbers as the
scalar reference; coin collateral of one underlying in two columns counts once."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from margin_engine.book.bound import BoundBook, bind_market
from margin_engine.book.columnar import MODE_CODES, book_from_columns
from margin_engine.domain.instruments import MarginMode, parse_shorthand
from margin_engine.io.market_file import parse_market
from margin_engine.liquidation.shocks import marks_by_underlying, with_index
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.explain import explain_portfolio
from margin_engine.margin.portfolio import PortfolioModel
from margin_engine.margin.tick import TickBook, bind_tick, tick_margins
from tests.conftest import NO_HAIRCUTS
from tests.unit.test_tick_path import assert_same_result

UNDERLYINGS = tuple(f"U{k:02d}" for k in range(40))
COINS = ("U03", "U03@arbitrum", "U07", "U21", "U39")


def many_market() -> dict[str, Any]:
    index = {u: 50.0 * (k + 1) for k, u in enumerate(UNDERLYINGS)}
    return {
        "schema": "margin-engine/market/v1", "timestamp": "2025-06-01T00:00:00Z",
        "underlyings": {u: {"index": index[u], "vol": {
            "type": "atm_by_expiry", "points": {"27JUN25": 0.5 + 0.01 * k, "26SEP25": 0.6}}}
            for k, u in enumerate(UNDERLYINGS)},
        "assets": {"USDC": {"price": 1.0}, **{c.partition("@")[0]: {
            "price": index[c.partition("@")[0]]} for c in COINS}},
        # equicorrelated (positive semi-definite), one pair negative
        "correlation": {a: {b: (-0.2 if (a, b) == ("U00", "U01") else 0.3)
                            for b in UNDERLYINGS[k + 1:]}
                        for k, a in enumerate(UNDERLYINGS[:-1])},
    }


def many_book(accounts: int, seed: int, *, holding: int = len(UNDERLYINGS),
              cash: float = 1.0) -> BoundBook:
    """Accounts holding 1-4 of the first ``holding`` underlyings (the instruments of all 40
    listed), USDC scaled by ``cash``, and coins of five underlyings on a quarter of them."""
    market = parse_market(many_market())
    names = []
    for k, u in enumerate(UNDERLYINGS):
        strike = round(50.0 * (k + 1))
        names += [f"{u}-PERP", f"{u}-26SEP25",
                  *(f"{u}-{e}-{s}-{r}" for e in ("27JUN25", "26SEP25")
                    for s in (strike * 9 // 10, strike, strike * 11 // 10) for r in "CP")]
    instruments = [parse_shorthand(n) for n in names]
    rng = np.random.default_rng(seed)
    per_u = len(names) // len(UNDERLYINGS)
    account, inst = [], []
    for a in range(accounts):
        held = rng.choice(holding, size=int(rng.integers(1, 5)), replace=False)
        picks = sorted({int(u) * per_u + int(rng.integers(0, per_u))
                        for u in held for _ in range(int(rng.integers(1, 4)))})
        account += [a] * len(picks)
        inst += picks
    n_pos = len(inst)
    index = 50.0 * (np.array(inst) // per_u + 1)  # near the index, options at a premium
    option = np.array(inst) % per_u >= 2
    entry = index * np.where(option, rng.uniform(0.01, 0.1, n_pos), rng.uniform(0.95, 1.05, n_pos))
    collateral = np.zeros((accounts, 1 + len(COINS)))
    collateral[:, 0] = rng.uniform(1e3, 5e4, accounts) * cash
    for c in range(len(COINS)):
        collateral[:, 1 + c] = np.where(rng.random(accounts) < 0.25,
                                        rng.uniform(0.0, 2.0, accounts), 0.0)
    book = book_from_columns(
        account_ids=[f"a{a}" for a in range(accounts)],
        mode=np.full(accounts, MODE_CODES[MarginMode.PORTFOLIO], dtype=np.int32),
        instruments=[i for i in instruments if i is not None],
        position_account=np.array(account, dtype=np.int64),
        position_instrument=np.array(inst, dtype=np.int32),
        size=np.round(rng.normal(0.0, 3.0, n_pos), 2) + 0.01,
        entry_price=entry, assets=("USDC", *COINS),
        collateral=collateral)
    return bind_market(book, market)


@pytest.mark.parametrize("config", [RiskConfig(), NO_HAIRCUTS], ids=["haircuts", "none"])
def test_the_tick_pass_equals_the_portfolio_model_with_forty_underlyings(
        config: RiskConfig) -> None:
    bound = many_book(500, seed=3)
    assert len(bound.underlyings) == 40
    tick_book = TickBook.from_book(bound.book)
    got = tick_margins(tick_book, bind_tick(tick_book, bound.market, config), config)
    want = PortfolioModel().compute(bound, config)
    assert_same_result(got, want)
    held = want.per_underlying["worst_scenario"] >= 0
    # a few underlyings each: up to 4 by positions, up to 4 more by coin collateral
    assert held.any(axis=1).all()
    assert held.sum(axis=1).max() <= 8


def test_forty_underlyings_margin_as_the_scalar_reference() -> None:
    bound = many_book(80, seed=4)
    tick_book = TickBook.from_book(bound.book)
    got = tick_margins(tick_book, bind_tick(tick_book, bound.market, NO_HAIRCUTS), NO_HAIRCUTS)
    model = PortfolioModel().compute(bound, NO_HAIRCUTS)
    two_columns = 0
    for a in range(bound.account_count):
        want = explain_portfolio(bound, NO_HAIRCUTS, a)["initial_margin"]
        assert got.initial_margin[a] == pytest.approx(want, rel=1e-12, abs=1e-9)
        assert model.initial_margin[a] == got.initial_margin[a]
        two_columns += bool(bound.book.collateral[a, 1] and bound.book.collateral[a, 2])
    assert two_columns > 0  # accounts with U03 in both of its columns


def test_a_move_of_one_of_forty_underlyings_margins_as_binding_the_book_again() -> None:
    bound = many_book(300, seed=5)
    marked = marks_by_underlying(bound.market, {})
    moved = with_index(bound.market, marked, "U03", 150.0)
    tick_book = TickBook.from_book(bound.book)
    got = tick_margins(tick_book, bind_tick(tick_book, moved, RiskConfig()), RiskConfig())
    assert_same_result(got, PortfolioModel().compute(bind_market(bound.book, moved),
                                                     RiskConfig()))


def test_the_sensitivity_model_with_forty_underlyings_equals_its_scalar_reference() -> None:
    from margin_engine.margin.explain import explain_sensitivity
    from margin_engine.margin.registry import get_model

    bound = many_book(60, seed=6)
    fast = get_model("sensitivity").compute(bound, RiskConfig())
    for a in range(bound.account_count):
        slow = explain_sensitivity(bound, a)
        assert fast.initial_margin[a] == pytest.approx(slow["initial_margin"], rel=1e-9,
                                                       abs=1e-9)
        for key in ("delta_margin", "vega_margin", "curvature_margin"):
            assert fast.per_account[key][a] == pytest.approx(slow[key], rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("model", ["portfolio", "sensitivity"])
def test_liquidation_levels_with_forty_underlyings_equal_the_per_account_search(
        model: str) -> None:
    """The compiled search's gap passes over the underlyings an account does not hold (its
    correlation sums were over every pair of the venue's underlyings)."""
    from margin_engine.liquidation.price import liquidation_levels, liquidation_levels_reference

    bound = many_book(10, seed=7, holding=6, cash=0.05)  # 8 levels or more
    assert len(bound.underlyings) == 40
    got = liquidation_levels(bound, model, NO_HAIRCUTS)
    want = liquidation_levels_reference(bound, model, NO_HAIRCUTS)
    for side in ("down", "up"):
        mine, theirs = getattr(got, side), getattr(want, side)
        np.testing.assert_array_equal(np.isfinite(mine), np.isfinite(theirs), err_msg=side)
        found = np.isfinite(theirs)
        np.testing.assert_allclose(mine[found], theirs[found], rtol=1e-8, err_msg=side)
    assert np.isfinite(want.down).sum() + np.isfinite(want.up).sum() >= 7

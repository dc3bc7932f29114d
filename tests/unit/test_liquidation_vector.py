"""Liquidation levels searched in one compiled pass equal the per-account reference search.

The reference (``liquidation_levels_reference``) rebinds the market and reruns the model at every
level; the vectorised search revalues u's instruments from arrays. Both scan the same grid for
the same brackets; the reference refines them by Brent, the search by Newton's steps (portfolio
model) or the same Brent iterations, both to Brent's tolerance (1e-8 relative asked)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from margin_engine.liquidation import vector_levels
from margin_engine.liquidation.price import (
    GRID,
    liquidation_levels,
    liquidation_levels_reference,
    position_liquidation_levels,
    position_liquidation_levels_reference,
)
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.protocol import MarginResult
from margin_engine.margin.registry import get_model
from tests.conftest import NO_HAIRCUTS
from tests.unit.level_books import random_level_book

REL = 1e-8


def assert_same_levels(got: Any, want: Any, rel: float = REL) -> int:
    """Same NaN pattern; finite levels within ``rel``; returns how many finite levels."""
    count = 0
    for side in ("down", "up", "nearest"):
        g, w = getattr(got, side), getattr(want, side)
        assert np.array_equal(np.isnan(g), np.isnan(w)), f"{side}: different levels found"
        both = np.isfinite(w)
        if both.any():
            worst = float(np.max(np.abs(g[both] - w[both]) / np.abs(w[both])))
            assert worst <= rel, f"{side}: relative difference {worst:.1e}"
        count += int(both.sum())
    return count


@pytest.mark.parametrize("model", ["portfolio", "isolated", "cross", "sensitivity"])
def test_vectorised_levels_equal_the_reference_search(model: str) -> None:
    bound = random_level_book(40, seed=3)
    found = assert_same_levels(liquidation_levels(bound, model, RiskConfig()),
                               liquidation_levels_reference(bound, model, RiskConfig()))
    assert found > 20  # the book has levels on both sides of both coins


@pytest.mark.parametrize(("model", "timestamp"), [
    ("portfolio", "2025-06-06T07:59:59Z"), ("sensitivity", "2025-06-06T07:59:59Z"),
    ("portfolio", "2025-06-06T08:00:00Z"), ("cross", "2025-06-06T08:00:00Z")])
def test_levels_equal_the_reference_on_an_expiry_day(model: str, timestamp: str) -> None:
    """The 6JUN25 options and futures one second before their 08:00 UTC expiry (a year
    fraction of 3e-8: prices at intrinsic but for a hair, unbounded curvature) and at it
    (settled at the settlement prices): the same levels as the reference."""
    from margin_engine.book.bound import bind_market
    from margin_engine.io.market_file import parse_market
    from tests.unit.level_books import level_market

    market = level_market()
    market["timestamp"] = timestamp
    at_expiry = timestamp.endswith("08:00:00Z")
    if at_expiry:
        market["settlements"].update({"BTC-6JUN25": 50100, "ETH-6JUN25": 2001})
    bound = bind_market(random_level_book(60, seed=11).book, parse_market(market))
    june6 = np.array(["-6JUN25" in i.name for i in bound.book.instruments.instruments])
    assert not bound.live[june6].any() if at_expiry else bound.live[june6].all()
    assert june6[bound.book.position_instrument].sum() >= 10  # positions the expiry moves
    found = assert_same_levels(liquidation_levels(bound, model, RiskConfig()),
                               liquidation_levels_reference(bound, model, RiskConfig()))
    assert found > 30


def test_vectorised_levels_equal_the_reference_without_haircuts() -> None:
    bound = random_level_book(30, seed=4)
    assert_same_levels(liquidation_levels(bound, "portfolio", NO_HAIRCUTS),
                       liquidation_levels_reference(bound, "portfolio", NO_HAIRCUTS))


def test_isolated_position_levels_equal_the_reference_search() -> None:
    bound = random_level_book(40, seed=5)
    found = assert_same_levels(position_liquidation_levels(bound, "isolated", RiskConfig()),
                               position_liquidation_levels_reference(bound, "isolated",
                                                                     RiskConfig()))
    assert found > 20


def test_shared_state_table_gives_the_levels_of_the_direct_revaluation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Large books read u's instruments from a table computed once per grid level (and skip
    stretches of the grid with its variation bounds); small ones revalue them per account."""
    bound = random_level_book(60, seed=6)
    monkeypatch.setattr(vector_levels, "TABLE_SHARING", 0.0)
    table = liquidation_levels(bound, "portfolio", RiskConfig())
    monkeypatch.setattr(vector_levels, "TABLE_SHARING", 1e9)
    monkeypatch.setattr(vector_levels, "STATE_CACHE", False)
    direct = liquidation_levels(bound, "portfolio", RiskConfig())
    # the table path refines by Newton's steps, the direct one by Brent: both to Brent's
    # tolerance (1e-12 x the index)
    assert_same_levels(table, direct, rel=1e-10)


def test_only_the_wanted_accounts_are_searched() -> None:
    bound = random_level_book(20, seed=7)
    wanted = np.zeros(bound.account_count, dtype=np.bool_)
    wanted[[2, 5, 11]] = True
    some = liquidation_levels(bound, "cross", RiskConfig(), accounts=wanted)
    every = liquidation_levels(bound, "cross", RiskConfig())
    assert np.all(np.isnan(some.down[~wanted]))
    assert np.all(np.isnan(some.up[~wanted]))
    np.testing.assert_array_equal(some.down[wanted], every.down[wanted])
    np.testing.assert_array_equal(some.up[wanted], every.up[wanted])


class _Wrapped:
    """A model the vectorised search does not know (a caller's own): the reference is used."""

    name = "portfolio"
    revalues_coins = True

    def compute(self, bound: Any, config: RiskConfig) -> MarginResult:
        return get_model("portfolio").compute(bound, config)


def test_a_model_without_a_compiled_gap_falls_back_to_the_reference() -> None:
    bound = random_level_book(15, seed=8)
    models = {"portfolio": _Wrapped()}
    assert not vector_levels.supports("portfolio", models)
    assert vector_levels.account_levels(bound, "portfolio", RiskConfig(), GRID,
                                        models=models) is None
    assert_same_levels(liquidation_levels(bound, "portfolio", RiskConfig(), models=models),
                       liquidation_levels(bound, "portfolio", RiskConfig()))


def test_brent_iterations_are_scipys() -> None:
    """The compiled Brent step reproduces scipy's brentq iterates on a smooth function."""
    from scipy.optimize import brentq

    from margin_engine.liquidation.level_kernels import brent_step

    def f(x: float) -> float:
        return x ** 3 - 2.0 * x - 5.0

    calls: list[float] = []
    want = brentq(lambda x: calls.append(x) or f(x), 1.0, 3.0, xtol=1e-12, rtol=1e-15)
    st = np.array([1.0, 3.0, 0.0, f(1.0), f(3.0), 0.0, 0.0, 0.0])
    seen = [1.0, 3.0]
    while not brent_step(st, 1e-12, 1e-15):
        seen.append(st[1])
        st[4] = f(st[1])
    assert st[1] == want
    assert seen == calls


def test_price_and_delta_are_the_price_and_the_reference_delta() -> None:
    """Newton's steps take an option's delta from the pricing's own normal tail: the price is
    the same number as ``price_scalar_nb``'s, the delta the reference formula's, at and past
    expiry and at zero vol the intrinsic value's slope."""
    from margin_engine.pricing.black76 import price_delta_scalar_nb, price_scalar_nb
    from margin_engine.pricing.reference import black76_delta

    for forward, strike, years, sigma in [(60_000.0, 65_000.0, 0.25, 0.6),
                                          (60_000.0, 30_000.0, 3e-8, 0.8),
                                          (3_000.0, 2_500.0, 1.5, 0.05),
                                          (60_000.0, 50_000.0, 0.0, 0.5),
                                          (60_000.0, 70_000.0, 0.1, 0.0)]:
        for call in (True, False):
            price, delta = price_delta_scalar_nb(forward, strike, years, sigma, call)
            assert price == price_scalar_nb(forward, strike, years, sigma, call)
            assert delta == pytest.approx(black76_delta(forward, strike, years, sigma, call),
                                          rel=1e-12, abs=1e-15)


def test_newton_steps_find_the_root_of_a_smooth_and_of_a_kinked_function() -> None:
    """``_newton_step`` from a secant point: the root Brent finds, in fewer evaluations; on a
    function with a kink near the root, the same root; a step out of the bracket hands it to
    Brent."""
    from scipy.optimize import brentq

    from margin_engine.liquidation.level_kernels import (
        NEWTON_BRENT,
        NEWTON_DONE,
        NEWTON_ON,
        _newton_step,
    )

    def newton(f: Any, slope: Any, lo: float, hi: float) -> tuple[float, int]:
        nt = np.array([lo, hi, f(lo), f(hi), 0.0, 0.0, 0.0])
        x = lo - f(lo) * (hi - lo) / (f(hi) - f(lo))
        for count in range(1, 12):
            state = _newton_step(nt, x, f(x), slope(x), 1e-12 + 1e-15 * abs(x))
            if state == NEWTON_DONE:
                return float(nt[6]), count
            assert state == NEWTON_ON
            x = float(nt[6])
        raise AssertionError("no convergence")

    def cubic(x: float) -> float:
        return x ** 3 - 2.0 * x - 5.0

    calls: list[float] = []
    want = brentq(lambda x: calls.append(x) or cubic(x), 2.0, 2.2, xtol=1e-12, rtol=1e-15)
    got, count = newton(cubic, lambda x: 3.0 * x * x - 2.0, 2.0, 2.2)
    assert got == pytest.approx(want, rel=1e-13, abs=0.0)
    assert count < len(calls) - 2  # Brent also evaluated both ends

    def kinked(x: float) -> float:  # slope 1 below 1.0001, 3 above: the root is at 1.00023...
        return (x - 1.0001) * (1.0 if x < 1.0001 else 3.0) - 0.0004

    want = brentq(kinked, 0.9, 1.1, xtol=1e-12, rtol=1e-15)
    got, _ = newton(kinked, lambda x: 1.0 if x < 1.0001 else 3.0, 0.9, 1.1)
    assert got == pytest.approx(want, rel=1e-12, abs=0.0)

    nt = np.array([1.0, 2.0, -1.0, 1.0, 0.0, 0.0, 0.0])
    assert _newton_step(nt, 1.5, -0.5, 0.1, 1e-12) == NEWTON_BRENT  # 1.5 + 5 is out
    assert (nt[0], nt[2]) == (1.5, -0.5)  # the bracket narrowed all the same


def test_newton_refinement_gives_brents_levels_in_fewer_evaluations(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bound = random_level_book(60, seed=6)
    counts = {}
    levels = {}
    for newton in (True, False):
        monkeypatch.setattr(vector_levels, "NEWTON", newton)
        before = vector_levels.STATS["evaluations"]
        levels[newton] = liquidation_levels(bound, "portfolio", RiskConfig())
        counts[newton] = vector_levels.STATS["evaluations"] - before
    assert assert_same_levels(levels[True], levels[False], rel=1e-10) > 20
    assert counts[True] < counts[False]


def test_a_bracket_where_the_gap_jumps_is_refined_by_brent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Account 812,463 of the bench book: its gap jumps twice inside the grid cell above
    116,721 (the worst BTC scenario turns from one direction of move to the other and back,
    flipping the sign of the correlation term with its ETH cell: f goes from +6.7 to -6,878
    near 118,300 and back to +23 near 119,800), so the cell holds three sign changes. Brent
    (the reference) takes 119,764.45; Newton's steps alone took 118,140.85, 1.4 % away. Such
    a bracket is not certified continuous and goes to Brent."""
    from margin_engine.bench.run import _bench_inputs, _book
    from margin_engine.book.bound import bind_market

    config, market, _ = _bench_inputs(2426, 1000)
    names = ["BTC-26SEP25-66560-P", "BTC-28NOV25-65000-C", "BTC-30JAN26-75920-C",
             "BTC-30JAN26-91520-C", "BTC-29MAY26-41600-C", "BTC-26JUN26-52520-C",
             "ETH-29AUG25-1300-C", "ETH-26SEP25-2020-C", "ETH-31OCT25-1240-C",
             "ETH-28NOV25-2020-C"]
    columns = {
        "account_ids": ["a812463"], "position_account": np.zeros(10, dtype=np.int64),
        "position_instrument": np.arange(10, dtype=np.int32),
        "size": np.array([-2.86, -2.54, 1.77, 1.15, 0.91, -1.0, -21.8, -45.199999999999996,
                          29.8, -10.4]),
        "entry_price": np.array([36830.59905603145, 2218.190122599603, 45018.66239247824,
                                 52432.909012890974, 9033.783840939273, 9743.3688564091,
                                 322.02640137632477, 1791.5890630947313, 1476.458268244519,
                                 439.63654090465195]),
        "collateral": np.array([[0.0, 30840.695994420006]])}
    bound = bind_market(_book(names, columns), market)
    want = liquidation_levels_reference(bound, "portfolio", config)
    for newton in (True, False):
        monkeypatch.setattr(vector_levels, "NEWTON", newton)
        vector_levels.STATE_TABLES.clear()
        got = liquidation_levels(bound, "portfolio", config)
        assert_same_levels(got, want)
    assert want.up[0, 0] == pytest.approx(119_764.4497, rel=1e-9)


def test_a_book_beyond_the_search_s_indexes_is_refused_by_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The search reads positions at unsigned 32-bit indexes: a larger book is refused with
    the count, not searched with wrapped indexes (the limit lowered to see it)."""
    bound = random_level_book(5, seed=3)
    monkeypatch.setattr(vector_levels, "MAX_POSITIONS", 3)
    with pytest.raises(ValueError, match=r"at most 3 positions in one book, got \d+"):
        liquidation_levels(bound, "portfolio", RiskConfig())


@pytest.mark.slow
def test_vectorised_levels_on_a_large_random_book_equal_the_reference() -> None:
    """1,000 random accounts in every mode: the full reference search, account by account."""
    bound = random_level_book(1000, seed=11)
    for model in ("portfolio", "cross"):
        found = assert_same_levels(liquidation_levels(bound, model, RiskConfig()),
                                   liquidation_levels_reference(bound, model, RiskConfig()))
        assert found > 500

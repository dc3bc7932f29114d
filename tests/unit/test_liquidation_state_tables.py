"""Instrument states kept between searches (``vector_levels.StateTables``): a small book's
search reads the states an earlier search filled, and gets the levels of a search that computes
every state itself, bit for bit, whatever changed in between (market, book, model)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from margin_engine.book.bound import bind_market
from margin_engine.io.market_file import parse_market
from margin_engine.liquidation import vector_levels
from margin_engine.liquidation.price import liquidation_levels, liquidation_levels_reference
from margin_engine.margin.config import RiskConfig
from tests.unit.level_books import level_market, random_level_book
from tests.unit.test_liquidation_vector import assert_same_levels


def _levels(bound: Any, model: str, kept: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(vector_levels, "TABLE_SHARING", 1e9)  # the small-book path
    monkeypatch.setattr(vector_levels, "STATE_CACHE", kept)
    # Brent on both paths, for levels bit for bit: Newton's steps start from the bracket's
    # states, which only a table holds (they agree with Brent to its tolerance)
    monkeypatch.setattr(vector_levels, "NEWTON", False)
    return liquidation_levels(bound, model, RiskConfig())


def _identical(got: Any, want: Any) -> None:
    for side in ("down", "up", "nearest"):
        np.testing.assert_array_equal(getattr(got, side), getattr(want, side))


@pytest.mark.parametrize("model", ["portfolio", "cross", "sensitivity", "isolated"])
def test_kept_states_give_the_levels_of_computed_states(model: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    vector_levels.STATE_TABLES.clear()
    bound = random_level_book(12, seed=21)
    direct = _levels(bound, model, False, monkeypatch)
    cold = _levels(bound, model, True, monkeypatch)  # fills the table
    warm = _levels(bound, model, True, monkeypatch)  # reads it
    _identical(cold, direct)
    _identical(warm, direct)
    assert np.isfinite(direct.nearest).sum() > 5  # levels to compare


def test_kept_states_follow_a_moved_market(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same book at another index and vol: its instruments' keys differ (mark, base,
    vol), so nothing filled at the first market is read at the second."""
    vector_levels.STATE_TABLES.clear()
    bound = random_level_book(12, seed=22)
    _levels(bound, "portfolio", True, monkeypatch)
    document = level_market()
    document["underlyings"]["BTC"]["index"] = 47000
    document["underlyings"]["ETH"] = {"index": 2100, "vol": {"type": "flat", "sigma": 0.9}}
    moved = bind_market(bound.book, parse_market(document))
    kept = _levels(moved, "portfolio", True, monkeypatch)
    _identical(kept, _levels(moved, "portfolio", False, monkeypatch))
    assert_same_levels(kept, liquidation_levels_reference(moved, "portfolio", RiskConfig()))


def test_kept_states_are_keyed_by_the_scenarios(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other scenario moves are another table: the levels follow the configuration."""
    vector_levels.STATE_TABLES.clear()
    bound = random_level_book(10, seed=23)
    wide = RiskConfig.from_dict({"portfolio": {"price_moves": [-0.3, -0.1, 0.0, 0.1, 0.3]}})
    monkeypatch.setattr(vector_levels, "TABLE_SHARING", 1e9)
    monkeypatch.setattr(vector_levels, "STATE_CACHE", True)
    monkeypatch.setattr(vector_levels, "NEWTON", False)  # as ``_levels``
    liquidation_levels(bound, "portfolio", RiskConfig())
    kept = liquidation_levels(bound, "portfolio", wide)
    monkeypatch.setattr(vector_levels, "STATE_CACHE", False)
    _identical(kept, liquidation_levels(bound, "portfolio", wide))


def test_a_full_family_starts_again_with_the_instruments_asked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """More distinct instruments over the calls than a family holds: it is started again,
    and the levels stay those of computed states."""
    tables = vector_levels.StateTables(capacity=4, families=1)
    monkeypatch.setattr(vector_levels, "STATE_TABLES", tables)
    for seed in (24, 25, 26):
        book = random_level_book(3, seed=seed, max_positions=3)
        got = _levels(book, "portfolio", True, monkeypatch)
        _identical(got, _levels(book, "portfolio", False, monkeypatch))
    assert len(tables) == 1


def test_known_results_are_used_only_for_their_own_book(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Today's result handed to the search is taken for that bound book and config only: a
    result of another book is ignored (the model is run)."""
    from margin_engine.margin.registry import get_model

    bound = random_level_book(8, seed=27)
    other = random_level_book(8, seed=28)
    model = get_model("portfolio")
    config = RiskConfig()
    assert vector_levels._today(bound, config, model) is not None
    wrong = model.compute(other, config)
    with vector_levels.known_results(other, config, [(model, wrong)]):
        plain = liquidation_levels(bound, "portfolio", config)
    right = model.compute(bound, config)
    with vector_levels.known_results(bound, config, [(model, right)]):
        assert vector_levels._today(bound, config, model) is right
        known = liquidation_levels(bound, "portfolio", config)
    _identical(known, plain)
    assert vector_levels._today(bound, replace(config), model) is not right


def test_the_same_instruments_bound_anew_read_the_same_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A book bound again (another binding of the same account: what a what-if that changes
    the book's shape gets) finds its instruments' rows, delta-one instruments included (a NaN
    strike or vol in a key equals nothing: each call added rows until the family was full,
    and re-allocating it cost a what-if 20-35 ms)."""
    vector_levels.STATE_TABLES.clear()
    bound = random_level_book(6, seed=27)
    assert not bound.book.instruments.is_option.all()  # delta-one instruments in the book
    _levels(bound, "portfolio", True, monkeypatch)
    rows = sorted(len(f.rows) for f in vector_levels.STATE_TABLES._items.values())
    for _ in range(3):
        again = bind_market(bound.book, bound.market)  # new arrays, new keys
        _identical(_levels(again, "portfolio", True, monkeypatch),
                   _levels(again, "portfolio", False, monkeypatch))
    assert sorted(len(f.rows) for f in vector_levels.STATE_TABLES._items.values()) == rows


def test_a_kept_keys_list_reads_its_rows_again_and_other_instruments_get_theirs() -> None:
    """The instrument -> row table kept for a keys list: the same array for the same list and
    instruments, rows once given unchanged, and a list of other instruments (or the same list
    for other instruments) gets rows of its own."""
    family = vector_levels._Family(3, 2)
    keys = [("a",), ("b",)]
    held = np.array([1, 4], dtype=np.int64)
    first = family.rows_of(keys, held, 6, kept=True)
    assert family.rows_of(keys, held, 6, kept=True) is first
    assert first[1] == 0
    assert first[4] == 1
    assert (np.delete(first, [1, 4]) == vector_levels.NO_ROW).all()
    moved = family.rows_of(keys, np.array([2, 3], dtype=np.int64), 6, kept=True)
    assert moved[2] == 0
    assert moved[3] == 1
    assert moved[1] == vector_levels.NO_ROW
    other = family.rows_of([("b",), ("c",)], held, 6, kept=False)
    assert other[1] == 1
    assert other[4] == 2
    assert family.rows_of(keys, held, 6, kept=True)[4] == 1

"""Cascade simulator: venue population, impact, the batched partial liquidation against its
reference, the round loop, the venue-token contagion case and the command."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from margin_engine.book.bound import bind_market
from margin_engine.book.columnar import book_subset
from margin_engine.cli.app import app
from margin_engine.core.errors import InputError
from margin_engine.engine.risk_state import whole_book_margins
from margin_engine.liquidation.cascade import CascadeConfig, Channel, EndReason, run_cascade
from margin_engine.liquidation.cascade_report import contagion_map, study_document
from margin_engine.liquidation.cascade_shock import Shock, ShockMove, parse_shock
from margin_engine.liquidation.cascade_study import CascadeMode, parse_modes, run_study
from margin_engine.liquidation.config import LiquidationConfig
from margin_engine.liquidation.impact import (
    ImpactConfig,
    ImpactLaw,
    apply_impact,
    effective_depth,
    log_move,
)
from margin_engine.liquidation.partial import partially_liquidate
from margin_engine.liquidation.partial_batch import one_thread, partially_liquidate_many
from margin_engine.liquidation.replay import with_settlement_asset
from margin_engine.liquidation.shocks import marks_by_underlying, with_index
from margin_engine.liquidation.venue_population import (
    ASSETS,
    BRIDGED_ETH,
    VENUE_TOKEN,
    Strategy,
    fund,
    venue_config,
    venue_population,
)

CONFIG = venue_config()
VENUE_TOKEN_CRASH = Shock(spec="VTK=-90%", moves=(ShockMove(symbol=VENUE_TOKEN, ratio=0.1,
                                                            source="given"),),
                          index={}, timestamp_ns=None)


def test_population_is_seeded_heavy_tailed_and_mixed() -> None:
    one, again = venue_population(3000, 11), venue_population(3000, 11)
    assert np.array_equal(one.book.size, again.book.size)
    assert np.array_equal(one.shares, again.shares)
    assert not np.array_equal(one.book.size, venue_population(3000, 12).book.size)
    # every strategy, every collateral asset (the venue token and a bridged asset among them)
    # and every margin mode is drawn
    assert set(np.unique(one.strategy).tolist()) == {int(s) for s in Strategy}
    assert set(ASSETS) >= {VENUE_TOKEN, BRIDGED_ETH}
    assert (one.shares > 0).any(axis=0).all()
    assert set(np.unique(one.book.mode).tolist()) == {0, 1, 2}
    np.testing.assert_allclose(one.shares.sum(axis=1), 1.0)
    # heavy tail: the largest 1 % of accounts hold far more than 1 % of the gross notional
    gross = bind_market(one.book, one.market).account_gross_notional()
    top = np.sort(gross)[-30:].sum() / gross.sum()
    assert top > 0.15
    # market makers are delta-hedged: option deltas and the perp hedge cancel at the start
    assert ((one.utilisation > 0.15) & (one.utilisation < 0.97)).all()


def test_funding_sizes_equity_after_haircuts_at_im_over_utilisation() -> None:
    population = venue_population(800, 3)
    for model in ("isolated", "cross", "portfolio"):
        book = fund(population, CONFIG, [model])
        margins = whole_book_margins(bind_market(book, population.market), model, CONFIG)
        assert (margins.gap(1.0) >= 0.0).all(), model  # nobody liquidatable before the shock
        ratio = margins.initial / margins.adjusted_equity
        # the root lands on u for nearly every account; the rest were topped up (a position
        # on its own margin in loss: lower) or cannot reach u (coin collateral on the side of
        # the position grows the portfolio IM as fast as u x equity: a little higher)
        close = np.isclose(ratio, population.utilisation, rtol=1e-3)
        assert close.mean() > 0.97, model
        assert (ratio <= population.utilisation * (1 + 1e-3)).mean() > 0.99, model


def test_impact_by_hand() -> None:
    linear = ImpactConfig(law=ImpactLaw.LINEAR, depth_usd={"BTC": 1e6})
    root = replace(linear, law=ImpactLaw.SQUARE_ROOT)
    # 4 M USD sold into a 1 M USD 1 %-depth: linear -4 % in log price, square root -2 %
    assert log_move(linear, -4e6, 1e6) == pytest.approx(-0.04)
    assert log_move(root, -4e6, 1e6) == pytest.approx(-0.02)
    assert log_move(root, 2.5e5, 1e6) == pytest.approx(0.005)  # buying lifts it
    # stress: 30 % down with sensitivity 2 leaves 40 % of the depth; 60 % down hits the floor
    assert effective_depth(root, "BTC", 70.0, 100.0) == pytest.approx(0.4e6)
    assert effective_depth(root, "BTC", 40.0, 100.0) == pytest.approx(0.1e6)
    moved = apply_impact(root, {"BTC": -4e6, "ETH": 0.0}, {"BTC": 100.0}, {"BTC": 100.0})
    assert list(moved) == ["BTC"]
    assert moved["BTC"].price_after == pytest.approx(100.0 * math.exp(-0.02))
    with pytest.raises(InputError, match="depth.BTC"):
        ImpactConfig(depth_usd={"BTC": 0.0})


def _shocked(accounts: int, model: str) -> tuple[object, object]:
    population = venue_population(accounts, 5)
    book = fund(population, CONFIG, [model])
    book, market = with_settlement_asset(book, population.market, "USD")
    marked = marks_by_underlying(market, {i.name: i.underlying
                                          for i in book.instruments.instruments})
    market = with_index(market, marked, VENUE_TOKEN, 0.25)
    market = with_index(market, marked, "BTC", 60000 * 0.93)
    market = replace(market, asset_prices={**market.asset_prices, "USDC": 0.95})
    return book, market


@pytest.mark.parametrize("model", ["isolated", "cross", "portfolio"])
def test_batched_partial_liquidation_matches_the_reference(model: str) -> None:
    book, market = _shocked(500, model)
    below = np.nonzero(whole_book_margins(bind_market(book, market), model, CONFIG)
                       .gap(1.0) < 0)[0][:60]
    assert below.size > 10
    settings = LiquidationConfig(penalty_rate=0.01)
    many = partially_liquidate_many(book_subset(book, below), market, model, CONFIG, settings)
    for a, fast in zip(below.tolist(), many, strict=True):
        with one_thread():  # the reference's many small model runs: no parallel launches
            slow = partially_liquidate(book_subset(book, [a]), market, model, CONFIG,
                                       settings)
        assert [(c.position, c.instrument) for c in fast.closures] == \
            [(c.position, c.instrument) for c in slow.closures]
        for c, d in zip(fast.closures, slow.closures, strict=True):
            assert c.size_closed == pytest.approx(d.size_closed, rel=1e-7, abs=1e-12)
            assert c.realised_pnl == pytest.approx(d.realised_pnl, rel=1e-7, abs=1e-6)
        assert fast.equity == pytest.approx(slow.equity, rel=1e-9, abs=1e-6)
        assert fast.target_reached == slow.target_reached
        assert fast.shortfall == pytest.approx(slow.shortfall)
        np.testing.assert_allclose(fast.book.size, slow.book.size, rtol=1e-7, atol=1e-12)


def test_venue_token_crash_liquidates_instruments_whose_underlying_did_not_move() -> None:
    population = venue_population(1500, 2)
    book = fund(population, CONFIG, ["cross"])
    result = run_cascade(book, population.market, VENUE_TOKEN_CRASH, model="cross",
                         config=CONFIG, strategy=population.strategy)
    first = result.rounds[0]
    assert first.moved == (VENUE_TOKEN,)
    # in round 1 only the token has moved: BTC and ETH sit at their start prices
    assert first.prices["BTC"] == result.start_prices["BTC"]
    assert first.prices["ETH"] == result.start_prices["ETH"]
    hits = {h.instrument: h for h in first.hits}
    for name in ("BTC-PERP", "ETH-PERP"):
        hit = hits[name]
        assert hit.own_move == 1.0
        assert hit.by_channel.get(Channel.OWN_PRICE, 0.0) == 0.0
        assert hit.by_channel.get(Channel.COLLATERAL, 0.0) > 0.0
    # the token's own perp is liquidated by its own price
    assert hits["VTK-PERP"].by_channel.get(Channel.OWN_PRICE, 0.0) > 0.0
    named = contagion_map(result)
    assert {"BTC-PERP", "ETH-PERP"} <= set(named["hit_while_unmoved"])
    assert "VTK-PERP" not in named["hit_while_unmoved"]
    by_underlying = {u["underlying"]: u for u in named["underlyings"]}
    assert "BTC-PERP" in by_underlying["BTC"]["instruments_hit_by_contagion"]
    assert by_underlying["BTC"]["contagion_notional"] > 0.0


def test_rounds_stop_when_nothing_is_liquidatable_and_record_the_fund_path() -> None:
    population = venue_population(600, 4)
    book = fund(population, CONFIG, ["portfolio"])
    result = run_cascade(book, population.market, VENUE_TOKEN_CRASH, model="portfolio",
                         config=CONFIG, cascade=CascadeConfig(insurance_fund=1e5))
    assert result.liquidatable_before_shock == 0
    assert result.rounds
    assert [r.number for r in result.rounds] == list(range(1, len(result.rounds) + 1))
    assert result.end is EndReason.NONE_LIQUIDATABLE
    assert result.liquidatable_at_end == 0
    assert result.insurance_fund_start == 1e5
    for r in result.rounds:
        # bad debt is paid by the fund, by ADL, by a socialised loss or left unpaid
        paid = r.insurance_fund_used + r.adl_amount + r.socialised_loss + r.unpaid_shortfall
        assert paid == pytest.approx(r.bad_debt, rel=1e-9, abs=1e-6)


def test_the_round_cap_stops_a_cascade_and_counts_who_is_next() -> None:
    population = venue_population(600, 4)
    book = fund(population, CONFIG, ["cross"])
    thin = ImpactConfig(depth_usd={"BTC": 2e4, "ETH": 1e4, VENUE_TOKEN: 1e3}, depth_floor=0.5)
    result = run_cascade(book, population.market, VENUE_TOKEN_CRASH, model="cross",
                         config=CONFIG, cascade=CascadeConfig(max_rounds=2, impact=thin))
    assert len(result.rounds) == 2
    assert result.end is EndReason.ROUND_CAP
    assert result.liquidatable_at_end > 0


def test_shock_and_mode_parsing_refuse_bad_input(tmp_path: Path) -> None:
    shock = parse_shock("VTK=-90%,BTC=+5%", tmp_path)
    assert shock.ratios() == {"VTK": pytest.approx(0.1), "BTC": pytest.approx(1.05)}
    for bad, what in (("", "--shock"), ("VTK=-100%", "above -100"), ("VTK=abc", "price file"),
                      ("vtk=-5%", "SYMBOL"), ("VTK=-5%,VTK=-6%", "once"),
                      ("usdc-2023", "shared data file")):
        with pytest.raises(InputError, match=what):
            parse_shock(bad, tmp_path)
    assert parse_modes("cross, isolated") == (CascadeMode.CROSS, CascadeMode.ISOLATED)
    with pytest.raises(InputError, match="--modes"):
        parse_modes("cross,margin")
    with pytest.raises(InputError, match="--shock"):
        run_cascade(venue_population(20, 1).book, venue_population(20, 1).market,
                    Shock(spec="SOL=-5%", moves=(ShockMove(symbol="SOL", ratio=0.95,
                                                           source="given"),),
                          index={}, timestamp_ns=None), model="cross", config=CONFIG)


def test_study_compares_modes_on_one_population(tmp_path: Path) -> None:
    study = run_study(shock_spec="VTK=-90%", accounts=900, modes=parse_modes(
        "isolated,cross,portfolio"), seed=6, data=tmp_path)
    assert [r.model for r in study.results] == ["isolated", "cross", "portfolio"]
    # the same accounts and positions, and the same fund, in every mode
    assert len({(r.accounts, r.positions, r.open_interest) for r in study.results}) == 1
    assert len({r.insurance_fund_start for r in study.results}) == 1
    assert [c.name for c in study.claims] == ["contained", "propagated", "complex"]
    assert all(c.held in (True, False) for c in study.claims)
    document = study_document(study)
    json.dumps(document, allow_nan=False)  # serialisable as it is
    assert set(document["comparison"]) == {"isolated", "cross", "portfolio"}
    # positions on their own margin never pass one position's loss to another
    assert document["comparison"]["isolated"]["shared_equity_notional"] == 0.0


def test_simulate_cascade_command(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["simulate", "cascade", "--shock", "VTK=-90%",
                                   "--population", "300", "--modes", "isolated,cross",
                                   "--output", str(tmp_path / "report"), "--json"])
    assert out.exit_code == 0, out.output
    document = json.loads(out.stdout)
    assert [m["model"] for m in document["modes"]] == ["isolated", "cross"]
    assert (tmp_path / "report" / "cascade.html").exists()
    assert (tmp_path / "report" / "plotly.min.js").stat().st_size > 1_000_000
    page = (tmp_path / "report" / "cascade.html").read_text()
    assert "cdn" not in page.lower()
    assert out.stderr == ""  # no progress bar with --json
    people = CliRunner().invoke(app, ["simulate", "cascade", "--shock", "VTK=-90%",
                                      "--population", "300", "--modes", "cross",
                                      "--output", str(tmp_path / "report")])
    assert people.exit_code == 0, people.output
    assert "cross: " in people.stderr  # the bar of the mode, advanced round by round
    assert "left below MM" in people.stderr
    assert "contained" in people.stdout
    bad = CliRunner().invoke(app, ["simulate", "cascade", "--shock", "VTK=-90%",
                                   "--modes", "isolated,margin"])
    assert bad.exit_code == 2
    assert "--modes" in bad.stderr


def test_liquidate_bar_with_a_planner_books_what_the_replay_books() -> None:
    # The same bar liquidated twice from the same state: as the replay does it (each account
    # from its state now, ADL binding the whole book each time) and with a planner (stale
    # accounts planned again, ADL and socialised losses from the incremental view): the
    # same events, amounts and sizes, up to the rounding of a sum.
    import copy

    from margin_engine.liquidation.replay import (
        freeze_position_margins,
        liquidate_bar,
        open_ledger,
    )

    book, market = _shocked(400, "cross")
    settings = LiquidationConfig(penalty_rate=0.01, insurance_fund=2e4)
    config = replace(CONFIG, liquidation=settings)
    book = freeze_position_margins(book, market, "cross", config)
    below = whole_book_margins(bind_market(book, market), "cross", config).gap(1.0) < 0
    settle = book.assets.index("USD")
    runs = []
    for planned in (False, True):
        size, collateral = book.size.copy(), book.collateral.copy()
        ledger = open_ledger(book, settings)
        events: list[dict[str, object]] = []
        totals = {"liquidations": 0, "liquidated_notional": 0.0, "bad_debt": 0.0,
                  "insurance_fund_used": 0.0, "adl_count": 0, "socialised_loss": 0.0}

        def plan(accounts: list[int], size: np.ndarray = size,
                 collateral: np.ndarray = collateral) -> dict[int, object]:
            now = replace(book, size=size, collateral=collateral)
            return {a: partially_liquidate(book_subset(now, [a]), market, "cross", config,
                                           settings) for a in accounts}

        liquidate_bar(below, book, size, collateral, settle, market, config, settings,
                      "cross", 1.0, ledger, events, totals, 0,
                      plan=plan if planned else None)  # type: ignore[arg-type]
        runs.append((copy.deepcopy(events), size, totals))
    (exact, exact_size, exact_totals), (fast, fast_size, fast_totals) = runs
    assert exact_totals["adl_count"] > 0  # the bar exercises ADL
    assert [(e["type"], e.get("account")) for e in fast] == \
        [(e["type"], e.get("account")) for e in exact]
    for e, f in zip(exact, fast, strict=True):
        for key in ("amount", "shortfall", "penalty", "equity_after"):
            if key in e:
                assert f[key] == pytest.approx(e[key], rel=1e-9, abs=1e-6)
    np.testing.assert_allclose(fast_size, exact_size, rtol=1e-9, atol=1e-12)
    assert fast_totals["bad_debt"] == pytest.approx(exact_totals["bad_debt"], rel=1e-9)


def test_a_name_holding_a_closing_script_tag_stays_inside_the_chart_data() -> None:
    """The cascade report's charts are JSON inside a <script> element; a name such as
    '</script><script>...' ended the element early and ran the rest (before: it was written
    as it is)."""
    import json

    from margin_engine.liquidation.cascade_report import _figure

    name = "</script><script>window.x=1</script>"
    out = _figure("d", [{"name": name, "x": [1], "y": [2]}], {"title": "t"})
    assert out.count("</script>") == 1
    assert out.endswith("</script>")
    spec = out.split("var s=", 1)[1].split(";Plotly", 1)[0]
    assert json.loads(spec)["data"][0]["name"] == name

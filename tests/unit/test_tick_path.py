"""The per-tick path: the resolved book (TickBook) kept, the market rebound per instrument, the
fused pass over the book; the incremental recompute; the bench's numpy baseline and records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from margin_engine.book.bound import bind_market
from margin_engine.liquidation.shocks import marks_by_underlying, with_index
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.explain import explain_portfolio
from margin_engine.margin.portfolio import PortfolioModel, value_change_rows
from margin_engine.margin.portfolio_kernel import stream_read_nb
from margin_engine.margin.scenarios import value_change_grid
from margin_engine.margin.tick import TickBook, bind_tick, tick_margins
from tests.conftest import NO_HAIRCUTS
from tests.unit.level_books import random_level_book


def assert_same_result(got: object, want: object) -> None:
    for name in ("initial_margin", "maintenance_margin", "active", "collateral_haircut"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    for key, values in want.per_underlying.items():  # type: ignore[attr-defined]
        np.testing.assert_array_equal(got.per_underlying[key], values, err_msg=key)  # type: ignore[attr-defined]


@pytest.mark.parametrize("config", [RiskConfig(), NO_HAIRCUTS], ids=["haircuts", "none"])
def test_tick_pass_equals_the_portfolio_model_bit_for_bit(config: RiskConfig) -> None:
    # up to 40 positions an account: the option groups are sorted both ways (<= 32 and more)
    bound = random_level_book(400, seed=21, max_positions=40)
    tick_book = TickBook.from_book(bound.book)
    got = tick_margins(tick_book, bind_tick(tick_book, bound.market, config), config)
    assert_same_result(got, PortfolioModel().compute(bound, config))


def test_tick_after_a_market_move_equals_binding_the_book_again() -> None:
    bound = random_level_book(300, seed=22)
    marked = marks_by_underlying(bound.market, {})
    moved = with_index(with_index(bound.market, marked, "BTC", 47_000.0), marked, "ETH", 2_150.0)
    tick_book = TickBook.from_book(bound.book)
    got = tick_margins(tick_book, bind_tick(tick_book, moved, RiskConfig()), RiskConfig())
    assert_same_result(got, PortfolioModel().compute(bind_market(bound.book, moved),
                                                     RiskConfig()))


def test_tick_pass_equals_the_scalar_reference() -> None:
    bound = random_level_book(60, seed=23)
    tick_book = TickBook.from_book(bound.book)
    got = tick_margins(tick_book, bind_tick(tick_book, bound.market, NO_HAIRCUTS), NO_HAIRCUTS)
    for a in range(bound.account_count):
        want = explain_portfolio(bound, NO_HAIRCUTS, a)["initial_margin"]
        assert got.initial_margin[a] == pytest.approx(want, rel=1e-12, abs=1e-9)


def test_without_detail_only_the_margins_are_filled() -> None:
    bound = random_level_book(100, seed=24)
    tick_book = TickBook.from_book(bound.book)
    state = bind_tick(tick_book, bound.market, RiskConfig())
    lean = tick_margins(tick_book, state, RiskConfig(), detail=False)
    full = tick_margins(tick_book, state, RiskConfig())
    np.testing.assert_array_equal(lean.initial_margin, full.initial_margin)
    np.testing.assert_array_equal(lean.maintenance_margin, full.maintenance_margin)
    assert lean.per_underlying == {}


def test_incremental_recompute_prices_only_the_moved_underlying() -> None:
    bound = random_level_book(300, seed=25)
    model = PortfolioModel()
    before = model.compute(bound, RiskConfig())
    marked = marks_by_underlying(bound.market, {})
    moved = bind_market(bound.book, with_index(bound.market, marked, "BTC", 51_500.0))
    again = model.recompute(moved, RiskConfig(), before, "BTC")
    assert_same_result(again, model.compute(moved, RiskConfig()))
    table = bound.book.instruments
    btc = np.nonzero(table.underlying == table.underlyings.index("BTC"))[0]
    rows = value_change_rows(moved, RiskConfig().portfolio, btc)
    full = value_change_grid(moved, RiskConfig().portfolio)
    np.testing.assert_array_equal(rows[btc], full[btc])
    assert not rows[table.underlying != table.underlyings.index("BTC")].any()


def test_numpy_baseline_computes_the_same_margins() -> None:
    from margin_engine.bench.numpy_baseline import numpy_layout, numpy_margins

    bound = random_level_book(500, seed=26)
    tick_book = TickBook.from_book(bound.book)
    state = bind_tick(tick_book, bound.market, NO_HAIRCUTS)
    im, mm = numpy_margins(tick_book, state, numpy_layout(tick_book), NO_HAIRCUTS)
    want = tick_margins(tick_book, state, NO_HAIRCUTS)
    np.testing.assert_allclose(im, want.initial_margin, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(mm, want.maintenance_margin, rtol=1e-12, atol=1e-9)


def test_bandwidth_floor_reads_every_position() -> None:
    inst = np.array([1, 2, 3], dtype=np.int32)
    q = np.array([0.5, -1.5, 2.0])
    assert stream_read_nb(inst, q) == pytest.approx(7.0)


BENCH_REPORT = {"accounts": 1000, "positions_per_account": 10,  # a bench's report, as recorded
                "tick": {"seconds": 0.01}, "numpy": {"seconds": 0.2, "ratio_to_tick": 20.0},
                "bandwidth_floor": {"seconds": 0.001}, "peak_rss_mb": 300.0,
                "load_average": {"before": [1.0], "after": [1.5]}}


def test_bench_rows_go_to_a_scale_section_of_their_own(tmp_path: Path) -> None:
    from margin_engine.bench.run import SCALE_HEADER, record_results

    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\ntext\n\n# Monitor\n\nrows\n")
    report = dict(BENCH_REPORT)
    record_results(report, results)
    record_results({**report, "accounts": 2000}, results)
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\ntext\n\n# Monitor\n\nrows\n\n")
    section = text[text.index(SCALE_HEADER):]
    assert section.count("| 1,000 x 10 | 0.010 | 0.200 | 20.0x |") == 1
    assert section.index("| 1,000 x 10 |") < section.index("| 2,000 x 10 |")
    # text after the table and another section appended later: rows still go in the table
    results.write_text(text.rstrip("\n") + "\n\nA note on the rows.\n\n# Later\n\nmore\n")
    record_results({**report, "accounts": 3000}, results)
    text = results.read_text()
    assert text.index("| 2,000 x 10 |") < text.index("| 3,000 x 10 |") \
        < text.index("A note on the rows.") < text.index("# Later")
    assert "| 3,000 x 10 |" in text.split("\n")[text.split("\n").index("A note on the rows.")
                                               - 2]


def test_a_results_row_stopped_while_written_leaves_the_file_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the file was rewritten in place, and a stop in the middle of the write (a full
    disk, a kill) left it cut short."""
    from margin_engine.bench.run import record_results

    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nearlier rows\n")
    report = dict(BENCH_REPORT)
    written = Path.write_text

    def cut_short(path: Path, text: str, *args: object, **kwargs: object) -> int:
        written(path, text[:10])  # part of the text reaches the disk, then the write fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", cut_short)
    with pytest.raises(OSError, match="No space left"):
        record_results(report, results)
    monkeypatch.undo()
    assert results.read_text() == "# Benchmark results\n\nearlier rows\n"
    assert [p.name for p in tmp_path.iterdir()] == ["RESULTS.md"]  # no temporary left


def test_the_grid_is_the_same_on_one_thread_and_on_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scenario grid priced on every thread (books of many instruments) equals the grid
    priced on one, bit for bit: options live and settled, delta-one rows, the whole grid and
    the rows of one underlying (the monitor's)."""
    from margin_engine.margin import scenarios

    bound = random_level_book(50, seed=31)
    cfg = RiskConfig().portfolio
    rows = np.nonzero(bound.book.instruments.underlying == 0)[0]
    monkeypatch.setattr(scenarios, "PARALLEL_GRID", 10**9)
    one_grid, one_rows = value_change_grid(bound, cfg), value_change_rows(bound, cfg, rows)
    monkeypatch.setattr(scenarios, "PARALLEL_GRID", 1)
    all_grid, all_rows = value_change_grid(bound, cfg), value_change_rows(bound, cfg, rows)
    np.testing.assert_array_equal(all_grid, one_grid)
    np.testing.assert_array_equal(all_rows, one_rows)
    assert bound.book.instruments.is_option.sum() > 0
    assert (~bound.live).sum() > 0
    assert np.count_nonzero(one_grid) > one_grid.size // 2

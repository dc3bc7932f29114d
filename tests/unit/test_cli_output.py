"""The human output of every command at COLUMNS=100: tables, not dict reprs; titles on lines of
their own, not wrapped inside a table; nothing cut with '…'; money in plain decimals with its
unit; help screens that name arguments and do not give flags a type."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from margin_engine.cli.app import app
from margin_engine.demo.market import demo_market_document
from tests.conftest import SHARED, account, market_doc, portfolio_doc

runner = CliRunner()
WIDTH = 100
SCIENTIFIC = re.compile(r"\d(\.\d+)?e[+-]?\d+", re.IGNORECASE)
DICT_REPR = re.compile(r"\{'[^']*': |\{\"[^\"]*\": ")  # {'key': ...} or {"key": ...}


def run(*args: str) -> Result:
    out = runner.invoke(app, list(args), env={"COLUMNS": str(WIDTH)})
    assert out.exit_code == 0, out.output
    return out


def assert_shape(text: str, *whole_lines: str, scientific_ok: bool = False) -> None:
    """Every line fits, nothing is cut, no Python repr, no 1e+04 money; each of
    ``whole_lines`` is the start of one line (a title that did not wrap)."""
    lines = text.splitlines()
    for line in lines:
        assert len(line.rstrip()) <= WIDTH, f"wider than {WIDTH}: {line!r}"
        assert "…" not in line, f"cut: {line!r}"
        assert not DICT_REPR.search(line), f"a Python repr: {line!r}"
        if not scientific_ok:
            assert not SCIENTIFIC.search(line), f"scientific notation: {line!r}"
    for start in whole_lines:
        assert any(line.startswith(start) for line in lines), f"no line starts {start!r}"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    portfolio = tmp_path / "portfolio.json"
    market = tmp_path / "market.json"
    portfolio.write_text(json.dumps(portfolio_doc(
        account("short-straddle-delta-hedged",
                [("BTC-PERP", 1, 64000), ("BTC-27JUN25-75000-C", -1, 900)]),
        account("iso", [("ETH-PERP", 10, 2400)], mode="isolated"))))
    market.write_text(json.dumps(demo_market_document()))
    return portfolio, market


def test_compute_prints_one_table_per_model_with_units(files: tuple[Path, Path]) -> None:
    portfolio, market = files
    text = run("compute", str(portfolio), "--market", str(market)).stdout
    assert_shape(text, "Margin in USD at 2025-06-01T00:00:00Z, account model",
                 "portfolio model: 1 account", "isolated model: 1 account",
                 "short-straddle-delta-hedged ")
    assert "500.00" in text  # ETH-PERP 10 x 2,500 at 2 %
    text = run("compute", str(portfolio), "--market", str(market), "--explain").stdout
    assert_shape(text, "short-straddle-delta-hedged under portfolio (amounts in USD)",
                 "  BTC: scan risk ")


def test_compare_keeps_names_whole_and_says_what_efficiency_is(
        files: tuple[Path, Path]) -> None:
    portfolio, market = files
    text = run("compare", str(portfolio), "--market", str(market)).stdout
    assert_shape(text, "Initial margin in USD by model at 2025-06-01T00:00:00Z",
                 "Margin efficiency by model (gross notional / IM",
                 "short-straddle-delta-hedged ")
    assert "gross notional (USD)" in text


def test_explain_lines_fit(files: tuple[Path, Path]) -> None:
    portfolio, market = files
    for model in ("portfolio", "isolated", "cross", "sensitivity"):
        text = run("explain", str(portfolio), "--market", str(market), "--model", model).stdout
        assert_shape(text, f"iso under {model} (amounts in USD)")


def test_wrong_model_lists_account_first(files: tuple[Path, Path]) -> None:
    portfolio, market = files
    for command in ("compute", "explain"):
        out = runner.invoke(app, [command, str(portfolio), "--market", str(market), "--model",
                                  "nope"])
        assert out.exit_code == 2
        assert "field '--model': got 'nope', expected one of account, isolated" in out.stderr


def _path_file(tmp_path: Path, prices: list[float], step_minutes: int = 1,
               start: str = "2025-06-15 12:00:00") -> Path:
    path = tmp_path / f"path_{len(prices)}_{step_minutes}.csv"
    t0 = datetime.fromisoformat(start).replace(tzinfo=UTC)
    path.write_text("date,open,high,low,close,volume\n" + "".join(
        f"{(t0 + timedelta(minutes=k * step_minutes)).isoformat(sep=' ')},{p},{p},{p},{p},1\n"
        for k, p in enumerate(prices)))
    return path


def test_liquidate_prints_tables_penalties_and_expiries(tmp_path: Path) -> None:
    portfolio = tmp_path / "p.json"
    market = tmp_path / "m.json"
    portfolio.write_text(json.dumps(portfolio_doc(
        account("long", [("BTC-PERP", 10, 50000)], {"USDC": 10000}, mode="cross"),
        account("dated", [("BTC-16JUN25", 1, 50000)], {"USDC": 100000}, mode="portfolio"))))
    market.write_text(json.dumps(market_doc(timestamp="2025-06-15T12:00:00Z")))
    # hourly bars: the BTC-16JUN25 future expires at bar 20 (2025-06-16T08:00Z)
    path = _path_file(tmp_path, [50000, 49200, *([49200] * 24)], step_minutes=60)
    out = run("liquidate", str(portfolio), "--market", str(market), "--path", f"BTC={path}",
              "--latency-seconds", "0")
    text = out.stdout
    assert_shape(text, "Liquidation replay, 2025-06-15T12:00:00Z to",
                 "penalties due (USD, penalty rate x closed notional)",
                 "Expiries passed: positions settled on the way", "Events (")
    # 10 BTC at 49,200: penalty due 4,920, charged 2,000 (all the equity left)
    assert "penalty 2,000.00 of 4,920.00 due, 2,920.00 not collected (equity ran out)" in \
        " ".join(text.split())
    assert "BTC-16JUN25" in text
    assert "2025-06-16T08:00:00Z" in text


def _window_file(path: Path, start: str, prices: np.ndarray, minutes: int) -> None:
    t0 = datetime.fromisoformat(start).replace(tzinfo=UTC)
    path.write_text("date,open,high,low,close,volume\n" + "".join(
        f"{(t0 + timedelta(minutes=k * minutes)).isoformat(sep=' ')},{p},{p},{p},{p},1\n"
        for k, p in enumerate(prices)))


def test_simulate_crashes_on_small_files(tmp_path: Path) -> None:
    from margin_engine.liquidation.studies import CRASH_WINDOWS, DEPEG_FILES

    n = 40
    crash = 1 - 0.12 * np.minimum(np.arange(n), 10) / 10  # a 12 % slide over 10 bars
    for (btc, eth, spot), minutes in zip(CRASH_WINDOWS.values(), (15, 5), strict=True):
        start = "2024-08-04 00:00:00" if minutes == 15 else "2025-10-10 00:00:00"
        _window_file(tmp_path / btc, start, 60000 * crash, minutes)
        _window_file(tmp_path / eth, start, 3000 * crash, minutes)
        if spot:
            _window_file(tmp_path / spot, start, 60000 * crash, minutes)
    minutes = np.arange(60)
    btc = 21000 * (1 - 0.002 * minutes)
    usdc = np.where(minutes < 30, 1.001, 1.001 - 0.003 * (minutes - 29))  # then a depeg
    _window_file(tmp_path / DEPEG_FILES[0], "2023-03-10 00:00:00", btc, 1)
    _window_file(tmp_path / DEPEG_FILES[1], "2023-03-10 00:00:00", btc / usdc, 1)
    text = run("simulate", "crashes", "--data", str(tmp_path), "--accounts", "20").stdout
    assert_shape(text, "Crash replays on 20 seeded leveraged accounts",
                 "liquidations (each partial one)", "accounts liquidated",
                 "bad debt (USD)", "USDC depeg, 2023-03-09T00:00:00Z to 2023-03-14T00:00:00Z",
                 "over the whole window", "With the breaker on, MM is multiplied")


def test_market_from_deribit_accounts_for_every_row(tmp_path: Path) -> None:
    chain = SHARED / "data" / "deribit_btc_option_marks_2024-05-24.csv"
    if not chain.exists():
        pytest.skip(f"{chain} not found (../shared is absent)")
    report = tmp_path / "fit.json"
    out = runner.invoke(app, ["market", "from-deribit", str(chain), "--output",
                              str(tmp_path / "m.json"), "--report", str(report)],
                        env={"COLUMNS": str(WIDTH)})
    assert out.exit_code == 0, out.output
    assert_shape(out.stderr, "BTC surface at 2024-05-24T13:06:00Z",
                 "total (every row of the file)")
    rows = json.loads(report.read_text())["fits"][0]["rows"]
    data_rows = len(chain.read_text().splitlines()) - 1  # 578
    reasons = {k: v for k, v in rows.items() if k not in ("rows", "fitted", "strike_typos_kept")}
    assert rows["rows"] == data_rows == 578
    assert rows["fitted"] + sum(reasons.values()) == data_rows
    assert rows["other"] == 0
    fit = json.loads(report.read_text())["fits"][0]
    assert rows["fitted"] == sum(s["quotes"] for s in fit["slices"])
    assert rows["censored_iv"] == 34
    assert rows["in_the_money"] > 200  # the rows that went unaccounted for before


def test_vol_bench_and_bench_print_words_not_reprs() -> None:
    assert_shape(run("vol", "bench", "--quotes", "100").stdout, "100 quotes (",
                 "median RMSE ")
    text = run("bench", "--accounts", "200", "--positions", "2",
               "--baseline-positions", "100").stdout
    # the relative difference to the baseline (~1e-16) is a ratio, not money
    assert_shape(text, "portfolio model: 200 accounts x 2 positions", "total (s)",
                 scientific_ok=True)


def test_demo_table_and_explanations(tmp_path: Path) -> None:
    text = run("demo", "--accounts", "150", "--output", str(tmp_path)).stdout
    assert_shape(text, "Margin efficiency = gross notional / initial margin",
                 "delta-hedged short straddle ", "IM ratios: ratios of totals",
                 "Needs MORE margin under the +/-16 % portfolio grid",
                 "  naked future: the tiers charge 2 %")
    assert "portfolio IM / isolated" not in text  # the ratio column says what it divides
    if "protective put:" in text:
        assert "the drop to its strike" in " ".join(text.split())


def test_backtest_table_says_what_the_statistics_mean(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    closes = 30000 * np.exp(np.cumsum(rng.normal(0, 0.02, 400)))
    prices = tmp_path / "btc.csv"
    _window_file(prices, "2022-01-01 00:00:00", closes, 24 * 60)
    portfolio = tmp_path / "p.json"
    portfolio.write_text(json.dumps(portfolio_doc(
        account("long", [("BTC-PERP", 1, 30000)], {"USDC": 100000}))))
    out = run("backtest", "--prices", f"BTC={prices}", "--portfolio", str(portfolio),
              "--model", "portfolio", "--output", str(tmp_path / "report"))
    assert_shape(out.stdout, "Backtest of portfolio, 2022-01-", "Rejected as too conservative",
                 "Kupiec p-value ", "mean margin ")
    page = (tmp_path / "report" / "backtest.html").read_text()
    assert "Rejected as too conservative" in page
    assert "likelihood ratio" in page


def test_backtest_study_tables_fit() -> None:
    from margin_engine.cli.console import make_console
    from margin_engine.cli.render import print_backtest_study

    row = {"history": "BTC 2017-2025 (2h)", "observations": 2931, "exceptions": 3,
           "expected_exceptions": 29.31, "kupiec_p": 8.2e-08, "traffic_light": "green",
           "mean_margin_rate": 0.16, "max_5d_rate_increase": 4.4e-16}
    result = {"z": "normal",
              "full_history": [{**row, "method": m} for m in
                               ("isolated", "cross", "portfolio", "sensitivity", "var",
                                "predictive:ewma", "predictive:ewma (implied's days)")],
              "crash_windows": [{"history": row["history"], "window": "2022-11 FTX",
                                 "method": m, "exceptions": 1, "observations": 61}
                                for m in ("portfolio", "predictive:ewma")]}
    import os

    os.environ["COLUMNS"] = str(WIDTH)
    try:
        console = make_console()
        with console.capture() as captured:
            print_backtest_study(result, console)
    finally:
        del os.environ["COLUMNS"]
    assert_shape(captured.get(), "Full history at 99 % / 1 day", "BTC 2017-2025 (2h)",
                 "ewma (implied days) ", "Crash windows (30 days either side)")
    assert "conservative" in captured.get()


@pytest.mark.parametrize("command", [
    ["compute"], ["compare"], ["explain"], ["demo"], ["bench"], ["liquidate"], ["report"],
    ["calibrate"], ["market", "from-deribit"], ["vol", "plot"], ["vol", "bench"],
    ["simulate", "crashes"], []])
def test_help_names_arguments_and_gives_flags_no_type(command: list[str]) -> None:
    text = run(*command, "--help").stdout
    assert "<bool>" not in text
    assert "{" not in text
    assert_shape(text)
    if command in (["compute"], ["compare"], ["explain"], ["liquidate"]):
        assert f" {command[0]} [OPTIONS] PORTFOLIO" in text
        assert "SPEC" not in text  # the defaults are said, not referred to


def test_liquidate_help_describes_model_and_market() -> None:
    text = " ".join(run("liquidate", "--help").stdout.split())
    assert "Margin model: account (the default" in text
    assert "Market snapshot JSON (margin-engine/market/v1)." in text.replace("│ ", "")


def test_report_and_vol_plot_say_what_they_wrote(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # short paths: a long path is a long line, whatever the width
    text = run("report", "--output", "report").stdout
    assert_shape(text, "wrote ")
    page = (tmp_path / "report" / "report.html").read_text()
    assert "gross notional (USD)" in page
    chain = SHARED / "data" / "deribit_btc_option_chain_2020-05-14.csv"
    if not chain.exists():
        pytest.skip(f"{chain} not found (../shared is absent)")
    text = run("vol", "plot", str(chain), "--output", "smiles").stdout
    assert_shape(text, "wrote ")
    assert (tmp_path / "smiles" / f"smiles_{chain.stem}.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def large_book(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A bulk book of 150 accounts (positions and accounts Parquet files) and its market."""
    from margin_engine.batch.book import write_part
    from margin_engine.bench.run import _book, instrument_names, random_book_columns

    folder = tmp_path_factory.mktemp("large")
    names = instrument_names(200)
    columns = random_book_columns(150, 6, names, 9)
    columns["account_ids"] = [f"a{j}" for j in range(150)]
    write_part(_book(names, columns), folder / "book", "part-00000")
    (folder / "market.json").write_text(json.dumps(demo_market_document()))
    return (folder / "book" / "positions" / "part-00000.parquet",
            folder / "book" / "accounts" / "part-00000.parquet", folder / "market.json")


def test_a_large_book_prints_its_totals_and_the_accounts_nearest_liquidation(
        large_book: tuple[Path, Path, Path]) -> None:
    """More than 100 accounts under a model: totals, then the 100 with the highest MM / equity
    (no equity left first), checked against the JSON document. Before: every account was a
    row (200,000 accounts took 1 min 44 s to print, 8 s now)."""
    positions, accounts, market = large_book
    args = ("compute", str(positions), "--accounts", str(accounts), "--market", str(market),
            "--model", "portfolio")
    document = json.loads(run(*args, "--json", "--liquidation-prices", "off").stdout)
    every = document["accounts"]
    text = run(*args).stdout
    assert_shape(text, "The 100 nearest liquidation (highest MM / equity first; --json lists "
                       "all 150):")

    def risk(acc: dict[str, object]) -> tuple[float, float]:
        equity, mm = float(acc["adjusted_equity"]), float(acc["maintenance_margin"])
        if equity <= 0.0:  # no ratio: ahead of every ratio when below MM, deepest first
            return (-np.inf, equity - mm) if equity < mm else (0.0, 0.0)
        return (-mm / equity, 0.0)

    want = [acc["id"] for acc in sorted(every, key=risk)[:100]]
    rows = [line.split()[0] for line in text.splitlines()
            if line.split() and line.split()[0] in {acc["id"] for acc in every}]
    assert rows == want
    liquidatable = sum(acc["adjusted_equity"] < acc["maintenance_margin"] for acc in every)
    assert 0 < liquidatable < 150  # the book holds both kinds
    assert re.search(rf"liquidatable \(equity after haircuts below MM\)\s+{liquidatable:,}\n",
                     text)
    total_im = sum(acc["initial_margin"] for acc in every)
    assert re.search(rf"initial margin \(USD\)\s+{total_im:,.0f}\n", text)
    compare = run("compare", str(positions), "--accounts", str(accounts), "--market",
                  str(market)).stdout
    assert_shape(compare, "The first 100 of 150 accounts (--json lists all).")


@pytest.mark.parametrize("command", [["compute"], ["compare"], ["explain"],
                                     ["compute", "--profile", "deribit-pm"]])
def test_account_ids_that_look_like_markup_are_printed_as_they_are(
        tmp_path: Path, command: list[str]) -> None:
    """Ids are the venue's (any text): rich read '[/x]' as a closing tag (a MarkupError
    traceback) and '[red]b' as a style (printed 'b')."""
    portfolio = tmp_path / "p.json"
    market = tmp_path / "m.json"
    portfolio.write_text(json.dumps(portfolio_doc(
        account("[/x]", [("BTC-PERP", 1, 64000)], mode="cross"),
        account("[red]b", [("ETH-PERP", 10, 2400)], mode="cross"))))
    market.write_text(json.dumps(demo_market_document()))
    text = run(command[0], str(portfolio), "--market", str(market), *command[1:]).stdout
    assert "[/x]" in text
    assert "[red]b" in text

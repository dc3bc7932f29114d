"""The command line as a user runs it: JSON contract, human tables, errors, demo and bench."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from margin_engine.cli.app import app
from margin_engine.demo.market import demo_market_document
from tests.conftest import account, portfolio_doc

runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    portfolio = tmp_path / "portfolio.json"
    market = tmp_path / "market.json"
    portfolio.write_text(json.dumps(portfolio_doc(
        account("hedged", [("BTC-PERP", 1, 64000), ("BTC-27JUN25-75000-C", -1, 900)]),
        account("iso", [("ETH-PERP", 10, 2400)], mode="isolated"))))
    market.write_text(json.dumps(demo_market_document()))
    return portfolio, market


def test_compute_json_contract(files: tuple[Path, Path]) -> None:
    portfolio, market = files
    out = runner.invoke(app, ["compute", str(portfolio), "--market", str(market), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["model"] == "account"
    assert doc["timestamp"] == "2025-06-01T00:00:00Z"
    hedged, iso = doc["accounts"]
    assert hedged["model"] == "portfolio"
    assert iso["model"] == "isolated"
    for key in ("equity", "adjusted_equity", "initial_margin", "maintenance_margin", "excess",
                "margin_ratio", "gross_notional", "efficiency", "underlyings"):
        assert key in hedged
    btc = hedged["underlyings"]["BTC"]
    assert set(btc) >= {"scan_risk", "contingency", "worst_scenario", "delta", "gamma", "vega"}
    assert hedged["adjusted_equity"] < hedged["equity"]  # haircuts are on by default
    assert hedged["excess"] == pytest.approx(hedged["adjusted_equity"] -
                                             hedged["initial_margin"])
    assert hedged["efficiency"] == pytest.approx(hedged["gross_notional"] /
                                                 hedged["initial_margin"])
    # ETH-PERP 10 x 2,500 = 25,000 at 2 %: 500.
    assert iso["initial_margin"] == pytest.approx(500.0)


def test_compute_model_override_and_explain(files: tuple[Path, Path]) -> None:
    portfolio, market = files
    out = runner.invoke(app, ["compute", str(portfolio), "--market", str(market), "--model",
                              "portfolio", "--explain"])
    assert out.exit_code == 0, out.output
    assert "scan risk" in out.stdout
    assert "correlation offset" in out.stdout
    out = runner.invoke(app, ["explain", str(portfolio), "--market", str(market), "--model",
                              "isolated", "--account", "hedged", "--json"])
    lines = json.loads(out.stdout)["accounts"][0]["positions"]
    assert [p["instrument"] for p in lines] == ["BTC-PERP", "BTC-27JUN25-75000-C"]


def test_compare_gives_every_model(files: tuple[Path, Path]) -> None:
    portfolio, market = files
    out = runner.invoke(app, ["compare", str(portfolio), "--market", str(market), "--json"])
    assert out.exit_code == 0, out.output
    models = json.loads(out.stdout)["accounts"][0]["models"]
    assert set(models) == {"isolated", "cross", "portfolio", "sensitivity"}
    assert models["cross"]["initial_margin"] <= models["isolated"]["initial_margin"]
    human = runner.invoke(app, ["compare", str(portfolio), "--market", str(market)])
    assert "Initial margin in USD by model" in human.stdout


def test_bad_input_exits_2_with_one_line(files: tuple[Path, Path], tmp_path: Path) -> None:
    _, market = files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(portfolio_doc(account("x", [("BTC-PERP", "ten", 1)]))))
    out = runner.invoke(app, ["compute", str(bad), "--market", str(market)])
    assert out.exit_code == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "account 'x'" in lines[0]
    assert "'size'" in lines[0]
    out = runner.invoke(app, ["compute", str(bad), "--market", str(market), "--model", "nope"])
    assert out.exit_code == 2
    assert "one of" in out.stderr


def test_demo_writes_chart_and_table(tmp_path: Path) -> None:
    out = runner.invoke(app, ["demo", "--accounts", "150", "--output", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "iron condor" in out.stdout
    assert "naked future" in out.stdout
    assert (tmp_path / "demo_efficiency.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "demo_results.json").read_text())
    condor = summary["strategies"]["iron condor"]
    assert condor["portfolio"]["total_initial_margin"] < condor["cross"]["total_initial_margin"]
    # the book and market files are the demo's own: compute on them gives the same totals
    computed = runner.invoke(app, ["compute", str(tmp_path / "demo_portfolio.json"), "--market",
                                   str(tmp_path / "demo_market.json"), "--model", "portfolio",
                                   "--json", "--liquidation-prices", "off"])
    assert computed.exit_code == 0, computed.output
    document = json.loads(computed.stdout)
    total = sum(a["initial_margin"] for a in document["accounts"])
    demo_total = sum(s["portfolio"]["total_initial_margin"]
                     for s in summary["strategies"].values())
    assert total == pytest.approx(demo_total, rel=1e-9)


def test_bench_json_reports_stages_and_baseline() -> None:
    out = runner.invoke(app, ["bench", "--accounts", "500", "--positions", "4",
                              "--baseline-positions", "200", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["instruments"] >= 2000
    assert report["positions"] == 2000
    assert set(report["seconds"]) == {"resolve", "price_grid", "aggregation", "total"}
    assert report["baseline"]["max_relative_difference"] < 1e-9
    assert report["baseline"]["speed_ratio"] > 1


def test_bench_reports_the_liquidation_search() -> None:
    args = ["bench", "--accounts", "300", "--positions", "4", "--baseline-positions", "100",
            "--runs", "2", "--no-files", "--liquidation-prices"]
    report = json.loads(runner.invoke(app, [*args, "--json"]).stdout)["liquidation"]
    assert len(report["runs"]) == 2  # as many as the other figures', the median reported
    assert report["seconds"] == pytest.approx(sum(report["runs"]) / 2)
    assert report["same_every_run"] is True
    assert 300 < report["searches"] <= 600  # accounts x the underlyings each is exposed to
    assert 1.0 < report["evaluations_per_search"] < 40.0
    assert report["down_found"] + report["up_found"] > 0
    assert report["warmup_seconds"] > 0.0  # its own warm-up, after the ticks' RSS is read
    text = runner.invoke(app, args).stdout
    assert "liquidation searches / gap evaluations each" in text
    assert "liquidation prices, both sides, median of 2 (s)" in text
    assert "liquidation warm-up, not timed above (s)" in text


def test_the_liquidation_warm_up_compiles_the_big_books_path() -> None:
    """The bench's warm-up searches a book that shares one state table per underlying, as the
    timed book does (a smaller one takes the kept tables' path, and the timed stage then
    loaded the shared path's kernels: 1.8 s of 4.2 s on 200,000 accounts)."""
    from margin_engine.bench.run import (
        WARM_LIQUIDATION_ACCOUNTS,
        _book,
        instrument_names,
        random_book_columns,
    )
    from margin_engine.book.bound import bind_market
    from margin_engine.io.market_file import parse_market
    from margin_engine.liquidation.vector_levels import TABLE_SHARING, _held_by_underlying

    names = instrument_names(2_400)  # the bench's default
    book = _book(names, random_book_columns(WARM_LIQUIDATION_ACCOUNTS, 10, names, 1))
    held = _held_by_underlying(bind_market(book, parse_market(demo_market_document())), None)
    assert len(held) == 2
    for instruments, positions in held:
        assert positions > TABLE_SHARING * instruments.size


def test_liquidation_prices_are_opt_in_for_big_books(files: tuple[Path, Path]) -> None:
    from margin_engine.cli.app import _want_liquidation

    assert _want_liquidation("auto", True, 500) is True
    assert _want_liquidation("auto", False, 500) is False  # the table does not show them
    assert _want_liquidation("auto", True, 20_000) is False  # a root search per account
    assert _want_liquidation("on", True, 20_000) is True
    portfolio, market = files
    out = runner.invoke(app, ["compute", str(portfolio), "--market", str(market), "--json",
                              "--liquidation-prices", "off"])
    assert "liquidation_price" not in out.stdout
    bad = runner.invoke(app, ["compute", str(portfolio), "--market", str(market), "--json",
                              "--liquidation-prices", "sometimes"])
    assert bad.exit_code == 2
    assert "auto, on or off" in bad.stderr


def test_an_output_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = runner.invoke(app, ["demo", "--accounts", "100", "--output", str(blocker / "out")])
    assert out.exit_code == 2
    assert "margin-engine: error:" in out.output
    assert str(blocker) in out.output
    assert "Traceback" not in out.output


def test_the_bench_compiles_in_a_child_and_then_loads_the_cache(tmp_path: Path) -> None:
    """The portfolio bench compiles its kernels in a child process first: with a cold cache
    the child compiles and writes the cache, and a later process (the bench itself) loads the
    per-tick kernel from it instead of compiling (which would keep the compiler's memory)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    child = ("import sys; from margin_engine.bench.run import compile_in_child; "
             "sys.exit(0 if compile_in_child(2400, 1000, 4, 1, False, False) else 1)")
    assert subprocess.run([sys.executable, "-c", child], env=env, timeout=600).returncode == 0
    later = ("from margin_engine.bench.run import _bench_inputs, _warm_portfolio; "
             "from margin_engine.margin.portfolio_kernel import tick_margin_nb as k; "
             "c, m, n = _bench_inputs(2400, 1000); _warm_portfolio(n, m, c, 4, 1, False); "
             "print(sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values()))")
    out = subprocess.run([sys.executable, "-c", later], env=env, timeout=600,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    hits, misses = (int(x) for x in out.stdout.split())
    assert hits >= 1
    assert misses == 0


def test_a_book_larger_than_memory_is_one_line_not_a_traceback() -> None:
    """numpy refuses a 373 GiB array at once: the command says so in one line, exit 2."""
    out = runner.invoke(app, ["bench", "--accounts", "5000000000", "--positions", "10",
                              "--runs", "1", "--no-files"])
    assert out.exit_code == 2, out.output
    assert "out of memory (Unable to allocate" in out.output
    assert "Traceback" not in out.output


@pytest.mark.parametrize(("extra", "says"), [
    (["--record", "{tmp}/missing/RESULTS.md"], "a file in an existing folder"),
    (["--record", "{tmp}"], "not a folder"),
    (["--record", "{tmp}/market.json"], "a Markdown file (.md)"),
    (["--model", "monitor", "--record", "{tmp}/R.md"], "--record only with --model portfolio"),
    (["--model", "monitor", "--liquidation-prices"],
     "--liquidation-prices only with --model portfolio or batch"),
])
def test_bench_options_it_cannot_honour_are_refused_before_it_runs(
        tmp_path: Path, extra: list[str], says: str) -> None:
    """Before: the row was appended to a JSON file, or the folder's error came after the whole
    bench had run, or the option did nothing with another model."""
    (tmp_path / "market.json").write_text("{}")
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    started = time.perf_counter()
    out = runner.invoke(app, ["bench", "--accounts", "2000", "--positions", "4", "--runs", "1",
                              *args])
    assert out.exit_code == 2, out.output
    assert says in out.output
    assert time.perf_counter() - started < 5.0  # refused, not run
    assert (tmp_path / "market.json").read_text() == "{}"
    assert not (tmp_path / "R.md").exists()


@pytest.mark.parametrize("command", [["demo"], ["bench"], ["monitor"], ["simulate", "crashes"],
                                     ["simulate", "cascade"]])
def test_a_negative_seed_is_refused_by_the_option(command: list[str]) -> None:
    """Before: numpy's 'expected non-negative integer' as a traceback."""
    out = runner.invoke(app, [*command, "--seed", "-1"])
    assert out.exit_code == 2, out.output
    assert "--seed" in out.output
    assert "greater than or equal to 0" in out.output
    assert "Traceback" not in out.output


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_baseline_of_no_positions_is_refused_by_the_option(value: str) -> None:
    """Before: 0 or a negative number of positions priced ten (one account's) without a word."""
    out = runner.invoke(app, ["bench", "--baseline-positions", value], env={"COLUMNS": "200"})
    assert out.exit_code == 2, out.output
    assert "--baseline-positions" in out.output
    assert "greater than or equal to 1" in out.output


@pytest.mark.parametrize("population", ["0", "-3"])
def test_a_monitor_population_of_no_accounts_is_refused_by_the_option(population: str) -> None:
    """Before: 'field accounts: got [], expected a portfolio with at least one account'."""
    out = runner.invoke(app, ["monitor", "--population", population, "--feed",
                              "file:BTC=prices.csv"])
    assert out.exit_code == 2, out.output
    assert "--population" in out.output
    assert "greater than or equal to 1" in out.output


@pytest.mark.parametrize(("suffix", "content", "said"), [
    (".parquet", b"PAR1\xf4\x00", "expected a readable CSV/Parquet table"),
    (".CSV", b"account,instrument\n", "size"),
    (".csv", b"account,instrument,size,entry_price\na,BTC-PERP,true,50000\n", "size (row 1)")])
def test_a_broken_bulk_book_given_to_the_monitor_is_refused_by_the_bulk_reader(
        tmp_path: Path, suffix: str, content: bytes, said: str) -> None:
    """The monitor reads CSV/Parquet books as `compute` does, with the same errors, before the
    store is opened (it refused them all before, and earlier still gave a UTF-8 decoding error
    for a Parquet file, a JSON syntax error for a CSV one)."""
    book = tmp_path / f"positions{suffix}"
    book.write_bytes(content)
    prices = tmp_path / "btc.csv"
    prices.write_text("date,close\n2025-06-01 00:00:00+00:00,65000\n")
    store = tmp_path / "m.db"
    out = runner.invoke(app, ["monitor", "--book", str(book), "--feed", f"file:BTC={prices}",
                              "--store", f"sqlite:{store}"])
    assert out.exit_code == 2, out.output
    assert str(book) in out.stderr
    assert said in out.stderr
    assert "Traceback" not in out.output
    assert not store.exists()


def test_a_portfolio_json_over_the_size_limit_is_refused_by_the_monitor(tmp_path: Path) -> None:
    """As `compute` refuses it, pointing to the bulk form (the monitor read it whole, with
    exact decimals, however large: minutes for a book the bulk reader takes in seconds)."""
    from margin_engine.io.portfolio_file import MAX_JSON_BYTES

    book = tmp_path / "big.json"
    book.write_bytes(b" " * (MAX_JSON_BYTES + 1))
    prices = tmp_path / "btc.csv"
    prices.write_text("date,close\n2025-06-01 00:00:00+00:00,65000\n")
    out = runner.invoke(app, ["monitor", "--book", str(book), "--feed", f"file:BTC={prices}",
                              "--store", f"sqlite:{tmp_path / 'm.db'}"])
    assert out.exit_code == 2, out.output
    assert f"got '{MAX_JSON_BYTES + 1:,} bytes'" in out.stderr
    assert "bulk form" in out.stderr
    assert not (tmp_path / "m.db").exists()


def test_an_accounts_file_with_a_portfolio_json_is_refused_by_the_monitor(tmp_path: Path) -> None:
    book = tmp_path / "p.json"
    book.write_text("{}")
    prices = tmp_path / "btc.csv"
    prices.write_text("date,close\n2025-06-01 00:00:00+00:00,65000\n")
    out = runner.invoke(app, ["monitor", "--book", str(book), "--accounts", str(tmp_path / "a.csv"),
                              "--feed", f"file:BTC={prices}",
                              "--store", f"sqlite:{tmp_path / 'm.db'}"])
    assert out.exit_code == 2, out.output
    assert "field '--accounts'" in out.stderr
    assert "CSV/Parquet positions file" in out.stderr


def _replay_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A one-account portfolio, its market and a two-bar BTC path, for ``liquidate``."""
    from tests.conftest import account, market_doc, portfolio_doc

    portfolio, market = tmp_path / "p.json", tmp_path / "m.json"
    portfolio.write_text(json.dumps(portfolio_doc(
        account("a", [("BTC-PERP", 1, 50000)], {"USDC": 10000}, mode="cross"))))
    market.write_text(json.dumps(market_doc()))
    path = tmp_path / "btc.csv"
    path.write_text("date,open,high,low,close,volume\n2025-06-01 00:00:00+00:00,1,1,1,50000,1\n"
                    "2025-06-01 00:05:00+00:00,1,1,1,49000,1\n")
    return portfolio, market, path


def test_liquidate_takes_a_bulk_book_as_its_portfolio_file(tmp_path: Path) -> None:
    """`liquidate POSITIONS.csv --accounts ACCOUNTS.csv`: the replay of the same book as the
    portfolio JSON, event for event (a long of 50,000 on 3,000, liquidated on the way down).
    Before: 'expected a readable UTF-8 file' or a JSON syntax error (its help named
    CSV/Parquet books)."""
    portfolio, market, path = _replay_inputs(tmp_path)
    path.write_text("date,open,high,low,close,volume\n" + "".join(
        f"2025-06-01 00:{5 * k:02d}:00+00:00,1,1,1,{50000 - 1000 * k},1\n" for k in range(9)))
    (tmp_path / "positions.csv").write_text(
        "account,instrument,size,entry_price\na,BTC-PERP,1,50000\n")
    (tmp_path / "accounts.csv").write_text("account,mode,collateral_USDC\na,cross,3000\n")
    portfolio.write_text(portfolio.read_text().replace("10000", "3000"))
    runs = [runner.invoke(app, ["liquidate", *book, "--market", str(market), "--path",
                                f"BTC={path}", "--json"])
            for book in ([str(portfolio)], [str(tmp_path / "positions.csv"), "--accounts",
                                            str(tmp_path / "accounts.csv")])]
    assert [r.exit_code for r in runs] == [0, 0], runs[1].output
    assert runs[1].stdout == runs[0].stdout
    assert json.loads(runs[0].stdout)["liquidations"] >= 1


def test_a_replay_that_ends_before_it_starts_names_the_end(tmp_path: Path) -> None:
    """Before: 'expected price paths with at least two common timestamps', about the file."""
    portfolio, market, path = _replay_inputs(tmp_path)
    out = runner.invoke(app, ["liquidate", str(portfolio), "--market", str(market), "--path",
                              f"BTC={path}", "--start", "2025-06-01T00:05:00Z", "--end",
                              "2025-06-01T00:00:00Z"])
    assert out.exit_code == 2, out.output
    assert out.output.startswith("margin-engine: error: field '--end': got "
                                 "'2025-06-01T00:00:00Z', expected a time after --start "
                                 "2025-06-01T00:05:00Z"), out.output


def test_a_replay_window_outside_the_paths_names_the_window_and_their_spans(
        tmp_path: Path) -> None:
    """Before: 'expected price paths with at least two common timestamps', about the files,
    for a --start in 2030 on paths of 2025; now the window, and what the paths cover."""
    portfolio, market, path = _replay_inputs(tmp_path)
    out = runner.invoke(app, ["liquidate", str(portfolio), "--market", str(market), "--path",
                              f"BTC={path}", "--start", "2030-01-01T00:00:00Z"])
    assert out.exit_code == 2, out.output
    assert out.output.startswith(
        "margin-engine: error: field '--start': got '2030-01-01T00:00:00Z to their end', "
        "expected a window holding at least two common timestamps of the paths (btc.csv "
        "2025-06-01T00:00:00Z to 2025-06-01T00:05:00Z)"), out.output
    other = tmp_path / "eth.csv"
    other.write_text("date,open,high,low,close,volume\n2025-07-01 00:00:00+00:00,1,1,1,2000,1\n"
                     "2025-07-01 00:05:00+00:00,1,1,1,1900,1\n")
    out = runner.invoke(app, ["liquidate", str(portfolio), "--market", str(market), "--path",
                              f"BTC={path}", "--path", f"ETH={other}"])
    assert out.exit_code == 2, out.output
    assert "(their spans: btc.csv 2025-06-01T00:00:00Z to 2025-06-01T00:05:00Z; eth.csv " \
        "2025-07-01T00:00:00Z to 2025-07-01T00:05:00Z)" in out.output


@pytest.mark.parametrize(("command", "option", "value", "says"), [
    ("liquidate", "--insurance-fund", "1e308", "of magnitude <= 1e+15"),
    ("liquidate", "--latency-seconds", "inf", "a finite number >= 0"),
    ("liquidate", "--penalty-rate", "inf", "a finite number >= 0 <= 1"),
    ("liquidate", "--penalty-rate", "5", "a finite number >= 0 <= 1"),
    ("cascade", "--insurance-fund", "1e308", "of magnitude <= 1e+15"),
    ("cascade", "--penalty-rate", "1.5", "a finite number >= 0 <= 1"),
    ("crashes", "--latency-seconds", "1e308", "of magnitude <= 1e+15"),
])
def test_liquidation_settings_given_as_options_are_checked_as_in_the_configuration(
        tmp_path: Path, command: str, option: str, value: str, says: str) -> None:
    """typer's min=0 let inf and 1e308 through, where the risk configuration refuses them.
    Before: an insurance fund of 1e308 was a decimal.InvalidOperation traceback from the
    ledger; an infinite latency, or a penalty of 500 % of the closed notional, ran."""
    portfolio, market, path = _replay_inputs(tmp_path)
    args = {"liquidate": ["liquidate", str(portfolio), "--market", str(market), "--path",
                          f"BTC={path}"],
            "cascade": ["simulate", "cascade", "--shock", "usdc-2023", "--population", "50",
                        "--output", str(tmp_path / "out")],
            "crashes": ["simulate", "crashes", "--accounts", "10"]}[command]
    out = runner.invoke(app, [*args, option, value], env={"COLUMNS": "200"})
    assert out.exit_code == 2, out.output
    assert out.output.startswith(f"margin-engine: error: field '{option}': got "), out.output
    assert says in out.output
    assert "Traceback" not in out.output


@pytest.mark.parametrize(("args", "option", "value"), [
    (["monitor", "--population", "5"], "--speed", "nan"),
    (["monitor", "--population", "5"], "--speed", "-1"),
    (["monitor", "--population", "5"], "--idle-seconds", "-1"),
    (["monitor", "--population", "5"], "--max-outage", "inf"),
    (["market", "from-deribit", "chain.csv"], "--min-days", "nan"),
    (["market", "from-deribit", "chain.csv"], "--vega-cut", "-1"),
    (["keys", "create", "--scope", "read"], "--rate", "inf"),
    (["keys", "create", "--scope", "read"], "--burst", "inf"),
    # (an address not this machine's: were the number taken, serve would stop there, not run)
    (["serve", "--host", "192.0.2.1"], "--rate", "inf"),
    (["serve", "--host", "192.0.2.1"], "--burst", "1e308"),
])
def test_numbers_typer_lets_through_are_refused_by_the_option(
        tmp_path: Path, args: list[str], option: str, value: str) -> None:
    """nan, inf, 1e308 and negative numbers where typer checked nothing or only a minimum.
    Before: a key created with --rate inf made `keys list --json` fail with a traceback (no
    JSON for an infinite number); a replay speed of nan or -1 ran; --max-outage inf was a
    reconnect count of infinity; --min-days nan skipped nothing without a word."""
    market = args[0] == "market"
    store = [] if market else ["--store", f"sqlite:{tmp_path / 's.db'}"]
    feed = ["--feed", "file:BTC=unused.csv"] if args[0] == "monitor" else []
    args = [str(tmp_path / a) if a.endswith(".csv") else a for a in args]
    (tmp_path / "chain.csv").write_text("instrument_name,mark_iv\n")  # (never read)
    out = runner.invoke(app, [*args, *store, *feed, option, value], env={"COLUMNS": "200"})
    assert out.exit_code == 2, out.output
    assert out.output.startswith(f"margin-engine: error: field '{option}': got "), out.output
    assert "expected a finite number" in out.output
    if not market:
        listed = runner.invoke(app, ["keys", "list", *store, "--json"])
        assert "Traceback" not in listed.output


def test_keys_list_and_revoke_read_an_existing_store_only(tmp_path: Path) -> None:
    """Before: `keys list --store sqlite:DIR/x.db` on a typo made DIR and an empty store and
    printed nothing; a store path holding another kind of file was a DatabaseError
    traceback."""
    missing = tmp_path / "nowhere" / "x.db"
    out = runner.invoke(app, ["keys", "list", "--store", f"sqlite:{missing}"])
    assert out.exit_code == 2
    assert "expected an existing store (`margin-engine keys create` makes one)" in out.output
    assert not missing.parent.exists()
    out = runner.invoke(app, ["keys", "revoke", "abc", "--store", f"sqlite:{missing}"])
    assert out.exit_code == 2
    other = tmp_path / "book.csv"
    other.write_text("account,instrument,size,entry_price\n" * 20)
    out = runner.invoke(app, ["keys", "list", "--store", f"sqlite:{other}"])
    assert out.exit_code == 2
    assert "expected a SQLite database file (file is not a database)" in out.output
    assert "Traceback" not in out.output
    store = tmp_path / "made" / "service.db"
    made = runner.invoke(app, ["keys", "create", "--scope", "read", "--store", f"sqlite:{store}",
                               "--json"])
    assert made.exit_code == 0, made.output
    key_id = json.loads(made.stdout)["key_id"]
    assert runner.invoke(app, ["keys", "revoke", key_id, "--store",
                               f"sqlite:{store}"]).exit_code == 0
    listed = runner.invoke(app, ["keys", "list", "--store", f"sqlite:{store}"])
    assert listed.exit_code == 0
    assert "revoked" in listed.output


def test_serve_refuses_a_bad_store_before_it_starts(tmp_path: Path) -> None:
    """Before: uvicorn started and its start-up failed with a traceback (exit code 3) for a
    store path holding another kind of file; an unreachable PostgreSQL server's error ran
    over two lines (libpq's hint)."""
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    other = tmp_path / "book.csv"
    other.write_text("account,instrument,size,entry_price\n" * 20)
    out = runner.invoke(app, ["serve", "--store", f"sqlite:{other}", "--port",
                              str(free_port())])
    assert out.exit_code == 2
    assert out.output.startswith("margin-engine: error: field '--store'")
    assert "a SQLite database file (file is not a database)" in out.output
    closed = free_port()
    out = runner.invoke(app, ["serve", "--store", f"postgresql://127.0.0.1:{closed}/test",
                              "--port", str(free_port())])
    assert out.exit_code == 2
    assert "a reachable PostgreSQL server" in out.output
    assert out.output.strip().count("\n") == 0

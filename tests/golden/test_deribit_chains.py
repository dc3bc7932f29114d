"""Fits on every Deribit chain in ../shared/data (skipped without it), the engine's option marks
against Deribit's, and the readers' rules."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from margin_engine.cli.app import app
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.io.market_file import load_market
from margin_engine.pricing.black76 import greeks
from margin_engine.pricing.implied import implied_vol_with_reason
from margin_engine.vol.commands import fit_files, liquid_rmse
from margin_engine.vol.deribit import read_deribit_file
from margin_engine.vol.market_builder import expiry_code
from tests.conftest import SHARED, account, bind, portfolio_doc

DATA = SHARED / "data"
CHAINS = {  # file -> highest median RMSE (vol points) accepted on its liquid expiries
    "deribit_btc_option_chain_2020-05-14.csv": 1.0,
    "deribit_btc_option_chain_2020-05-21.csv": 1.0,
    "deribit_eth_book_summary_2024-01-08.csv": 1.0,
    "deribit_btc_option_marks_2024-05-24.csv": 1.5,
    # These two carry stale marks (flat runs of one mark_iv across many strikes): reported.
    "deribit_btc_book_summary_2024-03-12.csv": 3.0,
    "deribit_eth_option_marks_2024-05-24.csv": 3.0,
}


def _data(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found (../shared/data is absent)")
    return path


@pytest.mark.parametrize(("name", "limit"), sorted(CHAINS.items()))
def test_fit_every_deribit_chain(name: str, limit: float) -> None:
    fits, _ = fit_files([str(_data(name))])
    fit = fits[0]
    liquid = liquid_rmse(fit)
    assert len(liquid) >= 5
    assert float(np.median(liquid)) <= limit
    for kind in ("butterfly_points", "calendar_points"):
        assert fit.arbitrage_after[kind] <= fit.arbitrage_before[kind]
    assert all(s.source != "ssvi" or s.rmse_vol_points < 5 for s in fit.slices)


def test_all_liquid_expiries_median_within_one_vol_point() -> None:
    rmse = [r for name in CHAINS for r in liquid_rmse(fit_files([str(_data(name))])[0][0])]
    assert float(np.median(rmse)) <= 1.0


def test_censored_marks_are_dropped_and_counted() -> None:
    quotes = read_deribit_file(_data("deribit_btc_book_summary_2024-03-12.csv"))
    assert quotes.counts["censored_iv"] == 344  # the data README: 344 rows at exactly 100.00
    assert quotes.size == 1198 - 344


def test_marks_file_forward_is_implied_by_parity() -> None:
    quotes = read_deribit_file(_data("deribit_btc_option_marks_2024-05-24.csv"))
    forwards = np.unique(quotes.forward)
    assert forwards.size > 5  # one per expiry, not the index everywhere
    assert np.all((forwards > 68000) & (forwards < 80000))  # contango over ten months


@pytest.mark.parametrize("name", ["deribit_btc_option_chain_2020-05-14.csv",
                                  "deribit_btc_option_chain_2020-05-21.csv"])
def test_usd_is_coin_times_forward_which_reproduces_deribit_mark_iv(name: str) -> None:
    """Black-76 on the row's forward, at the row's own time, inverts coin x forward to Deribit's
    ``mark_iv``; coin x index does not (Deribit's coin mark = USD price on F / F)."""
    path = _data(name)
    with path.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if float(r["mark_iv"]) != 100.0]
    quotes = read_deribit_file(path)
    coin = np.array([float(r["mark_price"]) for r in rows])
    forward = np.array([float(r["underlying_price"]) for r in rows])
    np.testing.assert_allclose(quotes.mark_usd, coin * forward)
    years = np.array([(float(r["expiration_timestamp"]) - float(r["timestamp"]))
                      for r in rows]) / 1000 / (365 * 86400)
    strike = np.array([float(r["strike"]) for r in rows])
    call = np.array([r["option_type"] == "call" for r in rows])
    keep = years * 365 > 1
    deribit = np.array([float(r["mark_iv"]) for r in rows])[keep]
    gaps = {}
    for label, usd in (("forward", coin * forward),
                       ("index", coin * np.array([float(r["index_price"]) for r in rows]))):
        vol, _ = implied_vol_with_reason(usd[keep], forward[keep], strike[keep], years[keep],
                                         call[keep])
        gaps[label] = np.abs(100 * vol - deribit)
    assert np.nanmedian(gaps["forward"]) < 0.02
    assert np.nanpercentile(gaps["forward"], 90) < 0.15
    assert np.nanmedian(gaps["index"]) > 0.1


def _option_name(underlying: str, expiry_ns: int, strike: float, call: bool) -> str:
    text = f"{strike:.0f}" if strike == int(strike) else f"{strike:g}"
    return f"{underlying}-{expiry_code(expiry_ns)}-{text}-{'C' if call else 'P'}"


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_engine_marks_reproduce_deribit_marks_within_the_fit_error(name: str,
                                                                  tmp_path: Path) -> None:
    """Market from ``market from-deribit``; a book of every fitted quote bound by the engine.

    Deribit's USD mark is the reader's conversion, coin mark x the row's forward F_row
    (``underlying_price``, or the parity forward of a marks file). The engine prices on the
    expiry's forward F (the slice's median F_row, written as the future's mark); rows fetched at
    another forward (ticker dumps span minutes, stale book-summary rows) are moved to F with
    their delta: ref = coin x F_row + delta x (F - F_row). Per expiry, the RMS of
    (engine - ref) / vega must be within the fit's RMSE (vol points) + 10 % + 0.1.
    """
    path = _data(name)
    market_path, report_path = tmp_path / "market.json", tmp_path / "report.json"
    out = CliRunner().invoke(app, ["market", "from-deribit", str(path), "--output",
                                   str(market_path), "--report", str(report_path)])
    assert out.exit_code == 0, out.output
    document = json.loads(market_path.read_text())
    report = {s["expiry"]: s for s in json.loads(report_path.read_text())["fits"][0]["slices"]}
    quotes = read_deribit_file(path)
    fits, at_ns = fit_files([str(path)])  # the same fit, for which quotes it used
    assert document["timestamp"] == ns_to_iso(at_ns)
    u = quotes.underlying
    names = {int(i): _option_name(u, int(quotes.expiry_ns[i]), float(quotes.strike[i]),
                                  bool(quotes.is_call[i]))
             for s in fits[0].slices for i in s.rows}
    bound = bind(portfolio_doc(account("a", [(n, 1.0, 0.0) for n in names.values()],
                                       collateral={u: 1})), document)
    where = {i.name: row for row, i in enumerate(bound.book.instruments.instruments)}
    index = document["underlyings"][u]["index"]
    for s in fits[0].slices:
        code = expiry_code(s.expiry_ns)
        assert report[code]["rmse_vol_points"] == pytest.approx(s.rmse_vol_points, abs=1e-12)
        inst = np.array([where[names[int(i)]] for i in s.rows])
        strike, call = quotes.strike[s.rows], quotes.is_call[s.rows]
        forward = bound.base_price[inst]
        assert np.all(forward == document["marks"][f"{u}-{code}"])
        assert s.forward == forward[0]
        # The slice read at ln(K / index) is the fit at ln(K / F).
        np.testing.assert_allclose(bound.sigma[inst], np.sqrt(
            s.svi.total_variance(np.log(strike / s.forward)) / s.years), rtol=1e-9)
        assert np.log(s.forward / index) == pytest.approx(
            document["underlyings"][u]["vol"]["slices"][code]["m"] - s.svi.m, abs=1e-12)
        g = greeks(s.forward, strike, s.years, bound.sigma[inst], call)
        ref = quotes.mark_usd[s.rows] + g["delta"] * (s.forward - quotes.forward[s.rows])
        error = (bound.mark[inst] - ref) / (g["vega"] / 100)
        rms = float(np.sqrt(np.mean(error**2)))
        assert rms <= 1.1 * s.rmse_vol_points + 0.1, (code, rms, s.rmse_vol_points)


WRITE_CHAIN_HEADER = ("expiration_timestamp,option_type,instrument_name,strike,underlying_price,"
                      "timestamp,mark_price,mark_iv,index_price,best_bid_price,best_ask_price,"
                      "bid_iv\n")


def _chain_file(tmp_path: Path, typo: bool = False) -> Path:
    """A small ticker-layout chain: 30 days, strikes 8,000-12,000, mark vol 60 %."""
    from margin_engine.pricing.black76 import price

    expiry_ms = 1_592_812_800_000  # 2020-06-22T08:00:00Z
    now_ms = expiry_ms - 30 * 86_400_000
    forward = 10_000.0
    lines = [WRITE_CHAIN_HEADER]
    for strike in range(8000, 12001, 250):
        for right in ("C", "P"):
            coin = float(price(forward, strike, 30 / 365, 0.6, right == "C")) / forward
            listed = strike / 10 if typo and strike == 9000 else strike
            name = f"BTC-22JUN20-{strike}-{right}"
            lines.append(f"{expiry_ms},{'call' if right == 'C' else 'put'},{name},{listed},"
                         f"{forward},{now_ms},{coin},60.0,{forward - 5},{coin * 0.97},"
                         f"{coin * 1.03},55\n")
    path = tmp_path / "chain.csv"
    path.write_text("".join(lines))
    return path


def test_reader_converts_coin_to_usd_and_finds_strike_typos(tmp_path: Path) -> None:
    quotes = read_deribit_file(_chain_file(tmp_path, typo=True))
    assert quotes.counts["strike_typos"] == 2  # 9000 listed as 900 on the call and the put
    assert 9000.0 in quotes.strike  # the instrument name wins
    fits, _ = fit_files([str(tmp_path / "chain.csv")])
    (only,) = fits[0].slices
    assert only.rmse_vol_points < 1e-3
    assert np.allclose(only.market_vol, 0.6)  # decimals inside, from USD = coin x forward


def test_unknown_layout_and_missing_file_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="Deribit"):
        read_deribit_file(bad)
    with pytest.raises(InputError, match="existing file"):
        read_deribit_file(tmp_path / "nope.csv")


def test_market_from_deribit_cli_feeds_the_margin_models(tmp_path: Path) -> None:
    chain = _chain_file(tmp_path)
    market_path = tmp_path / "market.json"
    runner = CliRunner()
    out = runner.invoke(app, ["market", "from-deribit", str(chain), "--output", str(market_path),
                              "--report", str(tmp_path / "report.json")])
    assert out.exit_code == 0, out.output
    market = load_market(market_path)
    assert market.underlyings["BTC"].index == 9995.0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["fits"][0]["slices"][0]["expiry"] == "22JUN20"
    portfolio = tmp_path / "p.json"
    portfolio.write_text(json.dumps({"schema": "margin-engine/portfolio/v1", "accounts": [
        {"id": "a", "mode": "portfolio", "collateral": {"BTC": 1},
         "positions": [{"instrument": "BTC-22JUN20-9000-P", "size": -1, "entry_price": 200}]}]}))
    out = runner.invoke(app, ["compute", str(portfolio), "--market", str(market_path), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["accounts"][0]["initial_margin"] > 0
    out = runner.invoke(app, ["vol", "plot", str(chain), "--output", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "smiles_chain.png").stat().st_size > 10_000


def test_vol_bench_json() -> None:
    out = CliRunner().invoke(app, ["vol", "bench", "--quotes", "400", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["quotes"] == 400
    assert result["median_rmse_vol_points"] < 0.5

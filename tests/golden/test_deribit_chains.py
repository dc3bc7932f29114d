"""Fits on every Deribit chain in ../shared/data (skipped without it), and the readers' rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from margin_engine.cli.app import app
from margin_engine.core.errors import InputError
from margin_engine.io.market_file import load_market
from margin_engine.vol.commands import fit_files, liquid_rmse
from margin_engine.vol.deribit import read_deribit_file
from tests.conftest import SHARED

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

"""Ticker dumps joined with instrument fields and no snapshot-time column: read with ``--at``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from margin_engine.cli.app import app
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import expiry_code_to_ns, parse_timestamp, year_fraction
from margin_engine.pricing.black76 import price
from margin_engine.vol.commands import fit_files
from margin_engine.vol.deribit import read_deribit_file
from margin_engine.vol.synthetic import TRUE_SURFACE
from tests.conftest import account, bind, portfolio_doc

AT = "2024-03-08T08:00:00Z"
INDEX = 60_000.0
FORWARDS = {"15MAR24": 60_100.0, "29MAR24": 60_400.0, "28JUN24": 62_000.0}
# public/get_instruments and public/ticker fields; no ticker `timestamp`. `creation_timestamp`
# is the listing time here (a book summary's snapshot column of the same name).
HEADER = ("instrument_name,kind,base_currency,quote_currency,contract_size,tick_size,"
          "creation_timestamp,expiration_timestamp,strike,option_type,state,underlying_index,"
          "underlying_price,index_price,estimated_delivery_price,mark_price,mark_iv,"
          "best_bid_price,best_bid_amount,best_ask_price,best_ask_amount,last_price,"
          "open_interest,interest_rate")


def _known_vol(forward: float, strike: np.ndarray, years: float) -> np.ndarray:
    """The generating smile: the synthetic SSVI surface, ATM total variance 0.36 T (60 %)."""
    theta = 0.36 * years
    return np.sqrt(TRUE_SURFACE.total_variance(np.log(strike / forward), theta) / years)


def _chain(tmp_path: Path) -> tuple[Path, list[dict[str, float | str | bool]]]:
    """Nine strikes (+/-2 ATM standard deviations) x call/put on three expiries."""
    at = parse_timestamp(AT, field="at")
    listed_ms = (at - 40 * 86_400 * 10**9) // 10**6
    lines, quotes = [HEADER], []
    for code, forward in FORWARDS.items():
        expiry = expiry_code_to_ns(code)
        years = year_fraction(at, expiry)
        strikes = np.unique(np.round(forward * np.exp(np.linspace(-2, 2, 9) * 0.6
                                                      * np.sqrt(years)), -2))
        vols = _known_vol(forward, strikes, years)
        for strike, vol in zip(strikes, vols, strict=True):
            for right in ("C", "P"):
                call = right == "C"
                coin = float(price(forward, strike, years, vol, call)) / forward
                name = f"BTC-{code}-{strike:.0f}-{right}"
                lines.append(",".join(str(v) for v in (
                    name, "option", "BTC", "BTC", 1.0, 0.0001, listed_ms, expiry // 10**6,
                    strike, "call" if call else "put", "open", f"BTC-{code}", forward, INDEX,
                    INDEX, f"{coin:.8f}", f"{vol * 100:.4f}", f"{coin * 0.98:.8f}", 5.0,
                    f"{coin * 1.02:.8f}", 5.0, f"{coin:.4f}", 12.5, 0.0)))
                quotes.append({"name": name, "call": call, "strike": float(strike),
                               "forward": forward, "coin": coin, "vol": float(vol)})
    path = tmp_path / "btc_ticker_instruments.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, quotes


def test_reader_detects_the_layout_and_has_no_snapshot_time(tmp_path: Path) -> None:
    path, quotes = _chain(tmp_path)
    read = read_deribit_file(path)
    assert read.snapshot_ns is None  # not the listing time in creation_timestamp
    assert read.index == INDEX
    assert read.size == len(quotes)
    coin = np.array([q["coin"] for q in quotes])
    forward = np.array([q["forward"] for q in quotes])
    np.testing.assert_allclose(read.forward, forward)
    np.testing.assert_allclose(read.mark_usd, coin * forward, atol=1e-3)  # coin x forward
    assert np.isfinite(read.bid_usd).all()
    assert np.isfinite(read.ask_usd).all()


def test_fit_needs_at_and_then_recovers_the_known_vol(tmp_path: Path) -> None:
    path, quotes = _chain(tmp_path)
    with pytest.raises(InputError, match="--at TIMESTAMP"):
        fit_files([str(path)])
    fits, at_ns = fit_files([str(path)], at=AT)
    assert at_ns == parse_timestamp(AT, field="at")
    fit = fits[0]
    assert [s.forward for s in fit.slices] == list(FORWARDS.values())
    for s in fit.slices:
        strikes = s.forward * np.exp(s.k)
        np.testing.assert_allclose(s.market_vol, _known_vol(s.forward, strikes, s.years),
                                   atol=1e-6)
        assert s.quotes >= 5
        assert s.rmse_vol_points < 1e-3


def test_cli_with_and_without_at(tmp_path: Path) -> None:
    path, quotes = _chain(tmp_path)
    runner = CliRunner()
    market_path = tmp_path / "market.json"
    out = runner.invoke(app, ["market", "from-deribit", str(path), "--output", str(market_path)])
    assert out.exit_code == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--at TIMESTAMP" in lines[0]
    assert str(path) in lines[0]
    assert not market_path.exists()

    out = runner.invoke(app, ["market", "from-deribit", str(path), "--at", AT,
                              "--output", str(market_path)])
    assert out.exit_code == 0, out.output
    document = json.loads(market_path.read_text())
    assert document["timestamp"] == AT
    assert document["marks"] == {f"BTC-{code}": f for code, f in FORWARDS.items()}
    assert document["underlyings"]["BTC"]["index"] == INDEX
    # The engine prices each option on its expiry's forward at the surface's vol: Deribit's
    # USD mark (coin x forward) back, up to the 1e-8 BTC rounding of the coin marks.
    bound = bind(portfolio_doc(account("a", [(str(q["name"]), 1.0, 0.01) for q in quotes],
                                       collateral={"BTC": 1})), document)
    names = [i.name for i in bound.book.instruments.instruments]
    for q in quotes:
        row = names.index(str(q["name"]))
        assert bound.base_price[row] == q["forward"]
        assert bound.sigma[row] == pytest.approx(q["vol"], abs=1e-5)
        assert bound.mark[row] == pytest.approx(float(q["coin"]) * float(q["forward"]),
                                                abs=2e-3)

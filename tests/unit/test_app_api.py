"""The public Python API and the service's pure parts: typed results that round-trip the
`compute --json` contract, what-if order merging, token buckets, API keys and field paths."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import margin_engine
from margin_engine.app.compute import ModelChoice
from margin_engine.app.results import MarginReport
from margin_engine.app.whatif import Order, merge_orders, what_if
from margin_engine.cli.app import app as cli
from margin_engine.core.errors import InputError
from margin_engine.domain.instruments import Instrument, InstrumentKind, Settlement
from margin_engine.io.market_file import parse_market
from margin_engine.margin.registry import ALL_MODEL_NAMES
from margin_engine.service.keys import Scope, parse_scopes, scrypt, split_token
from margin_engine.service.problems import input_error_path
from margin_engine.service.ratelimit import RateLimiter, retry_after
from tests.conftest import account, market_doc, portfolio_doc

runner = CliRunner()
BOOK = portfolio_doc(
    account("hedged", [("BTC-PERP", 1, 64000), ("BTC-27JUN25-75000-C", -1, 900)]),
    account("iso", [("ETH-PERP", 10, 2400)], mode="isolated"),
    account("pair", [("BTC-PERP", 0.5, 50000), ("ETH-PERP", -12, 2100)],
            collateral={"USDC": 30000, "BTC": 0.2}, mode="cross"))


def test_model_choices_are_the_registry_models_and_account() -> None:
    assert {m.value for m in ModelChoice} == {*ALL_MODEL_NAMES, "account"}


@pytest.mark.parametrize("model", ["account", "isolated", "cross", "portfolio", "sensitivity"])
def test_public_compute_equals_cli_json_and_round_trips(tmp_path: Path, model: str) -> None:
    portfolio, market = tmp_path / "p.json", tmp_path / "m.json"
    portfolio.write_text(json.dumps(BOOK))
    market.write_text(json.dumps(market_doc()))
    # liquidation prices (root searches) for one model: the slow part
    liquidation = "on" if model == "account" else "off"
    out = runner.invoke(cli, ["compute", str(portfolio), "--market", str(market), "--json",
                              "--explain", "--model", model, "--liquidation-prices", liquidation])
    assert out.exit_code == 0, out.output
    want = json.loads(out.stdout)
    report = margin_engine.compute(portfolio, market, model=model, explain=True,
                                   liquidation=liquidation)
    assert report.to_json() == want  # the same function: equal to the last bit
    assert MarginReport.from_json(want).to_json() == want
    if model == "isolated":  # documents in, the same numbers as files in
        from_documents = margin_engine.compute(BOOK, market_doc(), model=model, explain=True,
                                               liquidation="off")
        assert from_documents.to_json() == want
    hedged = report.account("hedged")
    assert hedged.explanation is not None
    assert hedged.explanation.account == "hedged"
    assert hedged.excess == hedged.adjusted_equity - hedged.initial_margin


def _perp(inverse: bool = False) -> Instrument:
    return Instrument(name="BTC-PERP", kind=InstrumentKind.PERPETUAL, underlying="BTC",
                      settlement=Settlement.INVERSE if inverse else Settlement.LINEAR,
                      contract_size=10.0 if inverse else 1.0)


def test_orders_merge_keeping_every_pnl() -> None:
    market = parse_market(market_doc())
    declared = {"BTC-PERP": _perp()}
    # adding 1 at 52,000 to 2 at 49,000: (2 x 49,000 + 52,000) / 3 = 50,000
    merged, cash = merge_orders({"BTC-PERP": (2.0, 49000.0)},
                                [Order(instrument="BTC-PERP", size=1, price=52000)],
                                declared, market)
    assert merged == {"BTC-PERP": (3.0, 50000.0)}
    assert cash == 0.0
    # selling 0.5 of them at 51,000 realises 0.5 x (51,000 - 49,000) = 1,000
    merged, cash = merge_orders({"BTC-PERP": (2.0, 49000.0)},
                                [Order(instrument="BTC-PERP", size=-0.5, price=51000)],
                                declared, market)
    assert merged == {"BTC-PERP": (1.5, 49000.0)}
    assert cash == pytest.approx(1000.0)
    # selling 3: closes 2 (realising 2 x 2,000) and opens 1 short at 51,000
    merged, cash = merge_orders({"BTC-PERP": (2.0, 49000.0)},
                                [Order(instrument="BTC-PERP", size=-3, price=51000)],
                                declared, market)
    assert merged == {"BTC-PERP": (-1.0, 51000.0)}
    assert cash == pytest.approx(4000.0)
    merged, cash = merge_orders({"BTC-PERP": (2.0, 49000.0)},
                                [Order(instrument="BTC-PERP", size=-2, price=48000)],
                                declared, market)
    assert merged == {}
    assert cash == pytest.approx(-2000.0)
    # inverse: P&L in 1 / price, so the average entry is harmonic: 3 / (2/40k + 1/60k) = 45k
    merged, _ = merge_orders({"BTC-PERP": (2.0, 40000.0)},
                             [Order(instrument="BTC-PERP", size=1, price=60000)],
                             {"BTC-PERP": _perp(inverse=True)}, market)
    assert merged["BTC-PERP"][1] == pytest.approx(45000.0, rel=1e-15)


def test_what_if_equity_moves_by_the_fill_pnl_at_the_mark() -> None:
    market = parse_market(market_doc())  # BTC at 50,000
    holder = account("a", [("BTC-PERP", 2, 49000)], collateral={"USDC": 20000}, mode="cross")
    result = what_if(holder, [Order(instrument="BTC-PERP", size=-3, price=50500)], market,
                     model="cross")
    # -3 x (50,000 - 50,500) = +1,500: 4,000 realised into USD, 1 short at 50,500 open
    assert result.change.equity == pytest.approx(1500.0, rel=1e-12)
    assert result.realised_pnl == pytest.approx(3000.0)
    assert result.after.underlyings["BTC"].delta == pytest.approx(-1.0)
    with pytest.raises(InputError) as caught:
        what_if(holder, [Order(instrument="BTC-PERP", size=0, price=1)], market)
    assert caught.value.field == "orders[0].size"
    with pytest.raises(InputError) as caught:
        what_if(holder, [Order(instrument="SOL-PERP", size=1, price=1)], market)
    assert caught.value.field == "orders[0].instrument"


@pytest.mark.parametrize(("size", "price", "field"), [
    (True, 50500, "orders[0].size"), (1, False, "orders[0].price"),
    (1e300, 50500, "orders[0].size"), (1, 1e300, "orders[0].price"),
    (float("inf"), 50500, "orders[0].size"), (1, -0.5, "orders[0].price")])
def test_what_if_refuses_orders_that_are_no_numbers_or_too_large(
        size: object, price: object, field: str) -> None:
    """Before: true was an order of 1 contract and 1e300 contracts gave an infinite margin."""
    market = parse_market(market_doc())
    holder = account("a", [("BTC-PERP", 2, 49000)], collateral={"USDC": 20000}, mode="cross")
    with pytest.raises(InputError) as caught:
        what_if(holder, [Order(instrument="BTC-PERP", size=size, price=price)],  # type: ignore[arg-type]
                market)
    assert caught.value.field == field
    assert caught.value.value is size or caught.value.value is price


@pytest.mark.parametrize("name", ["BTC-1JAN20-50000-C", "BTC-1JAN20"])
def test_what_if_refuses_an_order_on_an_expired_instrument(name: str) -> None:
    """Before: an order on an option that expired in 2020 was taken and margined (settled at
    its intrinsic value). Positions held in it stay (settled); new orders are refused."""
    market = parse_market(market_doc())
    holder = account("a", [("BTC-PERP", 2, 49000)], collateral={"USDC": 20000}, mode="cross")
    with pytest.raises(InputError, match="it expired at 2020-01-01T08:00:00") as caught:
        what_if(holder, [Order(instrument=name, size=1, price=100)], market)
    assert caught.value.field == "orders[0].instrument"


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.take("k", 2.0, 3.0) for _ in range(3)] == [None, None, None]
    wait = limiter.take("k", 2.0, 3.0)
    assert wait == pytest.approx(0.5)
    assert retry_after(wait) == "1"
    now[0] = 0.5
    assert limiter.take("k", 2.0, 3.0) is None
    assert limiter.take("other", 2.0, 3.0) is None  # one bucket per key
    assert retry_after(2.01) == "3"


def test_scopes_keys_and_hashes() -> None:
    assert parse_scopes("trade") == {Scope.READ, Scope.TRADE}
    assert parse_scopes("read, admin") == set(Scope)
    with pytest.raises(InputError):
        parse_scopes("write")
    token = "me.0123456789abcdef." + "A" * 43
    assert split_token(token) == ("0123456789abcdef", "A" * 43)
    assert split_token("me.0123.short") is None
    salt = b"0" * 16
    assert scrypt("secret", salt) == scrypt("secret", salt) != scrypt("secret", b"1" * 16)
    assert len(scrypt("secret", salt)) == 32


def test_input_errors_map_to_request_paths() -> None:
    document: dict[str, Any] = {"accounts": [{"id": "x"}, {"id": "y"}]}
    error = InputError("a number", field="portfolio.size", value="1x", account="y", position=3)
    assert input_error_path(error, {"portfolio": document}) == \
        "portfolio.accounts[1].positions[3].size"
    market = InputError("> 0", field="market.underlyings.BTC.index", value=-1)
    assert input_error_path(market, {"market": {}}) == "market.underlyings.BTC.index"


def test_liquidation_distance_helpers() -> None:
    pair = portfolio_doc(BOOK["accounts"][2])
    levels = margin_engine.compute(pair, market_doc(), model="cross").accounts[0]\
        .liquidation_prices()
    assert set(levels) == {"BTC", "ETH"}
    for cell in levels.values():
        distance = cell.nearest_distance_pct
        assert distance is None or math.isfinite(distance)


def test_the_public_api_docstring_example_runs() -> None:
    import doctest

    result = doctest.testmod(margin_engine, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8
    assert result.failed == 0


def test_serve_refuses_a_model_it_cannot_run(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["serve", "--model", "var", "--store",
                                 f"sqlite:{tmp_path / 's.db'}"])
    assert result.exit_code == 2
    assert "--model" in result.output


def test_serve_on_a_port_in_use_is_one_error_by_the_option(tmp_path: Path) -> None:
    """Before: uvicorn started, logged '[Errno 98] ... address already in use' among its
    start-up lines and exited with code 3."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = runner.invoke(cli, ["serve", "--port", str(port), "--store",
                                     f"sqlite:{tmp_path / 's.db'}"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        f"margin-engine: error: field '--port': got {port}, expected an address this server "
        f"can listen on (port {port} on 127.0.0.1 is in use by another program)"), result.output
    assert not (tmp_path / "s.db").exists()  # nothing created


def test_serve_on_an_address_of_another_machine_names_the_host(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["serve", "--host", "192.0.2.1", "--store",
                                 f"sqlite:{tmp_path / 's.db'}"])
    assert result.exit_code == 2, result.output
    assert "field '--host': got '192.0.2.1'" in result.output
    assert "192.0.2.1 is not an address of this machine" in result.output


def test_serve_says_when_its_store_is_new(tmp_path: Path) -> None:
    """A store path that does not exist (a typo, or a first start) is served as a new,
    empty store: said on stderr before the server starts (before: nothing said)."""
    import subprocess
    import sys

    store = f"sqlite:{tmp_path / 'typo.db'}"
    command = Path(sys.executable).parent / "margin-engine"
    server = subprocess.Popen([str(command), "serve", "--port", "0", "--store", store],
                              stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        first = server.stderr.readline()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert first.startswith(f"note: {tmp_path / 'typo.db'} did not exist: serving a new, "
                            "empty store"), first
    assert f"keys create --store {store}" in first

"""Every bad input is refused whole, and the message names where, what and what was expected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from margin_engine.core.errors import InputError
from margin_engine.io.market_file import load_market, parse_market
from margin_engine.io.portfolio_file import load_portfolio, parse_portfolio
from tests.conftest import account, bind, market_doc, portfolio_doc


def refusal(portfolio: dict[str, Any], market: dict[str, Any] | None = None) -> str:
    with pytest.raises(InputError) as caught:
        bind(portfolio, market)
    return str(caught.value)


def test_unknown_instrument_names_account_position_field_value() -> None:
    msg = refusal(portfolio_doc(account("a1", [("BTC-PERP", 1, 50000), ("BTC-FOO", 1, 1)])))
    assert "account 'a1'" in msg
    assert "position 1" in msg
    assert "'instrument'" in msg
    assert "'BTC-FOO'" in msg
    assert "shorthand" in msg


def test_impossible_expiry_date_is_refused() -> None:
    msg = refusal(portfolio_doc(account("a1", [("BTC-31FEB25", 1, 50000)])))
    assert "position 0" in msg
    assert "not a calendar date" in msg


def test_settlement_for_a_future_expiry_is_refused() -> None:
    from margin_engine.io.market_file import parse_market

    with pytest.raises(InputError) as info:
        parse_market(market_doc(settlements={"BTC-27JUN25": 60000}))
    assert "settlements.BTC-27JUN25" in str(info.value)
    assert "at or before the market time" in str(info.value)
    with pytest.raises(InputError, match="UNDERLYING-EXPIRY"):
        parse_market(market_doc(settlements={"BTC-30MAY25-50000-C": 60000}))


@pytest.mark.parametrize("bad", ["abc", "", "1,5", True, None, [1]])
def test_bad_number_is_refused(bad: Any) -> None:
    doc = portfolio_doc(account("a1", [("BTC-PERP", 1, 50000)]))
    doc["accounts"][0]["positions"][0]["size"] = bad
    with pytest.raises(InputError) as caught:
        parse_portfolio(doc)
    msg = str(caught.value)
    assert "account 'a1'" in msg
    assert "position 0" in msg
    assert "'size'" in msg
    assert "expected a finite number" in msg


@pytest.mark.parametrize("bad", ["NaN", "inf", "-Infinity", "1e400", float("nan")])
def test_nan_and_infinity_are_refused(bad: Any) -> None:
    doc = portfolio_doc(account("a1", [("BTC-PERP", 1, 50000)]))
    doc["accounts"][0]["positions"][0]["entry_price"] = bad
    with pytest.raises(InputError, match="entry_price"):
        parse_portfolio(doc)


def test_nan_literal_in_json_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"schema": "margin-engine/portfolio/v1", "accounts": [{"id": "a", '
                    '"mode": "cross", "positions": [{"instrument": "BTC-PERP", "size": NaN, '
                    '"entry_price": 1}]}]}')
    with pytest.raises(InputError, match="NaN"):
        load_portfolio(path)


def test_negative_collateral_is_refused() -> None:
    msg = str(pytest.raises(InputError, parse_portfolio, portfolio_doc(
        account("a1", [], collateral={"USDC": "-5"}))).value)
    assert "account 'a1'" in msg
    assert "'collateral.USDC'" in msg
    assert "'-5'" in msg
    assert ">= 0" in msg


def test_unknown_asset_price_is_refused() -> None:
    msg = refusal(portfolio_doc(account("a1", [], collateral={"SOL": 10})))
    assert "account 'a1'" in msg
    assert "collateral.SOL" in msg
    assert "priced" in msg


def test_missing_vol_is_refused_only_when_options_need_it() -> None:
    market = market_doc()
    del market["underlyings"]["BTC"]["vol"]
    msg = refusal(portfolio_doc(account("a1", [("BTC-PERP", 1, 50000),
                                               ("BTC-27JUN25-60000-C", -1, 10)])), market)
    assert "position 1" in msg
    assert "missing vol" in msg
    bind(portfolio_doc(account("a1", [("BTC-PERP", 1, 50000)])), market)  # no option: fine


def test_underlying_missing_from_market_is_refused() -> None:
    msg = refusal(portfolio_doc(account("a1", [("SOL-PERP", 1, 150)])))
    assert "account 'a1'" in msg
    assert "'SOL-PERP'" in msg
    assert "no index for 'SOL'" in msg


@pytest.mark.parametrize(("schema", "expected"), [
    ("margin-engine/portfolio/v2", "version"),
    ("something/else", "margin-engine/portfolio/v1"),
    (None, "margin-engine/portfolio/v1"),
])
def test_unknown_schema_or_version_is_refused(schema: Any, expected: str) -> None:
    doc = portfolio_doc(account("a1", []))
    doc["schema"] = schema
    with pytest.raises(InputError, match=expected):
        parse_portfolio(doc)


def test_market_schema_version_is_checked() -> None:
    with pytest.raises(InputError, match="version"):
        parse_market(market_doc(schema="margin-engine/market/v9"))


@pytest.mark.parametrize("where", ["top", "account", "position", "market", "vol"])
def test_unknown_fields_are_refused(where: str) -> None:
    doc = portfolio_doc(account("a1", [("BTC-PERP", 1, 50000)]))
    market = market_doc()
    if where == "top":
        doc["extra"] = 1
    elif where == "account":
        doc["accounts"][0]["leverage"] = 5
    elif where == "position":
        doc["accounts"][0]["positions"][0]["side"] = "buy"
    elif where == "market":
        market["fundng"] = {}
    else:
        market["underlyings"]["BTC"]["vol"]["skew"] = 0.1
    with pytest.raises(InputError) as caught:
        bind(doc, market)
    assert "unknown field" in str(caught.value)


def test_percent_vol_is_refused() -> None:
    market = market_doc()
    market["underlyings"]["BTC"]["vol"]["sigma"] = 55
    with pytest.raises(InputError, match="percent"):
        parse_market(market)


def test_duplicate_account_and_duplicate_instrument_are_refused() -> None:
    with pytest.raises(InputError, match="unique account id"):
        parse_portfolio(portfolio_doc(account("a1", []), account("a1", [])))
    with pytest.raises(InputError, match="once per account"):
        parse_portfolio(portfolio_doc(account("a1", [("BTC-PERP", 1, 5e4), ("BTC-PERP", 1, 5e4)])))


def test_option_mark_in_market_is_refused() -> None:
    market = market_doc(marks={"BTC-27JUN25-60000-C": 100})
    with pytest.raises(InputError, match="Black-76"):
        bind(portfolio_doc(account("a1", [("BTC-PERP", 1, 50000)])), market)


def test_correlation_out_of_range_or_asymmetric_is_refused() -> None:
    with pytest.raises(InputError, match="<= 1"):
        parse_market(market_doc(correlation={"BTC": {"ETH": 1.5}}))
    with pytest.raises(InputError, match="symmetric"):
        parse_market(market_doc(correlation={"BTC": {"ETH": 0.5}, "ETH": {"BTC": 0.6}}))


def test_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "market.json"
    path.write_text('{"schema": "margin-engine/market/v1",\n "timestamp": }')
    with pytest.raises(InputError) as caught:
        load_market(path)
    assert str(path) in str(caught.value)
    assert "line 2" in str(caught.value)
    with pytest.raises(InputError, match="existing file"):
        load_market(tmp_path / "missing.json")


def test_numbers_may_be_strings_or_json_numbers() -> None:
    as_strings = bind(portfolio_doc(account("a1", [("BTC-PERP", "2", "49000")],
                                            collateral={"USDC": "1000.5"})))
    as_numbers = bind(json.loads(json.dumps(portfolio_doc(account(
        "a1", [("BTC-PERP", 2, 49000)], collateral={"USDC": 1000.5})))))
    assert as_strings.equity()[0] == as_numbers.equity()[0] == 1000.5 + 2 * (50000 - 49000)


@pytest.mark.parametrize("mark", [0.0001, 1e9])
def test_a_future_mark_far_from_its_index_is_refused(mark: float) -> None:
    # The 26DEC25 mark is also the forward of every 26DEC25 option: a typo would reprice them.
    doc = portfolio_doc(account("a1", [("BTC-26DEC25-60000-C", -1, 100)]))
    with pytest.raises(InputError) as caught:
        bind(doc, market_doc(marks={"BTC-26DEC25": mark}))
    assert "marks.BTC-26DEC25" in str(caught.value)
    assert "within a factor 2 of the BTC index 50,000.00" in str(caught.value)

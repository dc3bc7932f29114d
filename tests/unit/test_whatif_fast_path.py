"""The what-if's reuse of work between calls: the account's margin before the orders is kept
per account content, model, market and config (and recomputed when any of them changes), and
the what-if's numbers equal a fresh ``compute`` of the documents before and after."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from margin_engine.app import whatif
from margin_engine.app.compute import compute
from margin_engine.app.whatif import Order, what_if
from margin_engine.io.market_file import parse_market
from margin_engine.margin.config import RiskConfig
from margin_engine.service.server import no_delay
from tests.conftest import account, assert_documents_close, market_doc, portfolio_doc

HOLDER = account("h", [("BTC-PERP", 2.0, 49000.0), ("BTC-27JUN25-55000-C", -3.0, 900.0),
                       ("ETH-PERP", -20.0, 2100.0)], collateral={"USDC": 40000, "BTC": 0.5})
BUY = [Order(instrument="BTC-PERP", size=0.5, price=50100.0)]


def _after_document(result: Any) -> dict[str, Any]:
    return result.after.to_json()  # type: ignore[no-any-return]


def test_before_is_kept_for_the_same_account_market_and_config() -> None:
    market = parse_market(market_doc())
    first = what_if(HOLDER, BUY, market)
    again = what_if(HOLDER, [Order(instrument="ETH-PERP", size=1.0, price=2000.0)], market)
    assert again.before is first.before  # the same object: not recomputed
    richer = {**HOLDER, "collateral": {"USDC": 50000, "BTC": 0.5}}
    assert what_if(richer, BUY, market).before is not first.before
    assert what_if(HOLDER, BUY, parse_market(market_doc())).before is not first.before
    assert what_if(HOLDER, BUY, market, RiskConfig()).before is not first.before


def test_what_if_equals_compute_of_the_documents_before_and_after() -> None:
    """Before (kept from an earlier call) and after equal ``compute`` of each document
    (the after: the merged position at the average entry: (2 x 49,000 + 0.5 x 50,100) / 2.5
    = 49,220), liquidation prices included, to 1e-12."""
    market = parse_market(market_doc())
    what_if(HOLDER, BUY, market)  # keeps the before
    result = what_if(HOLDER, BUY, market)
    before = compute(portfolio_doc(HOLDER), market_doc(), model="portfolio",
                     liquidation="on").accounts[0]
    merged = account("h", [("BTC-PERP", 2.5, 49220.0), ("BTC-27JUN25-55000-C", -3.0, 900.0),
                           ("ETH-PERP", -20.0, 2100.0)], collateral={"USDC": 40000, "BTC": 0.5})
    after = compute(portfolio_doc(merged), market_doc(), model="portfolio",
                    liquidation="on").accounts[0]
    assert_documents_close(result.before.to_json(), before.to_json(), rel=1e-12)
    assert_documents_close(_after_document(result), after.to_json(), rel=1e-12)
    assert any(cell.liquidation is not None and cell.liquidation.nearest is not None
               for cell in result.after.underlyings.values())


def test_kept_befores_are_bounded() -> None:
    kept = whatif._Recent(2)
    for key in ("a", "b", "c"):
        kept.put(key, key)
    assert kept.get("a") is None
    assert (kept.get("b"), kept.get("c")) == ("b", "c")


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_the_shared_listener_passes_no_delay_to_its_connections(family: int) -> None:
    """Connections accepted from a listener created with protocol 0 get TCP_NODELAY only
    from the listener (Linux copies it to each accepted socket)."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    try:
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} on this machine")
    with listener, no_delay(listener):
        listener.listen(1)
        with socket.create_connection(listener.getsockname()[:2]):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1

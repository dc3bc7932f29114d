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
from margin_engine.core.kept import Recent
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
    kept = Recent(2)
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


INSTRUMENTS = ["BTC-PERP", "BTC-27JUN25", "BTC-27JUN25-55000-C", "BTC-27JUN25-45000-P",
               "BTC-26SEP25-60000-C", "ETH-PERP", "ETH-26SEP25", "ETH-27JUN25-2200-C",
               "ETH-27JUN25-1800-P"]
PRICES = {"BTC-PERP": 50000.0, "BTC-27JUN25": 50400.0, "BTC-27JUN25-55000-C": 600.0,
          "BTC-27JUN25-45000-P": 500.0, "BTC-26SEP25-60000-C": 1500.0, "ETH-PERP": 2000.0,
          "ETH-26SEP25": 2030.0, "ETH-27JUN25-2200-C": 40.0, "ETH-27JUN25-1800-P": 35.0}


def _random_case(rng: Any, usd: bool) -> tuple[dict[str, Any], list[Order]]:
    """An account of 2-6 positions (any mode, USDC, BTC and sometimes USD collateral) and
    1-3 orders on instruments it holds: adding, reducing (cash realised) and flipping."""
    import numpy as np

    names = list(rng.choice(INSTRUMENTS, size=int(rng.integers(2, 7)), replace=False))
    positions = [(n, float(rng.choice([-1, 1]) * rng.integers(1, 8) / 2),
                  PRICES[n] * float(rng.uniform(0.9, 1.1))) for n in names]
    collateral: dict[str, Any] = {"USDC": float(rng.integers(5, 200)) * 1000.0,
                                  "BTC": float(rng.integers(0, 3)) / 2}
    if usd and rng.random() < 0.5:
        collateral["USD"] = float(rng.integers(0, 50)) * 1000.0
    mode = str(rng.choice(["portfolio", "cross", "isolated"]))
    holder = account("r", positions, collateral=collateral, mode=mode)
    orders = []
    for _ in range(int(rng.integers(1, 4))):
        name = str(rng.choice(names))
        orders.append(Order(instrument=name, size=float(np.round(rng.normal(0, 2), 1)) or 0.5,
                            price=PRICES[name] * float(rng.uniform(0.95, 1.05))))
    return holder, orders


@pytest.mark.parametrize(("model", "usd_priced"), [
    ("account", True), ("portfolio", True), ("portfolio", False), ("cross", True),
    ("cross", False), ("sensitivity", True)])
def test_the_after_from_the_kept_book_equals_the_whole_way(model: str, usd_priced: bool
                                                           ) -> None:
    """Orders on instruments the account holds re-size its kept bound book instead of parsing
    and binding the merged document; the after (liquidation prices included) is bit for bit
    what the whole way gives (``account_margin`` of the merged document), over random
    accounts, modes and orders (adding, reducing with cash realised into USD, flipping)."""
    import numpy as np

    assets = {"USDC": {"price": 0.9995}, "BTC": {"price": 50000}, "ETH": {"price": 2000},
              **({"USD": {"price": 1.0}} if usd_priced else {})}
    market = parse_market(market_doc(assets=assets))
    rng = np.random.default_rng(7)
    config = RiskConfig()
    fast = 0
    for _ in range(40):
        holder, orders = _random_case(rng, usd_priced)
        whatif.forget_kept()
        whatif.what_if(holder, orders, market, config, model=model)  # keeps the bound book
        result = whatif.what_if(holder, orders, market, config, model=model)
        positions, realised = whatif.merge_orders(whatif._positions_of(holder), orders, {},
                                                  market)
        kept = whatif._kept_bound(holder, market, None, whatif._content(holder, None))
        fast += kept is not None and whatif.after_orders(
            kept, whatif._positions_of(holder), positions, realised) is not None
        whatif.forget_kept()
        whole = whatif._margin_of(
            whatif.bound_after(holder, positions, realised,
                               whatif._with_cash(market) if realised else market, None),
            config, whatif._own_model(holder, model), True)
        assert result.after.to_json() == whole.to_json()
        # the before, margined on the kept book (with its USD column), is the plain account's
        assert result.before.to_json() == whatif.account_margin(holder, market, config,
                                                                 model=model).to_json()
    assert fast >= 20  # most cases took the kept book (the others: a position closed, ...)


def test_the_kept_book_is_not_used_when_the_book_changes_shape() -> None:
    """A new instrument, a position closed to zero, or positions with their own isolated
    margin go the whole way (None here); cash realised into an account that held no USD goes
    to the kept book's USD column (0 until then)."""
    market = parse_market(market_doc(assets={"USDC": {"price": 1.0}, "USD": {"price": 1.0},
                                             "BTC": {"price": 50000}, "ETH": {"price": 2000}}))
    holder = account("h", [("BTC-PERP", 2.0, 49000.0), ("ETH-PERP", -20.0, 2100.0)],
                     collateral={"USDC": 40000})
    held = whatif._positions_of(holder)
    bound = whatif._kept_bound(holder, market, None, whatif._content(holder, None))
    assert bound is not None

    def after(orders: list[Order]) -> Any:
        positions, cash = whatif.merge_orders(held, orders, {}, market)
        return whatif.after_orders(bound, held, positions, cash)

    assert after([Order(instrument="BTC-PERP", size=1.0, price=50000.0)]) is not None
    assert after([Order(instrument="BTC-27JUN25", size=1.0, price=50000.0)]) is None  # new
    assert after([Order(instrument="ETH-PERP", size=20.0, price=2000.0)]) is None  # closed
    reduced = after([Order(instrument="BTC-PERP", size=-1.0, price=50000.0)])
    assert reduced is not None  # realised 1 x (50,000 - 49,000) = 1,000 USD
    assert reduced.book.collateral[0, reduced.book.assets.index("USD")] == 1000.0
    isolated = {**holder, "mode": "isolated", "positions": [
        {"instrument": "BTC-PERP", "size": 2.0, "entry_price": 49000.0, "margin": 20000.0}]}
    kept = whatif._kept_bound(isolated, market, None, whatif._content(isolated, None))
    assert kept is not None
    positions, cash = whatif.merge_orders(whatif._positions_of(isolated), [
        Order(instrument="BTC-PERP", size=1.0, price=50000.0)], {}, market)
    assert whatif.after_orders(kept, whatif._positions_of(isolated), positions, cash) is None


def test_instrument_columns_are_kept_per_table_and_market() -> None:
    """The columns derived from a small book's instrument table and market (scenario values,
    Greeks, the liquidation context) are reused by the next book with the same table and
    market, and derived again for another market object."""
    from margin_engine.core.kept import KEPT, KeptByIdentity

    market = parse_market(market_doc())
    whatif.forget_kept()
    what_if(HOLDER, BUY, market)
    kept = len(KEPT)
    assert kept > 0
    what_if(HOLDER, BUY, market)
    assert len(KEPT) == kept
    what_if(HOLDER, BUY, parse_market(market_doc()))
    assert len(KEPT) > kept
    small = KeptByIdentity(size=2)
    objects = [object() for _ in range(3)]
    for k, o in enumerate(objects):
        assert small.get((o,), "k", lambda k=k: k) == k
    assert len(small) == 2
    assert small.get((objects[2],), "k", lambda: -1) == 2  # kept
    assert small.get((objects[0],), "k", lambda: -1) == -1  # dropped (least recent)
    assert small.get((objects[1],), "k", lambda: -1, rows=10**6) == -1  # large: not kept


@pytest.mark.parametrize("keep", [False, True])
def test_a_realised_loss_beyond_the_usd_balance_is_a_debt(keep: bool) -> None:
    """Closing a losing position at the mark leaves equity unchanged: long 2 BTC-PERP from
    55,000, marked at the index 50,000, sold at 50,000 realises 2 x (50,000 - 55,000) =
    -10,000 USD; the account held 4,000 USD, so its USD balance is -6,000 (counted at face
    value, no haircut) and equity is the same before and after, whether the book is re-sized
    (``keep``: the account also holds ETH, so an order of 1 BTC keeps the instrument set) or
    bound again."""
    market = parse_market(market_doc(assets={"USDC": {"price": 1.0}, "USD": {"price": 1.0},
                                             "BTC": {"price": 50000}, "ETH": {"price": 2000}}))
    held = [("BTC-PERP", 2.0, 55000.0)] + ([("ETH-PERP", 1.0, 2000.0)] if keep else [])
    holder = account("h", held, collateral={"USDC": 30000, "USD": 4000})
    no_usd = account("n", held, collateral={"USDC": 30000})
    size = -1.0 if keep else -2.0
    whatif.forget_kept()
    whatif.what_if(holder, [Order(instrument="BTC-PERP", size=size, price=50000.0)], market)
    result = whatif.what_if(holder, [Order(instrument="BTC-PERP", size=size, price=50000.0)],
                            market)
    assert result.realised_pnl == size * -1 * (50000.0 - 55000.0) * 1  # -5,000 or -10,000
    assert result.after.equity == pytest.approx(result.before.equity, rel=1e-12)
    assert result.change.equity == pytest.approx(0.0, abs=1e-9)
    if not keep:
        assert result.after.initial_margin == 0.0
        assert result.after.equity == pytest.approx(30000.0 - 6000.0, rel=1e-12)
    bare = whatif.what_if(no_usd, [Order(instrument="BTC-PERP", size=size, price=50000.0)],
                          market)  # no USD before: a USD debt after
    assert bare.after.equity == pytest.approx(bare.before.equity, rel=1e-12)

"""Small books with the arithmetic written out (no shared files needed)."""

from __future__ import annotations

import math

import pytest

from margin_engine.margin.registry import get_model
from margin_engine.pricing.reference import black76_price
from tests.conftest import NO_HAIRCUTS, account, bind, market_doc, portfolio_doc

T_27JUN25 = (26 * 86400 + 8 * 3600) / (365 * 86400)  # 2025-06-01T00:00Z -> 27JUN25 08:00Z


def margins(model: str, doc: dict, market: dict | None = None) -> tuple[float, float]:
    bound = bind(doc, market)
    result = get_model(model).compute(bound, NO_HAIRCUTS)
    return float(result.initial_margin[0]), float(result.maintenance_margin[0])


def test_isolated_tiers_are_marginal() -> None:
    # 30 BTC-PERP at 50,000 = 1.5M notional: 2 % x 1M + 4 % x 0.5M = 20,000 + 20,000 = 40,000;
    # MM = 1 % x 1M + 2 % x 0.5M = 20,000.
    im, mm = margins("isolated", portfolio_doc(account("a", [("BTC-PERP", 30, 50000)])))
    assert (im, mm) == pytest.approx((40000.0, 20000.0), rel=1e-12)


def test_isolated_short_call() -> None:
    # Short 2 BTC 60,000 calls, S = 50,000: OTM = 10,000, 0.15 - 0.2 < 0.10 so rate 0.10:
    # IM = 2 x (0.10 x 50,000 + mark) = 10,000 + 2 mark; MM = 2 x (0.075 x 50,000 + mark).
    mark = black76_price(50000, 60000, T_27JUN25, 0.5, True)
    im, mm = margins("isolated", portfolio_doc(account("a", [("BTC-27JUN25-60000-C", -2, 100)])))
    assert im == pytest.approx(10000 + 2 * mark, rel=1e-12)
    assert mm == pytest.approx(7500 + 2 * mark, rel=1e-12)


def test_isolated_itm_short_put_and_long_option() -> None:
    # Short 1 put K = 55,000 (ITM by 5,000; OTM = max(0, S - K) = 0): IM = 0.15 x S + mark.
    # The long call carries no margin (premium paid).
    mark = black76_price(50000, 55000, T_27JUN25, 0.5, False)
    im, _ = margins("isolated", portfolio_doc(account("a", [
        ("BTC-27JUN25-55000-P", -1, 100), ("BTC-27JUN25-70000-C", 3, 10)])))
    assert im == pytest.approx(7500 + mark, rel=1e-12)


def test_cross_nets_and_charges_the_hedge() -> None:
    # Long 30 BTC-PERP (1.5M), short 10 BTC-26SEP25 marked 51,000 (0.51M).
    # net = 0.99M -> 2 % = 19,800; hedged = 0.51M x 1 % = 5,100; IM = 24,900 (< isolated
    # 40,000 + 10,200). MM = 9,900 + 0.5 % x 0.51M = 12,450.
    market = market_doc(marks={"BTC-26SEP25": 51000})
    doc = portfolio_doc(account("a", [("BTC-PERP", 30, 50000), ("BTC-26SEP25", -10, 51000)]))
    assert margins("cross", doc, market) == pytest.approx((24900.0, 12450.0), rel=1e-12)
    assert margins("isolated", doc, market) == pytest.approx((50200.0, 25100.0), rel=1e-12)


def test_cross_is_capped_at_isolated() -> None:
    # Two longs of 750,000 each (15 BTC-PERP, 15 BTC-26SEP25 at 50,000): isolated 2 x 15,000 =
    # 30,000; netted 1.5M would cost 2 % x 1M + 4 % x 0.5M = 40,000 > 30,000, so the cap gives
    # 30,000 (MM: 15,000).
    market = market_doc(marks={"BTC-26SEP25": 50000})
    doc = portfolio_doc(account("a", [("BTC-PERP", 15, 50000), ("BTC-26SEP25", 15, 50000)]))
    assert margins("cross", doc, market) == pytest.approx((30000.0, 15000.0), rel=1e-12)


def test_portfolio_naked_perp() -> None:
    # 2 BTC-PERP at 50,000: worst scenario -16 % -> 2 x 50,000 x 0.16 = 16,000 (the -33 %
    # extended move counts 1/3: 11,000). IM = 16,000, MM = 0.8 x 16,000 = 12,800.
    assert margins("portfolio", portfolio_doc(account("a", [("BTC-PERP", 2, 50000)]))) == \
        pytest.approx((16000.0, 12800.0), rel=1e-12)


def test_portfolio_correlated_pair_aggregation() -> None:
    # BTC long 1 perp: L_BTC = 8,000 with d = -1. ETH short 20 perps at 2,000 (40,000):
    # +16 % -> 6,400; on the extended +50 % a perp is clamped at +16 % (SPEC 3.3), x 1/3 ->
    # 2,133.33, so L_ETH = 6,400 with d = +1.
    # rho = 0.5: agg^2 = 8,000^2 + 6,400^2 + 2 x 0.5 x (-8,000)(6,400) = 53,760,000
    # agg = 7,332.12 > floor 0.5 x 14,400 = 7,200, so IM = 7,332.12.
    market = market_doc(correlation={"BTC": {"ETH": 0.5}})
    doc = portfolio_doc(account("a", [("BTC-PERP", 1, 50000), ("ETH-PERP", -20, 2000)]))
    l_btc, l_eth = 8000.0, 40000 * 0.16
    expected = math.sqrt(l_btc**2 + l_eth**2 - 2 * 0.5 * l_btc * l_eth)
    assert margins("portfolio", doc, market)[0] == pytest.approx(expected, rel=1e-12)
    # With rho = 0.9 the offset would exceed the 50 % cap: IM = 0.5 x (L_BTC + L_ETH).
    market = market_doc(correlation={"BTC": {"ETH": 0.9}})
    assert margins("portfolio", doc, market)[0] == pytest.approx(0.5 * (l_btc + l_eth),
                                                                 rel=1e-12)


def test_portfolio_contingencies() -> None:
    # Short 3 calls and long 1 put at K = 50,000 same expiry: net -2 -> 0.01 x 50,000 x 2 = 1,000.
    # Long 2 perp and short 1.5 future (mark = index): offsetting notional 75,000 -> 750.
    bound = bind(portfolio_doc(account("a", [
        ("BTC-27JUN25-50000-C", -3, 100), ("BTC-27JUN25-50000-P", 1, 100),
        ("BTC-PERP", 2, 50000), ("BTC-26SEP25", -1.5, 50000)])))
    result = get_model("portfolio").compute(bound, NO_HAIRCUTS)
    assert result.per_underlying["contingency"][0, 0] == pytest.approx(1750.0, rel=1e-12)


def test_btc_collateral_is_revalued_in_btc_scenarios() -> None:
    # 1 BTC collateral against a 1 BTC short perp: every scenario nets to 0 -> IM = 0.
    doc = portfolio_doc(account("a", [("BTC-PERP", -1, 50000)], collateral={"BTC": 1}))
    assert margins("portfolio", doc) == (0.0, 0.0)
    # 1 BTC collateral alone: worst -16 % -> 8,000 of scan risk on the collateral itself.
    doc = portfolio_doc(account("a", [], collateral={"BTC": 1}))
    assert margins("portfolio", doc)[0] == pytest.approx(8000.0, rel=1e-12)


def test_equity_uses_stablecoin_price_not_one() -> None:
    market = market_doc(assets={"USDC": {"price": 0.9}, "BTC": {"price": 50000},
                                "ETH": {"price": 2000}})
    bound = bind(portfolio_doc(account("a", [("BTC-PERP", 1, 49000)],
                                       collateral={"USDC": 1000})), market)
    assert bound.equity()[0] == pytest.approx(900 + 1000, rel=1e-15)


def test_extended_moves_clamp_linear_positions_at_the_grid_extremes() -> None:
    # SPEC 3.3: only options are re-shocked at -33 % / +50 %. A naked short perp, 1 BTC at
    # 50,000: +16 % -> 8,000; +50 % clamped at +16 %, x 1/3 -> 2,666.67: IM = 8,000, as for the
    # long (unclamped it would be 25,000 / 3 = 8,333.33).
    short = margins("portfolio", portfolio_doc(account("a", [("BTC-PERP", -1, 50000)])))
    long = margins("portfolio", portfolio_doc(account("a", [("BTC-PERP", 1, 50000)])))
    assert short[0] == pytest.approx(8000.0, rel=1e-12)
    assert long[0] == pytest.approx(8000.0, rel=1e-12)


def test_coin_collateral_is_clamped_but_short_calls_are_reshocked() -> None:
    # Short 3 BTC-27JUN25-60000-C against 1 BTC of collateral. Every scenario by hand: the calls
    # are repriced at F (1 + m) with sigma' = 0.5 (1 + k (30 / 26.33)^0.3) (T_days < 30, p = 0.3);
    # the coin moves by m on the standard grid and by +/-16 % on the extended moves (at 1/3).
    # Worst: +50 % vol up, loss = (3 (C' - C) - 8,000) / 3; unclamped it would be
    # (3 (C' - C) - 25,000) / 3, 5,666.67 less.
    scale = (30 / (T_27JUN25 * 365)) ** 0.30
    now = black76_price(50000, 60000, T_27JUN25, 0.5, True)

    def loss(move: float, k: float, coin_move: float, weight: float) -> float:
        call = black76_price(50000 * (1 + move), 60000, T_27JUN25, 0.5 * (1 + k * scale), True)
        return -weight * (50000 * coin_move - 3 * (call - now))

    standard = [loss(m / 100, k, m / 100, 1.0) for m in range(-16, 17, 4)
                for k in (-0.25, 0.0, 0.5)]
    extended = [loss(-0.33, 0.5, -0.16, 1 / 3), loss(0.50, 0.5, 0.16, 1 / 3)]
    assert extended[1] > max(standard)
    bound = bind(portfolio_doc(account("a", [("BTC-27JUN25-60000-C", -3, 100)],
                                       collateral={"BTC": 1})))
    result = get_model("portfolio").compute(bound, NO_HAIRCUTS)
    assert result.per_underlying["scan_risk"][0, 0] == pytest.approx(
        max(standard + extended), rel=1e-12)


def test_options_are_priced_on_their_expiry_forward() -> None:
    # SPEC 2: the 26DEC25 future is marked 52,000 while the index is 50,000, so a 26DEC25 call
    # is Black-76 on F = 52,000; a 26SEP25 call, with no future marked, on F = index.
    market = market_doc(marks={"BTC-26DEC25": 52000})
    t_dec = (208 * 86400 + 8 * 3600) / (365 * 86400)  # 2025-06-01 -> 2025-12-26 08:00
    t_sep = (117 * 86400 + 8 * 3600) / (365 * 86400)  # 2025-06-01 -> 2025-09-26 08:00
    bound = bind(portfolio_doc(account("a", [("BTC-26DEC25-60000-C", 1, 0),
                                             ("BTC-26SEP25-60000-C", 1, 0)])), market)
    assert bound.mark[0] == pytest.approx(black76_price(52000, 60000, t_dec, 0.5, True),
                                          rel=1e-12)
    assert bound.mark[1] == pytest.approx(black76_price(50000, 60000, t_sep, 0.5, True),
                                          rel=1e-12)
    # Delta against the index: dV/dS = dV/dF x F / S.
    from margin_engine.margin.greeks import account_greeks
    from margin_engine.pricing.reference import black76_delta

    delta = account_greeks(bound)["delta"][0, 0]
    want = black76_delta(52000, 60000, t_dec, 0.5, True) * 52000 / 50000 + black76_delta(
        50000, 60000, t_sep, 0.5, True)
    assert delta == pytest.approx(want, rel=1e-12)

"""Exact ledger conservation, collateral haircuts and the oracle guard."""

from __future__ import annotations

import math
import random
from decimal import Decimal

import numpy as np
import pytest

from margin_engine.collateral.haircuts import (
    AssetHaircut,
    CollateralConfig,
    book_deductions,
    book_haircuts,
    collateral_value,
    haircut,
    split_collateral_key,
)
from margin_engine.core.errors import InputError
from margin_engine.core.pairwise import PAIRWISE_BLOCK
from margin_engine.ledger.journal import EXTERNAL, FEES, INSURANCE_FUND, ZERO, Ledger, to_amount
from margin_engine.market.oracle import OracleConfig, OracleGuard, OracleSource

ASSETS = ("USD", "USDC", "BTC")


def _snapshot(ledger: Ledger) -> tuple[dict, int]:
    return dict(ledger.balances), len(ledger.journal)


def test_ledger_conserves_value_through_10000_random_operations() -> None:
    rng = random.Random(7)
    ledger = Ledger()
    owners = [f"a{k}" for k in range(12)]
    for owner in owners:
        ledger.open(owner)
    net_deposits = {a: ZERO for a in ASSETS}
    refused = 0
    for _ in range(10_000):
        asset = rng.choice(ASSETS)
        owner, other = rng.sample(owners, 2)
        amount = to_amount(round(rng.uniform(-50, 1000), rng.choice((2, 5, 8))))
        before = _snapshot(ledger)
        operation = rng.choice(("deposit", "withdraw", "fee", "realise", "penalty", "cover",
                                "transfer", "socialise"))
        try:
            if operation == "deposit":
                ledger.deposit(owner, asset, amount)
                net_deposits[asset] += amount
            elif operation == "withdraw":
                ledger.withdraw(owner, asset, amount)
                net_deposits[asset] -= amount
            elif operation == "fee":
                ledger.fee(owner, asset, amount)
            elif operation == "realise":
                ledger.realise(owner, asset, amount if rng.random() < 0.5 else -amount)
            elif operation == "penalty":
                ledger.penalty(owner, asset, amount)
            elif operation == "cover":
                ledger.cover_bad_debt(owner, asset)
            elif operation == "transfer":
                ledger.transfer("transfer", owner, other, asset, amount,
                                allow_negative_target=False)
            else:
                payers = {p: max(ledger.balance(p, asset), ZERO) for p in owners if p != owner}
                ledger.socialise(owner, asset, amount, payers)
        except InputError:
            refused += 1
            assert _snapshot(ledger) == before  # a refused entry changes nothing
        for a in ASSETS:
            # Every entry balances: all balances (the outside world included) sum to zero, and
            # what is inside moves only with deposits and withdrawals.
            assert ledger.total(a) == ZERO
            assert ledger.total(a, include_external=False) == net_deposits[a]
            assert ledger.balance(EXTERNAL, a) == -net_deposits[a]
    assert 500 < refused < 9_000
    assert ledger.balance(FEES, "USD") >= ZERO
    assert ledger.balance(INSURANCE_FUND, "USD") >= ZERO


def test_ledger_refuses_unbalanced_and_unknown_owner_entries() -> None:
    ledger = Ledger()
    ledger.open("a")
    with pytest.raises(InputError, match="sum to zero"):
        ledger.post("bad", [("a", "USD", Decimal(1))])
    with pytest.raises(InputError, match="open ledger owner"):
        ledger.deposit("ghost", "USD", Decimal(1))
    assert ledger.balances == {}
    assert ledger.journal == []


def test_socialised_loss_is_exact_pro_rata() -> None:
    ledger = Ledger()
    for owner in ("x", "y", "z", "bankrupt"):
        ledger.open(owner)
    for owner, amount in (("x", "100"), ("y", "200"), ("z", "300")):
        ledger.deposit(owner, "USD", Decimal(amount))
    ledger.realise("bankrupt", "USD", Decimal("-10"))
    ledger.socialise("bankrupt", "USD", Decimal("10"),
                     {o: ledger.balance(o, "USD") for o in ("x", "y", "z")})
    # 10 over 100/200/300: 1.66666666, 3.33333333, 5.00000001 (remainder to the largest).
    assert ledger.balance("x", "USD") == Decimal("98.33333334")
    assert ledger.balance("y", "USD") == Decimal("196.66666667")
    assert ledger.balance("z", "USD") == Decimal("294.99999999")
    assert ledger.balance("bankrupt", "USD") == ZERO


def test_haircut_arithmetic() -> None:
    config = CollateralConfig(mpor_days=2.0, confidence=0.99)
    # BTC, native: h_vol = 2.3263 x 0.52 x sqrt(2/365) = 0.08954; 10 BTC at 60,000 = 600,000
    # USD; h_liq = 0.1 x sqrt(600,000 / 2e10) = 0.000548; total 0.09009.
    result = haircut("BTC", 10.0, 60000.0, config)
    z = 2.3263478740408408
    h_vol = z * 0.52 * math.sqrt(2 / 365)
    h_liq = 0.1 * math.sqrt(600_000 / 2e10)
    assert result.volatility == pytest.approx(h_vol, rel=1e-12)
    assert result.liquidity == pytest.approx(h_liq, rel=1e-12)
    assert result.counted_value == pytest.approx(600_000 * (1 - h_vol - h_liq), rel=1e-12)
    # Through a third-party bridge: +5 % and one hour of finality added to the MPOR.
    bridged = haircut("BTC@third_party", 10.0, 60000.0, config)
    assert bridged.volatility == pytest.approx(z * 0.52 * math.sqrt((2 + 1 / 24) / 365),
                                               rel=1e-12)
    assert bridged.haircut == pytest.approx(bridged.volatility + h_liq + 0.05, rel=1e-12)
    assert split_collateral_key("USDC@arbitrum") == ("USDC", "arbitrum")


@pytest.mark.parametrize("columns", [1, 2, 3, 7, 8, 9, 16, 17, 40, PAIRWISE_BLOCK + 3])
def test_book_haircuts_are_the_balance_formula_summed_as_numpy_sums_rows(columns: int) -> None:
    """Each account's deduction is its balances' haircuts (the one-balance formula) summed
    the way numpy's ``sum(axis=1)`` sums the per-asset table, bit for bit; the deductions
    alone are the same numbers."""
    rng = np.random.default_rng(columns)
    keys = tuple(["BTC", "USDC", "ETH@third_party", "USDT"][c] if c < 4 else f"C{c}"
                 for c in range(columns))
    config = CollateralConfig(assets={"USDT": AssetHaircut(
        annual_vol=0.0, average_daily_volume_usd=math.inf, concentration_limit_usd=50_000)})
    amounts = rng.uniform(0.0, 1e5, (60, columns)) * (rng.random((60, columns)) < 0.7)
    prices = rng.uniform(0.5, 7e4, columns)
    book = book_haircuts(amounts, keys, prices, config)
    for a in range(0, 60, 7):
        for c in range(columns):
            one = haircut(keys[c], float(amounts[a, c]), float(prices[c]), config)
            assert book.by_asset[a, c] == pytest.approx(one.gross_value - one.counted_value,
                                                        rel=1e-12, abs=1e-9)
    assert np.array_equal(book.deduction, book.by_asset.sum(axis=1))
    assert np.array_equal(book_deductions(amounts, keys, prices, config), book.deduction)
    rows = np.array([3, 10, 59])  # some rows only, written into another array
    into = np.full(60, -1.0)
    book_deductions(amounts, keys, prices, config, rows=rows, into=into)
    assert np.array_equal(into[rows], book.deduction[rows])
    assert np.all(np.delete(into, rows) == -1.0)


def test_stablecoin_is_valued_at_its_oracle_price_and_concentration_caps() -> None:
    config = CollateralConfig(assets={"USDC": AssetHaircut(
        annual_vol=0.0, average_daily_volume_usd=math.inf, concentration_limit_usd=500_000)})
    assert collateral_value({"USDC": 100_000}, {"USDC": 0.8748}, config) == pytest.approx(87_480)
    assert collateral_value({"USDC": 900_000}, {"USDC": 1.0}, config) == 500_000
    assert collateral_value({"USDC": 100_000}, {"USDC": 1.0}, config,
                            confidence={"USDC": 0.01}) == pytest.approx(99_000)


def test_haircut_refuses_bad_input_and_defaults_unknown_assets_and_chains() -> None:
    config = CollateralConfig()
    with pytest.raises(InputError, match="price > 0"):
        haircut("BTC", 1.0, float("nan"), config)
    # Any symbol may be collateral (SPEC 1): without its own entry, the conservative default
    # (100 % vol: 2.3263 x 1.0 x sqrt(2/365) = 0.1722, plus liquidity on 1e9 ADV).
    doge = haircut("DOGE", 1000.0, 0.1, config)
    assert doge.volatility == pytest.approx(2.3263478740408408 * math.sqrt(2 / 365), rel=1e-12)
    assert doge.liquidity == pytest.approx(0.1 * math.sqrt(100 / 1e9), rel=1e-12)
    # An unmapped chain is a third-party bridge: +5 % and an hour of finality.
    bridged = haircut("BTC@wormhole2", 1.0, 60000.0, config)
    assert bridged.chain_haircut == 0.05


NOW = 1_700_000_000 * 10**9


def source(name: str, price: float, age_s: float = 1.0, conf: float = 0.0) -> OracleSource:
    return OracleSource(name=name, price=price, timestamp_ns=NOW - int(age_s * 1e9),
                        confidence=conf)


def test_oracle_median_confidence_and_deviation_flag() -> None:
    guard = OracleGuard(assets=frozenset({"BTC", "USDC"}),
                        config=OracleConfig(max_age_seconds=60, max_deviation=0.02))
    price = guard.update("BTC", [source("a", 60000), source("b", 60300, conf=50),
                                 source("c", 59900), source("old", 10, age_s=600)], NOW)
    assert price.price == 60000
    assert not price.flagged
    assert price.confidence == 200  # half the 400 spread of fresh sources > 50
    assert (price.collateral_price, price.liability_price) == (59800, 60200)
    assert price.sources == ("a", "b", "c")
    flagged = guard.update("USDC", [source("a", 1.0), source("b", 0.87)], NOW)
    assert flagged.flagged
    assert "disagree" in (flagged.reason or "")


@pytest.mark.parametrize(("asset", "sources", "message"), [
    ("BTC", [source("a", -1.0)], "price > 0"),
    ("BTC", [source("a", float("nan"))], "price > 0"),
    ("BTC", [source("a", 60000, age_s=120), source("b", 60010, age_s=90)], "stale-only"),
    ("DOGE", [source("a", 0.1)], "asset the oracle guards"),
])
def test_oracle_refuses_bad_updates_and_changes_nothing(asset: str, sources: list,
                                                        message: str) -> None:
    guard = OracleGuard(assets=frozenset({"BTC"}))
    before = guard.update("BTC", [source("a", 60000)], NOW)
    with pytest.raises(InputError, match=message):
        guard.update(asset, sources, NOW)
    assert guard.prices == {"BTC": before}

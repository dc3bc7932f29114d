"""The ledger conserves value through every round of a cascade: whatever the population,
shock, margin mode and impact, no asset is created or destroyed inside the venue (what it
holds of each asset equals what was deposited), every entry balances, and bad debt is paid
exactly by the fund, ADL, a socialised loss or left unpaid."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from margin_engine.liquidation.cascade import CascadeConfig, run_cascade
from margin_engine.liquidation.cascade_shock import Shock, ShockMove
from margin_engine.liquidation.impact import ImpactConfig, ImpactLaw
from margin_engine.liquidation.venue_population import fund, venue_config, venue_population

CONFIG = venue_config()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), accounts=st.integers(20, 150),
       symbol=st.sampled_from(["VTK", "USDC", "USDT", "BTC", "ETH"]),
       move=st.floats(-0.95, -0.05), model=st.sampled_from(["isolated", "cross", "portfolio",
                                                            "account"]),
       law=st.sampled_from(list(ImpactLaw)), depth_scale=st.floats(0.001, 1.0),
       fund_usd=st.sampled_from([0.0, 1e4, None]), shortfall=st.sampled_from(
           ["adl", "socialised"]), sales=st.booleans())
def test_value_in_equals_value_out_in_every_round(
        seed: int, accounts: int, symbol: str, move: float, model: str, law: ImpactLaw,
        depth_scale: float, fund_usd: float | None, shortfall: str, sales: bool) -> None:
    population = venue_population(accounts, seed)
    book = fund(population, CONFIG, [model])
    shock = Shock(spec=f"{symbol}={100 * move:.2f}%", moves=(
        ShockMove(symbol=symbol, ratio=1.0 + move, source="given"),), index={},
        timestamp_ns=None)
    impact = ImpactConfig(law=law, depth_usd={s: d * depth_scale for s, d in
                                              ImpactConfig().depth_usd.items()})
    result = run_cascade(book, population.market, shock, model=model, config=CONFIG,
                         cascade=CascadeConfig(max_rounds=4, impact=impact,
                                               insurance_fund=fund_usd, shortfall=shortfall,
                                               collateral_sales=sales))
    deposits = {a: Decimal(v) for a, v in result.deposits.items()}
    for r in result.rounds:
        # every balance of every owner sums to 0 per asset: each entry balanced
        assert all(Decimal(v) == 0 for v in r.ledger_imbalance.values()), r.number
        # inside the venue (every owner but the outside world) nothing appeared or vanished:
        # per asset, what it holds is what was deposited (an asset never deposited: 0)
        held = {a: Decimal(v) for a, v in r.ledger_total.items()}
        for asset in set(held) | set(deposits):
            assert held.get(asset, Decimal(0)) == deposits.get(asset, Decimal(0)), \
                (r.number, asset)
        paid = r.insurance_fund_used + r.adl_amount + r.socialised_loss + r.unpaid_shortfall
        assert paid == pytest.approx(r.bad_debt, rel=1e-9, abs=1e-6)
    # the rounds' incremental sums agree with every balance summed again at the end
    assert result.ledger_total_end == (result.rounds[-1].ledger_total if result.rounds
                                       else result.deposits)
    assert all(Decimal(v) == 0 for v in result.ledger_imbalance_end.values())
    # the fund: seed + penalties charged - what it paid
    fund_path = result.insurance_fund_start
    for r in result.rounds:
        fund_path += r.penalties - r.insurance_fund_used
        assert r.insurance_fund == pytest.approx(fund_path, rel=1e-9, abs=1e-4)

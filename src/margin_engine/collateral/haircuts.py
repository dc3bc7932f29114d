"""Haircut = volatility + liquidity + chain/bridge haircut (capped), then a concentration limit.

    h_vol = z(confidence) x sigma_annual x sqrt((MPOR_days + finality_days) / 365)
    h_liq = liquidity_coefficient x sqrt(amount_usd / average_daily_volume_usd)
    h_chain = the chain tier's add-on (native 0, canonical bridge, third-party bridge)
    value = amount x (price - confidence) x (1 - min(h_vol + h_liq + h_chain, max_haircut)),
    counted = min(value, concentration_limit_usd)

Stablecoins are valued at their oracle price (a depeg is a price, not an assumption of 1).
Collateral keys are ``ASSET`` (native chain) or ``ASSET@CHAIN``.

Against margin every model compares equity after haircuts: collateral x price x (1 - haircut)
(capped by concentration) + unrealised P&L. A model that revalues an asset in its own scenarios
(the portfolio, sensitivity and var models revalue coin collateral of their underlyings, and the
portfolio model depegs stablecoins) leaves that asset's volatility part out, so its price risk is
not charged twice; the liquidity, chain and concentration parts still apply.

Default volatilities: BTC 0.52 and ETH 0.70, the annualised standard deviation of daily log
returns of ../shared/data/binance_{btc,eth}usdt_daily_2022-2025.csv (1,431 days, x sqrt(365));
USDC/USDT 0.03 is a stated assumption for pegged days (their tail is the depeg scenario,
default price 0.87: the USDC low of 2023-03-11 in ../shared/data/binanceus_btc*_1m files).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
from numba import njit

from margin_engine.core.errors import InputError
from margin_engine.core.pairwise import PAIRWISE_BLOCK, block_sum, pairwise_sum
from margin_engine.core.types import FloatArray, IntArray

DAY_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AssetHaircut:
    annual_vol: float
    average_daily_volume_usd: float
    liquidity_coefficient: float = 0.1
    concentration_limit_usd: float = math.inf
    max_haircut: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainTier:
    haircut: float
    finality_seconds: float


DEFAULT_ASSETS: Mapping[str, AssetHaircut] = {
    "USD": AssetHaircut(annual_vol=0.0, average_daily_volume_usd=math.inf),
    "USDC": AssetHaircut(annual_vol=0.03, average_daily_volume_usd=5e9),
    "USDT": AssetHaircut(annual_vol=0.03, average_daily_volume_usd=3e10),
    "BTC": AssetHaircut(annual_vol=0.52, average_daily_volume_usd=2e10),
    "ETH": AssetHaircut(annual_vol=0.70, average_daily_volume_usd=1e10),
}
DEFAULT_CHAINS: Mapping[str, ChainTier] = {
    "native": ChainTier(haircut=0.0, finality_seconds=0.0),
    "canonical": ChainTier(haircut=0.01, finality_seconds=15 * 60.0),
    "third_party": ChainTier(haircut=0.05, finality_seconds=60 * 60.0),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CollateralConfig:
    enabled: bool = True  # false: collateral counts at price x amount (the worked examples)
    mpor_days: float = 2.0
    confidence: float = 0.99
    stablecoins: tuple[str, ...] = ("USDC", "USDT")
    depeg_price: float = 0.87  # portfolio scenario: every stablecoin at this price
    # its loss counts at this weight in the portfolio model's IM (1/3 like the extended moves
    # when turned on); 0 by default: SPEC 3.3's scenario table has no depeg scenario and the
    # worked examples reproduce with the defaults
    depeg_weight: float = 0.0
    assets: Mapping[str, AssetHaircut] = field(default_factory=lambda: dict(DEFAULT_ASSETS))
    chains: Mapping[str, ChainTier] = field(default_factory=lambda: dict(DEFAULT_CHAINS))
    chain_of: Mapping[str, str] = field(default_factory=dict)  # chain name -> tier name
    unknown_chain_tier: str = "third_party"  # for chains neither tiered nor mapped
    # for assets without their own entry (any symbol may be collateral, SPEC 1)
    default_asset: AssetHaircut = field(default_factory=lambda: AssetHaircut(
        annual_vol=1.0, average_daily_volume_usd=1e9))

    def tier(self, chain: str) -> ChainTier:
        """A chain's tier: its own, a mapped one, else ``unknown_chain_tier`` (third party)."""
        name = self.chain_of.get(chain, chain)
        return self.chains[name if name in self.chains else self.unknown_chain_tier]

    def asset(self, asset: str) -> AssetHaircut:
        """An asset's parameters, else ``default_asset`` (conservative: 100 % vol, 1e9 ADV)."""
        return self.assets.get(asset, self.default_asset)


def split_collateral_key(key: str) -> tuple[str, str]:
    """``"USDC@arbitrum"`` -> ("USDC", "arbitrum"); ``"BTC"`` -> ("BTC", "native")."""
    asset, _, chain = key.partition("@")
    return asset, chain or "native"


@dataclass(frozen=True, slots=True, kw_only=True)
class HaircutBreakdown:
    asset: str
    chain: str
    amount: float
    price: float
    gross_value: float
    volatility: float
    liquidity: float
    chain_haircut: float
    haircut: float
    value_after_haircut: float
    counted_value: float


def haircut(key: str, amount: float, price: float, config: CollateralConfig,
            confidence_interval: float = 0.0, revalued: bool = False) -> HaircutBreakdown:
    """Value one collateral balance (see the module formula); ``revalued``: the volatility
    part is left out (the margin model moves the asset's price in its own scenarios)."""
    asset, chain = split_collateral_key(key)
    if not (math.isfinite(amount) and amount >= 0):
        raise InputError("a finite amount >= 0", field=f"collateral.{key}", value=amount)
    if not (math.isfinite(price) and price > 0):
        raise InputError("a finite price > 0", field=f"price of {asset}", value=price)
    spec, tier = config.asset(asset), config.tier(chain)
    z = NormalDist().inv_cdf(config.confidence)
    horizon_days = config.mpor_days + tier.finality_seconds / DAY_SECONDS
    h_vol = 0.0 if revalued else z * spec.annual_vol * math.sqrt(horizon_days / 365.0)
    value_price = max(price - confidence_interval, 0.0)
    gross = amount * value_price
    h_liq = (spec.liquidity_coefficient * math.sqrt(gross / spec.average_daily_volume_usd)
             if math.isfinite(spec.average_daily_volume_usd) else 0.0)
    total = min(h_vol + h_liq + tier.haircut, spec.max_haircut)
    after = gross * (1.0 - total)
    return HaircutBreakdown(asset=asset, chain=chain, amount=amount, price=value_price,
                            gross_value=gross, volatility=h_vol, liquidity=h_liq,
                            chain_haircut=tier.haircut, haircut=total, value_after_haircut=after,
                            counted_value=min(after, spec.concentration_limit_usd))


def collateral_value(balances: Mapping[str, float], prices: Mapping[str, float],
                     config: CollateralConfig,
                     confidence: Mapping[str, float] | None = None) -> float:
    """Sum of counted values of an account's balances (prices by asset symbol)."""
    total = 0.0
    for key, amount in balances.items():
        asset, _ = split_collateral_key(key)
        if asset not in prices:
            raise InputError(f"a price for {asset}", field=f"collateral.{key}", value=asset)
        total += haircut(key, amount, prices[asset], config,
                         (confidence or {}).get(asset, 0.0)).counted_value
    return total


@dataclass(frozen=True, slots=True, kw_only=True)
class CollateralHaircuts:
    """Per account, what haircuts take off the collateral's market value (USD), with the part
    each asset column contributes (accounts x asset columns)."""

    deduction: FloatArray
    by_asset: FloatArray
    rates: FloatArray  # accounts x asset columns: the haircut rate applied before the cap


class ColumnHaircuts(NamedTuple):
    """Per collateral column, the parameters of its haircut (shared arrays: read only)."""

    fixed: FloatArray  # h_vol (0 for a revalued asset) + h_chain
    liquidity: FloatArray  # liquidity_coefficient / sqrt(average_daily_volume_usd)
    cap: FloatArray  # max_haircut
    limit: FloatArray  # concentration_limit_usd


def column_haircuts(config: CollateralConfig, assets: tuple[str, ...],
                    revalued: frozenset[str] = frozenset()) -> ColumnHaircuts:
    """The haircut parameters of each collateral column (keys ``ASSET`` or ``ASSET@CHAIN``;
    ``revalued``: assets whose volatility part is left out), kept per config and columns."""
    from margin_engine.core.kept import KEPT

    return KEPT.get((config,), ("column_haircuts", assets, revalued),
                    lambda: _column_haircuts(config, assets, revalued), len(assets))


def _column_haircuts(config: CollateralConfig, assets: tuple[str, ...],
                     revalued: frozenset[str]) -> ColumnHaircuts:
    n = len(assets)
    fixed, liquidity, cap, limit = (np.zeros(n) for _ in range(4))
    z = NormalDist().inv_cdf(config.confidence)
    for col, key in enumerate(assets):
        asset, chain = split_collateral_key(key)
        spec, tier = config.asset(asset), config.tier(chain)
        horizon_days = config.mpor_days + tier.finality_seconds / DAY_SECONDS
        h_vol = 0.0 if asset in revalued else \
            z * spec.annual_vol * math.sqrt(horizon_days / 365.0)
        fixed[col] = h_vol + tier.haircut
        liquidity[col] = spec.liquidity_coefficient / math.sqrt(spec.average_daily_volume_usd) \
            if math.isfinite(spec.average_daily_volume_usd) else 0.0
        cap[col] = spec.max_haircut
        limit[col] = spec.concentration_limit_usd
    return ColumnHaircuts(fixed=fixed, liquidity=liquidity, cap=cap, limit=limit)


def book_haircuts(amounts: FloatArray, assets: tuple[str, ...], prices: FloatArray,
                  config: CollateralConfig, revalued: frozenset[str] = frozenset()
                  ) -> CollateralHaircuts:
    """Haircuts of every account's balances (``amounts``: accounts x asset columns, keys
    ``ASSET`` or ``ASSET@CHAIN``; ``prices`` per column). Assets in ``revalued`` have their
    volatility part left out (a model's scenarios already move their price)."""
    n_acct = amounts.shape[0]
    by_asset = np.zeros((n_acct, len(assets)))
    rates = np.zeros((n_acct, len(assets)))
    if not config.enabled:
        return CollateralHaircuts(deduction=np.zeros(n_acct), by_asset=by_asset, rates=rates)
    deduction = np.empty(n_acct)
    _haircut_rows(amounts, assets, prices, config, revalued, deduction, None, rates, by_asset)
    return CollateralHaircuts(deduction=deduction, by_asset=by_asset, rates=rates)


def book_deductions(amounts: FloatArray, assets: tuple[str, ...], prices: FloatArray,
                    config: CollateralConfig, revalued: frozenset[str] = frozenset(),
                    rows: IntArray | None = None, into: FloatArray | None = None
                    ) -> FloatArray:
    """``book_haircuts(...).deduction`` alone (the same numbers), without the accounts x
    assets tables (writing them took more than the arithmetic). With ``rows``: only those
    account rows, written into ``into`` (one number per account; returned)."""
    if rows is not None and into is None:
        raise ValueError("book_deductions: rows need an array to write into")
    out = into if into is not None else np.empty(amounts.shape[0])
    if not config.enabled:
        out[slice(None) if rows is None else rows] = 0.0
        return out
    none = np.zeros((0, 0))
    _haircut_rows(amounts, assets, prices, config, revalued, out, rows, none, none)
    return out


def _haircut_rows(amounts: FloatArray, assets: tuple[str, ...], prices: FloatArray,
                  config: CollateralConfig, revalued: frozenset[str], deduction: FloatArray,
                  rows: IntArray | None, rates: FloatArray, taken: FloatArray) -> None:
    """``_book_haircuts_nb`` on every row (``rows`` None) or the ``rows``."""
    columns = column_haircuts(config, assets, revalued)
    _book_haircuts_nb(np.ascontiguousarray(amounts, dtype=np.float64),
                      np.ascontiguousarray(prices, dtype=np.float64), columns.fixed,
                      columns.liquidity, columns.cap, columns.limit, rates, taken, deduction,
                      np.zeros(0, dtype=np.int64) if rows is None else
                      np.asarray(rows, dtype=np.int64), rows is None)


@njit(cache=True)
def _book_haircuts_nb(amounts: FloatArray, prices: FloatArray, fixed: FloatArray,
                      liquidity: FloatArray, cap: FloatArray, limit: FloatArray,
                      rates: FloatArray, taken: FloatArray, deduction: FloatArray,
                      rows: IntArray, every: bool) -> None:
    """Every account row (``every``; else the ``rows``) in one pass, into ``deduction`` at
    the row (``rates`` and ``taken`` written when they have rows): per column, gross =
    max(amount, 0) x price, rate = min(fixed + liquidity x sqrt(gross), cap), taken = gross -
    min(gross x (1 - rate), limit); and the row's total as numpy's ``sum(axis=1)`` adds it
    (``pairwise_sum``), so the deduction is the number it always was."""
    n_col = amounts.shape[1]
    keep = rates.shape[0] > 0
    row = np.empty(n_col)
    for k in range(amounts.shape[0] if every else rows.shape[0]):
        a = k if every else rows[k]
        for col in range(n_col):
            gross = max(amounts[a, col], 0.0) * prices[col]
            r = min(fixed[col] + liquidity[col] * math.sqrt(gross), cap[col])
            row[col] = gross - min(gross * (1.0 - r), limit[col])
            if keep:
                rates[a, col] = r
                taken[a, col] = row[col]
        # (a row of a few columns is one block, summed in place: a call a row cost more
        # than the arithmetic)
        deduction[a] = block_sum(row, 0, n_col) if n_col <= PAIRWISE_BLOCK else \
            pairwise_sum(row, 0, n_col)

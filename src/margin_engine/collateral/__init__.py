"""Collateral valuation: volatility, liquidity and chain haircuts, concentration limits."""

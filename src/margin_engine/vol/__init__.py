"""Volatility surfaces: SVI per expiry, SSVI across expiries, arbitrage checks, Deribit chains."""

"""Venue profiles: the same book margined as Deribit, Derive, OKX, Binance, dYdX and Hyperliquid
would margin it (each a documented approximation of the venue's published method)."""

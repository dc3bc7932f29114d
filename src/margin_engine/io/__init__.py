"""Readers of the engine's input files: portfolio JSON, market JSON, bulk CSV/Parquet books."""

from margin_engine.io.bulk import read_bulk_book
from margin_engine.io.market_file import load_market, parse_market
from margin_engine.io.portfolio_file import load_portfolio, parse_portfolio

__all__ = ["load_market", "load_portfolio", "parse_market", "parse_portfolio", "read_bulk_book"]

"""Loaders for real price files (the layouts in ../shared/data)."""

from margin_engine.data.prices import PriceSeries, align, load_price_file

__all__ = ["PriceSeries", "align", "load_price_file"]

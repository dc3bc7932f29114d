"""Columnar book: instruments table + accounts x positions in CSR arrays, and its market binding."""

from margin_engine.book.bound import BoundBook, bind_market
from margin_engine.book.columnar import ColumnarBook, InstrumentTable, book_from_portfolio

__all__ = ["BoundBook", "ColumnarBook", "InstrumentTable", "bind_market", "book_from_portfolio"]

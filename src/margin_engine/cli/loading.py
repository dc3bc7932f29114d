"""Load a book (portfolio JSON or bulk CSV/Parquet) and a market, and bind them."""

from __future__ import annotations

from pathlib import Path

from margin_engine.book.bound import BoundBook, bind_market
from margin_engine.book.columnar import book_from_portfolio
from margin_engine.core.errors import InputError
from margin_engine.io.bulk import read_bulk_book
from margin_engine.io.market_file import load_market
from margin_engine.io.portfolio_file import load_portfolio
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.registry import MODEL_NAMES, get_model
from margin_engine.margin.run import BY_ACCOUNT_MODE, ModelRun, run_models


def load_bound(portfolio: Path, market: Path, accounts: Path | None = None) -> BoundBook:
    snapshot = load_market(market)
    if portfolio.suffix.lower() == ".json":
        if accounts is not None:
            raise InputError("--accounts only with a CSV/Parquet positions file",
                             field="--accounts", value=str(accounts))
        book = book_from_portfolio(load_portfolio(portfolio))
    else:
        book = read_bulk_book(portfolio, accounts)
    try:
        return bind_market(book, snapshot)
    except InputError as exc:
        raise exc.located(source=str(portfolio)) from None


def load_config(path: Path | None) -> RiskConfig:
    return RiskConfig() if path is None else RiskConfig.load(path)


def prepare_run(portfolio: Path, market: Path, *, model: str, config: Path | None,
                accounts: Path | None = None) -> tuple[RiskConfig, ModelRun]:
    """Check the model name, then load config, book and market, and run the model(s)."""
    if model not in (BY_ACCOUNT_MODE, "all"):
        get_model(model)
    risk = load_config(config)
    models = list(MODEL_NAMES) if model == "all" else [model]
    return risk, run_models(load_bound(portfolio, market, accounts), risk, models)

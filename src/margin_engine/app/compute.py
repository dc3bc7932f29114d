"""Margin a book: the one application function behind ``compute --json``, the Python API and
the HTTP service's ``POST /v1/margin``.

The steps are those of the CLI (``cli/loading.py:prepare_run`` then ``margin/run.py:
account_margins`` and ``margin/explain.py:explain_account``): check the model, bind the book to
the market, refuse asked-for isolated margins above the collateral, run the model, shape the
results; only the inputs differ (documents or objects instead of file paths).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from margin_engine.book.bound import BoundBook, bind_market
from margin_engine.book.columnar import ColumnarBook, book_from_portfolio
from margin_engine.core.errors import InputError
from margin_engine.domain.accounts import Portfolio
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.protocol import MarginModel
from margin_engine.market.snapshot import MarketSnapshot

from .results import Explanation, MarginReport

PortfolioInput = Mapping[str, Any] | Portfolio | ColumnarBook | str | Path
MarketInput = Mapping[str, Any] | MarketSnapshot | str | Path


class ModelChoice(StrEnum):
    """The margin models by name, and ``account``: each account under its own mode."""

    ACCOUNT = "account"
    ISOLATED = "isolated"
    CROSS = "cross"
    PORTFOLIO = "portfolio"
    SENSITIVITY = "sensitivity"
    VAR = "var"  # needs a price history (built models)


class LiquidationChoice(StrEnum):
    """Whether to search liquidation prices (a root search per account and underlying)."""

    AUTO = "auto"  # on up to ``limit`` accounts
    ON = "on"
    OFF = "off"


def model_choice(name: str | ModelChoice, *, field: str = "model") -> ModelChoice:
    try:
        return ModelChoice(name)
    except ValueError:
        raise InputError(f"a margin model, one of {[m.value for m in ModelChoice]}",
                         field=field, value=name) from None


def load_book(portfolio: PortfolioInput, accounts: str | Path | None = None) -> ColumnarBook:
    """A columnar book from a portfolio document, a parsed ``Portfolio``, a book, or a path (a
    JSON portfolio, a CSV/Parquet positions file with its ``accounts`` file, or a book folder of
    partitions)."""
    from margin_engine.io.portfolio_file import is_portfolio_file, load_portfolio, parse_portfolio

    if isinstance(portfolio, str | Path):
        path = Path(portfolio)
        if not is_portfolio_file(path):
            from margin_engine.batch.book import read_bulk_path

            return read_bulk_path(path, accounts)
        if accounts is not None:
            raise InputError("--accounts only with a CSV/Parquet positions file",
                             field="--accounts", value=str(accounts))
        return book_from_portfolio(load_portfolio(path))
    if accounts is not None:
        raise InputError("an accounts file only with a positions file", field="accounts",
                         value=str(accounts))
    if isinstance(portfolio, ColumnarBook):
        return portfolio
    if isinstance(portfolio, Portfolio):
        return book_from_portfolio(portfolio)
    return book_from_portfolio(parse_portfolio(portfolio))


def load_market_input(market: MarketInput) -> MarketSnapshot:
    from margin_engine.io.market_file import load_market, parse_market

    if isinstance(market, MarketSnapshot):
        return market
    if isinstance(market, str | Path):
        return load_market(market)
    return parse_market(market)


def bind(portfolio: PortfolioInput, market: MarketInput, *,
         portfolio_field: str | None = None, market_field: str | None = None) -> BoundBook:
    """The book bound to the market; errors are located under ``portfolio_field`` /
    ``market_field`` (the request's field names) when given."""
    try:
        book = load_book(portfolio)
    except InputError as exc:
        raise exc.located(field_prefix=portfolio_field) if portfolio_field else exc from None
    try:
        snapshot = load_market_input(market)
    except InputError as exc:
        raise exc.located(field_prefix=market_field) if market_field else exc from None
    try:
        return bind_market(book, snapshot)
    except InputError as exc:
        raise exc.located(field_prefix=portfolio_field) if portfolio_field else exc from None


def compute_bound(bound: BoundBook, config: RiskConfig, *,
                  model: str | ModelChoice = ModelChoice.ACCOUNT, explain: bool = False,
                  liquidation: LiquidationChoice | str = LiquidationChoice.AUTO,
                  liquidation_limit: int | None = None,
                  models: Mapping[str, MarginModel] | None = None) -> MarginReport:
    """Margins of every account of a bound book: the ``compute --json`` document as typed
    results. ``models``: models built with data (var with its history)."""
    from margin_engine.liquidation.vector_levels import known_results
    from margin_engine.margin.explain import explain_account
    from margin_engine.margin.isolated import check_asked_margins
    from margin_engine.margin.registry import get_model
    from margin_engine.margin.run import liquidation_limit as default_limit
    from margin_engine.margin.run import margin_report, run_models

    name = model_choice(model).value
    if name == ModelChoice.VAR and not (models and ModelChoice.VAR.value in models):
        raise InputError("a model that needs no price history (var needs the price history "
                         "of every underlying: `margin-engine compute --history U=FILE`)",
                         field="model", value=name)
    if name != ModelChoice.ACCOUNT:
        get_model(name, models)
    check_asked_margins(bound, config)
    run = run_models(bound, config, [name], models)
    limit = default_limit([name], models) if liquidation_limit is None else liquidation_limit
    choice = LiquidationChoice(liquidation)
    if choice is LiquidationChoice.ON and bound.account_count > limit:
        raise InputError(f"liquidation prices for at most {limit:,} accounts ('auto' or 'off' "
                         "for larger books)", field="liquidation_prices",
                         value=f"on for {bound.account_count:,} accounts")
    with_liquidation = choice is LiquidationChoice.ON or (
        choice is LiquidationChoice.AUTO and bound.account_count <= limit)
    with known_results(bound, config, [(get_model(m, run.built), result)
                                       for m, result in run.results.items()]):
        report = margin_report(run, name, with_liquidation)
    if not explain:
        return report
    return replace(report, accounts=tuple(
        replace(entry, explanation=Explanation.from_json(explain_account(
            run.bound, config, run.results[entry.model], a, run.built.get(entry.model))))
        for a, entry in enumerate(report.accounts)))


def compute(portfolio: PortfolioInput, market: MarketInput, *,
            model: str | ModelChoice = ModelChoice.ACCOUNT, config: RiskConfig | None = None,
            explain: bool = False, liquidation: LiquidationChoice | str = LiquidationChoice.AUTO,
            models: Mapping[str, MarginModel] | None = None) -> MarginReport:
    """Initial and maintenance margin, equity, liquidation prices (and with ``explain`` every
    contribution) of every account of ``portfolio`` at ``market`` under ``model``; the same
    numbers as ``margin-engine compute --json``."""
    return compute_bound(bind(portfolio, market), config or RiskConfig(), model=model,
                         explain=explain, liquidation=liquidation, models=models)

"""Load a book (portfolio JSON, bulk CSV/Parquet, or a book folder) and a market, and bind them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from margin_engine.app.compute import load_book
from margin_engine.book.bound import BoundBook, bind_market, settled_at_index
from margin_engine.core.errors import InputError
from margin_engine.core.timeutil import ns_to_iso
from margin_engine.data.prices import PriceSeries, load_price_file
from margin_engine.io.market_file import load_market
from margin_engine.margin.config import RiskConfig
from margin_engine.margin.isolated import check_asked_margins
from margin_engine.margin.protocol import MarginModel
from margin_engine.margin.registry import ModelSelection, every_model_name, get_model
from margin_engine.margin.run import ModelRun, run_models


def load_bound(portfolio: Path, market: Path, accounts: Path | None = None) -> BoundBook:
    snapshot = load_market(market)
    book = load_book(portfolio, accounts)
    try:
        bound = bind_market(book, snapshot)
    except InputError as exc:
        raise exc.located(source=str(portfolio)) from None
    write_settled_note([(u, ns_to_iso(expiry)) for u, expiry in settled_at_index(bound)],
                       bound.timestamp_ns, market)
    return bound


def write_settled_note(missing: list[tuple[str, str]], timestamp_ns: int, market: Path) -> None:
    """A note on stderr naming the expiries (underlying, ISO time) the book holds that are
    settled at the index for want of a settlement price (a market dated after them, by
    design or by a typo in its time, settles them all: options at intrinsic value, no
    margin); nothing when there are none."""
    import sys

    if not missing:
        return
    shown = ", ".join(f"{u} {expiry[:10]}" for u, expiry in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    sys.stderr.write(f"note: {market}: the market's time {ns_to_iso(timestamp_ns)} is at or "
                     f"after the expiry of {shown}{more}, held in the book, and it gives no "
                     "settlement price for them: their positions are settled at the index "
                     "(options at intrinsic value, no margin); a `settlements` entry gives "
                     "the price\n")


def load_config(path: Path | None) -> RiskConfig:
    return RiskConfig() if path is None else RiskConfig.load(path)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelData:
    """Data some models need: the sensitivity parameter file, the var model's history."""

    params: Path | None = None
    history: tuple[str, ...] = ()
    dvol: tuple[str, ...] = ()
    confidence: float | None = None
    mpor_days: int | None = None


def load_series(specs: tuple[str, ...], option: str) -> dict[str, PriceSeries]:
    out: dict[str, PriceSeries] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path:
            raise InputError("UNDERLYING=FILE", field=option, value=spec)
        out[name.strip().upper()] = load_price_file(path)
    return out


def build_models(data: ModelData) -> dict[str, MarginModel]:
    from margin_engine.margin.sensitivity import SensitivityModel
    from margin_engine.margin.sensitivity_params import SensitivityParams
    from margin_engine.margin.var import VarHistory, VarModel

    built: dict[str, MarginModel] = {}
    if data.params is not None:
        built["sensitivity"] = SensitivityModel(SensitivityParams.load(data.params))
    if data.history:
        history = VarHistory.from_series(load_series(data.history, "--history"),
                                         load_series(data.dvol, "--dvol") or None)
        built["var"] = VarModel(history)
    elif data.dvol:
        raise InputError("--history with --dvol (the var model reads both)", field="--dvol")
    return built


def prepare_run(portfolio: Path, market: Path, *, model: str, config: Path | None,
                accounts: Path | None = None,
                data: ModelData | None = None) -> tuple[RiskConfig, ModelRun]:
    """Check the model name, then load config, book, market and model data, and run."""
    data = data or ModelData()
    risk = load_config(config)
    var_overrides = {k: v for k, v in (("confidence", data.confidence),
                                       ("mpor_days", data.mpor_days)) if v is not None}
    if var_overrides:
        risk = RiskConfig.from_dict({**risk.to_dict(), "var": {**risk.to_dict()["var"],
                                                               **var_overrides}})
    built = build_models(data)
    if model not in tuple(ModelSelection):
        get_model(model, built)
    models = every_model_name(built) if model == ModelSelection.ALL else [model]
    bound = load_bound(portfolio, market, accounts)
    try:
        check_asked_margins(bound, risk)
    except InputError as exc:
        raise exc.located(source=str(portfolio)) from None
    return risk, run_models(bound, risk, models, built)

"""A venue profile file's parameters stay within what the method means: a number of the right
type outside its field's bounds (a price range of 1.5, MM above IM, a collateral rate of 3) is
refused naming the file, the key and the bounds, instead of margining with NaN scenarios or a
maintenance margin above the initial one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from margin_engine.core.bounds import BOUNDS
from margin_engine.core.errors import InputError
from margin_engine.profiles.deribit_pm import DeribitParams
from margin_engine.profiles.derive_pmrm import DeriveParams
from margin_engine.profiles.files import read_profile_file
from margin_engine.profiles.linear import LinearVenue
from margin_engine.profiles.okx_pm import OkxParams
from margin_engine.profiles.registry import PROFILE_NAMES, get_profile
from margin_engine.profiles.scenarios import VolShockParams
from tests.conftest import account, market_doc, portfolio_doc

OUT_OF_BOUNDS = [
    ("deribit-pm", "ranges = {BTC = 1.5}", "parameters.ranges.BTC", "[0, 1)"),
    ("deribit-pm", "default_range = 1.0", "parameters.default_range", "[0, 1)"),
    ("deribit-pm", "maintenance_fraction = 5", "parameters.maintenance_fraction", "(0, 1]"),
    ("deribit-pm", "maintenance_fraction = 0", "parameters.maintenance_fraction", "(0, 1]"),
    ("deribit-pm", "option_contingency = 2", "parameters.option_contingency", "[0, 1]"),
    ("deribit-pm", "vol = {range_down = 2.0}", "parameters.vol.range_down", "[0, 1]"),
    ("deribit-pm", "vol = {reference_days = 0}", "parameters.vol.reference_days", "(0, 3650]"),
    ("deribit-pm", "vol = {power_short = 1e15}", "parameters.vol.power_short", "[0, 1]"),
    ("derive-pmrm", "spot_range = 1.0", "parameters.spot_range", "[0, 1)"),
    ("derive-pmrm", "peg_threshold = 7", "parameters.peg_threshold", "[0, 1]"),
    ("okx-pm", "extreme = {ETH = 1.2}", "parameters.extreme.ETH", "[0, 1)"),
    ("okx-pm", "extreme_weight = 1e15", "parameters.extreme_weight", "[0, 1]"),
    ("okx-pm", "initial_multiplier = 0.5", "parameters.initial_multiplier", "[1, inf)"),
    ("binance-pm", "collateral_rates = {BTC = 3}", "parameters.collateral_rates.BTC",
     "[0, 1]"),
    ("binance-um", "liquidation_ratio = 0", "parameters.liquidation_ratio", "[1, inf)"),
    ("hyperliquid", "liquidation_ratio = 0.5", "parameters.liquidation_ratio", "[1, inf)"),
]


def profile_file(tmp_path: Path, method: str, parameters: str) -> Path:
    path = tmp_path / "venue.toml"
    path.write_text(f'profile = "{method}"\nparameters_as_of = "2024-06-10"\n'
                    f"[parameters]\n{parameters}\n")
    return path


@pytest.mark.parametrize(("method", "parameters", "field", "interval"), OUT_OF_BOUNDS)
def test_a_parameter_out_of_its_bounds_is_refused(tmp_path: Path, method: str,
                                                  parameters: str, field: str,
                                                  interval: str) -> None:
    path = profile_file(tmp_path, method, parameters)
    with pytest.raises(InputError) as caught:
        read_profile_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"'{field}'" in message
    assert f"a number in {interval}" in message


@pytest.mark.parametrize(("method", "parameters"), [
    ("deribit-pm", "ranges = {BTC = 0.999}\nmaintenance_fraction = 1"),
    ("deribit-pm", "vol = {range_down = 1.0, floor = 0}"),
    ("okx-pm", "initial_multiplier = 1\nextreme_weight = 1"),
    ("binance-pm", "collateral_rates = {BTC = 1.0}\nliquidation_ratio = 1.2"),
])
def test_values_at_the_edges_of_their_bounds_are_taken(tmp_path: Path, method: str,
                                                       parameters: str) -> None:
    read_profile_file(profile_file(tmp_path, method, parameters))


def _numbers(params: Any, where: str) -> list[tuple[str, float, Any]]:
    """(path, value, bounds) of every number of a parameters dataclass, nested included."""
    out = []
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        path = f"{where}.{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out += _numbers(value, path)
        elif isinstance(value, dict):
            out += [(f"{path}.{k}", v, f.metadata.get(BOUNDS)) for k, v in value.items()]
        elif isinstance(value, float | int) and not isinstance(value, bool):
            out.append((path, float(value), f.metadata.get(BOUNDS)))
    return out


@pytest.mark.parametrize("params", [DeribitParams(), DeriveParams(), OkxParams(),
                                    VolShockParams(range_up=0.5, range_down=0.25)])
def test_every_scenario_parameter_declares_bounds_its_default_meets(params: Any) -> None:
    for path, value, bounds in _numbers(params, type(params).__name__):
        assert bounds is not None, path
        assert bounds.holds(value), (path, value)


def test_bracket_venues_settable_numbers_declare_bounds() -> None:
    fields = {f.name: f for f in dataclasses.fields(LinearVenue)}
    for name in ("collateral_rates", "liquidation_ratio"):
        assert fields[name].metadata.get(BOUNDS) is not None
    for method in PROFILE_NAMES:
        for key, value in get_profile(method).parameters().items():
            if key in fields and isinstance(value, float):
                assert fields[key].metadata[BOUNDS].holds(value), (method, key)


def test_a_refused_profile_file_stops_compute_with_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from margin_engine.cli.app import app

    book = tmp_path / "book.json"
    book.write_text(json.dumps(portfolio_doc(account(
        "a1", [("BTC-PERP", 1.0, 50000.0), ("BTC-27JUN25-50000-C", -1.0, 2000.0)]))))
    market = tmp_path / "market.json"
    market.write_text(json.dumps(market_doc()))
    path = profile_file(tmp_path, "deribit-pm", "ranges = {BTC = 1.5}")
    out = CliRunner().invoke(app, ["compute", str(book), "--market", str(market),
                                   "--profile", str(path)])
    assert out.exit_code == 2
    assert "parameters.ranges.BTC" in out.output
    assert "Traceback" not in out.output

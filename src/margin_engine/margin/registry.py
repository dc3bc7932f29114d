"""Margin models by name."""

from __future__ import annotations

from collections.abc import Mapping

from margin_engine.core.errors import InputError
from margin_engine.margin.cross import CrossModel
from margin_engine.margin.isolated import IsolatedModel
from margin_engine.margin.portfolio import PortfolioModel
from margin_engine.margin.protocol import MarginModel
from margin_engine.margin.sensitivity import SensitivityModel

_MODELS: dict[str, MarginModel] = {
    "isolated": IsolatedModel(),
    "cross": CrossModel(),
    "portfolio": PortfolioModel(),
    "sensitivity": SensitivityModel(),
}
MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)  # the models that need no history
ALL_MODEL_NAMES: tuple[str, ...] = (*MODEL_NAMES, "var")


def get_model(name: str, models: Mapping[str, MarginModel] | None = None) -> MarginModel:
    """A model by name; ``models`` holds ones built with data (var with its history)."""
    if models and name in models:
        return models[name]
    if name == "var":
        raise InputError("price history for the var model (--history UNDERLYING=FILE)",
                         field="--history")
    if name not in _MODELS:
        raise InputError(f"a margin model, one of {list(ALL_MODEL_NAMES)}", field="model",
                         value=name)
    return _MODELS[name]

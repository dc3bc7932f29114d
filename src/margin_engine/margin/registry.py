"""Margin models by name."""

from __future__ import annotations

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
MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)


def get_model(name: str) -> MarginModel:
    if name not in _MODELS:
        raise InputError(f"a margin model, one of {list(_MODELS)}", field="model", value=name)
    return _MODELS[name]

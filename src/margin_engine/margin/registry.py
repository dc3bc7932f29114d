"""Margin models by name, and the model selections that are not one model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum

from margin_engine.core.errors import InputError
from margin_engine.margin.cross import CrossModel
from margin_engine.margin.isolated import IsolatedModel
from margin_engine.margin.portfolio import PortfolioModel
from margin_engine.margin.protocol import MarginModel
from margin_engine.margin.sensitivity import SensitivityModel
from margin_engine.margin.var import VarHistory, VarModel


class ModelSelection(StrEnum):
    """Choices of models that are not one model's name."""

    ACCOUNT = "account"  # each account under its own margin mode
    ALL = "all"  # every model (those built with data when they were built)


_MODELS: dict[str, MarginModel] = {
    "isolated": IsolatedModel(),
    "cross": CrossModel(),
    "portfolio": PortfolioModel(),
    "sensitivity": SensitivityModel(),
}
# Models with no default instance: each is made from a price history (``needs_history``).
_HISTORY_FACTORIES: dict[str, Callable[[VarHistory], MarginModel]] = {VarModel.name: VarModel}
MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)  # the models that need no history
ALL_MODEL_NAMES: tuple[str, ...] = (*MODEL_NAMES, *_HISTORY_FACTORIES)


def needs_history(name: str) -> bool:
    """Whether the model ``name`` is made from a price history (it has no default instance)."""
    return name in _HISTORY_FACTORIES


def from_history(name: str, history: VarHistory) -> MarginModel:
    """The history-made model ``name`` on ``history``."""
    if name not in _HISTORY_FACTORIES:
        raise InputError(f"a model made from price history, one of {list(_HISTORY_FACTORIES)}",
                         field="model", value=name)
    return _HISTORY_FACTORIES[name](history)


def every_model_name(built: Mapping[str, MarginModel] | None = None) -> list[str]:
    """Every model that can run: those that need no history, then the history-made ones that
    ``built`` holds."""
    return [*MODEL_NAMES, *(name for name in _HISTORY_FACTORIES if built and name in built)]


def get_model(name: str, models: Mapping[str, MarginModel] | None = None) -> MarginModel:
    """A model by name; ``models`` holds ones built with data (var with its history)."""
    if models and name in models:
        return models[name]
    if needs_history(name):
        raise InputError(f"price history for the {name} model (--history UNDERLYING=FILE)",
                         field="--history")
    if name not in _MODELS:
        raise InputError(f"a margin model, one of {list(ALL_MODEL_NAMES)}", field="model",
                         value=name)
    return _MODELS[name]

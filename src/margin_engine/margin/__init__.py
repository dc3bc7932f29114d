"""Margin models behind one protocol, chosen by name."""

from margin_engine.margin.config import RiskConfig
from margin_engine.margin.protocol import MarginModel, MarginResult
from margin_engine.margin.registry import MODEL_NAMES, get_model

__all__ = ["MODEL_NAMES", "MarginModel", "MarginResult", "RiskConfig", "get_model"]

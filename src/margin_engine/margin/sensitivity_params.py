"""Parameters of the `sensitivity` model: risk weights, vega risk weight, tenor and
underlying correlations, with the data range and method that produced them.

File: ``{"schema": "margin-engine/sensitivity-params/v1", ...}``; the shipped default is
``margin/params/sensitivity_default.json``, the output of `margin-engine calibrate` on the BTC
and ETH files named in it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from margin_engine.core.correlation import check_pairs, check_positive_semidefinite
from margin_engine.core.errors import InputError
from margin_engine.core.numbers import parse_float
from margin_engine.core.types import FloatArray

PARAMS_SCHEMA = "margin-engine/sensitivity-params/v1"
TENOR_DAYS = (14.0, 30.0, 91.0, 182.0, 365.0, 730.0)  # 2w 1m 3m 6m 1y 2y


@dataclass(frozen=True, slots=True, kw_only=True)
class SensitivityParams:
    confidence: float
    mpor_days: float
    risk_weights: Mapping[str, float]  # percent: WS = RW x (USD change per 1 % move)
    default_risk_weight: float  # for underlyings not calibrated (the largest calibrated)
    vega_risk_weight: float
    tenor_days: tuple[float, ...]
    tenor_correlation: FloatArray
    underlying_correlation: Mapping[tuple[str, str], float]
    maintenance_fraction: float = 0.8
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def risk_weight(self, underlying: str) -> float:
        return self.risk_weights.get(underlying, self.default_risk_weight)

    def correlation(self, a: str, b: str) -> float:
        if a == b:
            return 1.0
        return self.underlying_correlation.get((a, b) if a < b else (b, a), 0.0)

    def to_document(self) -> dict[str, Any]:
        pairs: dict[str, dict[str, float]] = {}
        for (a, b), rho in sorted(self.underlying_correlation.items()):
            pairs.setdefault(a, {})[b] = rho
        return {
            "schema": PARAMS_SCHEMA, "confidence": self.confidence, "mpor_days": self.mpor_days,
            "risk_weights": dict(sorted(self.risk_weights.items())),
            "default_risk_weight": self.default_risk_weight,
            "vega_risk_weight": self.vega_risk_weight, "tenor_days": list(self.tenor_days),
            "tenor_correlation": self.tenor_correlation.tolist(),
            "underlying_correlation": pairs,
            "maintenance_fraction": self.maintenance_fraction,
            "provenance": dict(self.provenance),
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_document(), indent=2) + "\n")

    @staticmethod
    def from_document(doc: Any, source: str = "") -> SensitivityParams:
        try:
            return _parse(doc)
        except InputError as exc:
            raise exc.located(source=source) from None

    @staticmethod
    def load(path: Path) -> SensitivityParams:
        from margin_engine.io.jsonfields import read_json

        return SensitivityParams.from_document(read_json(path), str(path))

    @staticmethod
    def default() -> SensitivityParams:
        text = resources.files("margin_engine.margin.params").joinpath(
            "sensitivity_default.json").read_text()
        return SensitivityParams.from_document(json.loads(text), "sensitivity_default.json")


def _parse(doc: Any) -> SensitivityParams:
    from margin_engine.io.jsonfields import check_schema, require_list, require_object

    check_schema(doc, expected=PARAMS_SCHEMA)
    obj = require_object(doc, field="", allowed=(
        "schema", "confidence", "mpor_days", "risk_weights", "default_risk_weight",
        "vega_risk_weight", "tenor_days", "tenor_correlation", "underlying_correlation",
        "maintenance_fraction", "provenance"), required=(
        "confidence", "mpor_days", "risk_weights", "vega_risk_weight", "tenor_days",
        "tenor_correlation"))
    weights = {u: parse_float(v, field=f"risk_weights.{u}", strictly_positive=True)
               for u, v in _table(obj["risk_weights"], "risk_weights").items()}
    tenors = tuple(parse_float(v, field="tenor_days", strictly_positive=True)
                   for v in require_list(obj["tenor_days"], field="tenor_days"))
    if not tenors or any(b <= a for a, b in zip(tenors, tenors[1:], strict=False)):
        raise InputError("ascending tenors in days (at least one)", field="tenor_days",
                         value=list(tenors))
    rows = require_list(obj["tenor_correlation"], field="tenor_correlation")
    if len(rows) != len(tenors) or any(
            len(require_list(row, field="tenor_correlation")) != len(tenors) for row in rows):
        raise InputError(f"a {len(tenors)} x {len(tenors)} matrix (one row and column a tenor)",
                         field="tenor_correlation", value=f"{len(rows)} rows")
    matrix = np.array([[float(parse_float(x, field="tenor_correlation", minimum=-1.0,
                                          maximum=1.0)) for x in row] for row in rows])
    if not np.allclose(matrix, matrix.T) or not np.allclose(np.diag(matrix), 1.0):
        raise InputError("a symmetric tenors x tenors matrix with 1 on the diagonal",
                         field="tenor_correlation", value=f"shape {matrix.shape}")
    check_positive_semidefinite(matrix, field="tenor_correlation")
    pairs: dict[tuple[str, str], float] = {}
    for a, row in _table(obj.get("underlying_correlation", {}),
                         "underlying_correlation").items():
        for b, rho in _table(row, f"underlying_correlation.{a}").items():
            key = (a, b) if a < b else (b, a)
            pairs[key] = parse_float(rho, field=f"underlying_correlation.{a}.{b}",
                                     minimum=-1.0, maximum=1.0)
    check_pairs(pairs, weights, field="underlying_correlation")
    default = obj.get("default_risk_weight", max(weights.values()) if weights else 10.0)
    return SensitivityParams(
        confidence=parse_float(obj["confidence"], field="confidence", strictly_positive=True,
                               maximum=1.0),
        mpor_days=parse_float(obj["mpor_days"], field="mpor_days", strictly_positive=True),
        risk_weights=weights,
        default_risk_weight=parse_float(default, field="default_risk_weight",
                                        strictly_positive=True),
        vega_risk_weight=parse_float(obj["vega_risk_weight"], field="vega_risk_weight",
                                     minimum=0.0),
        tenor_days=tenors, tenor_correlation=matrix, underlying_correlation=pairs,
        maintenance_fraction=parse_float(obj.get("maintenance_fraction", 0.8),
                                         field="maintenance_fraction", strictly_positive=True,
                                         maximum=1.0),
        provenance=dict(obj.get("provenance", {})),
    )


def _table(value: Any, field: str) -> dict[str, Any]:
    """A JSON object of name -> value (an error naming ``field`` otherwise)."""
    if not isinstance(value, dict):
        raise InputError("an object of name -> number", field=field,
                         value=type(value).__name__)
    return value

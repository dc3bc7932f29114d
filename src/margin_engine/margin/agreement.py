"""Do two models agree on which of two books is riskier? Pairwise sign agreement of IMs."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from margin_engine.core.types import FloatArray


def pairwise_agreement(names: list[str], reference: FloatArray, other: FloatArray,
                       tolerance: float = 0.05) -> dict[str, Any]:
    """Pairs (a, b) whose reference IMs differ by more than ``tolerance`` relative: does the
    other model order them the same way? Near-ties are left out of the count."""
    agree, disagree = 0, []
    for i, j in combinations(range(len(names)), 2):
        a, b = float(reference[i]), float(reference[j])
        if abs(a - b) <= tolerance * max(abs(a), abs(b), 1e-12):
            continue
        if np.sign(a - b) == np.sign(float(other[i]) - float(other[j])):
            agree += 1
        else:
            disagree.append((names[i], names[j]))
    total = agree + len(disagree)
    return {"pairs": total, "agree": agree, "rate": agree / total if total else 1.0,
            "disagree": disagree}

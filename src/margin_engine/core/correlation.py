"""A correlation matrix given as pairs (missing pairs 0) must be one: positive semi-definite.

The models aggregate per-name risks as sqrt(sum_ij rho_ij r_i r_j); with a matrix that is not
positive semi-definite the sum under the root is negative for some books, and the margin is
clipped to 0 or understated for them. Pairs that are each within [-1, 1] can still make such a
matrix (0.9, 0.9 and -0.9 among three names).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from margin_engine.core.errors import InputError

TOLERANCE = 1e-9  # the smallest eigenvalue may be this far below 0 (rounding)


def check_positive_semidefinite(matrix: np.ndarray, *, field: str) -> None:
    """Refuse ``matrix`` (symmetric) whose smallest eigenvalue is below ``-TOLERANCE``."""
    lowest = float(np.linalg.eigvalsh(matrix).min()) if matrix.size else 0.0
    if lowest < -TOLERANCE:
        raise InputError("a correlation matrix (positive semi-definite: else the aggregated "
                         "risk of some book is the root of a negative number)", field=field,
                         value=f"lowest eigenvalue {lowest:.3g}")


def check_pairs(pairs: Mapping[tuple[str, str], float], names: Iterable[str], *,
                field: str) -> None:
    """The matrix over ``names`` (and the names of the pairs) with 1 on the diagonal,
    ``pairs`` off it and 0 for the pairs not given, checked by
    ``check_positive_semidefinite``."""
    order = sorted(set(names) | {n for pair in pairs for n in pair})
    at = {name: k for k, name in enumerate(order)}
    matrix = np.eye(len(order))
    for (a, b), rho in pairs.items():
        matrix[at[a], at[b]] = matrix[at[b], at[a]] = rho
    check_positive_semidefinite(matrix, field=field)

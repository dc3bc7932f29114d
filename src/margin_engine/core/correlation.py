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


def pair_matrix(pairs: Mapping[tuple[str, str], float], names: Iterable[str] = ()
                ) -> tuple[list[str], np.ndarray]:
    """(the names in order, the matrix over them): 1 on the diagonal, ``pairs`` off it, 0 for
    the pairs not given; the names are ``names`` and those of the pairs, sorted."""
    order = sorted(set(names) | {n for pair in pairs for n in pair})
    at = {name: k for k, name in enumerate(order)}
    matrix = np.eye(len(order))
    for (a, b), rho in pairs.items():
        matrix[at[a], at[b]] = matrix[at[b], at[a]] = rho
    return order, matrix


def check_pairs(pairs: Mapping[tuple[str, str], float], names: Iterable[str], *,
                field: str) -> None:
    """``pair_matrix(pairs, names)`` checked by ``check_positive_semidefinite``."""
    check_positive_semidefinite(pair_matrix(pairs, names)[1], field=field)


def repaired_pairs(pairs: Mapping[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """``pairs`` as they are when their matrix is a correlation matrix; else the pairs of the
    matrix with its negative eigenvalues set to 0 and rescaled to 1 on the diagonal
    (C' = D^-1/2 V max(L, 0) V' D^-1/2): pairwise estimates over different windows need not
    form a correlation matrix together."""
    order, matrix = pair_matrix(pairs)
    values, vectors = np.linalg.eigh(matrix)
    if not order or values.min() >= -TOLERANCE:
        return dict(pairs)
    clipped = (vectors * np.maximum(values, 0.0)) @ vectors.T
    scale = 1.0 / np.sqrt(np.diag(clipped))
    fixed = clipped * scale[:, None] * scale[None, :]
    at = {name: k for k, name in enumerate(order)}
    return {(a, b): float(np.clip(fixed[at[a], at[b]], -1.0, 1.0)) for a, b in pairs}

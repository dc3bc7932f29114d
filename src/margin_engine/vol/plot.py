"""PNG of market vs fitted smiles, one panel per expiry."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from margin_engine.core.timeutil import ns_to_iso
from margin_engine.vol.chain_fit import SurfaceFit
from margin_engine.vol.market_builder import expiry_code


def plot_smiles(fit: SurfaceFit, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(fit.slices)
    cols = min(4, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), dpi=100, squeeze=False)
    for ax, s in zip(axes.ravel(), fit.slices, strict=False):
        k_grid = np.linspace(float(s.k.min()) - 0.1, float(s.k.max()) + 0.1, 200)
        fitted = np.sqrt(np.maximum(s.svi.total_variance(k_grid), 0.0) / s.years) * 100
        ax.plot(s.k, s.market_vol * 100, "o", ms=3, label="market (mark)")
        ax.plot(k_grid, fitted, "-", lw=1.5, label=f"{s.source}")
        ax.set_title(f"{expiry_code(s.expiry_ns)} ({s.years * 365:.0f} d): RMSE "
                     f"{s.rmse_vol_points:.2f} vol pts", fontsize=9)
        ax.set_xlabel("ln(K / F)", fontsize=8)
        ax.set_ylabel("implied vol %", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{fit.underlying} smiles at {ns_to_iso(fit.snapshot_ns)}: market vs fit")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

"""Plots saved in run folders: |gamma| histograms and the demo's accuracy-vs-cost chart."""

from __future__ import annotations

from pathlib import Path


def plot_gamma_histograms(series: dict, path) -> Path:
    """Overlayed histograms of |gamma| (log-x) for each ``name -> values`` in ``series``; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4), tight_layout=True)
    bins = np.logspace(-6, 1, 71)
    for name, values in series.items():
        v = np.clip(np.asarray(values, dtype=float), 1e-6, None)
        ax.hist(v, bins=bins, alpha=0.55, label=f"{name} ({(v < 1e-2).mean():.0%} < 1e-2)")
    ax.set_xscale("log")
    ax.axvline(1e-2, color="k", lw=0.8, ls="--")
    ax.set_xlabel("|γ| (BatchNorm scale)")
    ax.set_ylabel("channels")
    ax.set_title("BatchNorm |γ| distribution")
    ax.legend()
    path = Path(path)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path

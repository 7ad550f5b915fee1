"""Plots saved in run folders: |gamma| histograms and the demo's accuracy-vs-cost chart."""

from __future__ import annotations

from pathlib import Path

FLOOR = 1e-6  # |gamma| below this (exact zeros included) is drawn in the first bin


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_gamma_histograms(ax, series: dict) -> None:
    """Overlayed log-x histograms of |gamma| for each ``name -> values`` of ``series`` on ``ax``."""
    import numpy as np

    bins = np.logspace(np.log10(FLOOR), 1, 71)
    for name, values in series.items():
        v = np.asarray(values, dtype=float)
        ax.hist(np.clip(v, bins[0] * 1.01, None), bins=bins, alpha=0.55, label=f"{name} ({(v < 1e-2).mean():.0%} < 1e-2)")
    ax.set_xscale("log")
    ax.axvline(1e-2, color="k", lw=0.8, ls="--")
    ax.set_xlabel(f"|γ|  (≤ {FLOOR:g} and exact zeros: first bin)")
    ax.set_ylabel("channels")
    ax.set_title("BatchNorm |γ|")
    ax.legend()


def plot_gamma_histograms(series: dict, path) -> Path:
    """Save the |gamma| histograms of ``series`` to ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), tight_layout=True)
    draw_gamma_histograms(ax, series)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)


def plot_demo(rows: dict, gammas: dict, path) -> Path:
    """The demo's chart: mAP50-95 vs GFLOPs per stage, and |gamma| before/after sparse training."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), tight_layout=True)
    for name, r in rows.items():
        a.scatter(r["gflops"], r["map50_95"], s=60)
        a.annotate(name, (r["gflops"], r["map50_95"]), textcoords="offset points", xytext=(5, 5))
    a.set_xlabel("GFLOPs")
    a.set_ylabel("mAP50-95")
    a.set_title("accuracy vs cost")
    draw_gamma_histograms(b, gammas)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)

"""Plots saved in run folders: the sparsity columns per epoch, |gamma| histograms and the demo's chart (accuracy
against measured latency)."""

from __future__ import annotations

from pathlib import Path

GAMMA_MIN = 1e-6  # |gamma| below this (exact zeros included) is drawn in the first bin


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_gamma_histograms(ax, series: dict) -> None:
    """Overlayed log-x histograms of |gamma| for each ``name -> values`` of ``series`` on ``ax``."""
    import numpy as np

    bins = np.logspace(np.log10(GAMMA_MIN), 1, 71)
    for name, values in series.items():
        v = np.asarray(values, dtype=float)
        ax.hist(np.clip(v, bins[0] * 1.01, None), bins=bins, alpha=0.55, label=f"{name} ({(v < 1e-2).mean():.0%} < 1e-2)")
    ax.set_xscale("log")
    ax.axvline(1e-2, color="k", lw=0.8, ls="--")
    ax.set_xlabel(f"|γ|  (≤ {GAMMA_MIN:g} and exact zeros: first bin)")
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


def plot_sparsity(csv, path) -> Path | None:
    """Plot the ``sparsity/*`` columns of a run's results.csv against the epoch (the share reached against the
    target, or the share of |gamma| under each threshold) to ``path``; None when the file has no such column."""
    import csv as csv_module

    with open(csv, newline="", encoding="utf-8") as f:
        rows = [{k.strip(): v.strip() for k, v in row.items() if k} for row in csv_module.DictReader(f)]
    columns = [k for k in (rows[0] if rows else {}) if k.startswith("sparsity/")]
    if not columns:
        return None
    plt = _pyplot()
    epochs = [int(float(r["epoch"])) for r in rows]
    fig, (share, mean) = plt.subplots(1, 2, figsize=(11, 4), tight_layout=True)
    for k in columns:
        ax = mean if k == "sparsity/gamma_mean" else share
        ax.plot(epochs, [float(r[k]) for r in rows], marker=".", ls="--" if k == "sparsity/target" else "-",
                label=k.removeprefix("sparsity/"))
    share.set(xlabel="epoch", ylabel="share", title="sparsity per epoch", ylim=(-0.02, 1.02))
    mean.set(xlabel="epoch", ylabel="mean |γ|", title="BatchNorm mean |γ|")
    share.legend()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)


def plot_demo(rows: dict, gammas: dict | None, path) -> Path:
    """The demo's chart: mAP50-95 against the measured latency of every stage (what slimming is for), and, after
    sparse training, |gamma| before and after it."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if gammas else 1, figsize=(11 if gammas else 6.5, 4.5), tight_layout=True)
    a = axes[0] if gammas else axes
    xs, ys = [r["latency_ms"] for r in rows.values()], [r["map50_95"] for r in rows.values()]
    a.plot(xs, ys, color="0.75", lw=1, zorder=1)  # the stages in order
    for name, r in rows.items():  # named in the legend: stages may share a point
        a.scatter(r["latency_ms"], r["map50_95"], s=60, zorder=2,
                  label=f"{name}: {r['map50_95']:.3f} mAP, {r['latency_ms']:.1f} ms, {r['gflops']:.2f} GFLOPs")
    a.set_ylim(0, min(1.0, max(ys) * 1.3 + 0.02))  # from 0, so a change reads at its true size
    a.set_xlim(0, max(xs) * 1.15)
    a.legend(loc="lower right", fontsize=8)
    a.set_xlabel("latency, ms (onnxruntime, CPU, 1 thread, batch 1)")
    a.set_ylabel("mAP50-95")
    a.set_title("accuracy against measured latency")
    if gammas:
        draw_gamma_histograms(axes[1], gammas)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)

"""Training plots: surrogate vs reference waveforms, loss curves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

__all__ = ["plot_waveforms", "plot_loss"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_waveforms(module, metrics: dict):
    """Surrogate (dashed) vs reference (solid) for the nominal and the worst held-out design."""
    plt = _plt()
    outputs = module.circuit.outputs
    picks = [(0, "nominal"), (metrics["worst_design_index"], "worst held-out")]
    fig, axes = plt.subplots(len(outputs), len(picks), figsize=(5.5 * len(picks), 1.9 * len(outputs) + 0.8),
                             sharex=True, squeeze=False)
    with torch.no_grad():
        y = module.model.predict_batch(module.held_out.t, module.held_out.P[[k for k, _ in picks]])
    t_ns = module.held_out.t.numpy() * 1e9
    for col, (k, label) in enumerate(picks):
        for row, out in enumerate(outputs):
            ax = axes[row, col]
            ax.plot(t_ns, module.held_out.ref[k, :, row].numpy(), "-", lw=1.4, label="reference")
            ax.plot(t_ns, y[col, :, row].numpy(), "--", lw=1.2, label="surrogate")
            ax.set_ylabel(out)
            ax.grid(alpha=0.3)
        axes[0, col].set_title(f"{module.circuit.name}: {label}")
        axes[-1, col].set_xlabel("time (ns)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_loss(csv_path: Path, lbfgs: list[float]):
    """Training loss per step (Adam from the CSV log) followed by the L-BFGS evaluations."""
    if not Path(csv_path).exists():
        return None
    plt = _plt()
    log = pd.read_csv(csv_path)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for col in [c for c in log.columns if c.startswith("train/") and "weight" not in c]:
        part = log[["step", col]].dropna()
        ax.semilogy(part.step, part[col], lw=1, label=col)
    if lbfgs:
        start = int(log.step.max()) if len(log) else 0
        ax.semilogy(range(start, start + len(lbfgs)), lbfgs, lw=1, label="L-BFGS residual")
    if "val/nrmse_worst" in log:
        part = log[["step", "val/nrmse_worst"]].dropna()
        ax.semilogy(part.step, part["val/nrmse_worst"], "o-", ms=3, label="val worst NRMSE")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

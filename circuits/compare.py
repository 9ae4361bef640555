"""Reference solver vs ngspice for one design: waveforms, NRMSE per output, headline measurements."""

from __future__ import annotations

import time
from typing import Any, Mapping

import pandas as pd
import torch

from circuits import measure
from circuits.circuit import Circuit
from circuits.simulation import simulate_frames

__all__ = ["reference_vs_ngspice", "headline", "plot_overlay"]


def headline(df: pd.DataFrame, outputs: list[str]) -> dict[str, float]:
    """Period of every output that oscillates (>= 4 rising crossings of its mid level), else peak-to-peak."""
    out: dict[str, float] = {}
    for col in outputs:
        t, v = measure.series(df, col)
        out[f"pp[{col}]"] = float(measure.peak_to_peak(v))
        try:
            out[f"period[{col}]"] = float(measure.period(t, v, k=3))
        except measure.MeasureError:
            pass
    return out


def reference_vs_ngspice(circuit: Circuit, params: Mapping[str, float] | None = None, *,
                         rtol: float = 1e-6, use_ngspice: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Simulate one design with both engines; returns a long table (column ``engine``) and metrics.

    The reference is interpolated (quadratically) onto ngspice's time points, and NRMSE uses
    ngspice's peak-to-peak, as the acceptance criterion defines it.
    """
    from circuits.ngspice import run_ngspice

    metrics: dict[str, Any] = {"circuit": circuit.name, "params": circuit.overrides(params)}
    ng = None
    if use_ngspice:
        t0 = time.perf_counter()
        ng = run_ngspice(circuit, params)
        metrics["ngspice_time_s"] = time.perf_counter() - t0
    # one reference transient, reported on its own time points and on ngspice's
    grids = [None] + ([torch.tensor(ng.time.to_numpy())] if ng is not None else [])
    t0 = time.perf_counter()
    ref, *ref_on_ng = simulate_frames(circuit, params, grids, rtol=rtol)
    metrics["reference_time_s"] = time.perf_counter() - t0
    metrics["reference_steps"] = ref.attrs["stats"]["steps"]
    frames = [ref.assign(engine="reference")]
    metrics["reference"] = headline(ref, circuit.outputs)
    if ng is not None:
        metrics["nrmse"] = measure.compare(ng, ref_on_ng[0], columns=circuit.outputs)
        metrics["ngspice"] = headline(ng, circuit.outputs)
        rel = {}
        for key, value in metrics["reference"].items():
            if key.startswith("period[") and key in metrics["ngspice"]:
                rel[key] = abs(value - metrics["ngspice"][key]) / metrics["ngspice"][key]
        metrics["period_rel_error"] = rel
        frames.append(ng[["time", *circuit.outputs]].assign(engine="ngspice"))
    return pd.concat(frames, ignore_index=True), metrics


def plot_overlay(table: pd.DataFrame, outputs: list[str], title: str):
    """One subplot per output: reference (solid) and ngspice (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(outputs), 1, figsize=(9, 1.9 * len(outputs) + 0.6), sharex=True,
                             squeeze=False)
    for ax, col in zip(axes[:, 0], outputs):
        for engine, style in (("reference", "-"), ("ngspice", "--")):
            part = table[table.engine == engine]
            if len(part):
                ax.plot(part.time * 1e9, part[col], style, lw=1.2, label=engine)
        ax.set_ylabel(col)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("time (ns)")
    fig.tight_layout()
    return fig

"""Held-out designs and their reference waveforms: how accurate a surrogate is, overall and per window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from circuits.circuit import Circuit
from circuits.simulation import simulate_batch
from surrogate.headline import Headline
from surrogate.models import Surrogate

__all__ = ["HeldOut", "nrmse_table"]


def nrmse_table(y: Tensor, y_ref: Tensor) -> Tensor:
    """NRMSE (B, n_out) on a shared uniform grid: RMS error / reference peak-to-peak per design and output."""
    err = torch.sqrt(((y - y_ref) ** 2).mean(dim=1))
    pp = (y_ref.amax(dim=1) - y_ref.amin(dim=1)).clamp(min=1e-12)
    return err / pp


@dataclass
class HeldOut:
    """The nominal design, the box's corners (`ParamSpace.corners`) and `designs` uniform random
    ones (never Sobol collocation points) on a uniform grid, with the reference solver's waveforms
    there (and its headline measurement, when the circuit declares one)."""

    circuit: Circuit
    P: Tensor    # (B, P)
    t: Tensor    # (T,)
    ref: Tensor  # (B, T, n_out)
    headline: Headline | None = None

    @classmethod
    def draw(cls, circuit: Circuit, designs: int, points: int, seed: int, fixed_params: bool = False) -> "HeldOut":
        """Held-out designs for a training run with this seed, and their reference waveforms."""
        space = circuit.space
        P = space.nominal_vector().unsqueeze(0)
        if not (fixed_params or space.dim == 0):
            # the box's corners too: the worst designs sit there (amp: one near the (1, 1, 0) corner
            # at 1.45 % of 257 fresh designs, the next at 0.50 %; 257 held-out designs without corners: 0.63 %)
            P = torch.cat([P, space.corners(seed=10_000 + seed),
                           space.sample_uniform(designs, torch.Generator().manual_seed(10_000 + seed))])
        t = torch.linspace(0.0, circuit.tstop, points, dtype=torch.float64)
        # one reference run for the outputs and the headline's waveforms (amp's reads v(in) too)
        outputs = list(circuit.outputs)
        declared = Headline.declared(circuit)
        signals = declared[1].signals() if declared else []
        names = outputs + [s for s in signals if s not in outputs]
        with torch.no_grad():
            _, y = simulate_batch(circuit, P, t=t, outputs=names, rtol=1e-5)
        headline = Headline.measured(declared, t, y[..., [names.index(s) for s in signals]]) if declared else None
        return cls(circuit, P, t, y[..., :len(outputs)], headline)

    def predict(self, model: Surrogate) -> Tensor:
        """The surrogate's waveforms (B, T, n_out) at the held-out designs (no graph)."""
        with torch.no_grad():
            return model.predict_batch(self.t, self.P)

    def evaluate(self, model: Surrogate, y: Tensor | None = None) -> dict[str, Any]:
        """NRMSE of the surrogate on the held-out designs (median and worst per output); `y`: its
        predictions there (B, T, n_out), when the caller has them already."""
        table = nrmse_table(self.predict(model) if y is None else y, self.ref)
        outputs = self.circuit.outputs
        worst_design = int(table.amax(dim=1).argmax())
        headline = {} if self.headline is None else self.headline.summary(self.headline.errors(model, self.P, self.t))
        return {**headline,
                "nrmse_median": {o: float(table[:, k].median()) for k, o in enumerate(outputs)},
                "nrmse_worst": {o: float(table[:, k].max()) for k, o in enumerate(outputs)},
                "nrmse_worst_overall": float(table.max()),
                # median over designs of each design's worst output (a pinned output, exact by
                # construction, would otherwise pull a median over all entries towards 0)
                "nrmse_median_overall": float(table.amax(dim=1).median()),
                "worst_design": self.circuit.space.to_dict(self.P[worst_design]),
                "worst_design_index": worst_design, "designs": int(self.P.shape[0])}

    def design_window_errors(self, model: Surrogate, y: Tensor | None = None) -> Tensor:
        """(B, K): each design's RMS error over the points of each window (worst output), relative to
        the design's reference swing; NaN where a design has no point in a window."""
        y = self.predict(model) if y is None else y
        with torch.no_grad():
            win = model.warp_grid(self.t, self.P)[2]  # (B, T) window of each point
        swing = (self.ref.amax(dim=1) - self.ref.amin(dim=1)).clamp(min=1e-12)  # (B, n)
        err2 = ((y - self.ref) / swing.unsqueeze(1)).pow(2)  # (B, T, n)
        table = torch.full((self.P.shape[0], model.windows), float("nan"), dtype=torch.float64)
        for k in range(model.windows):
            mask = (win == k).unsqueeze(2).to(err2.dtype)
            count = mask.sum(dim=1)  # (B, 1)
            per_design = ((err2 * mask).sum(dim=1) / count.clamp(min=1)).sqrt().amax(dim=1)  # (B,)
            table[:, k] = torch.where(count.squeeze(1) > 0, per_design, table[:, k])
        return table

    def window_errors(self, model: Surrogate) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """Per window: the worst and the median (over held-out designs; worst output) RMS error of the
        points in that window, relative to the design's reference swing; and the overall metrics."""
        y = self.predict(model)
        table = self.design_window_errors(model, y)
        worst = torch.zeros(model.windows, dtype=torch.float64)
        median = torch.zeros_like(worst)
        for k in range(model.windows):
            seen = table[:, k][~table[:, k].isnan()]
            if len(seen):
                worst[k], median[k] = float(seen.max()), float(seen.median())
        return worst, median, self.evaluate(model, y)

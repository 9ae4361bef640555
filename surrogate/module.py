"""LightningModule: PINN training on the DAE residual, validation against the reference solver."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor

from circuits.circuit import circuit_from_config
from circuits.errors import NeuroSpiceError
from circuits.simulation import simulate_batch
from surrogate.api import Surrogate

__all__ = ["PinnModule", "TrainingDiverged", "nrmse_table"]


class TrainingDiverged(NeuroSpiceError):
    """A loss term became NaN or infinite."""


def nrmse_table(y: Tensor, y_ref: Tensor) -> Tensor:
    """NRMSE (B, n_out) on a shared uniform grid: RMS error / reference peak-to-peak per design and output."""
    err = torch.sqrt(((y - y_ref) ** 2).mean(dim=1))
    pp = (y_ref.amax(dim=1) - y_ref.amin(dim=1)).clamp(min=1e-12)
    return err / pp


class PinnModule(L.LightningModule):
    """Adam on the scaled DAE residual at collocation points (optionally causally weighted)."""

    def __init__(self, circuit_cfg: dict, net: dict, lr: float = 3e-3, causal_eps: float = 0.0,
                 causal_bins: int = 16, val_designs: int = 32, val_points: int = 301, seed: int = 0,
                 fixed_params: bool = False, max_steps: int = 1000):
        super().__init__()
        self.save_hyperparameters()
        self.circuit = circuit_from_config(circuit_cfg, source=f"circuit={circuit_cfg.get('name')}")
        self.model = Surrogate(self.circuit, **net)
        space = self.circuit.space
        if fixed_params or space.dim == 0:
            self.val_P = space.nominal_vector().unsqueeze(0)
        else:  # held-out designs: uniform random, never Sobol collocation points
            self.val_P = space.sample_uniform(val_designs, torch.Generator().manual_seed(10_000 + seed))
            self.val_P = torch.cat([space.nominal_vector().unsqueeze(0), self.val_P])
        self.val_t = torch.linspace(0.0, self.circuit.tstop, val_points, dtype=torch.float64)
        with torch.no_grad():
            _, self.val_ref = simulate_batch(self.circuit, self.val_P, t=self.val_t, rtol=1e-5)
        self.last_val: dict[str, Any] = {}

    def loss_terms(self, t: Tensor, designs: Tensor) -> dict[str, Tensor]:
        """Residual loss (and its causal weighting) for D designs × T times."""
        phys = self.model.physics
        T = t.shape[0] // designs.shape[0]
        with torch.no_grad():
            x0 = phys.initial_state(phys.bind(designs)).repeat_interleave(T, dim=0)
        P = designs.repeat_interleave(T, dim=0)
        x, xdot, bound = self.model.state(t, P, x0=x0, with_rate=True)
        r2 = phys.residual(bound, x, xdot, t).pow(2).sum(dim=1)
        terms = {"residual": r2.mean()}
        eps = self.hparams.causal_eps
        if eps > 0:
            K = self.hparams.causal_bins
            bins = torch.clamp((t / self.circuit.tstop * K).long(), max=K - 1)
            per_bin = torch.zeros(K, dtype=r2.dtype).index_add(0, bins, r2)
            counts = torch.bincount(bins, minlength=K).clamp(min=1).to(r2.dtype)
            per_bin = per_bin / counts
            weights = torch.exp(-eps * (torch.cumsum(per_bin.detach(), 0) - per_bin.detach()))
            terms["causal"] = (weights * per_bin).mean()
            terms["causal_min_weight"] = weights.min()
        return terms

    def training_step(self, batch, batch_idx):
        t, designs = batch
        terms = self.loss_terms(t, designs)
        loss = terms["causal"] if "causal" in terms else terms["residual"]
        for name, value in terms.items():
            if not torch.isfinite(value):
                raise TrainingDiverged(f"training diverged at step {self.global_step}: loss term "
                                       f"'{name}' is {float(value)}; last good checkpoint kept")
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, prog_bar=True, on_step=True,
                      batch_size=t.shape[0])
        return loss

    def evaluate_designs(self) -> dict[str, Any]:
        """NRMSE of the surrogate on the held-out designs (median and worst per output)."""
        with torch.no_grad():
            y = self.model.predict_batch(self.val_t, self.val_P)
        table = nrmse_table(y, self.val_ref)
        outputs = self.circuit.outputs
        worst_design = int(table.amax(dim=1).argmax())
        return {"nrmse_median": {o: float(table[:, k].median()) for k, o in enumerate(outputs)},
                "nrmse_worst": {o: float(table[:, k].max()) for k, o in enumerate(outputs)},
                "nrmse_worst_overall": float(table.max()), "nrmse_median_overall": float(table.median()),
                "worst_design": self.circuit.space.to_dict(self.val_P[worst_design]),
                "worst_design_index": worst_design, "designs": int(self.val_P.shape[0])}

    def validation_step(self, batch, batch_idx):
        with torch.enable_grad():
            metrics = self.evaluate_designs()
        self.last_val = metrics
        self.log("val/nrmse_worst", metrics["nrmse_worst_overall"], prog_bar=True, batch_size=1)
        self.log("val/nrmse_median", metrics["nrmse_median_overall"], batch_size=1)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.model.net.parameters(), lr=self.hparams.lr)
        steps = max(1, int(self.hparams.max_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

"""LightningModule: the scaled DAE residual at collocation points, its Adam step, and logging.

Everything else a training run does - the window schedule and its L-BFGS, retries, the limit
cycle's distillation, rate projection, training to a target - is a callback in surrogate/callbacks/.
"""

from __future__ import annotations

import bisect
import logging
import math
from typing import Any

import lightning as L
import torch
from torch import Tensor

from circuits.circuit import Circuit
from circuits.errors import NeuroSpiceError
from surrogate.held_out import HeldOut, nrmse_table
from surrogate.models import Surrogate
from surrogate.sampling import WindowSampler

__all__ = ["PinnModule", "TrainingDiverged", "cosine_lr_factor", "nrmse_table"]

log = logging.getLogger(__name__)


def cosine_lr_factor(k: int, steps: int) -> float:
    """Learning-rate factor at step k of a cosine cycle of `steps` steps (from 1 down to 0.05)."""
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(k, steps) / max(steps, 1)))


class TrainingDiverged(NeuroSpiceError):
    """A loss term became NaN or infinite."""


class PinnModule(L.LightningModule):
    """Adam on the scaled DAE residual (optionally causally weighted) of the window being trained."""

    def __init__(self, model: Surrogate, sampler: WindowSampler, held_out: HeldOut, *, lr: float = 3e-3,
                 causal_eps: float = 0.0, causal_bins: int = 16, steps_per_window: int = 1000, seed: int = 0):
        super().__init__()
        self.save_hyperparameters(ignore=["model", "sampler", "held_out"])
        self.model = model
        self.sampler = sampler
        self.held_out = held_out
        self.last_val: dict[str, Any] = {}
        self._last_points: tuple | None = None
        self._frozen_scales: dict | None = None
        # the global step at which each window's Adam starts (and, last, where Adam ends): a window
        # whose Adam outruns its time allowance is cut short (`end_adam_early`) and the later ones move up
        self.adam_edges = [steps_per_window * k for k in range(model.windows + 1)]

    @property
    def circuit(self) -> Circuit:
        """The circuit the surrogate is trained for."""
        return self.model.circuit

    @property
    def windows(self) -> int:
        """Number of time windows of the surrogate (trained one after the other)."""
        return self.model.windows

    @property
    def steps_per_window(self) -> int:
        """Adam steps spent on each window."""
        return int(self.hparams.steps_per_window)

    def window_at(self, step: int) -> int:
        """The window whose Adam a global step belongs to (the last window past the edges)."""
        return min(bisect.bisect_right(self.adam_edges, step) - 1, len(self.adam_edges) - 2)

    @property
    def active_window(self) -> int:
        """The window being trained at the current global step."""
        return self.window_at(self.global_step)

    def end_adam_early(self, window: int) -> int:
        """End a window's Adam after the step just taken (called after the optimiser step, when
        `global_step` counts it): later windows start at the next step and the trainer's step limit
        moves with them. Returns how many steps were dropped."""
        dropped = self.adam_edges[window + 1] - self.global_step
        if dropped <= 0:
            return 0
        for j in range(window + 1, len(self.adam_edges)):
            self.adam_edges[j] -= dropped
        loop = self.trainer.fit_loop.epoch_loop
        loop.max_steps = max(self.global_step, loop.max_steps - dropped)
        return dropped

    def adam_lr_factor(self, step: int) -> float:
        """Learning-rate factor at a global step: a cosine cycle over each window's Adam steps."""
        edges, k = self.adam_edges, self.window_at(step)
        return cosine_lr_factor(step - edges[k], edges[k + 1] - edges[k])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["adam_edges"] = list(self.adam_edges)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "adam_edges" in checkpoint and len(checkpoint["adam_edges"]) == len(self.adam_edges):
            self.adam_edges = list(checkpoint["adam_edges"])

    def on_train_start(self) -> None:
        # a resumed run: its step limit moves as the interrupted run's windows were cut short
        dropped = self.steps_per_window * (len(self.adam_edges) - 1) - self.adam_edges[-1]
        if dropped > 0:
            loop = self.trainer.fit_loop.epoch_loop
            loop.max_steps = max(self.global_step, loop.max_steps - dropped)

    def window_start_states(self, designs: Tensor, window: int) -> Tensor:
        """State (D, n) of each design at the start of a window (no graph)."""
        return self.sampler.window_start_states(self.model, designs, window)

    def per_point(self, t: Tensor, designs: Tensor, window: int) -> tuple[Tensor, Tensor]:
        """(design (D·T, P), window start state (D·T, n)) of each point for D designs × T times."""
        T = t.shape[0] // designs.shape[0]
        starts = self.window_start_states(designs, window).repeat_interleave(T, dim=0)
        return designs.repeat_interleave(T, dim=0), starts

    def loss_terms(self, t: Tensor, designs: Tensor, window: int = 0,
                   starts: Tensor | None = None) -> dict[str, Tensor]:
        """Residual loss (and its causal weighting) for D designs × T times in one window; `starts`
        (D·T, n): each point's window start state (computed when not given)."""
        if starts is None:
            designs, starts = self.per_point(t, designs, window)
        r2 = self.point_residuals(t, designs, starts, window)
        terms = {"residual": r2.mean()}
        eps = self.hparams.causal_eps
        if eps > 0:
            K = self.hparams.causal_bins
            t0, t1 = float(self.model.edges[window]), float(self.model.edges[window + 1])
            bins = torch.clamp(((t - t0) / (t1 - t0) * K).long(), min=0, max=K - 1)
            per_bin = torch.zeros(K, dtype=r2.dtype).index_add(0, bins, r2)
            counts = torch.bincount(bins, minlength=K).clamp(min=1).to(r2.dtype)
            per_bin = per_bin / counts
            weights = torch.exp(-eps * (torch.cumsum(per_bin.detach(), 0) - per_bin.detach()))
            terms["causal"] = (weights * per_bin).mean()
            terms["causal_min_weight"] = weights.min()
        return terms

    def point_residuals(self, t: Tensor, P: Tensor, starts: Tensor, window: int) -> Tensor:
        """Squared scaled residual (N,) at points (network time t, design P, window start state)."""
        model = self.model
        t = model.unwarp(t, P, window)  # window times are network times w; the physics runs in seconds
        x, xdot, bound = model.state(t, P, with_rate=True, starts=starts, window=window)
        self._last_points = (bound, x, t)  # to name a non-finite device if the loss turns NaN
        physics = model.physics
        point_scale = None
        if model.hparams_net.get("point_scale"):
            key = (window, t.shape[0], float(t.sum()), float(P.sum()))

            def point_scale(bound, x, t):
                scale = self._frozen_scales.get(key) if self._frozen_scales is not None else None
                if scale is None:
                    scale = physics.point_row_scale(bound, x, t)
                    if self._frozen_scales is not None:
                        self._frozen_scales[key] = scale
                return scale
        return physics.residual(bound, x, xdot, t, point_scale).pow(2).sum(dim=1)

    def freeze_row_scales(self, frozen: bool) -> None:
        """Hold each point set's per-point row scales (`point_scale` models) at their values on the
        next evaluation, until called again: L-BFGS needs one fixed function per run of iterations,
        and scales that followed the network would make its gradients inconsistent."""
        self._frozen_scales = {} if frozen else None

    def training_step(self, batch, batch_idx):
        t, designs = batch
        window = self.active_window
        # a pure function of (seed, rank, step): each DDP rank its own points, exact on resume
        seed = (int(self.hparams.seed) * 1_000_003 + self.global_rank * 10_007 + self.global_step) % 2**62
        t, designs = self.sampler.window_batch(self.model, window, t, designs, seed)
        terms = self.loss_terms(t, designs, window)
        loss = terms["causal"] if "causal" in terms else terms["residual"]
        for name, value in terms.items():
            if not torch.isfinite(value):
                bound, x, t_pts = self._last_points
                culprit = bound.nonfinite(x, t_pts)
                kept = ("; the last checkpoint is kept" if self.global_step >= self._checkpoint_every()
                        else "; no checkpoint was written yet")
                raise TrainingDiverged(f"training diverged at step {self.global_step}: loss term "
                                       f"'{name}' is {float(value.detach())}" + (f" ({culprit})" if culprit else "") + kept)
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, prog_bar=True, on_step=True,
                      batch_size=t.shape[0])
        if self.windows > 1:
            self.log("train/window", float(window), prog_bar=True, on_step=True, batch_size=1)
        return loss

    def _checkpoint_every(self) -> float:
        """Steps between checkpoints of the trainer's ModelCheckpoint (inf without one)."""
        from lightning.pytorch.callbacks import ModelCheckpoint

        trainer = self._trainer
        every = [cb._every_n_train_steps for cb in (trainer.callbacks if trainer else [])
                 if isinstance(cb, ModelCheckpoint) and cb._every_n_train_steps]
        return float(min(every)) if every else float("inf")

    def evaluate_designs(self, y: Tensor | None = None) -> dict[str, Any]:
        """NRMSE of the surrogate on the held-out designs (`HeldOut.evaluate`)."""
        return self.held_out.evaluate(self.model, y)

    def validation_step(self, batch, batch_idx):
        with torch.enable_grad():
            metrics = self.evaluate_designs()
        self.last_val = metrics
        self.log("val/nrmse_worst", metrics["nrmse_worst_overall"], prog_bar=True, batch_size=1)
        self.log("val/nrmse_median", metrics["nrmse_median_overall"], batch_size=1)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.model.nets.parameters(), lr=self.hparams.lr)

        def factor(step: int) -> float:  # a plain function: LambdaLR would pickle a callable object's state
            return self.adam_lr_factor(step)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

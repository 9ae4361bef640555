"""The window schedule: windows trained one after the other, each by Adam (the trainer's loop) and
then float64 L-BFGS on a fixed point set, the next window starting from its weights.

Other phases hook into it as `WindowPhase` callbacks: when a window starts (the limit cycle's
distillation), after each L-BFGS (rate projection) and when a window ends (stall and collapse
retries).  A new trick is a new phase file and an entry in configs/callbacks/.
"""

from __future__ import annotations

import logging
import math
import time
from functools import partial
from typing import Any

import lightning as L
import torch

from surrogate.module import PinnModule, TrainingDiverged, cosine_lr_factor
from surrogate.sampling import PointSet

__all__ = ["WindowPhase", "WindowSchedule", "LBFGS_CHUNK"]

log = logging.getLogger(__name__)

#: L-BFGS iterations between checks of a window's time allowance (at most; with an allowance the
#: chunks are sized to the time left, from a first chunk of LBFGS_FIRST_CHUNK, never below
#: LBFGS_MIN_CHUNK: each chunk costs one extra evaluation at its start)
LBFGS_CHUNK = 100
LBFGS_FIRST_CHUNK = 10
LBFGS_MIN_CHUNK = 5


class WindowPhase(L.Callback):
    """A training phase that acts on one window at a time (the `WindowSchedule` calls these hooks)."""

    def on_window_start(self, schedule: "WindowSchedule", module: PinnModule, window: int, seed: int) -> None:
        """A window's network is about to be trained (after its warm start or re-initialisation)."""

    def after_lbfgs(self, schedule: "WindowSchedule", module: PinnModule, window: int, points: PointSet,
                    history: list[float]) -> list[float]:
        """After an L-BFGS run on a window: the residual history, possibly extended."""
        return history

    def on_window_end(self, schedule: "WindowSchedule", module: PinnModule, window: int, points: PointSet,
                      final: float, seed: int) -> float:
        """A window's training is over: its final L-BFGS residual, after any retraining here."""
        return final


class WindowSchedule(L.Callback):
    """Adam steps on window k (the trainer's loop, cut short past `adam_seconds`), then L-BFGS of up
    to `lbfgs_steps` iterations within `lbfgs_seconds` on a fixed set (both time limits scaled by the
    model's `cost_weight`; 0: no limit); window k + 1 then starts from window k's weights."""

    def __init__(self, lbfgs_steps: int = 0, lbfgs_seconds: float = 0.0, adam_seconds: float = 0.0):
        self.lbfgs_steps, self.lbfgs_seconds = int(lbfgs_steps), float(lbfgs_seconds)
        self.adam_seconds = float(adam_seconds)
        self._adam_began: float | None = None  # when the active window's Adam started
        self.trained_window = 0
        self.lbfgs_history: list[float] = []
        self.window_residuals: list[float] = []  # final L-BFGS residual of each finished window
        self.phases: list[WindowPhase] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.phases = [cb for cb in trainer.callbacks if isinstance(cb, WindowPhase)]

    def state_dict(self) -> dict[str, Any]:
        return {"trained_window": self.trained_window, "window_residuals": list(self.window_residuals)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.trained_window = int(state_dict.get("trained_window", 0))
        self.window_residuals = list(state_dict.get("window_residuals", []))

    def on_train_batch_start(self, trainer, module: PinnModule, batch, batch_idx) -> None:
        k = module.active_window
        if k != self.trained_window:  # entering a new window: finish the last, start from its net
            if k > 0:
                self.finish_window(module, k - 1)
                self._start_from_previous(module, k)
                self.start_window(module, k, seed=int(module.hparams.seed) * 31 + 4_999 + k)
            self.trained_window = k
            self._adam_began = None
        if self._adam_began is None:
            self._adam_began = time.perf_counter()

    def on_train_batch_end(self, trainer, module: PinnModule, outputs, batch, batch_idx) -> None:
        k = module.active_window
        allowance = self.adam_seconds * module.model.cost_weight(k)
        if allowance > 0 and self._adam_began is not None and time.perf_counter() - self._adam_began > allowance:
            dropped = module.end_adam_early(k)
            if dropped:
                log.info("window %d: Adam stopped %d steps early (its %.0f s allowance is spent)", k, dropped, allowance)

    def on_train_end(self, trainer, module: PinnModule) -> None:
        self.finish_window(module, module.windows - 1)  # earlier windows were finished as training moved on

    # -- one window -------------------------------------------------------------------------------

    def start_window(self, module: PinnModule, window: int, seed: int) -> None:
        """Tell the phases a window's network is about to be trained."""
        for phase in self.phases:
            phase.on_window_start(self, module, window, seed)

    def finish_window(self, module: PinnModule, window: int) -> float:
        """L-BFGS on the window's fixed point set, then the phases' end-of-window work; its final residual.

        Adam finds the basin; L-BFGS then cuts the residual by orders of magnitude (measured on
        ring5: NRMSE 0.35 -> 8e-4 in the first window)."""
        if self.lbfgs_steps <= 0:
            return math.nan
        # the same designs and points on every DDP rank, so the ranks' networks stay identical;
        # start states fixed during L-BFGS: the DC point is solved once
        seed = int(module.hparams.seed) * 31 + 977 + window
        points = self.lbfgs_points(module, window, seed)
        final = self.optimise(module, window, points)[-1]
        for phase in self.phases:
            final = phase.on_window_end(self, module, window, points, final, seed)
        self.record(window, final)
        return final

    def record(self, window: int, final: float) -> None:
        """Store a window's final L-BFGS residual."""
        if window < len(self.window_residuals):
            self.window_residuals[window] = final
        else:
            self.window_residuals.append(final)

    def lbfgs_points(self, module: PinnModule, window: int, seed: int) -> PointSet:
        """A window's fixed L-BFGS point set (`WindowSampler.lbfgs_points`)."""
        residuals = partial(module.point_residuals, window=window)
        return module.sampler.lbfgs_points(module.model, window, seed, residuals=residuals)

    def optimise(self, module: PinnModule, window: int, points: PointSet, steps: int | None = None) -> list[float]:
        """Float64 L-BFGS of one window's network on fixed points, then the phases' `after_lbfgs`;
        the residual history.  Runs in chunks of LBFGS_CHUNK iterations until `steps`, the window's
        time allowance or convergence."""
        steps = self.lbfgs_steps if steps is None else steps
        net = module.model.nets[window]
        dtype = next(net.parameters()).dtype
        net.to(torch.float64)  # L-BFGS made no progress in float32
        history = self._lbfgs(module, window, points, steps)
        for phase in self.phases:
            history = phase.after_lbfgs(self, module, window, points, history)
        net.to(dtype)
        log.info("window %d: L-BFGS residual %.3g -> %.3g (%d evaluations)", window, history[0],
                 history[-1], len(history))
        self.lbfgs_history += history
        return history

    def _lbfgs(self, module: PinnModule, window: int, points: PointSet, steps: int) -> list[float]:
        net = module.model.nets[window]
        t, designs, starts = points
        opt = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=min(steps, LBFGS_CHUNK), history_size=50,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)
        history: list[float] = []

        def closure():
            opt.zero_grad()
            loss = module.loss_terms(t, designs, window, starts)["residual"]
            loss.backward()
            history.append(float(loss.detach()))
            return loss

        allowance = self.lbfgs_seconds * module.model.cost_weight(window)
        began = time.perf_counter()
        done = 0
        state = opt.state[next(net.parameters())]
        while done < steps:
            chunk = min(LBFGS_CHUNK, steps - done)
            if allowance > 0:  # chunks sized to the time left: a 100-iteration chunk of ring21 ran 150 s of a 56 s allowance
                spent = time.perf_counter() - began
                chunk = min(chunk, self._chunk_for(allowance - spent, spent, done))
            opt.param_groups[0]["max_iter"] = chunk
            opt.step(closure)
            ran = int(state.get("n_iter", 0)) - done
            done += ran
            converged = ran < chunk or not math.isfinite(history[-1])  # L-BFGS stopped on its tolerances
            if converged or (allowance > 0 and time.perf_counter() - began > allowance):
                break
        if history and not math.isfinite(history[-1]):
            raise TrainingDiverged(f"L-BFGS diverged in window {window}: residual is {history[-1]}")
        return history

    @staticmethod
    def _chunk_for(left: float, spent: float, done: int) -> int:
        """L-BFGS iterations for the next chunk: what fits in the `left` seconds at the rate of the
        `done` iterations so far (LBFGS_FIRST_CHUNK before any), between LBFGS_MIN_CHUNK and LBFGS_CHUNK."""
        if done == 0:
            return LBFGS_FIRST_CHUNK
        return max(LBFGS_MIN_CHUNK, min(LBFGS_CHUNK, int(left / max(spent / done, 1e-9))))

    def adam(self, module: PinnModule, window: int, steps: int, seed: int) -> None:
        """Plain Adam on one window (cosine learning rate), outside the trainer's loop, within the
        window's Adam allowance (per `steps_per_window` steps)."""
        net = module.model.nets[window]
        lr = float(module.hparams.lr)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        allowance = self.adam_seconds * module.model.cost_weight(window) * steps / max(module.steps_per_window, 1)
        began = time.perf_counter()
        for k in range(steps):
            if allowance > 0 and time.perf_counter() - began > allowance:
                log.info("window %d: Adam stopped after %d of %d steps (its %.0f s allowance is spent)",
                         window, k, steps, allowance)
                break
            t, designs = module.sampler.adam_batch(module.model, window, seed + k)
            for group in opt.param_groups:
                group["lr"] = lr * cosine_lr_factor(k, steps)
            opt.zero_grad()
            module.loss_terms(t, designs, window)["residual"].backward()
            opt.step()

    def retrain_fresh(self, module: PinnModule, window: int, seed: int, adam_steps: int, points: PointSet) -> list[float]:
        """One window from fresh random weights: the phases' start (a limit cycle's distillation),
        Adam, then L-BFGS on the window's fixed points; the L-BFGS residual history."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            module.model.nets[window].reset_parameters()  # a limit-cycle window also resets F(u) to 1
        self.start_window(module, window, seed)
        if adam_steps > 0:
            self.adam(module, window, adam_steps, seed=seed)
        return self.optimise(module, window, points)

    @staticmethod
    def _start_from_previous(module: PinnModule, window: int) -> None:
        """Copy the previous window's weights into this window's network (each keeps its corner buffer)."""
        model = module.model
        if not model.compatible(window, window - 1):  # the limit-cycle window has its own architecture
            return
        with torch.no_grad():
            for dst, src in zip(model.nets[window].parameters(), model.nets[window - 1].parameters()):
                dst.copy_(src)

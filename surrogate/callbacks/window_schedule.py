"""The window schedule: windows trained one after the other, each by Adam (the trainer's loop) and
then a quasi-Newton method on a fixed point set (dense BFGS for a network small enough, else
L-BFGS; float64 weights, the network evaluated in its own precision), the next window starting
from the weights of the earlier window that fits it best.

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

from surrogate.bfgs import DenseBFGS, dense_bfgs_fits
from surrogate.launch import stop_if_signalled
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
#: L-BFGS that stops restarts with a fresh memory while each stop is below this share of the
#: previous one's residual
RESTART_GAIN = 0.5


class MasterWeights:
    """Float64 master copies of a network's parameters for L-BFGS, the network evaluated in its own
    precision until L-BFGS stops, then in float64 (`promote`).

    L-BFGS on float32 weights made no progress: its curvature pairs and line search need float64.
    A float32 network evaluates 1.6x faster than a float64 one, and far from convergence its
    gradients serve as well (amp's window 0: residual 1.25e-6 in 150 s against 1.86e-6 all in
    float64), but near a stall the float32 sums over the points drown the small total gradient and
    the line search fails (rc analytic test, 16x2 network: stopped at 3.4e-3; promoted, 8.4e-5)."""

    def __init__(self, net: torch.nn.Module):
        self.net = net
        self.dtype = next(net.parameters()).dtype
        self.params = list(net.parameters())
        self.master = [p.detach().to(torch.float64).clone().requires_grad_(p.requires_grad) for p in self.params]

    @property
    def reduced(self) -> bool:
        """Whether the network still evaluates in a lower precision than float64."""
        return self.params[0].dtype != torch.float64

    def promote(self) -> None:
        """Evaluate the network in float64 from now on."""
        self.net.to(torch.float64)
        self.params = list(self.net.parameters())

    def load(self) -> None:
        """The network's parameters := the master weights (rounded to its precision)."""
        with torch.no_grad():
            for p, m in zip(self.params, self.master):
                p.copy_(m)

    def store_grads(self) -> None:
        """The master weights' gradients := the network's (in float64)."""
        for p, m in zip(self.params, self.master):
            m.grad = None if p.grad is None else p.grad.to(torch.float64)
            p.grad = None

    def finish(self) -> None:
        """The network back in its own precision, holding the master weights."""
        self.net.to(self.dtype)
        self.params = list(self.net.parameters())
        self.load()


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
    model's `cost_weight`; 0: no limit).  Window k + 1 then starts from the weights of whichever
    earlier window fits it best, and skips Adam when that start is already as good as what Adam
    reached on the earlier windows."""

    def __init__(self, lbfgs_steps: int = 0, lbfgs_seconds: float = 0.0, adam_seconds: float = 0.0):
        self.lbfgs_steps, self.lbfgs_seconds = int(lbfgs_steps), float(lbfgs_seconds)
        self.adam_seconds = float(adam_seconds)
        self._adam_began: float | None = None  # when the active window's Adam started
        self.trained_window = 0
        self.lbfgs_history: list[float] = []
        self.window_residuals: list[float] = []  # final L-BFGS residual of each finished window
        self.adam_reached: list[float] = []  # each finished window's residual when its L-BFGS began
        self.phases: list[WindowPhase] = []
        self._undo_adam: dict[str, torch.Tensor] | None = None  # weights to restore after a skipped Adam's step

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.phases = [cb for cb in trainer.callbacks if isinstance(cb, WindowPhase)]

    def state_dict(self) -> dict[str, Any]:
        return {"trained_window": self.trained_window, "window_residuals": list(self.window_residuals),
                "adam_reached": list(self.adam_reached)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.trained_window = int(state_dict.get("trained_window", 0))
        self.window_residuals = list(state_dict.get("window_residuals", []))
        self.adam_reached = list(state_dict.get("adam_reached", []))

    def on_train_batch_start(self, trainer, module: PinnModule, batch, batch_idx) -> None:
        k = module.active_window
        if k != self.trained_window:  # entering a new window: finish the last, start from the best earlier net
            if k > 0:
                self.finish_window(module, k - 1)
                t, designs = module.sampler.adam_batch(module.model, k, seed=int(module.hparams.seed) * 31 + 6_007 + k)
                probe = (t, *module.per_point(t, designs, k))  # start states solved once for every candidate
                warm = self._start_from_best_earlier(module, k, probe)
                self.start_window(module, k, seed=int(module.hparams.seed) * 31 + 4_999 + k)
                if warm:
                    self._skip_adam_if_warm(module, k, probe)
            self.trained_window = k
            self._adam_began = None
        if self._adam_began is None:
            self._adam_began = time.perf_counter()

    def on_train_batch_end(self, trainer, module: PinnModule, outputs, batch, batch_idx) -> None:
        k = module.active_window
        if self._undo_adam is not None:  # this window's one Adam step is undone and its Adam ended
            module.model.nets[k].load_state_dict(self._undo_adam)
            self._undo_adam = None
            module.end_adam_early(k)
            return
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
        history = self.optimise(module, window, points)
        if window == len(self.adam_reached):
            self.adam_reached.append(history[0])
        final = history[-1]
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
        """L-BFGS of one window's network on fixed points, then the phases' `after_lbfgs`; the
        residual history.  Runs in chunks of LBFGS_CHUNK iterations until `steps`, the window's time
        allowance or convergence."""
        steps = self.lbfgs_steps if steps is None else steps
        log.info("window %d: L-BFGS on %d points (at most %d iterations, %.0f s)", window, points[0].shape[0],
                 steps, self.lbfgs_seconds * module.model.cost_weight(window))
        history = self._lbfgs(module, window, points, steps)
        for phase in self.phases:
            history = phase.after_lbfgs(self, module, window, points, history)
        log.info("window %d: L-BFGS residual %.3g -> %.3g (%d evaluations)", window, history[0],
                 history[-1], len(history))
        self.lbfgs_history += history
        return history

    def _lbfgs(self, module: PinnModule, window: int, points: PointSet, steps: int) -> list[float]:
        net = module.model.nets[window]
        t, designs, starts = points
        weights = MasterWeights(net)

        dense = dense_bfgs_fits(weights.master)

        def fresh_optimizer() -> torch.optim.Optimizer:
            if dense:  # full BFGS goes on where L-BFGS's short memory stalls (surrogate/bfgs.py)
                return DenseBFGS(weights.master, max_iter=min(steps, LBFGS_CHUNK), tolerance_change=1e-15)
            return torch.optim.LBFGS(weights.master, lr=1.0, max_iter=min(steps, LBFGS_CHUNK), history_size=50,
                                     line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)

        opt = fresh_optimizer()
        history: list[float] = []
        # where L-BFGS stops after real progress (its line search finds no decrease along a
        # direction its memory built: per-point row scales re-taken at each chunk, or curvature
        # learned far from here), a fresh L-BFGS goes on from that point
        at_restart, opt_base = math.inf, 0

        def closure():
            stop_if_signalled(module)
            opt.zero_grad()
            weights.load()
            loss = module.loss_terms(t, designs, window, starts)["residual"]
            loss.backward()
            weights.store_grads()
            history.append(float(loss.detach()))
            return loss

        allowance = self.lbfgs_seconds * module.model.cost_weight(window)
        began = time.perf_counter()
        done = 0
        state = opt.state[weights.master[0]]
        try:
            while done < steps:
                chunk = min(LBFGS_CHUNK, steps - done)
                if allowance > 0:  # chunks sized to the time left: a 100-iteration chunk of ring21 ran 150 s of a 56 s allowance
                    spent = time.perf_counter() - began
                    chunk = min(chunk, self._chunk_for(allowance - spent, spent, done))
                opt.param_groups[0]["max_iter"] = chunk
                module.freeze_row_scales(True)  # per-point scales re-taken at each chunk's start
                opt.step(closure)
                ran = int(state.get("n_iter", 0)) - (done - opt_base)
                done += ran
                converged = ran < chunk or not math.isfinite(history[-1])  # L-BFGS stopped on its tolerances
                if converged and weights.reduced and math.isfinite(history[-1]):
                    weights.promote()  # a stop in float32 may be float32's; float64 goes on from there
                    continue
                if converged and history[-1] < RESTART_GAIN * at_restart:
                    at_restart, opt_base = history[-1], done
                    opt = fresh_optimizer()
                    state = opt.state[weights.master[0]]
                    continue
                if converged or (allowance > 0 and time.perf_counter() - began > allowance):
                    break
        finally:
            module.freeze_row_scales(False)
            weights.finish()  # the network ends at L-BFGS's last accepted point
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
            stop_if_signalled(module)
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

    def _start_from_best_earlier(self, module: PinnModule, window: int, probe: PointSet) -> bool:
        """Start this window from its predecessor's weights, or from an earlier compatible window's
        whose residual on `probe` (times, designs, start states) of this window is lower still and below what Adam
        reached on the earlier windows (the median): under a periodic drive, the window a period
        earlier (amp: 1e-4 against 1e-2 from the previous half period's).  Whether it has a
        compatible predecessor at all (the limit-cycle window has its own architecture)."""
        model = module.model
        candidates = [j for j in range(window - 1, -1, -1) if model.compatible(window, j)]
        if not candidates:
            return False
        net = model.nets[window]
        residuals = {}
        for j in candidates:
            self._copy_weights(model.nets[j], net)
            residuals[j] = self._probe_residual(module, window, probe)
        best = min(candidates, key=lambda j: residuals[j] if math.isfinite(residuals[j]) else math.inf)
        # a start no better than what Adam reaches is not worth leaving the predecessor for
        # (ring5's start-up windows: 2.6e14 from window 0, more from window 1)
        nearest = candidates[0]  # the predecessor
        if best != nearest and not residuals[best] < self._adam_median():
            best = nearest
        self._copy_weights(model.nets[best], net)
        if best != nearest:
            log.info("window %d: starts from window %d's weights (residual %.3g)", window, best, residuals[best])
        return True

    def _adam_median(self) -> float:
        """The (lower) median residual Adam reached on the finished windows (NaN before any): with
        two windows the better one, so a start must beat Adam's best there (feram's window 2 from
        window 0 at 0.29 skipped Adam against the upper median 0.34, window 0 having reached 4.7e-6)."""
        if not self.adam_reached:
            return math.nan
        return sorted(self.adam_reached)[(len(self.adam_reached) - 1) // 2]

    def _skip_adam_if_warm(self, module: PinnModule, window: int, probe: PointSet) -> None:
        """Skip Adam (undo its first step, end it there) when the window's warm start residual is
        already below the median of what Adam reached on the earlier windows: from such a start
        Adam's first steps only shake the network out of a basin L-BFGS can use."""
        residual, typical = self._probe_residual(module, window, probe), self._adam_median()
        if residual < typical:
            self._undo_adam = {k: v.detach().clone() for k, v in module.model.nets[window].state_dict().items()}
            log.info("window %d: Adam skipped, its start residual %.3g is below the %.3g Adam reached on "
                     "earlier windows (median)", window, residual, typical)

    @staticmethod
    def _probe_residual(module: PinnModule, window: int, probe: PointSet) -> float:
        """The window's residual on the probe points under its current network."""
        t, designs, starts = probe
        with torch.no_grad():
            return float(module.loss_terms(t, designs, window, starts)["residual"])

    @staticmethod
    def _copy_weights(src: torch.nn.Module, dst: torch.nn.Module) -> None:
        """dst's parameters := src's (each network keeps its own buffers, e.g. its corner times)."""
        with torch.no_grad():
            for d, s in zip(dst.parameters(), src.parameters()):
                d.copy_(s)

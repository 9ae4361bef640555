"""Train to a target: after the scheduled windows, fix the window where the held-out error is made.

The PINN analogue of SPICE's local-truncation-error step control.  The held-out designs' reference
waveforms say how far off each time window is; of the windows above the target, the one whose error
grew most over its predecessor's is where the error was made (later windows inherit it through
their start states).  That window
is split in two and both halves retrained (plain windows in seconds), or, where splitting is not
possible (an oscillator's warped start-up windows, the limit cycle, a window already short), its
L-BFGS continues on fresh collocation points.  A window is first refined that way (cheaper, and
enough where L-BFGS overfitted its points); it is split when it misses again.  Windows after it see their start state as an input
(a flow map), so they follow the corrected start without retraining.  The loop ends when the
held-out worst NRMSE meets the target or the wall-clock budget is spent.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["TrainToTarget", "window_errors"]

log = logging.getLogger(__name__)

#: the shortest window a split may produce, as a share of the transient window
MIN_WINDOW_SHARE = 1 / 256

#: windows the loop will not split beyond
MAX_WINDOWS = 96


def window_errors(module) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Per window: the worst and the median (over held-out designs; worst output) RMS error of the
    points in that window, relative to the design's reference swing; and the overall held-out metrics."""
    model = module.model
    with torch.no_grad():
        y = model.predict_batch(module.val_t, module.val_P)
        win = model.warp_grid(module.val_t, module.val_P)[2]  # (B, T) window of each point
    ref = module.val_ref
    swing = (ref.amax(dim=1) - ref.amin(dim=1)).clamp(min=1e-12)  # (B, n)
    err2 = ((y - ref) / swing.unsqueeze(1)).pow(2)  # (B, T, n)
    worst = torch.zeros(model.windows, dtype=torch.float64)
    median = torch.zeros_like(worst)
    for k in range(model.windows):
        mask = (win == k).unsqueeze(2).to(err2.dtype)
        count = mask.sum(dim=1)  # (B, 1)
        if float(count.max()) == 0:
            continue
        per_design = ((err2 * mask).sum(dim=1) / count.clamp(min=1)).sqrt().amax(dim=1)  # (B,)
        seen = per_design[count.squeeze(1) > 0]
        worst[k], median[k] = float(seen.max()), float(seen.median())
    return worst, median, module.evaluate_designs()


@dataclass
class TrainToTarget:
    """Retrain the window that makes the error until the held-out NRMSE meets the target (worst <= `target`,
    median <= `target_median`) or the clock passes `deadline` (time.perf_counter() seconds)."""

    target: float
    deadline: float
    adam_steps: int
    target_median: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    _refined: set[tuple[float, float]] = field(default_factory=set)

    def _round_estimate(self, module) -> float:
        """Expected length (s) of the next round: the longest so far, else two windows' allowance
        (a split retrains two)."""
        done = [r["seconds"] for r in self.history]
        return max(done) if done else 2.0 * float(module.hparams.get("lbfgs_seconds") or 0.0)

    def culprit(self, errors: Tensor, medians: Tensor) -> int:
        """The window to work on: among windows whose worst error exceeds the target, the one where
        the error grew most over its predecessor's (where it was made, not where it was inherited;
        the earliest of equals); else the window with the largest median error."""
        above = errors > self.target
        if bool(above.any()):
            growth = errors - torch.cat([errors.new_zeros(1), errors[:-1]])
            return int(torch.where(above, growth, torch.full_like(growth, -math.inf)).argmax())
        return int(medians.argmax())

    def can_split(self, module, k: int) -> bool:
        """Whether window k may be split (plain layout in seconds, long enough, under the window cap)."""
        model = module.model
        if len(model.time_coef) or model.hparams_net.get("periodic_from") is not None:
            return False
        width = float(model.edges[k + 1] - model.edges[k])
        return width >= 2 * MIN_WINDOW_SHARE * module.circuit.tstop and model.windows < MAX_WINDOWS

    def run(self, module) -> dict[str, Any]:
        """The loop; returns the final held-out metrics (with `target_met`)."""
        rounds = 0
        while True:
            errors, medians, metrics = window_errors(module)
            worst, median = metrics["nrmse_worst_overall"], metrics["nrmse_median_overall"]
            # one held-out design (a nominal-only run) has no median of its own: its worst decides
            met = worst <= self.target and (median <= self.target_median or metrics["designs"] == 1)
            if met or time.perf_counter() + self._round_estimate(module) >= self.deadline:
                break
            k = self.culprit(errors, medians)
            rounds += 1
            round_began = time.perf_counter()
            seed = int(module.hparams.seed) * 7_919 + 104_729 * rounds
            span = (float(module.model.edges[k]), float(module.model.edges[k + 1]))
            if span in self._refined and self.can_split(module, k):
                action = "split"
                self._split_and_retrain(module, k, seed)
            else:  # first more L-BFGS on fresh points: cheaper than a split, and enough where L-BFGS overfitted
                action = "refined"
                self._refined.add(span)
                self._retrain(module, k, seed, adam=False)
            self.history.append({"round": rounds, "window": k, "action": action, "window_error": float(errors[k]),
                                 "worst_before": worst, "windows": module.model.windows,
                                 "seconds": time.perf_counter() - round_began})
            log.info("target missed (held-out worst %.3g, median %.3g); window %d (worst %.3g, median %.3g) %s; "
                     "%d windows now", worst, median, k, float(errors[k]), float(medians[k]), action,
                     module.model.windows)
        metrics.update(target_nrmse=self.target, target_median_nrmse=self.target_median, target_met=bool(met))
        metrics["target_rounds"] = self.history
        return metrics

    def _split_and_retrain(self, module, k: int, seed: int) -> None:
        """Split window k at its midpoint and retrain both halves from the parent's weights."""
        module.model.split_window(k)
        module.window_residuals[k:k + 1] = [float("nan"), float("nan")]
        for j in (k, k + 1):
            self._retrain(module, j, seed + j, adam=True)

    def _retrain(self, module, k: int, seed: int, adam: bool) -> None:
        """Adam (optionally) then L-BFGS on fresh collocation points for window k."""
        if adam:
            module._adam_window(k, self.adam_steps, seed=seed)
        t, designs, starts = module.lbfgs_points(k, seed)
        history = module._lbfgs(k, t, designs, starts, int(module.hparams.lbfgs_steps))
        if k < len(module.window_residuals):
            module.window_residuals[k] = history[-1]

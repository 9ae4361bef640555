"""Train to a target: after the scheduled windows, fix the window where the held-out error is made.

The PINN analogue of SPICE's local-truncation-error step control.  The held-out designs' reference
waveforms say how far off each time window is; of the windows above the target, the one whose error
grew most over its predecessor's is where the error was made (later windows inherit it through
their start states).  That window
is split in two and both halves retrained (plain windows in seconds), or, where splitting is not
possible (an oscillator's warped start-up windows, the limit cycle, a window already short), its
L-BFGS continues on fresh collocation points.  A window is first refined that way (cheaper, and
enough where L-BFGS overfitted its points); it is split when it misses again.  A round that leaves
the window's own held-out error worse is undone, and a window undone twice is left alone; the run
ends with the best held-out state the loop saw.  Windows after it see their start state as an input
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

#: undone rounds on one window after which the loop leaves it alone
GIVE_UP = 2


def _snapshot(module) -> tuple:
    """What a round may change: the window networks, their edges and the layout's record of them."""
    import copy

    model = module.model
    return (copy.deepcopy(model.nets), model.edges.clone(), copy.deepcopy(model.hparams_net),
            list(module.window_residuals))


def _restore(module, kept: tuple) -> None:
    """Put a `_snapshot` back."""
    nets, edges, hparams, residuals = kept
    module.model.nets, module.model.edges, module.model.hparams_net = nets, edges, hparams
    module.window_residuals[:] = residuals


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
    return worst, median, module.evaluate_designs(y)


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
    _failures: dict[tuple[float, float], int] = field(default_factory=dict)

    def _round_estimate(self, module) -> float:
        """Expected length (s) of the next round: the longest so far, else two windows' allowance
        (a split retrains two)."""
        done = [r["seconds"] for r in self.history]
        return max(done) if done else 2.0 * float(module.hparams.get("lbfgs_seconds") or 0.0)

    def culprit(self, errors: Tensor, medians: Tensor, skip: list[int] | None = None) -> int | None:
        """The window to work on: among windows whose worst error exceeds the target, the one where
        the error grew most over its predecessor's (where it was made, not where it was inherited;
        the earliest of equals); else the window with the largest median error above the median
        target; windows in `skip` are passed over (None when nothing is left to work on)."""
        allowed = torch.ones_like(errors, dtype=torch.bool)
        allowed[list(skip or [])] = False
        above = (errors > self.target) & allowed
        if bool(above.any()):
            growth = errors - torch.cat([errors.new_zeros(1), errors[:-1]])
            return int(torch.where(above, growth, torch.full_like(growth, -math.inf)).argmax())
        high = (medians > self.target_median) & allowed
        if not bool(high.any()):
            return None
        return int(torch.where(high, medians, torch.full_like(medians, -math.inf)).argmax())

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
        errors, medians, metrics = window_errors(module)
        best = (self._score(metrics), _snapshot(module), metrics)
        while True:
            worst, median = metrics["nrmse_worst_overall"], metrics["nrmse_median_overall"]
            met = self._score(metrics) <= 1.0
            if met or time.perf_counter() + self._round_estimate(module) >= self.deadline:
                break
            k = self.culprit(errors, medians, self._given_up(module))
            if k is None:
                break
            rounds += 1
            round_began = time.perf_counter()
            seed = int(module.hparams.seed) * 7_919 + 104_729 * rounds
            span = self._span(module, k)
            kept = _snapshot(module)
            if span in self._refined and self.can_split(module, k):
                action = "split"
                self._split_and_retrain(module, k, seed)
            else:  # first more L-BFGS on fresh points: cheaper than a split, and enough where L-BFGS overfitted
                action = "refined"
                self._refined.add(span)
                self._retrain(module, k, seed, adam=False)
            new_errors, new_medians, new_metrics = window_errors(module)
            # judged on the window itself (both halves after a split), as a step is by its local error:
            # later windows, trained on the old start states, are the next rounds' business
            now = slice(k, k + (2 if action == "split" else 1))
            if self._local(new_errors[now], new_medians[now]) < self._local(errors[k:k + 1], medians[k:k + 1]):
                errors, medians, metrics = new_errors, new_medians, new_metrics
                if self._score(metrics) < best[0]:
                    best = (self._score(metrics), _snapshot(module), metrics)
            else:  # a round that left the window worse is undone
                _restore(module, kept)
                action += ", undone"
                self._failures[span] = self._failures.get(span, 0) + 1
            self.history.append({"round": rounds, "window": k, "action": action, "window_error": float(errors[k]),
                                 "worst_before": worst, "windows": module.model.windows,
                                 "seconds": time.perf_counter() - round_began})
            log.info("target missed (held-out worst %.3g, median %.3g); window %d (worst %.3g, median %.3g) %s; "
                     "now worst %.3g, median %.3g, %d windows", worst, median, k, float(errors[k]),
                     float(medians[k]), action, metrics["nrmse_worst_overall"], metrics["nrmse_median_overall"],
                     module.model.windows)
        if self._score(metrics) > best[0]:  # rounds kept for their own window left the whole worse
            _restore(module, best[1])
            metrics = best[2]
            met = self._score(metrics) <= 1.0
            log.info("target loop: the best held-out state seen is kept (worst %.3g, median %.3g)",
                     metrics["nrmse_worst_overall"], metrics["nrmse_median_overall"])
        metrics.update(target_nrmse=self.target, target_median_nrmse=self.target_median, target_met=bool(met))
        metrics["target_rounds"] = self.history
        return metrics

    def _local(self, errors: Tensor, medians: Tensor) -> float:
        """How far windows' held-out errors are from the target (their worst ratio)."""
        return float(torch.maximum(errors / self.target, medians / self.target_median).max())

    def _score(self, metrics: dict[str, Any]) -> float:
        """How far the held-out metrics are from the target (<= 1: met); one held-out design (a
        nominal-only run) has no median of its own, so its worst alone decides."""
        score = metrics["nrmse_worst_overall"] / self.target
        if metrics["designs"] > 1:
            score = max(score, metrics["nrmse_median_overall"] / self.target_median)
        return score

    @staticmethod
    def _span(module, k: int) -> tuple[float, float]:
        return float(module.model.edges[k]), float(module.model.edges[k + 1])

    def _given_up(self, module) -> list[int]:
        """Windows whose rounds were undone GIVE_UP times: the loop moves on to others."""
        return [k for k in range(module.model.windows) if self._failures.get(self._span(module, k), 0) >= GIVE_UP]

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

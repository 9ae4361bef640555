"""Train to a target: after the scheduled windows, fix the window where the held-out error is made.

The PINN analogue of SPICE's local-truncation-error step control.  The held-out designs' reference
waveforms say how far off each time window is; of the windows above the target, the one whose error
grew most over its predecessor's is where the error was made (later windows inherit it through
their start states).  That window is first refined (more L-BFGS on fresh collocation points:
cheaper, and enough where L-BFGS overfitted its points); when it misses again it is split in two
and both halves retrained, where the model allows (plain windows in seconds, not too short).  A
round that leaves the window's own held-out error worse is undone, and a window undone twice is
left alone; the run ends with the best held-out state the loop saw.  Windows after it see their
start state as an input (a flow map), so they follow the corrected start without retraining,
except those the model retrains with it (a limit cycle after a start-up window): such a round is
judged on the whole held-out score.  The loop ends when the held-out errors are below `aim` times
the target (worst and median) or the wall-clock budget is spent: the held-out designs are a sample
of the box, and the target stands for all of it, so a run that just meets it on the sample is not
yet done while its budget lasts.

Where the circuit declares a headline measurement (`surrogate.headline`), its worst relative error
is a third target.  When it is the furthest off, the window worked on is the one, among those the
measurement reads, where the worst-measured design's error grew most.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any

import lightning as L
import torch
from torch import Tensor

from surrogate.callbacks.window_schedule import WindowSchedule
from surrogate.launch import stop_if_signalled
from surrogate.module import PinnModule

__all__ = ["TrainToTarget"]

log = logging.getLogger(__name__)

#: undone rounds on one window after which the loop leaves it alone
GIVE_UP = 2


def _snapshot(module: PinnModule, schedule: WindowSchedule) -> tuple:
    """What a round may change: the model (a split may replace it), its window networks and edges,
    and the schedule's record of the windows' residuals."""
    model = module.model
    return model, copy.deepcopy(model.nets), model.edges.clone(), list(schedule.window_residuals)


def _restore(module: PinnModule, schedule: WindowSchedule, kept: tuple) -> None:
    """Put a `_snapshot` back."""
    model, nets, edges, residuals = kept
    model.nets, model.edges = copy.deepcopy(nets), edges.clone()
    module.model = model
    schedule.window_residuals[:] = residuals


def _largest(values: Tensor, allowed: Tensor) -> int | None:
    """Index of the largest of `values` where `allowed` (the earliest of equals); None if none is."""
    if not bool(allowed.any()):
        return None
    return int(torch.where(allowed, values, torch.full_like(values, -math.inf)).argmax())


def _growth(errors: Tensor) -> Tensor:
    """Each window's error minus its predecessor's (the first window's minus 0)."""
    return errors - torch.cat([errors.new_zeros(1), errors[:-1]])


def _headline_score(metrics: dict[str, Any]) -> float:
    """The headline's worst relative error over its target (0 when the circuit declares none)."""
    if "headline_target" not in metrics:
        return 0.0
    return metrics["headline_err_worst"] / metrics["headline_target"]


def _headline_text(metrics: dict[str, Any]) -> str:
    """', <headline> worst <error>' for a log line, or nothing."""
    if "headline_target" not in metrics:
        return ""
    return f", {metrics['headline']} worst {metrics['headline_err_worst']:.3g}"


class TrainToTarget(L.Callback):
    """After the window schedule: retrain the window that makes the error until the held-out NRMSE
    meets the target (worst <= `target`, median <= `target_median`) or the clock passes `deadline`
    (time.perf_counter() seconds; 0: measure only), aiming at `aim` times both while time is left.
    The final held-out metrics, with `target_met` (against the target itself), are in `metrics`."""

    def __init__(self, target: float = 0.01, target_median: float = math.inf, deadline: float = 0.0,
                 adam_steps: int | None = None, aim: float = 1.0):
        self.target, self.target_median, self.deadline = float(target), float(target_median), float(deadline)
        self.aim = float(aim)
        self.adam_steps = adam_steps  # Adam steps for each half of a split window (None: the module's per window)
        self.history: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {}
        self._refined: set[tuple[float, float]] = set()
        self._failures: dict[tuple[float, float], int] = {}

    def on_train_end(self, trainer: L.Trainer, module: PinnModule) -> None:
        if trainer.global_rank == 0:  # DDP: rank 0 finishes the run and writes every output file
            schedule = next(cb for cb in trainer.callbacks if isinstance(cb, WindowSchedule))
            self.metrics = self.run(module, schedule)

    def _round_estimate(self, module: PinnModule, schedule: WindowSchedule) -> float:
        """Expected length (s) of the next round: the longest so far, else two windows' allowance
        (a split retrains two) and that of the windows retrained with them."""
        done = [r["seconds"] for r in self.history]
        if done:
            return max(done)
        model = module.model
        followers = max(sum(model.cost_weight(j) for j in model.retrained_with(k)) for k in range(model.windows))
        return (2.0 + followers) * schedule.lbfgs_seconds

    def culprit(self, errors: Tensor, medians: Tensor, skip: list[int] | None = None) -> int | None:
        """The window to work on: among windows whose worst error exceeds the target, the one where
        the error grew most over its predecessor's (where it was made, not where it was inherited;
        the earliest of equals); else the window with the largest median error above the median
        target; windows in `skip` are passed over (None when nothing is left to work on)."""
        allowed = torch.ones_like(errors, dtype=torch.bool)
        allowed[list(skip or [])] = False
        above = (errors > self.aim * self.target) & allowed
        if bool(above.any()):
            return _largest(_growth(errors), above)
        return _largest(medians, (medians > self.aim * self.target_median) & allowed)

    def run(self, module: PinnModule, schedule: WindowSchedule) -> dict[str, Any]:
        """The loop; returns the final held-out metrics (with `target_met`)."""
        rounds = 0
        held_out = module.held_out
        errors, medians, metrics = held_out.window_errors(module.model)
        best = (self._score(metrics), _snapshot(module, schedule), metrics)
        while True:
            stop_if_signalled(module)
            worst, median = metrics["nrmse_worst_overall"], metrics["nrmse_median_overall"]
            before = _headline_text(metrics)
            score = self._score(metrics)
            met = score <= 1.0
            if score <= self.aim or time.perf_counter() + self._round_estimate(module, schedule) >= self.deadline:
                break
            for_headline = _headline_score(metrics) > self._waveform_score(metrics)
            if for_headline:
                k = self.headline_culprit(module, metrics, self._given_up(module))
            else:
                k = self.culprit(errors, medians, self._given_up(module))
            if k is None:
                break
            rounds += 1
            round_began = time.perf_counter()
            seed = int(module.hparams.seed) * 7_919 + 104_729 * rounds
            span = self._span(module, k)
            kept = _snapshot(module, schedule)
            if span in self._refined and module.model.can_split(k):
                action = "split"
                self._split_and_retrain(module, schedule, k, seed)
            else:  # first more L-BFGS on fresh points: cheaper than a split, and enough where L-BFGS overfitted
                action = "refined"
                self._refined.add(span)
                self._retrain(module, schedule, k, seed, adam=False)
            halves = 2 if action == "split" else 1
            followers = module.model.retrained_with(k + halves - 1)
            for j in followers:
                self._retrain(module, schedule, j, seed + 7 * (j + 1), adam=False)
            if followers:
                action += f" (then window{'s' if len(followers) > 1 else ''} {', '.join(map(str, followers))})"
            new_errors, new_medians, new_metrics = held_out.window_errors(module.model)
            # judged on the window itself (both halves after a split), as a step is by its local error:
            # later windows, trained on the old start states, are the next rounds' business; unless
            # the round retrained some of them too, or the headline reads several: then on the whole
            now = slice(k, k + halves)
            if for_headline or followers:
                better = self._score(new_metrics) < score
            else:
                better = self._local(new_errors[now], new_medians[now]) < self._local(errors[k:k + 1], medians[k:k + 1])
            if better:
                errors, medians, metrics = new_errors, new_medians, new_metrics
                if self._score(metrics) < best[0]:
                    best = (self._score(metrics), _snapshot(module, schedule), metrics)
            else:  # a round that left the window worse is undone
                _restore(module, schedule, kept)
                action += ", undone"
                self._failures[span] = self._failures.get(span, 0) + 1
            self.history.append({"round": rounds, "window": k, "action": action, "window_error": float(errors[k]),
                                 "worst_before": worst, "windows": module.model.windows,
                                 "for": "headline" if for_headline else "waveform",
                                 "seconds": time.perf_counter() - round_began})
            log.info("target %s (held-out worst %.3g, median %.3g%s); window %d (worst %.3g, median %.3g) %s%s; "
                     "now worst %.3g, median %.3g%s, %d windows", "met, aiming lower" if met else "missed", worst, median,
                     before, k, float(errors[k]), float(medians[k]), action,
                     " for the headline" if for_headline else "", metrics["nrmse_worst_overall"],
                     metrics["nrmse_median_overall"], _headline_text(metrics), module.model.windows)
        if self._score(metrics) > best[0]:  # rounds kept for their own window left the whole worse
            _restore(module, schedule, best[1])
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

    def _waveform_score(self, metrics: dict[str, Any]) -> float:
        """How far the held-out NRMSE is from its targets (<= 1: met); one held-out design (a
        nominal-only run) has no median of its own, so its worst alone decides."""
        score = metrics["nrmse_worst_overall"] / self.target
        if metrics["designs"] > 1:
            score = max(score, metrics["nrmse_median_overall"] / self.target_median)
        return score

    def _score(self, metrics: dict[str, Any]) -> float:
        """How far the held-out metrics are from every target, the headline's included (<= 1: met)."""
        return max(self._waveform_score(metrics), _headline_score(metrics))

    def headline_culprit(self, module: PinnModule, metrics: dict[str, Any], skip: list[int]) -> int | None:
        """The window to work on for the headline: of the windows the measurement reads, the one
        where the worst-measured design's error grew most over its predecessor's (None: none left)."""
        from optimize.measurements import window_slice

        held_out, model = module.held_out, module.model
        d = metrics["headline_worst_design_index"]
        row = torch.nan_to_num(held_out.design_window_errors(model)[d], nan=0.0)
        with torch.no_grad():  # the windows of the design's points inside the measurement's span
            windows = model.warp_grid(held_out.t, held_out.P[d:d + 1])[2][0]
        read = windows[window_slice(held_out.headline.measurement, held_out.t)].unique()
        reads = torch.zeros(model.windows, dtype=torch.bool)
        reads[read] = True
        reads[list(skip)] = False
        return _largest(_growth(row), reads)

    @staticmethod
    def _span(module: PinnModule, k: int) -> tuple[float, float]:
        return float(module.model.edges[k]), float(module.model.edges[k + 1])

    def _given_up(self, module: PinnModule) -> list[int]:
        """Windows whose rounds were undone GIVE_UP times: the loop moves on to others."""
        return [k for k in range(module.model.windows) if self._failures.get(self._span(module, k), 0) >= GIVE_UP]

    def _split_and_retrain(self, module: PinnModule, schedule: WindowSchedule, k: int, seed: int) -> None:
        """Split window k at its midpoint and retrain both halves from the parent's weights."""
        module.model = module.model.split_window(k)
        schedule.window_residuals[k:k + 1] = [float("nan"), float("nan")]
        for j in (k, k + 1):
            self._retrain(module, schedule, j, seed + j, adam=True)

    def _retrain(self, module: PinnModule, schedule: WindowSchedule, k: int, seed: int, adam: bool) -> None:
        """Adam (optionally) then L-BFGS on fresh collocation points for window k."""
        if adam:
            steps = module.steps_per_window if self.adam_steps is None else int(self.adam_steps)
            schedule.adam(module, k, steps, seed=seed)
        history = schedule.optimise(module, k, schedule.lbfgs_points(module, k, seed))
        if k < len(schedule.window_residuals):
            schedule.window_residuals[k] = history[-1]

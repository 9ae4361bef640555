"""Retrain a window once when its L-BFGS stalled far above the earlier windows."""

from __future__ import annotations

import logging
import math

import torch

from surrogate.callbacks.window_schedule import WindowPhase
from surrogate.module import PinnModule
from surrogate.sampling import PointSet

__all__ = ["StallRetry", "stalled_windows", "RETRY_FLOOR", "STALLED_FACTOR"]

log = logging.getLogger(__name__)

#: no retry below this residual: quiet windows (FeRAM before its first edge: 4e-9) would otherwise
#: make every later window look like a failure; good windows end at 1e-6..5e-5, a stalled one at 7e-3
RETRY_FLOOR = 1e-4

#: a window that ends above this factor of the median window's L-BFGS residual is reported as stalled
#: (FeRAM seed 1: 25 in its 10.75-11 ns window against a median of ~3e-4; every window after it was off)
STALLED_FACTOR = 100.0


def stalled_windows(residuals: list[float]) -> list[int]:
    """Indices of windows whose final L-BFGS residual is more than STALLED_FACTOR x the median
    window's (and above RETRY_FLOOR): the waveform from there on may be off."""
    if len(residuals) < 2:
        return []
    median = float(torch.tensor(residuals).nanmedian())
    return [k for k, r in enumerate(residuals) if not r <= max(STALLED_FACTOR * median, RETRY_FLOOR)]


class StallRetry(WindowPhase):
    """A window whose final residual is more than `retry_factor` times the median of the earlier
    windows' is retrained once (twice the Adam steps from fresh random weights on fresh points,
    then L-BFGS) and the better result kept: one ring5 seed stalled at 6.9e-3 in window 6 against
    ~1e-5 elsewhere and lost the phase.  From fresh weights, not the previous window's: a FeRAM
    write that stalled at the LK bottleneck stalled again from the same start."""

    def __init__(self, retry_factor: float = 30.0):
        self.retry_factor = float(retry_factor)

    def on_window_end(self, schedule, module: PinnModule, window: int, points: PointSet, final: float,
                      seed: int) -> float:
        earlier = schedule.window_residuals[:window]
        median = float(torch.tensor(earlier).median()) if earlier else math.inf
        if window == 0 or self.retry_factor <= 0 or not final > max(self.retry_factor * median, RETRY_FLOOR):
            return final
        log.warning("window %d: L-BFGS residual %.3g is %.0fx the earlier windows' median; retraining it once",
                    window, final, final / median)
        net = module.model.nets[window]
        kept = {k: v.clone() for k, v in net.state_dict().items()}
        retry = schedule.retrain_fresh(module, window, seed + 7_919, 2 * module.steps_per_window, points)
        if retry[-1] < final:
            final = retry[-1]
        else:
            net.load_state_dict(kept)
        log.info("window %d: kept residual %.3g", window, final)
        return final

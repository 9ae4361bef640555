"""Monte Carlo yield: the share of designs, varied around a centre by process variation, whose
measurement meets a task's spec (target within its relative tolerance).

Designs are drawn with relative Gaussian sigmas per parameter around the centre, truncated to the
box the surrogate was trained on (a draw outside it is drawn again; the share outside is reported,
because the surrogate knows nothing there).  The surrogate measures every sample; `verify` re-measures
a random subset with ngspice, giving the pass/fail agreement and an ngspice-only yield.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor

from circuits.errors import ConfigError
from optimize.tasks import Task

__all__ = ["YieldResult", "draw_designs", "passes", "wilson_interval", "monte_carlo_yield", "QUANTILES"]

#: measurement quantiles reported
QUANTILES = (0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)

#: redraw rounds for samples outside the trained box before giving up (a centre far outside the box)
REDRAW_ROUNDS = 50


def wilson_interval(passed: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion (sensible at 0 and n passes)."""
    if n <= 0:
        return (0.0, 1.0)
    p = passed / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def passes(values: Tensor, target: float, tolerance: float) -> Tensor:
    """Whether each measurement is within `tolerance` (relative) of `target`; NaN fails."""
    return ((values - target).abs() <= tolerance * abs(target)) & torch.isfinite(values)


def draw_designs(task: Task, centre: Tensor, sigmas: Mapping[str, float], n: int,
                 seed: int) -> tuple[Tensor, float]:
    """n full designs (n, P): each varied parameter value·(1 + σ·N(0, 1)), the others at the centre,
    truncated to the trained box; and the share of first draws that fell outside it."""
    space = task.space
    lo, hi = space.bounds()
    gen = torch.Generator().manual_seed(seed)
    idx = [space.names.index(name) for name in sigmas]
    sig = torch.tensor([float(sigmas[name]) for name in sigmas], dtype=torch.float64)

    def draw(k: int) -> Tensor:
        P = centre.unsqueeze(0).repeat(k, 1)
        if idx:
            P[:, idx] = centre[idx] * (1 + sig * torch.randn(k, len(idx), generator=gen, dtype=torch.float64))
        return P

    P = draw(n)
    inside = ((P >= lo) & (P <= hi)).all(dim=1)
    outside_share = 1.0 - float(inside.double().mean())
    for _ in range(REDRAW_ROUNDS):
        if bool(inside.all()):
            return P, outside_share
        redo = torch.nonzero(~inside).flatten()
        P[redo] = draw(len(redo))
        inside = ((P >= lo) & (P <= hi)).all(dim=1)
    raise ConfigError(f"task '{task.name}': {outside_share:.0%} of the varied designs fall outside the box the "
                      f"surrogate was trained on, even after {REDRAW_ROUNDS} redraws: move the centre inside "
                      f"the box or reduce the variation")


@dataclass
class YieldResult:
    """What a Monte Carlo yield run measured."""

    values: Tensor           # (n,) the surrogate's measurement of each sample
    passed: Tensor           # (n,) bool
    designs: Tensor          # (n, P)
    outside_share: float
    seconds: float

    def summary(self, target: float, tolerance: float) -> dict[str, Any]:
        """yield, its 95 % interval, samples, time and the measurement's quantiles."""
        n, k = int(self.passed.numel()), int(self.passed.sum())
        finite = self.values[torch.isfinite(self.values)]
        q = torch.quantile(finite, torch.tensor(QUANTILES, dtype=finite.dtype)) if finite.numel() else None
        return {"yield": k / n if n else math.nan, "yield_95": list(wilson_interval(k, n)), "samples": n,
                "passed": k, "failed_measurements": int((~torch.isfinite(self.values)).sum()),
                "outside_box_share": self.outside_share, "seconds": self.seconds,
                "spec": {"target": target, "tolerance": tolerance,
                         "low": target - tolerance * abs(target), "high": target + tolerance * abs(target)},
                "quantiles": ({f"{100 * p:g}%": float(v) for p, v in zip(QUANTILES, q)} if q is not None else {})}


def monte_carlo_yield(task: Task, evaluator, centre: Tensor, sigmas: Mapping[str, float], samples: int,
                      seed: int = 0, chunk: int = 8192, progress=None) -> YieldResult:
    """Draw `samples` designs around `centre` and measure them with `evaluator` (no graph)."""
    began = time.perf_counter()
    P, outside = draw_designs(task, centre, sigmas, samples, seed)
    meas = task.objective.measurement
    values = []
    with torch.no_grad():
        for i in range(0, samples, chunk):
            values.append(evaluator.measure(P[i:i + chunk], [meas])[:, 0])
            if progress is not None:
                progress(min(i + chunk, samples))
    v = torch.cat(values).to(torch.float64)
    return YieldResult(v, passes(v, task.target, task.tolerance), P, outside, time.perf_counter() - began)

"""Exact crossing times of a continuous, differentiable waveform y(t, p) with implicit-function gradients.

A crossing located on samples (linear interpolation, detached) is polished by a few Newton steps on
``y(t, p) - level`` without a graph, then made differentiable in one step::

    t* = t_d - (y(t_d, p) - level) / ẏ(t_d, p).detach()

with ``y`` evaluated with its graph to ``p`` (and ``level``).  At a converged root the value equals
``t_d`` and the gradient is exactly the implicit-function-theorem one,
``dt*/dp = -(∂y/∂p) / (∂y/∂t)`` (and ``dt*/dlevel = 1/ẏ``), so it is the gradient of the network's
own root, not of where a sampling grid happens to cut the waveform.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["refine_crossings", "PointFn"]

#: y(t (N,), P (N, P)) -> (y (N,), dy/dt (N,)), differentiable in P
PointFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def refine_crossings(fn: PointFn, t0: Tensor, P: Tensor, level: Tensor, *, newton_steps: int = 2,
                     max_shift: float | Tensor | None = None) -> Tensor:
    """Roots t* (N,) of fn(t, P) = level near t0 (N,); NaN rows of t0 stay NaN; differentiable in P and level.

    ``max_shift`` bounds how far Newton may move a root from t0 (e.g. one grid step); a step that
    would leave that bracket is clipped to it.
    """
    t0 = t0.detach()
    ok = torch.isfinite(t0)
    if not bool(ok.any()):
        return t0.clone()
    # rows without a crossing are evaluated at a harmless finite time and masked out at the end
    fill = t0[ok][0]
    t = torch.where(ok, t0, fill)
    lv = level.expand_as(t0)
    lo = hi = None
    if max_shift is not None:
        shift = torch.as_tensor(max_shift, dtype=t.dtype)
        lo, hi = t - shift, t + shift
    with torch.no_grad():
        for _ in range(max(0, newton_steps)):
            y, ydot = fn(t, P.detach())
            step = (y - lv.detach()) / _nonzero(ydot)
            t = t - torch.where(torch.isfinite(step), step, torch.zeros_like(step))
            if lo is not None:
                t = torch.minimum(torch.maximum(t, lo), hi)
    t_d = t.detach()
    y, ydot = fn(t_d, P)
    out = t_d - (y - lv) / _nonzero(ydot.detach())
    return torch.where(ok, out, torch.full_like(out, float("nan")))


def _nonzero(x: Tensor) -> Tensor:
    """x with exact zeros replaced by a tiny number of the same sign convention (keeps divisions finite)."""
    tiny = torch.finfo(x.dtype).tiny
    return torch.where(x == 0, torch.full_like(x, tiny), x)

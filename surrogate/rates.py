"""Time rates of an oscillator's windows by variable projection.

For a fixed waveform shape the scaled residual is affine in the speed at which time runs through
it: r = λ·A + b, with A the residual of the shape's own rate alone and b the residual at rest.
Each design's best speed is therefore a closed-form least squares, λ* = −Σ⟨A, b⟩ / Σ⟨A, A⟩.

On ring5 the residual-trained shapes were right but ran at the wrong speed: the limit cycle's
frequency (a small MLP trained jointly) up to 0.45 % off these rates, which matched the reference
period within 0.09 %, and every start-up window 0.3–1.1 % slow or fast, so the phase at the cycle's
start was up to 22 ps off.  After L-BFGS, each window's rate head (a Legendre polynomial in the
design, linear in its weights) is therefore refitted to these rates by least squares.  No waveform
data: the rates come from the circuit equations on the learned shapes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from surrogate.api import Surrogate
from surrogate.nets import LegendreHead, PeriodicNet

__all__ = ["fit_log_head", "orbit_rates", "window_rate_factors"]


def _best_speeds(model: Surrogate, bound, x: Tensor, rate: Tensor, t: Tensor, points: int) -> Tensor:
    """Per design (D,): the factor λ on the learned unknowns' rate (N = D·points rows of x, rate)
    that minimises the scaled residual summed over that design's points."""
    phys = model.physics
    zero = torch.zeros_like(x)
    at_rest = phys.residual(bound, x, zero, t)
    per_rate = phys.residual(bound, x, zero.index_copy(1, model.learned_idx, rate), t) - at_rest
    D = x.shape[0] // points
    num = (per_rate * at_rest).sum(dim=1).view(D, points).sum(dim=1)
    den = (per_rate * per_rate).sum(dim=1).view(D, points).sum(dim=1)
    return -num / den


def orbit_rates(model: Surrogate, net: PeriodicNet, P: Tensor, starts: Tensor, points: int = 128,
                decay: float = 1.0) -> Tensor:
    """Least-squares cycle rate dc/dt (D,) in cycles per second of each design's learned orbit.

    P (D, P) designs, starts (D, n) their states at the start of the cycle window; the orbit is
    sampled at `points` equally spaced cycle fractions (uniform in c is uniform in time)."""
    dtype = next(net.parameters()).dtype
    cycles = ((torch.arange(points, dtype=torch.float64) + 0.5) / points).repeat(P.shape[0]).unsqueeze(1)
    PP = P.repeat_interleave(points, dim=0)
    u = model.circuit.space.to_unit(PP).to(dtype)
    t = torch.full((PP.shape[0],), model.circuit.tstop, dtype=torch.float64)  # autonomous: any time will do
    with torch.no_grad():
        learned, dx_dc = model.cycle_values(net, cycles.to(dtype), u, starts.repeat_interleave(points, dim=0),
                                            with_rate=True, decay=decay)
        bound = model.physics.bind(PP)
        x = model.physics.pinned_values(bound, t).index_copy(1, model.learned_idx, learned)
        return _best_speeds(model, bound, x, dx_dc, t, points)


def window_rate_factors(model: Surrogate, window: int, P: Tensor, starts: Tensor, points: int = 128) -> Tensor:
    """Factor (D,) by which each design's time should run faster through a (non-cycle) window to
    minimise its residual: 1 when the window's shape already runs at the right speed."""
    t0, t1 = float(model.edges[window]), float(model.edges[window + 1])
    w = (t0 + (t1 - t0) * (torch.arange(points, dtype=torch.float64) + 0.5) / points).repeat(P.shape[0])
    PP = P.repeat_interleave(points, dim=0)
    with torch.no_grad():
        t = model.unwarp(w, PP, window)
        x, xdot, bound = model.state(t, PP, with_rate=True, starts=starts.repeat_interleave(points, dim=0),
                                     window=window)
        return _best_speeds(model, bound, x, xdot[:, model.learned_idx], t, points)


def fit_log_head(head: LegendreHead, u: Tensor, target: Tensor) -> float:
    """Set a Legendre head to the least-squares fit of `target` (D,) at unit designs u (D, P);
    returns the worst relative gap exp|fit − target| − 1 left on them."""
    if not bool(torch.isfinite(target).all()):
        raise ValueError("rate targets must be finite (a collapsed window has no rate)")
    dtype = head.linear.weight.dtype
    with torch.no_grad():
        u = u.to(torch.float64)
        feats = torch.cat([torch.ones(len(u), 1, dtype=torch.float64), head.to(torch.float64).features(u)], dim=1)
        coef = torch.linalg.lstsq(feats, target.unsqueeze(1)).solution
        head.linear.bias.copy_(coef[0])
        head.linear.weight.copy_(coef[1:].T)
        worst = float((feats @ coef - target.unsqueeze(1)).abs().max())
    head.to(dtype)
    return math.expm1(worst)
